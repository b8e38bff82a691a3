"""The `models` command: a model's registered versions, and promoting or rolling back by hand.

    run_pipeline.py models --config configs/quickstart.yaml                    # list the versions
    run_pipeline.py models --config configs/quickstart.yaml promote 3          # version 3 -> production
    run_pipeline.py models --config configs/quickstart.yaml stage 3 archived   # or staging
    run_pipeline.py models --config configs/quickstart.yaml push 3 --repo user/name [--private]
    run_pipeline.py models --config configs/quickstart.yaml compare [--output versions.png]

A stage change is made in ZenML (the previous production version is archived) and in MLflow (the registered
model's `production` alias follows) together; a promotion records which version it replaced, which `compare`
shows (with the stage, data, base model, trainer and the gate's metrics beside the base model's, per version).
ZenML's own Models page needs ZenML Pro; this needs nothing.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from runner.models import data_fingerprint, find_version, model_name, stage_of

KEY_METRICS = ("accuracy", "eval_loss", "extraction_failed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="the versions: number, stage, key metrics, data fingerprint, created (default)")
    promote = actions.add_parser("promote", help="make version N the production version (ZenML and MLflow alias)")
    promote.add_argument("number", type=int, metavar="N")
    stage = actions.add_parser("stage", help="move version N to staging or archived (a roll-back)")
    stage.add_argument("number", type=int, metavar="N")
    stage.add_argument("stage", choices=("staging", "archived"))
    compare = actions.add_parser("compare", help="the versions side by side: stage, data, base model, trainer, the "
                                 "gate's metrics beside the base model's, accuracy per type or task, and which "
                                 "version production replaced")
    compare.add_argument("--output", metavar="FILE.png", help="also draw the metrics per version as a PNG")
    push = actions.add_parser("push", help="upload version N's adapter, tokenizer and model card to the Hub")
    push.add_argument("number", type=int, metavar="N")
    push.add_argument("--repo", required=True, metavar="USER/NAME", help="the Hub model repository")
    push.add_argument("--private", action="store_true", help="create the repository as private")


def run_models(cfg: RunConfig, args: argparse.Namespace) -> int:
    from runner import stack

    stack.init_store()
    name = model_name(cfg)
    action = args.action or "list"
    if action == "list":
        print(versions_table(name, cfg.registry.promotion_metric))
    elif action == "compare":
        print(compare_versions(cfg, name, args.output))
    elif action == "promote":
        print(set_stage(name, args.number, "production"))
    elif action == "stage":
        print(set_stage(name, args.number, args.stage))
    elif action == "push":
        from runner.hub_push import push_version

        print(push_version(cfg, name, args.number, args.repo, args.private))
    return 0


def version_rows(name: str, promotion_metric: str = "accuracy") -> list[dict[str, Any]]:
    from zenml.client import Client

    existing_versions_or_raise(name)
    versions = Client().list_model_versions(model=name, size=1000, sort_by="asc:number", hydrate=True)
    metrics_shown = (promotion_metric, *(m for m in KEY_METRICS if m != promotion_metric))
    rows = []
    for version in versions.items:
        metadata = version.run_metadata or {}
        metrics = metadata.get("evaluation_metrics") or {}
        rows.append({"number": version.number, "stage": stage_of(version) or "-",
                     **{metric: metrics.get(metric) for metric in metrics_shown},
                     "data": data_fingerprint(version) or "-",
                     "created": version.created.strftime("%Y-%m-%d %H:%M"),
                     "mlflow_version": metadata.get("mlflow_model_version")})
    return rows


def versions_table(name: str, promotion_metric: str = "accuracy") -> str:
    rows = version_rows(name, promotion_metric)
    if not rows:
        return f"model '{name}' has no versions yet"
    metrics = [k for k in rows[0] if k not in ("number", "stage", "data", "created", "mlflow_version")]
    header = ["#", "stage", *metrics, "data", "created"]
    body = [[str(r["number"]), r["stage"], *(_number(r[m]) for m in metrics), r["data"], r["created"]]
            for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [f"model '{name}': {len(rows)} version{'s' if len(rows) != 1 else ''} "
             f"(data: the source's fingerprint, first 8 characters)"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
              for line in [header, *body]]
    return "\n".join(lines)


def compare_versions(cfg: RunConfig, name: str, output: str | None = None) -> str:
    """The versions side by side (llm_trainer/version_compare.py), and the PNG at ``output`` if given."""
    from pathlib import Path

    from llm_trainer.version_compare import compare_png, compare_text
    from publishing.zenml_versions import version_records

    records = version_records(name)
    if not records:
        existing_versions_or_raise(name)
    metric, guards = cfg.registry.promotion_metric, list(cfg.registry.guard_metrics)
    text = compare_text(name, records, metric, guards)
    if output and records:
        path = Path(output)
        if path.suffix.lower() != ".png":
            raise UserError(f"models compare --output: '{output}' must end in .png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(compare_png(name, records, metric, guards))
        text += f"\nchart: {path}"
    return text


def existing_versions_or_raise(name: str) -> None:
    """A UserError when no model ``name`` is registered (a model without versions is fine)."""
    from zenml.client import Client

    try:
        Client().get_model(name)
    except KeyError:
        raise UserError(f"models: no model named '{name}' is registered yet (the full pipeline registers one; "
                        "registry.model_name, else the config's name, names it)") from None


def set_stage(name: str, number: int, stage: str) -> str:
    """Version ``number`` to ``stage`` in ZenML (force: a production version there is archived) and the MLflow
    `production` alias with it: set on this version's MLflow version, or removed if it pointed there."""
    from zenml.client import Client

    version = find_version(name, str(number), what=f"models {'promote' if stage == 'production' else 'stage'}")
    if stage == "production":
        _record_replaced(name, version)
    Client().update_model_version(model_name_or_id=name, version_name_or_id=version.id, stage=stage, force=True)
    mlflow_version = (version.run_metadata or {}).get("mlflow_model_version")
    note = _sync_mlflow_alias(name, str(mlflow_version) if mlflow_version else None, stage)
    return f"model '{name}' version {number}: {stage}; {note}"


