from typing import Annotated, Any

import mlflow
from mlflow.exceptions import MlflowException
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ModelStages
from zenml.types import HTMLString

from llm_trainer.config import RegistryConfig
from llm_trainer.evaluation.report import promotion_html
from llm_trainer.promotion import decide_promotion
from llm_trainer.training import LoraAdapter

ZENML_VERSION_TAG = "zenml_model_version_id"


@step(experiment_tracker=True)
def register_model(
    adapter: LoraAdapter,
    finetuned_metrics: dict[str, Any],
    base_metrics: dict[str, Any],
    registry: RegistryConfig,
) -> tuple[Annotated[dict[str, Any], "promotion_decision"], Annotated[HTMLString, "promotion_report"]]:
    """Record the metrics on this run's ZenML model version, register the adapter in MLflow, and promote
    it to production only if it beats the base model and the current production version."""
    model = get_step_context().model
    production = _production_metrics(model.name, exclude_id=model.id)
    decision = decide_promotion(registry.promotion_metric, registry.promotion_margin, finetuned_metrics,
                                base_metrics, production)
    numbers = {k: v for k, v in finetuned_metrics.items() if isinstance(v, int | float)}
    log_metadata(metadata={"evaluation_metrics": numbers, "base_model_metrics":
                           {k: v for k, v in base_metrics.items() if isinstance(v, int | float)},
                           "base_model": adapter.base_model, "promotion": decision.as_dict()}, infer_model=True)
    model.set_stage(ModelStages.PRODUCTION if decision.promote else ModelStages.STAGING, force=True)
    mlflow_version = _register_in_mlflow(model.name, str(model.id), adapter, numbers, decision.promote)
    if mlflow_version is not None:
        log_metadata(metadata={"mlflow_model_version": mlflow_version}, infer_model=True)
    result = {**decision.as_dict(), "model_name": model.name, "model_version": str(model.number),
              "mlflow_version": mlflow_version}
    print(f"model {model.name} version {model.number}: {decision.stage} ({decision.reason})")
    columns = {"base": base_metrics, "fine-tuned": finetuned_metrics, **({"production": production} if production else {})}
    return result, HTMLString(promotion_html(decision.as_dict(), columns))


def _production_metrics(model_name: str, exclude_id: Any) -> dict[str, Any] | None:
    try:
        current = Client().get_model_version(model_name, ModelStages.PRODUCTION)
    except KeyError:
        return None
    if current.id == exclude_id:
        return None
    return current.run_metadata.get("evaluation_metrics")


def _register_in_mlflow(name: str, zenml_version_id: str, adapter: LoraAdapter, metrics: dict[str, Any],
                       promote: bool) -> str | None:
    """The adapter folder as the MLflow model version of this ZenML model version, with the base model and
    metrics as tags. Exactly one per ZenML version: a re-run after a kill finds the one it made by its tag
    (created with it, atomically) instead of adding another, and brings the alias in line with the stage."""
    if mlflow.active_run() is None:
        return None
    client = mlflow.MlflowClient()
    version = _mlflow_version_of(client, name, zenml_version_id)
    if version is None:
        mlflow.log_artifacts(str(adapter.path), "adapter")
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        tags = {"base_model": adapter.base_model, ZENML_VERSION_TAG: zenml_version_id,
                **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}
        version = client.create_model_version(name, source=mlflow.get_artifact_uri("adapter"),
                                              run_id=mlflow.active_run().info.run_id, tags=tags)
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
