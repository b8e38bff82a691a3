"""Reading a config: YAML files merged in order (an experiment, then overlays), ``--set`` overrides, validation
into a RunConfig; every mistake is one ConfigError naming the file or the --set and the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llm_trainer.config.keys import first_error
from llm_trainer.config.run import RunConfig
from llm_trainer.errors import ConfigError
from llm_trainer.fsutil import read_text_file


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides; values are parsed as YAML scalars so types follow the model."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.learning_rate=1e-4")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key.strip()}: the value {value!r} is not valid YAML "
                              f"({getattr(exc, 'problem', None) or 'syntax error'})") from None
    return raw


def merge_sections(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overlay`` into ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_sections(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = read_text_file(path, "a config file")  # a folder, unreadable or binary: one line
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        context = getattr(exc, "context", None)
        raise ConfigError(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_config(paths: str | Path | list[str | Path], overrides: list[str] | None = None) -> RunConfig:
    """Read one YAML, or several merged in order (an experiment, then overlays such as a stack's
    settings from configs/stacks/), apply ``--set`` overrides and validate the result."""
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    raw: dict[str, Any] = {}
    for path in paths:
        raw = merge_sections(raw, _read_yaml(path))
    raw = apply_overrides(raw, overrides or [])
    label = " + ".join(str(p) for p in paths)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        path, message = first_error(exc)
        set_keys = [item.partition("=")[0].strip() for item in overrides or []]
        # An error in a key given with --set names the --set, not the YAML file.
        given = next((k for k in reversed(set_keys)
                      if path and (path == k or path.startswith(k + ".") or k.startswith(path + "."))), None)
        if given is not None:
            where = "" if path == given else f"{path}: "
            raise ConfigError(f"--set {given}: {where}{message}") from exc
        raise ConfigError(f"{label}: {path}: {message}" if path else f"{label}: {message}") from exc
