from typing import Annotated, Any

import mlflow
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ModelStages
from zenml.types import HTMLString

from llm_trainer.config import RegistryConfig
from llm_trainer.evaluation.report import promotion_html
from llm_trainer.promotion import decide_promotion
from llm_trainer.training import LoraAdapter


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
    mlflow_version = _register_in_mlflow(model.name, adapter, numbers, decision.promote)
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


def _register_in_mlflow(name: str, adapter: LoraAdapter, metrics: dict[str, Any], promote: bool) -> str | None:
    """The adapter folder as an MLflow model version, with the base model and metrics as tags."""
    if mlflow.active_run() is None:
        return None
    client = mlflow.MlflowClient()
    mlflow.log_artifacts(str(adapter.path), "adapter")
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    tags = {"base_model": adapter.base_model, **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}
    version = client.create_model_version(name, source=mlflow.get_artifact_uri("adapter"),
                                          run_id=mlflow.active_run().info.run_id, tags=tags)
    if promote:
        client.set_registered_model_alias(name, "production", version.version)
    return str(version.version)
