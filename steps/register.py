from typing import Annotated, Any

from zenml import step
from zenml.types import HTMLString

from llm_trainer.config import ModelVersionSpec, RegistryConfig
from llm_trainer.evaluation.report import promotion_html
from llm_trainer.promotion import decide_promotion
from llm_trainer.training import LoraAdapter
from llm_trainer.version_compare import compare_html
from publishing.mlflow_pyfunc import chat_model_settings
from publishing.mlflow_registry import model_card, register_in_mlflow
from publishing.zenml_model import model_version_for_run, production_version, record_decision, record_mlflow_version
from publishing.zenml_versions import version_records


@step(experiment_tracker=True)
def register_model(
    adapter: LoraAdapter,
    finetuned_metrics: dict[str, Any],
    base_metrics: dict[str, Any],
    source_fingerprint: str,
    registry: RegistryConfig,
    version: ModelVersionSpec,
) -> tuple[Annotated[dict[str, Any], "promotion_decision"], Annotated[HTMLString, "promotion_report"],
           Annotated[HTMLString, "versions_comparison"]]:
    """Find or create this run's ZenML model version (named from the config and the fingerprint of the data this
    run read), decide its promotion against the base model and the current production version, record the
    metrics and the decision (its stage) on it, and publish the adapter as its MLflow registered version. The
    versions comparison puts this version beside the model's others (as `run_pipeline.py models compare`)."""
    model = model_version_for_run(version, version.version_name(source_fingerprint))
    current = production_version(version.name, exclude_id=model.id)
    production = current.run_metadata.get("evaluation_metrics") if current is not None else None
    decision = decide_promotion(registry.promotion_metric, registry.promotion_margin, finetuned_metrics,
                                base_metrics, production, registry.guard_metrics)
    numbers = {k: v for k, v in finetuned_metrics.items() if isinstance(v, int | float)}
    trainer = version.made_from.training.trainer if version.made_from is not None else None
    record_decision(model, decision, numbers, base_metrics, adapter.base_model, source_fingerprint, trainer,
                    current.number if current is not None else None)
    card = model_card(version, numbers, base_metrics, source_fingerprint, f"{model.number} ({decision.stage})")
    mlflow_version = register_in_mlflow(version.name, str(model.id), adapter, numbers, decision.promote,
                                        chat_model_settings(version, adapter), card)
    record_mlflow_version(model, mlflow_version)
    print(f"model {version.name} version {model.number}: {decision.stage} ({decision.reason})")
    result = {**decision.as_dict(), "model_name": version.name, "model_version": str(model.number),
              "mlflow_version": mlflow_version}
    columns = {"base": base_metrics, "fine-tuned": finetuned_metrics,
               **({"production": production} if production else {})}
    comparison = compare_html(version.name, version_records(version.name), registry.promotion_metric,
                              list(registry.guard_metrics))
    return result, HTMLString(promotion_html(decision.as_dict(), columns)), HTMLString(comparison)
