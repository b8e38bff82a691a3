"""ZenML model versions: the version a run's adapter belongs to, what is recorded on it, and its stage."""

from __future__ import annotations

from typing import Any

from zenml import get_step_context, link_artifact_to_model, log_metadata
from zenml.client import Client
from zenml.enums import ModelStages

from llm_trainer.config import ModelVersionSpec
from llm_trainer.promotion import PromotionDecision


def model_version_for_run(spec: ModelVersionSpec, name: str) -> Any:
    """The version ``name`` of the model, created (with the model) if this is its first run; this pipeline run and
    the artifacts it has made so far are linked to it (lineage from the version back to the data)."""
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
    _link_run(client, version, run_id)
    model = version.to_model_class()
    linked = {link.artifact_version.id for link in client.list_model_version_artifact_links(
        model_version_id=version.id, size=1000).items}
    for step_run in client.get_pipeline_run(run_id).steps.values():
        for artifacts in step_run.outputs.values():
            for artifact in artifacts:
                if artifact.id not in linked:
                    link_artifact_to_model(artifact, model)
                    linked.add(artifact.id)
    return version


def _link_run(client: Client, version: Any, run_id: Any) -> None:
    """Lists the pipeline run among the version's runs, once (a re-run after a kill finds it there).

    Through ZenML's store, not its public API, because none serves: ZenML links a run to a model version itself
    only for the version named by the pipeline's or a step's ``model:``, which is fixed when the run starts, and
    this version is named from the fingerprint of the data the run read (a step's output); the Client can list
    these links but has no call that creates one."""
    from zenml.models import ModelVersionPipelineRunRequest

    if not client.list_model_version_pipeline_run_links(model_version_id=version.id, pipeline_run_id=run_id).total:
        client.zen_store.create_model_version_pipeline_run_link(
            ModelVersionPipelineRunRequest(model_version=version.id, pipeline_run=run_id))


def production_version(model_name: str, exclude_id: Any) -> Any:
    """The model's production version, if it has one other than ``exclude_id`` (else None)."""
    try:
        current = Client().get_model_version(model_name, ModelStages.PRODUCTION)
    except KeyError:
        return None
    return None if current.id == exclude_id else current


def production_metrics(model_name: str, exclude_id: Any) -> dict[str, Any] | None:
    """The evaluation metrics of the model's production version, if it has one other than ``exclude_id``."""
    current = production_version(model_name, exclude_id)
    return None if current is None else current.run_metadata.get("evaluation_metrics")


def record_decision(version: Any, decision: PromotionDecision, metrics: dict[str, Any], base_metrics: dict[str, Any],
                    base_model: str, source_fingerprint: str, trainer: str | None = None,
                    production_before: int | None = None) -> None:
    """The version's metrics (numbers only), the base model's, what it was made from (base model, data, trainer)
    and the promotion decision as its metadata, and, when it is promoted, the production version it replaces; its
    stage: production if promoted (the previous production version is archived), else staging."""
    metadata = {"evaluation_metrics": metrics, "base_model_metrics":
                {k: v for k, v in base_metrics.items() if isinstance(v, int | float)},
                "base_model": base_model, "source_fingerprint": source_fingerprint, "promotion": decision.as_dict()}
    if trainer:
        metadata["trainer"] = trainer
    if decision.promote and production_before is not None:
        metadata["production_before"] = int(production_before)
    log_metadata(metadata=metadata, model_version_id=version.id)
    Client().update_model_version(model_name_or_id=version.model.id, version_name_or_id=version.id, force=True,
                                  stage=ModelStages.PRODUCTION if decision.promote else ModelStages.STAGING)


def record_mlflow_version(version: Any, mlflow_version: str | None) -> None:
    """Which MLflow model version stands for this ZenML version (none without an MLflow tracker)."""
    if mlflow_version is not None:
        log_metadata(metadata={"mlflow_model_version": mlflow_version}, model_version_id=version.id)
