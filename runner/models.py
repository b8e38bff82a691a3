"""Find an adapter: a folder given with --adapter, or a registered ZenML model version."""

from __future__ import annotations

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from llm_trainer.training import LoraAdapter


def model_name(cfg: RunConfig) -> str:
    return cfg.registry.model_name or cfg.name


def resolve_adapter(cfg: RunConfig, adapter: str | None, model_version: str | None) -> LoraAdapter | None:
    if adapter and model_version:
        raise UserError("give --adapter or --model-version, not both")
    if adapter:
        return LoraAdapter.from_folder(adapter)
    if model_version:
        return adapter_of_version(model_name(cfg), model_version)
    return None


def adapter_of_version(name: str, version: str) -> LoraAdapter:
    from zenml.client import Client
    from zenml.enums import ModelStages

    stages = {stage.value: stage for stage in ModelStages}
    wanted = stages.get(version, int(version) if version.isdigit() else version)
    try:
        model_version = Client().get_model_version(name, wanted)
    except KeyError as exc:
        raise UserError(f"--model-version: model '{name}' has no version '{version}'") from exc
    artifact = model_version.get_artifact("adapter")
    if artifact is None:
        raise UserError(f"--model-version: version {model_version.number} of '{name}' has no adapter artifact")
    return artifact.load()
