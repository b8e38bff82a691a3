from typing import Annotated, Any

import mlflow
from mlflow.exceptions import MlflowException
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ModelStages
from zenml.types import HTMLString

from llm_trainer.config import ModelVersionSpec, RegistryConfig
from llm_trainer.evaluation.report import promotion_html
from llm_trainer.promotion import decide_promotion
from llm_trainer.training import LoraAdapter

ZENML_VERSION_TAG = "zenml_model_version_id"


@step(experiment_tracker=True)
def register_model(
    adapter: LoraAdapter,
    finetuned_metrics: dict[str, Any],
    base_metrics: dict[str, Any],
    source_fingerprint: str,
    registry: RegistryConfig,
    version: ModelVersionSpec,
) -> tuple[Annotated[dict[str, Any], "promotion_decision"], Annotated[HTMLString, "promotion_report"]]:
    """Find or create this run's ZenML model version (named from the config and the fingerprint of the data this
    run read), link the run's artifacts to it, record the metrics, register the adapter in MLflow, and promote it
    to production only if it beats the base model and the current production version."""
    model = _model_version(version, version.version_name(source_fingerprint))
    production = _production_metrics(version.name, exclude_id=model.id)
    decision = decide_promotion(registry.promotion_metric, registry.promotion_margin, finetuned_metrics,
                                base_metrics, production)
    numbers = {k: v for k, v in finetuned_metrics.items() if isinstance(v, int | float)}
    log_metadata(metadata={"evaluation_metrics": numbers, "base_model_metrics":
                           {k: v for k, v in base_metrics.items() if isinstance(v, int | float)},
                           "base_model": adapter.base_model, "source_fingerprint": source_fingerprint,
                           "promotion": decision.as_dict()}, model_version_id=model.id)
    Client().update_model_version(model_name_or_id=model.model.id, version_name_or_id=model.id, force=True,
                                  stage=ModelStages.PRODUCTION if decision.promote else ModelStages.STAGING)
    card = _model_card(version, numbers, base_metrics, source_fingerprint, f"{model.number} ({decision.stage})")
    mlflow_version = _register_in_mlflow(version.name, str(model.id), adapter, numbers, decision.promote,
                                         _chat_model_settings(version, adapter), card)
    if mlflow_version is not None:
        log_metadata(metadata={"mlflow_model_version": mlflow_version}, model_version_id=model.id)
    result = {**decision.as_dict(), "model_name": version.name, "model_version": str(model.number),
              "mlflow_version": mlflow_version}
    print(f"model {version.name} version {model.number}: {decision.stage} ({decision.reason})")
    columns = {"base": base_metrics, "fine-tuned": finetuned_metrics, **({"production": production} if production else {})}
    return result, HTMLString(promotion_html(decision.as_dict(), columns))


def _model_version(spec: ModelVersionSpec, name: str) -> Any:
    """The version ``name`` of the model, created (with the model) if this is its first run; the artifacts this
    pipeline run has made so far are linked to it (lineage from the version back to the data)."""
    from zenml.model.utils import link_artifact_version_to_model_version
    from zenml.models import ModelVersionPipelineRunFilter, ModelVersionPipelineRunRequest

    client = Client()
    try:
        client.get_model(spec.name)
    except KeyError:
        client.create_model(spec.name, description=spec.description, tags=spec.tags)
    try:
        version = client.get_model_version(spec.name, name)
    except KeyError:
        version = client.create_model_version(spec.name, name=name, description=spec.description, tags=spec.tags)
    run_id = get_step_context().pipeline_run.id
    if run_id not in {link.pipeline_run.id for link in client.zen_store.list_model_version_pipeline_run_links(
            ModelVersionPipelineRunFilter(model_version_id=version.id, size=1000)).items}:
        client.zen_store.create_model_version_pipeline_run_link(
            ModelVersionPipelineRunRequest(model_version=version.id, pipeline_run=run_id))
    linked = {a.id for a in _linked_artifacts(version)}
    for step_run in client.get_pipeline_run(run_id).steps.values():
        for artifacts in step_run.outputs.values():
            for artifact in artifacts:
                if artifact.id not in linked:
                    link_artifact_version_to_model_version(artifact, version)
                    linked.add(artifact.id)
    return version


def _linked_artifacts(version: Any) -> list[Any]:
    return [link.artifact_version for link in Client().list_model_version_artifact_links(
        model_version_id=version.id, size=1000).items]


def _production_metrics(model_name: str, exclude_id: Any) -> dict[str, Any] | None:
    try:
        current = Client().get_model_version(model_name, ModelStages.PRODUCTION)
    except KeyError:
        return None
    if current.id == exclude_id:
        return None
    return current.run_metadata.get("evaluation_metrics")


def _register_in_mlflow(name: str, zenml_version_id: str, adapter: LoraAdapter, metrics: dict[str, Any],
                       promote: bool, settings: Any = None, card: str | None = None) -> str | None:
    """The adapter as an MLflow pyfunc model (publishing/mlflow_pyfunc.py; ``settings``: a ChatModelSettings, by
    default the adapter's base model with default generation settings) with
    its model card as README.md, registered as the MLflow model version of this ZenML model version, with the
    base model and metrics as tags. Exactly one per ZenML version: a re-run after a kill finds the one it made by
    its tag (created with it, atomically) instead of adding another, and brings the alias in line with the stage."""
    from publishing.mlflow_pyfunc import log_chat_model

    if mlflow.active_run() is None:
        return None
    client = mlflow.MlflowClient()
    version = _mlflow_version_of(client, name, zenml_version_id)
    if version is None:
        source = log_chat_model(adapter, settings or _chat_model_settings(ModelVersionSpec(name=name, config_key=""),
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


def _chat_model_settings(spec: ModelVersionSpec, adapter: LoraAdapter) -> Any:
    """What the registered model serves with: the model section and system prompt the adapter was made with, and
    the evaluation's generation settings; without those (a spec built by hand), the adapter's base defaults."""
    from llm_trainer.config import ModelConfig
    from publishing.mlflow_pyfunc import ChatModelSettings

    if spec.made_from is None:
        return ChatModelSettings(ModelConfig(base_model=adapter.base_model), "", spec.max_new_tokens, spec.batch_size)
    return ChatModelSettings(spec.made_from.model, spec.made_from.data.system_prompt, spec.max_new_tokens,
                             spec.batch_size)


def _model_card(spec: ModelVersionSpec, metrics: dict[str, Any], base_metrics: dict[str, Any],
                source_fingerprint: str, version: str) -> str | None:
    """The model card of the registered version: what made it, and its metrics against the base model's."""
    if spec.made_from is None:
        return None
    from llm_trainer.model_card import card_from_config, render

    base_numbers = {k: v for k, v in base_metrics.items() if isinstance(v, int | float)}
    return render(card_from_config(spec.made_from, metrics=metrics, base_metrics=base_numbers,
                                   data_fingerprint=source_fingerprint[:8], version=version))
