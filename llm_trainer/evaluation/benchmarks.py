"""Standard benchmarks through EleutherAI's lm-eval-harness, run on an already-loaded model.

lm-eval (imported lazily: it is slow to import) scores the model on its registered tasks or on task YAMLs
under ``include_path``. Without Hub access a task whose data set is not cached fails at once with one line.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm_trainer.errors import UserError, one_line_with_type

PREFIX = "benchmark"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class BenchmarkError(UserError):
    """A benchmark task cannot run (unknown name, data set not loadable); the message is one line."""


def run_benchmarks(model: Any, tokenizer: Any, tasks: list[str], *, limit: int | None = None,
                   include_path: str | Path | None = None, batch_size: int = 8,
                   max_new_tokens: int = 256) -> dict[str, float]:
    """Score ``model`` (a transformers causal LM or a peft PeftModel) on lm-eval ``tasks``, ``limit`` examples
    each; returns ``{"benchmark.<task>.<metric>": value}`` with the filter name joined to the metric by '_',
    and ``benchmark.<task>.samples``."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    if not tasks:
        raise BenchmarkError("evaluation.benchmarks: no task given")
    manager = _task_manager(str(include_path) if include_path else None, tasks)
    specs: list[Any] = []
    with _offline_without_hub():
        for name in tasks:
            specs += _load_task(manager, name)
    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, backend="causal")
        results = simple_evaluate(model=lm, tasks=specs, task_manager=manager, limit=limit,
                                  gen_kwargs={"max_gen_toks": max_new_tokens}, bootstrap_iters=0,
                                  log_samples=False)
    finally:
        model.train(was_training)
    return flatten_results(results["results"])


def flatten_results(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """lm-eval's per-task results as flat float metrics, stderr and non-numeric entries left out; lm-eval's
    ``sample_len`` (the number of examples scored) becomes ``samples``."""
    flat: dict[str, float] = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if "_stderr" in key or isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
                continue
            metric = "samples" if key == "sample_len" else "_".join(part for part in key.split(",") if part)
            flat[f"{PREFIX}.{_clean(task)}.{_clean(metric)}"] = float(value)
    return flat


def _clean(name: str) -> str:
    return _UNSAFE.sub("_", name.strip()).strip("_")


@functools.cache
def _manager(include_path: str | None, include_defaults: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _task_manager(include_path: str | None, tasks: list[str]) -> Any:
    """A cached TaskManager; indexing lm-eval's own thousands of tasks takes seconds, so a run whose tasks
    all live under ``include_path`` indexes only that folder."""
    if include_path:
        local = _manager(include_path, False)
        if all(name in local.all_tasks for name in tasks):
            return local
    return _manager(include_path, True)


def _load_task(manager: Any, name: str) -> list[Any]:
    """The task, group or tag ``name`` as lm-eval objects, its data set loaded."""
    if name not in manager.all_tasks:
        raise BenchmarkError(f"evaluation.benchmarks: {name!r} is not a known lm-eval task, group or tag")
    try:
        loaded = manager.load([name])
    except Exception as exc:
        cause = one_line_with_type(exc)
        if isinstance(exc, OSError) or type(exc).__name__.endswith("NotFoundError"):
            raise BenchmarkError(f"evaluation.benchmarks: task {name!r} could not load its data set "
                                 f"(no Hub access?): {cause}") from None
        raise BenchmarkError(f"evaluation.benchmarks: task {name!r} could not be built: {cause}") from None
    if name in loaded["groups"]:
        return [loaded["groups"][name]]
    return list(loaded["tasks"].values())


@contextmanager
def _offline_without_hub() -> Iterator[None]:
    """Offline mode while the Hub does not answer, so that data set loading fails (or uses the cache) at
    once instead of retrying for minutes. huggingface_hub and datasets read HF_HUB_OFFLINE when imported,
    so their module flags are switched, and restored afterwards."""
    import datasets.config
    from huggingface_hub import constants

    if datasets.config.HF_HUB_OFFLINE or _hub_reachable():
        yield
        return
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:
        return False
    return True
