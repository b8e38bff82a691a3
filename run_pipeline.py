"""Command line: run the project's ZenML pipelines with one validated YAML config.

    python run_pipeline.py [full] --config configs/quickstart.yaml      # the whole workflow (default)
    python run_pipeline.py process --config configs/reasoning.yaml --set data.max_samples=1000

Every bad config or data source is one line on stderr and exit status 2 (``--debug`` shows the
traceback). The config, the data source and its fingerprint are checked before ZenML or torch load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from llm_trainer.paths import state_dir

COMMANDS = {
    "process": "load -> preprocess -> tokenize",
    "train": "process (cached when unchanged) -> QLoRA training, tracked in MLflow",
    "full": "the whole workflow; today: process -> train (evaluate and register join as they land)",
    "stack": "set up (once) and show the ZenML stack and MLflow store the pipelines run on",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="full", choices=sorted(COMMANDS),
                        help="; ".join(f"{k}: {v}" for k, v in COMMANDS.items()))
    parser.add_argument("--config", help="experiment YAML, e.g. configs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.learning_rate=1e-4 (repeatable)")
    parser.add_argument("--summary", metavar="PATH", help="write the run's key figures as JSON to PATH")
    parser.add_argument("--no-cache", action="store_true", help="re-run every step even if unchanged")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.command != "stack" and not args.config:
        parser.error("--config is required")
    return args


def configure_environment(local_data_and_model: bool) -> None:
    """Project-local ZenML store, no analytics; offline Hub when nothing needs to be downloaded."""
    os.environ.setdefault("ZENML_CONFIG_PATH", str(state_dir() / "zenml"))
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local_data_and_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def show_stack() -> dict[str, Any]:
    configure_environment(local_data_and_model=True)
    import zenml_setup

    zenml_setup.ensure_stack()
    return zenml_setup.describe_stack()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from llm_trainer.config import load_config
    from llm_trainer.data.sources import is_local_source, source_fingerprint

    cfg = load_config(args.config, args.overrides)
    fingerprint = source_fingerprint(cfg.data)  # fails fast on a missing source
    configure_environment(is_local_source(cfg.data.source) and cfg.model.is_tiny)

    from zenml.enums import ExecutionMode

    import zenml_setup
    from pipelines import process_pipeline, train_pipeline

    settings: dict[str, Any] = {}
    if args.command == "process":
        pipeline, params = process_pipeline, {"data": cfg.data, "model": cfg.model, "source_fingerprint": fingerprint}
    else:
        zenml_setup.ensure_stack()
        settings["experiment_tracker"] = {"experiment_name": cfg.name}
        pipeline = train_pipeline
        params = {"name": cfg.name, "seed": cfg.seed, "output_dir": cfg.output_dir, "data": cfg.data,
                  "model": cfg.model, "lora": cfg.lora, "training": cfg.training, "source_fingerprint": fingerprint}

    if not args.debug:
        # A failing step re-raises its exception here (FAIL_FAST); one line is printed for it below.
        for name in ("zenml.orchestrators.step_launcher", "zenml.orchestrators.local.local_orchestrator"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    started = time.time()
    pipeline = pipeline.with_options(
        settings=settings,
        execution_mode=ExecutionMode.FAIL_FAST,
        enable_cache=cfg.zenml.enable_cache and not args.no_cache,
        tags=cfg.zenml.tags,
        run_name=f"{cfg.name}-{args.command}-{{date}}-{{time}}",
    )
    pipeline_run = pipeline(**params)
    summary = run_summary(pipeline_run.id)
    summary["config"] = {"name": cfg.name, "path": str(args.config), "overrides": args.overrides}
    summary["wall_time_s"] = round(time.time() - started, 2)
    return summary


def run_summary(run_id: Any) -> dict[str, Any]:
    """Pipeline name, run id, status and each step's key figures (its report artifacts)."""
    from zenml.client import Client

    pipeline_run = Client().get_pipeline_run(run_id)
    steps = {}
    for name, step_run in pipeline_run.steps.items():
        figures: dict[str, Any] = {"status": str(step_run.status.value)}
        for output_name, versions in step_run.outputs.items():
            version = versions[0] if isinstance(versions, list) else versions
            if output_name.endswith(("_report", "_metrics")):
                figures.update(version.load())
            elif output_name == "raw_dataset":
                figures["rows_read"] = version.run_metadata.get("rows")
        steps[name] = figures
    return {
        "pipeline": pipeline_run.pipeline.name if pipeline_run.pipeline else None,
        "run_id": str(pipeline_run.id),
        "run_name": pipeline_run.name,
        "status": str(pipeline_run.status.value),
        "steps": steps,
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{summary['pipeline']} run {summary['run_name']}: {summary['status']} in {summary['wall_time_s']} s")
    for name, figures in summary["steps"].items():
        keys = ("rows_read", "rows_kept", "dropped", "splits")
        shown = {k: figures[k] for k in keys if k in figures and name != "tokenize"}
        if name == "train_model":
            shown = {k: figures[k] for k in ("eval_loss_before", "eval_loss", "global_step",
                                             "train_tokens_per_second", "wall_time_s") if k in figures}
        if name == "tokenize":
            train = figures.get("splits", {}).get("train", {})
            shown = {k: train[k] for k in ("samples", "tokens", "blocks", "packing_efficiency") if k in train}
        print(f"  {name:<12} {figures['status']:<10} {json.dumps(shown)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from llm_trainer.errors import UserError

    if args.command == "stack":
        print(json.dumps(show_stack(), indent=2))
        return 0
    try:
        summary = run(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
