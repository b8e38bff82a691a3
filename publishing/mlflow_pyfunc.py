"""The adapter as an MLflow pyfunc model: what ``register_model`` logs and registers (a helper, not a step).

The logged model holds the model code (``publishing/mlflow_chat_model.py``), the library (``llm_trainer``), the
adapter folder and, for a local base model folder (the tiny model), the base model itself, so that
``mlflow.pyfunc.load_model("models:/<name>@production")`` and ``mlflow models serve`` work on another machine with
the pinned requirements installed. A Hub base model is referenced by id and revision (it is downloaded there).
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array, Object, Property

import llm_trainer
from llm_trainer.config import ModelConfig, ModelVersionSpec
from llm_trainer.training import LoraAdapter

logger = logging.getLogger(__name__)
MODEL_CODE = Path(__file__).with_name("mlflow_chat_model.py")
MAX_BUNDLED_BASE_BYTES = 1 << 30  # a larger local base folder is referenced by its path, not copied
EXAMPLE_QUESTION = "What is 12 + 30?"
INPUT_EXAMPLE = [{"messages": [{"role": "user", "content": EXAMPLE_QUESTION}]}]  # records: one chat per row
REQUIREMENTS = ["mlflow", "torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "pydantic",
                "pyyaml", "pandas", "numpy"]


@dataclass(frozen=True)
class ChatModelSettings:
    """How the logged model loads and answers: the training run's model settings and system prompt."""

    model: ModelConfig
    system_prompt: str = ""
    max_new_tokens: int = 256
    batch_size: int = 8


def chat_model_settings(spec: ModelVersionSpec, adapter: LoraAdapter) -> ChatModelSettings:
    """What the registered model serves with: the model section and system prompt the adapter was made with, and
    the evaluation's generation settings; without those (a spec built by hand), the adapter's base defaults."""
    if spec.made_from is None:
        return ChatModelSettings(ModelConfig(base_model=adapter.base_model), "", spec.max_new_tokens, spec.batch_size)
    return ChatModelSettings(spec.made_from.model, spec.made_from.data.system_prompt, spec.max_new_tokens,
                             spec.batch_size)


def signature(max_new_tokens: int) -> ModelSignature:
    messages = Array(Object([Property("role", DataType.string), Property("content", DataType.string)]))
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "prompt", required=False),
                       ColSpec(messages, "messages", required=False)]),
        outputs=Schema([ColSpec(DataType.string)]),
        params=ParamSchema([ParamSpec("max_new_tokens", DataType.long, max_new_tokens)]))


def save_chat_model(adapter: LoraAdapter, settings: ChatModelSettings, folder: Path) -> Path:
    """Write the MLflow model folder (MLmodel, code, artifacts); nothing is loaded."""
    base = Path(adapter.base_model).expanduser()
    artifacts = {"adapter": str(adapter.path)}
    if base.is_dir():
        size = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
        if size <= MAX_BUNDLED_BASE_BYTES:
            artifacts["base_model"] = str(base)
        else:
            logger.warning("the base model folder %s (%.1f GB) is not copied into the MLflow model: it loads only "
                           "where that path exists", base, size / 1e9)
    model = settings.model.model_dump(mode="json") | {"base_model": adapter.base_model}
    model_config = {"model": model, "base_is_tiny": settings.model.is_tiny, "system_prompt": settings.system_prompt,
                    "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size}
    with tempfile.TemporaryDirectory() as scratch:
        library = Path(scratch) / "llm_trainer"
        shutil.copytree(Path(llm_trainer.__file__).parent, library, ignore=shutil.ignore_patterns("__pycache__"))
        mlflow.pyfunc.save_model(
            path=str(folder), python_model=str(MODEL_CODE), artifacts=artifacts, model_config=model_config,
            code_paths=[str(library)], signature=signature(settings.max_new_tokens), input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(settings.model.load_in_4bit))
    return folder


def log_chat_model(adapter: LoraAdapter, settings: ChatModelSettings, artifact_path: str = "model") -> str:
    """Save the model and log it as ``artifact_path`` of the active MLflow run; its artifact URI."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = save_chat_model(adapter, settings, Path(scratch) / "model")
        mlflow.log_artifacts(str(folder), artifact_path)
    return mlflow.get_artifact_uri(artifact_path)


def requirements(load_in_4bit: bool) -> list[str]:
    """Pinned to this environment's versions (no requirement inference: it would load the model)."""
    names = REQUIREMENTS + (["bitsandbytes"] if load_in_4bit else [])
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned
