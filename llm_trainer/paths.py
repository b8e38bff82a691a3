"""Where the project keeps its state: ZenML store, MLflow database, caches and run outputs.

Project-local by default (``<project>/.llm_trainer``) so nothing touches a user's global stores;
``LLM_TRAINER_HOME`` moves it (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    return Path(os.environ.get("LLM_TRAINER_HOME") or PROJECT_ROOT / ".llm_trainer").expanduser().resolve()


def cache_dir(*parts: str) -> Path:
    path = state_dir().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