def _record_replaced(name: str, version: Any) -> None:
    """On the version about to become production: the one it replaces there (what `compare` shows, and where
    `models promote` rolls back to)."""
    from zenml import log_metadata
    from zenml.client import Client
    from zenml.enums import ModelStages

    try:
        current = Client().get_model_version(name, ModelStages.PRODUCTION)
    except KeyError:
        return
    if current.id != version.id:
        log_metadata(metadata={"production_before": int(current.number)}, model_version_id=version.id)


def _sync_mlflow_alias(name: str, mlflow_version: str | None, stage: str) -> str:
    if mlflow_version is None:
        return "no MLflow model version is recorded for it, so only ZenML changed"
    uri = tracking_uri()
    if uri is None:
        return "the active stack has no MLflow tracker, so only ZenML changed"
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    if stage == "production":
        client.set_registered_model_alias(name, "production", mlflow_version)
        return f"MLflow alias 'production' -> version {mlflow_version}"
    try:
        current = str(client.get_model_version_by_alias(name, "production").version)
    except MlflowException:
        current = None
    if current == mlflow_version:
        client.delete_registered_model_alias(name, "production")
        return f"MLflow alias 'production' removed from version {mlflow_version} (nothing is in production now)"
    return f"MLflow alias 'production' unchanged ({'version ' + current if current else 'not set'})"


def tracking_uri() -> str | None:
    """The active stack's MLflow tracking URI (the project's SQLite store on the local stack)."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    trackers = Client().active_stack_model.components.get(StackComponentType.EXPERIMENT_TRACKER) or []
    return trackers[0].configuration.get("tracking_uri") if trackers else None


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
