"""One thin ZenML step per file: read the typed config sections it uses, call the library, return named artifacts.

The steps load when first used (``from steps import train_model``), not when the package is imported: importing
``steps.names`` must not import zenml, which would open the ZenML store before the runner has set it up (under
its lock, when two commands start at once on a fresh store)."""

from __future__ import annotations

from llm_trainer.lazy import lazy_names

_MODULES = {"prepare_base_model": "steps.base_model", "build_pairs": "steps.build_pairs", "evaluate_model": "steps.evaluate",
            "fingerprint_source": "steps.fingerprint_source", "load_adapter": "steps.load_adapter",
            "load_data": "steps.load_data", "preprocess": "steps.preprocess", "tokenize": "steps.tokenize",
            "register_model": "steps.register", "train_model": "steps.train"}

__all__ = sorted(_MODULES)

# Lazy names, the packages' one way (llm_trainer/lazy.py); the materializers register before any step runs.
__getattr__ = lazy_names(__name__, _MODULES, first=("materializers",))
