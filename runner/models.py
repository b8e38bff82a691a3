"""Find an adapter: a folder given with --adapter, or a registered ZenML model version."""

from __future__ import annotations

from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from llm_trainer.training import LoraAdapter
from publishing.zenml_versions import data_fingerprint, stage_of  # noqa: F401 (imported from here too)


def model_name(cfg: RunConfig) -> str:
    return cfg.registry.model_name or cfg.name


def resolve_adapter(cfg: RunConfig, adapter: str | None, model_version: str | None) -> LoraAdapter | None:
    return adapter_and_label(cfg, adapter, model_version)[0]


def adapter_and_label(cfg: RunConfig, adapter: str | None, model_version: str | None
                      ) -> tuple[LoraAdapter | None, str | None]:
    """The adapter and a phrase saying which one it is (for the chat's first line)."""
    if adapter and model_version:
        raise UserError("give --adapter or --model-version, not both")
    if adapter:
        found = LoraAdapter.from_folder(adapter)
        return found, f"the adapter in {found.path}"
    if model_version:
        version = find_version(model_name(cfg), model_version)
        stage = f", {stage_of(version)}" if stage_of(version) else ""
        return _adapter_of(version), f"model '{model_name(cfg)}' version {version.number}{stage}"
    return None, None


def find_version(name: str, version: str, what: str = "--model-version") -> Any:
    """A ZenML model version by number, stage (production, staging, latest...) or name; an unknown one is one
    line that lists the versions there are."""
    from zenml.client import Client
    from zenml.enums import ModelStages

    stages = {stage.value: stage for stage in ModelStages}
    wanted = stages.get(version, int(version) if version.isdigit() else version)
    try:
        return Client().get_model_version(name, wanted)
    except KeyError:
        raise UserError(f"{what}: model '{name}' has no version '{version}'; {existing_versions(name)}") from None


def existing_versions(name: str) -> str:
    from zenml.client import Client

    try:
        Client().get_model(name)
    except KeyError:
        return f"no model named '{name}' is registered yet (the full pipeline registers one)"
    versions = Client().list_model_versions(model=name, size=1000, sort_by="asc:number")
    if not versions.items:
        return f"model '{name}' has no versions yet"
    listed = ", ".join(f"{v.number}" + (f" ({stage_of(v)})" if stage_of(v) else "") for v in versions.items)
    return f"it has: {listed}"


def adapter_of_version(name: str, version: str) -> LoraAdapter:
    return _adapter_of(find_version(name, version))


def _adapter_of(model_version: Any) -> LoraAdapter:
    artifact = model_version.get_artifact("adapter")
    if artifact is None:
        raise UserError(f"--model-version: version {model_version.number} of '{model_version.model.name}' has no "
                        "adapter artifact")
    return artifact.load()
