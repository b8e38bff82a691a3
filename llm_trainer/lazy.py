"""Packages whose public names load on first use (``__getattr__ = lazy_names(__name__, {...})``), so that
importing the package, or a light module in it, imports nothing heavy."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, origins: dict[str, str], first: tuple[str, ...] = ()) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: the first use of any name in ``origins`` (name -> the module
    that defines it) imports the modules in ``first``, then every module in ``origins``, and binds every name in
    the package at once, so that a submodule of the same name (``steps.load_data``) never stands in for it."""

    def __getattr__(name: str) -> Any:
        if name not in origins:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        for module in first:
            importlib.import_module(module)
        values = {key: getattr(importlib.import_module(module), key) for key, module in origins.items()}
        vars(sys.modules[package]).update(values)
        return values[name]

    return __getattr__
