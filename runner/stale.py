"""Runs whose process died. A pipeline run on the local orchestrator records, in its configuration's
``extra``, the lock file its process holds while it runs; a run still 'running' whose lock is free (the kernel
drops a dead process's locks) was killed, and is marked failed in ZenML and MLflow by the next command."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_trainer.paths import state_dir

logger = logging.getLogger("llm_trainer.runner")
OWNER_KEY = "llm_trainer_owner"
UNFINISHED = ("initializing", "provisioning", "running")


def _live_dir() -> Path:
    folder = state_dir() / "live"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def owner_marker() -> Iterator[dict[str, Any]]:
    """Hold a lock file for as long as this process runs a pipeline; yields what the run records."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path, staging = _live_dir() / f"{token}.lock", _live_dir() / f".{token}.tmp"
    with open(staging, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.replace(staging, path)  # visible to others only once locked
        try:
            yield {"token": token, "pid": os.getpid(), "host": socket.gethostname()}
        finally:
            path.unlink(missing_ok=True)


def owner_alive(token: str) -> bool:
    path = _live_dir() / f"{token}.lock"
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    return False


def fail_stale_runs(mlflow_uri: str | None) -> list[str]:
    """Mark the unfinished runs of dead processes on this machine as failed, in ZenML and in the MLflow store at
    ``mlflow_uri`` (skipped when None); returns their names."""
    from zenml.client import Client

    client, stale = Client(), []
    for status in UNFINISHED:
        for run in client.list_pipeline_runs(status=status, size=100, hydrate=True).items:
            owner = (run.config.extra or {}).get(OWNER_KEY)
            if not owner or owner.get("host") != socket.gethostname() or owner_alive(owner["token"]):
                continue
            _fail_zenml_run(client, run, owner)
            stale.append(run.name)
    if stale and mlflow_uri is not None:
        _fail_mlflow_runs(mlflow_uri, stale)
    if stale:
        logger.warning("marked %d run(s) whose process died as failed: %s", len(stale), ", ".join(stale))
    for lock in _live_dir().glob("*.lock"):  # markers of processes killed before their run was recorded
        owner_alive(lock.stem)
    return stale


def _fail_zenml_run(client: Any, run: Any, owner: dict[str, Any]) -> None:
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate
    from zenml.utils.time_utils import utc_now

    for step_run in run.steps.values():
        if not ExecutionStatus(step_run.status).is_finished:
            client.zen_store.update_run_step(step_run.id, StepRunUpdate(status=ExecutionStatus.FAILED,
                                                                        end_time=utc_now()))
    reason = f"its process ({owner['pid']} on {owner['host']}) died"
    client.zen_store.update_run(run.id, PipelineRunUpdate(status=ExecutionStatus.FAILED, status_reason=reason))


def _fail_mlflow_runs(uri: str, run_names: list[str]) -> None:
    """The MLflow tracker names its runs after the ZenML run; the ones left RUNNING are failed too."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for name in run_names:
        for mlflow_run in client.search_runs(experiments, filter_string=f"tags.mlflow.runName = '{name}' and "
                                                                        "attributes.status = 'RUNNING'"):
            client.set_terminated(mlflow_run.info.run_id, "FAILED")
