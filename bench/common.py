"""Shared benchmark plumbing: isolated offline state, workers in subprocesses, medians and result tables.

Importing this module points every store the project touches (LLM_TRAINER_HOME, the ZenML store, the
Hugging Face caches) at one temporary folder and turns the Hub off, before datasets, transformers or
zenml are imported. Worker subprocesses inherit the folder through ``LLM_TRAINER_BENCH_DIR``.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
SAMPLE_DATA = ROOT / "data" / "sample" / "natural_reasoning_sample.jsonl"
BENCH_DIR_ENV = "LLM_TRAINER_BENCH_DIR"


def _configure_environment() -> Path:
    inherited = os.environ.get(BENCH_DIR_ENV)
    base = Path(inherited or tempfile.mkdtemp(prefix="llm-trainer-bench-"))
    if not inherited and not os.environ.get("LLM_TRAINER_BENCH_KEEP"):
        atexit.register(shutil.rmtree, base, ignore_errors=True)  # only the process that made it removes it
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from llm_trainer.paths import isolated_environment

    env = {
        BENCH_DIR_ENV: str(base),
        **isolated_environment(base),
        # OpenMP threads that spin while waiting make torch 10-20x slower whenever another process wants the
        # same cores (measured here: 20 training steps took 50-67 s instead of 4-5 s next to a test run).
        # Both sides of every comparison get the same setting; export OMP_WAIT_POLICY=ACTIVE to override.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    for key, value in env.items():
        if not inherited or key not in os.environ:  # a worker keeps what its parent set (e.g. its own cache)
            os.environ[key] = value
    return base


BENCH_DIR = _configure_environment()


def scratch(name: str) -> Path:
    """A fresh sub-folder of the benchmark folder (unique per call)."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=BENCH_DIR))


# ----------------------------------------------------------------------------------------------- workers


def run_worker(module: str, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> dict[str, Any]:
    """Run ``python -m module args`` from the project root; returns its last JSON stdout line plus the
    command's wall time (``wall_s``: interpreter start and imports included)."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                               env={**os.environ, **(env or {})}, timeout=timeout)
    wall = time.perf_counter() - started
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout)[-3000:]
        raise RuntimeError(f"worker {module} {' '.join(args)} failed (exit {completed.returncode}):\n{tail}")
    return {**json.loads(lines[-1]), "wall_s": wall}


def run_timed(command: list[str], env: dict[str, str] | None = None, timeout: int = 900) -> float:
    """Wall seconds of a command run from the project root; raises with its output tail if it fails."""
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})},
                               timeout=timeout)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {completed.returncode}):\n"
                           f"{(completed.stderr + completed.stdout)[-3000:]}")
    return seconds


def emit(result: dict[str, Any]) -> None:
    """A worker's result: one JSON line on stdout."""
    print(json.dumps(result), flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------------------------------------ tables


def row(metric: str, project: float, baseline: float, unit: str, goal: str = "", higher_is_better: bool = True,
        samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """One table row; ratio = project / baseline (or baseline / project when lower is better)."""
    if higher_is_better:
        ratio = project / baseline if baseline else float("nan")
    else:
        ratio = baseline / project if project else float("nan")
    return {"metric": metric, "project": project, "baseline": baseline, "unit": unit, "ratio": ratio, "goal": goal,
            "samples": samples or {}}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def markdown_table(result: dict[str, Any]) -> str:
    lines = [f"### {result['title']}", "", f"project: {result['project']}  ", f"baseline: {result['baseline']}", "",
             "| metric | project | baseline | unit | ratio | goal |", "|---|---:|---:|---|---:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['metric']} | {_fmt(r['project'])} | {_fmt(r['baseline'])} | {r['unit']} | "
                     f"{_fmt(r['ratio'])} | {r['goal']} |")
    for note in result.get("notes", []):
        lines.append(f"\n- {note}")
    return "\n".join(lines) + "\n"


def report(result: dict[str, Any]) -> dict[str, Any]:
    print(markdown_table(result), flush=True)
    return result


# -------------------------------------------------------------------------------------------------- data


def write_reasoning_rows(path: Path, rows: int, seed: int = 1) -> Path:
    """natural_reasoning-format rows with unique questions, from the sample generator's templates.

    The project's generator cycles its templates evenly, which caps it below 100,000 unique questions;
    here the template is drawn at random, so small templates simply run out of new questions sooner.
    """
    if path.exists():
        return path
    from scripts.make_sample_data import EMPTY_REFERENCE_SHARE, RESPONSE_MODEL, TEMPLATES, write_jsonl

    rng, kinds, seen, out = random.Random(seed), list(TEMPLATES), set(), []
    while len(out) < rows:
        question, answer, response = TEMPLATES[rng.choice(kinds)](rng)
        key = " ".join(question.casefold().split())
        if key in seen:
            continue
        seen.add(key)
        out.append({"question": question, "reference_answer": answer,
                    "responses": [{"response_model": RESPONSE_MODEL, "response": response}]})
    for i in rng.sample(range(rows), round(rows * EMPTY_REFERENCE_SHARE)):
        out[i]["reference_answer"] = ""
    tmp = path.with_suffix(".tmp")
    write_jsonl(out, tmp)
    tmp.rename(path)
    return path


def quickstart_assets(overrides: list[str] | None = None) -> tuple[Any, Any, Any, Any]:
    """(config, processor, processed splits, tokenizer) for the quickstart on data/sample; the tiny
    tokenizer is cached in the benchmark's LLM_TRAINER_HOME after the first call."""
    from llm_trainer.config import load_config
    from llm_trainer.data import build_processor
    from llm_trainer.base_model import prepare_tokenizer

    cfg = load_config(QUICKSTART, [f"data.source={SAMPLE_DATA}", *(overrides or [])])
    processor = build_processor(cfg.data)
    processed, _ = processor.preprocess(processor.load())
    tokenizer = prepare_tokenizer(cfg.model, processed["train"])
    return cfg, processor, processed, tokenizer


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "cpu_model": model, "load_average": [round(x, 2) for x in load]}
