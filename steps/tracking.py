"""MLflow logging inside a step whose experiment tracker (the stack's) has started an MLflow run.

Every call is a no-op when no MLflow run is active, so steps also run on a stack without a tracker.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

MAX_PARAMS_PER_CALL = 100  # MLflow's batch limit


def start(params: dict[str, str], tags: dict[str, str]) -> None:
    if mlflow.active_run() is None:
        return
    items = list(params.items())
    for start_at in range(0, len(items), MAX_PARAMS_PER_CALL):
        mlflow.log_params(dict(items[start_at:start_at + MAX_PARAMS_PER_CALL]))
    mlflow.set_tags(tags)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if mlflow.active_run() is None:
        return
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    mlflow.log_metrics(numbers, step=step)


def log_final_metrics(metrics: dict[str, float]) -> None:
    """A run's summary figures at its last step (``global_step``): logged without a step they would land at
    step 0, and every curve that shares a name (eval_loss, train_tokens_per_second) would end with a jump back
    to the start."""
    step = metrics.get("global_step")
    log_metrics(metrics, step=int(step) if isinstance(step, int | float) else None)


def log_artifact(path: Path) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_artifact(str(path))
