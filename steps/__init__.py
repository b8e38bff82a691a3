"""One thin ZenML step per file: read the typed config sections it uses, call the library, return named artifacts.

The steps load when first used (``from steps import train_model``), not when the package is imported: importing
``steps.names`` must not import zenml, which would open the ZenML store before the runner has set it up (under
its lock, when two commands start at once on a fresh store)."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {"prepare_base_model": "steps.base_model", "evaluate_model": "steps.evaluate",
            "fingerprint_source": "steps.fingerprint_source", "load_adapter": "steps.load_adapter",
            "load_data": "steps.load_data", "preprocess": "steps.preprocess", "tokenize": "steps.tokenize",
            "register_model": "steps.register", "train_model": "steps.train"}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'steps' has no attribute {name!r}")
    import materializers  # noqa: F401  (registers the project's materializers before any step runs)

    # All at once, bound here: importing steps.load_data sets the attribute 'load_data' of this package to the
    # module, which the step of that name must replace.
    steps = {step: getattr(importlib.import_module(module), step) for step, module in _MODULES.items()}
    globals().update(steps)
    return steps[name]
