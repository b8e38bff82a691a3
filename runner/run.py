"""Run one pipeline command and collect its summary."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError
from runner import stack
from runner.options import check_stack_supports, parse_schedule, pipeline_settings, step_options
from runner.stale import OWNER_KEY, owner_marker
from steps.names import EVALUATE_BASE, EVALUATE_FINETUNED

TRACKED = {"train", "evaluate", "full"}


def command_for_this_machine(command: str, cfg: RunConfig) -> str:
    """``full`` on a machine other than 0 of a multi-machine run trains its share only: evaluation and
    registration run once, on machine 0 (the same command can then run on every node)."""
    from llm_trainer.training.distributed import machine_rank

    machines, rank = cfg.training.distributed.num_machines, machine_rank(cfg)
    if command != "full" or machines == 1 or rank == 0:
        return command
    print(f"machine {rank} of {machines}: `full` runs as `train` here; machine 0 evaluates and registers, once",
          file=sys.stderr, flush=True)
    return "train"


def run_pipeline_command(command: str, cfg: RunConfig, adapter_path: str | None = None,
                         no_cache: bool = False, debug: bool = False, schedule: str | None = None
                         ) -> dict[str, Any]:
    command = command_for_this_machine(command, cfg)
    if not debug:
        # A failing step re-raises its exception (FAIL_FAST); the CLI prints one line for it.
        for name in ("zenml.orchestrators.step_launcher", "zenml.orchestrators.local.local_orchestrator"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    started = time.time()
    cfg = with_init_adapter_folder(cfg)
    with owner_marker() as owner:  # held while the run runs: a later command can tell if this process died
        configured, params = configure_run(command, cfg, adapter_path, no_cache, schedule, owner)
        pipeline_run = configured(**params)
    if pipeline_run is None:  # scheduled: the orchestrator runs it later
        return {"pipeline": configured.name, "status": "scheduled", "schedule": schedule, "steps": {},
                "run_id": None, "run_name": f"{cfg.name}-{command}",
                "wall_time_s": round(time.time() - started, 2)}
    summary = run_summary(pipeline_run.id)
    summary["wall_time_s"] = round(time.time() - started, 2)
    return summary


def with_init_adapter_folder(cfg: RunConfig) -> RunConfig:
    """``model.init_adapter`` as a folder: a registered version (production, staging, a number...) of this
    config's model is looked up here, so the pipeline (and its cache key) gets the folder it stands for."""
    value = cfg.model.init_adapter
    if value is None or Path(value).expanduser().is_dir():
        return cfg
    from runner.models import adapter_of_version, model_name

    try:
        adapter = adapter_of_version(model_name(cfg), value)
    except UserError as exc:
        raise UserError(f"model.init_adapter: {str(exc).split(': ', 1)[-1]}") from None
    cfg = cfg.model_copy(deep=True)
    cfg.model.init_adapter = str(adapter.path)
    return cfg


def configure_run(command: str, cfg: RunConfig, adapter_path: str | None = None,
                  no_cache: bool = False, schedule: str | None = None, owner: dict[str, Any] | None = None
                  ) -> tuple[Any, dict[str, Any]]:
    """The pipeline of ``command`` with every run option applied, and its parameters; nothing runs yet.
    ``owner``: this process's marker, recorded by a run that runs in this process (local orchestrator)."""
    stack.init_store()
    if cfg.zenml.stack:
        stack.use_stack(cfg.zenml.stack)
    from zenml.enums import ExecutionMode

    from pipelines import evaluate_pipeline, full_pipeline, process_pipeline, train_pipeline

    options: dict[str, Any] = {}
    if command == "process":
        pipeline, params = process_pipeline, {"data": cfg.data, "model": cfg.model, "seed": cfg.seed}
    else:
        pipeline = {"train": train_pipeline, "evaluate": evaluate_pipeline, "full": full_pipeline}[command]
        params = {"config": cfg}
        if command == "evaluate":
            params["adapter_path"] = adapter_path
    if command in TRACKED and not cfg.zenml.stack:
        stack.ensure_stack()
    if command in TRACKED:
        stack.ensure_mlflow_experiment(cfg.name)
        options["settings"] = {"experiment_tracker": {"experiment_name": cfg.name}}
    options["settings"] = {**options.get("settings", {}), **pipeline_settings(cfg)}
    if cfg.zenml.secrets:  # by name: ZenML resolves them into environment variables where each step runs
        options["secrets"] = list(cfg.zenml.secrets)
    steps = step_options(cfg, command)
    if command == "evaluate":
        steps = {k: v for k, v in steps.items() if k == (EVALUATE_FINETUNED if adapter_path else EVALUATE_BASE)}
    options["steps"] = steps
    if schedule:
        options["schedule"] = parse_schedule(schedule, f"{cfg.name}-{command}")
    check_stack_supports(cfg, command, options.get("schedule"))
    if owner and not schedule and stack.runs_in_this_process():
        options["extra"] = {OWNER_KEY: owner}
    if cfg.zenml.run_config:  # ZenML's own format, for what the zenml section does not translate
        options["config_path"] = str(Path(cfg.zenml.run_config).expanduser())
    configured = pipeline.with_options(
        execution_mode=ExecutionMode.FAIL_FAST,
        enable_cache=cfg.zenml.enable_cache and not no_cache,
        tags=cfg.zenml.tags,
        run_name=f"{cfg.name}-{command}-{{date}}-{{time}}",
        **options,
    )
    return configured, params


def run_summary(run_id: Any) -> dict[str, Any]:
    """Pipeline name, run id, status and each step's key figures (its report, metrics and decision artifacts)."""
    from zenml.client import Client

    pipeline_run = Client().get_pipeline_run(run_id)
    steps = {}
    for name, step_run in pipeline_run.steps.items():
        figures: dict[str, Any] = {"status": str(step_run.status.value)}
        for output_name, versions in step_run.outputs.items():
            version = versions[0] if isinstance(versions, list) else versions
            if output_name.endswith(("_report", "_metrics", "_decision")) and version.data_type.attribute == "dict":
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
