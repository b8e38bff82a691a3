"""Where the project keeps its state: ZenML store, MLflow database, caches and run outputs.

Project-local by default (``<project>/.llm_trainer``) so nothing touches a user's global stores;
``LLM_TRAINER_HOME`` moves it (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """The folder of the project's state: $LLM_TRAINER_HOME, else <project>/.llm_trainer."""
    return Path(os.environ.get("LLM_TRAINER_HOME") or PROJECT_ROOT / ".llm_trainer").expanduser().resolve()


def cache_dir(*parts: str) -> Path:
    """A cache folder under the state folder, made if missing."""
    path = state_dir().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def isolated_environment(base: Path) -> dict[str, str]:
    """Environment that puts every store (project state, ZenML, Hugging Face caches) under ``base`` and keeps
    the Hub offline: what tests and benchmarks set before anything imports zenml, datasets or transformers."""
    return {
        "LLM_TRAINER_HOME": str(base / "home"),
        "ZENML_CONFIG_PATH": str(base / "zenml"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "ZENML_LOGGING_VERBOSITY": "WARN",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(base / "hf"),
        "HF_DATASETS_CACHE": str(base / "hf" / "datasets"),
        "TOKENIZERS_PARALLELISM": "false",
    }
