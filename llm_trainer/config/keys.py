"""The config's key paths, and a validation error told in one line by the key path it concerns (an unknown key
with the valid one it most likely meant)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from llm_trainer.config.run import RunConfig


def format_validation_error(error: ValidationError) -> str:
    """One line: the first error's key path and what was expected, plus how many more there are."""
    path, message = first_error(error)
    return f"{path}: {message}" if path else message


def first_error(error: ValidationError) -> tuple[str, str]:
    """The first error's key path, and what was expected (an unknown key: the nearest valid one)."""
    # An unknown key first: a misspelt required key is also reported as missing, and the typo is the news.
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    path = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        nearest = nearest_key(path)
        message = "unknown key" + (f"; did you mean {nearest}?" if nearest else "")
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and not isinstance(first["input"], dict | list):
        message += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return path, message + more


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every key path of the config (sections and their fields), e.g. 'training.learning_rate'."""
    return [path for path, _ in config_fields(model, prefix)]


def config_fields(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """(key path, pydantic field) of every key of the config, each section before its own keys."""
    for name, field in (model or RunConfig).model_fields.items():
        yield prefix + name, field
        section = section_model(field)
        if section is not None:
            yield from config_fields(section, f"{prefix}{name}.")


def section_model(field: FieldInfo) -> type[BaseModel] | None:
    """The model of a field that is a section (``judge: JudgeConfig | None`` included), else None."""
    for candidate in (field.annotation, *get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def nearest_key(path: str) -> str | None:
    """The valid key an unknown one most likely meant: the same name in another section, else the closest
    spelling in its own section, else the closest key path anywhere."""
    import difflib

    keys = config_keys()
    parent, _, name = path.rpartition(".")
    same_name = [k for k in keys if k.rpartition(".")[2] == name]
    if same_name:
        return same_name[0]
    siblings = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    if close:
        return f"{parent}.{close[0]}" if parent else close[0]
    close = difflib.get_close_matches(path, keys, n=1, cutoff=0.75)
    return close[0] if close else None
