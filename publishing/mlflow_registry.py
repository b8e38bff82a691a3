"""MLflow registered models: the adapter registered as one MLflow model version per ZenML model version, with
its model card, and the registered model's ``production`` alias following the ZenML stage."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from llm_trainer.config import ModelVersionSpec
from llm_trainer.training import LoraAdapter
from publishing.mlflow_pyfunc import ChatModelSettings, chat_model_settings, log_chat_model

ZENML_VERSION_TAG = "zenml_model_version_id"


def register_in_mlflow(name: str, zenml_version_id: str, adapter: LoraAdapter, metrics: dict[str, Any],
                       promote: bool, settings: ChatModelSettings | None = None, card: str | None = None
                       ) -> str | None:
    """The adapter as an MLflow pyfunc model (publishing/mlflow_pyfunc.py; ``settings``: by default the adapter's
    base model with default generation settings) with its model card as README.md, registered as the MLflow
    model version of this ZenML model version, with the base model and metrics as tags. Exactly one per ZenML
    version: a re-run after a kill finds the one it made by its tag (created with it, atomically) instead of
    adding another, and brings the alias in line with the stage. None when no MLflow run is active."""
    if mlflow.active_run() is None:
        return None
    client = mlflow.MlflowClient()
    version = _mlflow_version_of(client, name, zenml_version_id)
    if version is None:
        source = log_chat_model(adapter, settings or chat_model_settings(ModelVersionSpec(name=name, config_key=""),
                                                                         adapter))
        if card is not None:
            mlflow.log_text(card, f"{source.rsplit('/', 1)[-1]}/README.md")
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        tags = {"base_model": adapter.base_model, ZENML_VERSION_TAG: zenml_version_id,
                **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}
        version = client.create_model_version(name, source=source, run_id=mlflow.active_run().info.run_id,
                                              tags=tags)
    if promote:
        client.set_registered_model_alias(name, "production", version.version)
    elif str(version.version) in _production_versions(client, name):  # promoted by a killed run, then decided against
        client.delete_registered_model_alias(name, "production")
    return str(version.version)


def _mlflow_version_of(client: Any, name: str, zenml_version_id: str) -> Any:
    found = client.search_model_versions(f"name = '{name}' and tags.{ZENML_VERSION_TAG} = '{zenml_version_id}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def _production_versions(client: Any, name: str) -> list[str]:
    try:
        return [str(client.get_model_version_by_alias(name, "production").version)]
    except MlflowException:
        return []


def model_card(spec: ModelVersionSpec, metrics: dict[str, Any], base_metrics: dict[str, Any],
               source_fingerprint: str, version: str) -> str | None:
    """The model card of the registered version: what made it, and its metrics against the base model's."""
    if spec.made_from is None:
        return None
    from llm_trainer.model_card import card_from_config, render

    base_numbers = {k: v for k, v in base_metrics.items() if isinstance(v, int | float)}
    return render(card_from_config(spec.made_from, metrics=metrics, base_metrics=base_numbers,
                                   data_fingerprint=source_fingerprint[:8], version=version))
