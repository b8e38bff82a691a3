"""The config reference: every key path with its type, default and description, read from the pydantic models, and
rendered as the Markdown of docs/CONFIG.md (``python scripts/config_reference.py > docs/CONFIG.md``; a test checks
that the file is up to date)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llm_trainer.config.keys import config_fields
from llm_trainer.config.run import RunConfig

HEADER = """# Configuration keys

Every key of the experiment YAML, generated from the pydantic models in `llm_trainer/config/` by
`python scripts/config_reference.py > docs/CONFIG.md` (`tests/test_config_reference.py` fails when this file is
out of date). Types and defaults are as YAML writes them; a `section` holds the keys listed below it.
"""


class ConfigKey(NamedTuple):
    """One row of the reference: a key path, its type and default as YAML writes them, and its description."""

    path: str
    type: str
    default: str
    description: str


def config_reference(model: type[BaseModel] = RunConfig) -> Iterator[ConfigKey]:
    """Every key path of ``model`` (sections and their fields, in declaration order) with type, default and
    description."""
    for path, field in config_fields(model):
        yield ConfigKey(path, type_text(field), default_text(field), field.description or "")


def type_text(field: FieldInfo) -> str:
    """The field's type as a YAML user reads it: 'int | null', 'drop | truncate', 'list[str]', 'section'."""
    return _annotation_text(field.annotation)


def default_text(field: FieldInfo) -> str:
    """The default as YAML writes it ('required' for a key without one; '' for a section with its own keys)."""
    if field.is_required():
        return "required"
    if isinstance(field.default, BaseModel):
        return ""
    return yaml_text(field.default)


def yaml_text(value: Any) -> str:
    """A value in YAML's flow style, on one line: null, true, 0.05, [gsm8k], {answer_correct: 1.0}."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True).removesuffix(
        "\n").removesuffix("\n...")


def render_markdown(model: type[BaseModel] = RunConfig) -> str:
    """docs/CONFIG.md: the header, the top-level keys, then one table per top-level section."""
    keys = list(config_reference(model))
    sections = [key for key in keys if "." not in key.path and any(k.path.startswith(key.path + ".") for k in keys)]
    top = [key for key in keys if "." not in key.path and key not in sections]
    lines = [HEADER, "## Top level", "", *_table(top)]
    for section in sections:
        inside = [key for key in keys if key.path.startswith(section.path + ".")]
        lines += ["", f"## `{section.path}`", "", _text(section.description), "", *_table(inside)]
    return "\n".join(lines) + "\n"


def _table(keys: list[ConfigKey]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key in keys:
        default = f"`{_cell(key.default)}`" if key.default else ""
        rows.append(f"| `{key.path}` | {_cell(key.type)} | {default} | {_text(key.description)} |")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _text(description: str) -> str:
    """A description in a table cell or a paragraph: '<name>' must not be read as an HTML tag."""
    return _cell(description).replace("<", "&lt;").replace(">", "&gt;")


def _annotation_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(yaml_text(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_annotation_text(arg) for arg in args)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_annotation_text(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))
