"""The run summary: which figures of each step the CLI prints after a pipeline run, the training-time estimate
after processing, and the JSON file that ``--summary PATH`` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_trainer.errors import UserError


def check_summary_path(path: Path) -> None:
    """A path that cannot take the summary fails before the run, not after it."""
    if path.is_dir():
        raise UserError(f"--summary {path}: a folder is there; give a file path, e.g. {path / 'summary.json'}")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"--summary {path}: {parent} is a file, not a folder")


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")


def shown_figures() -> dict[str, tuple[str, ...]]:
    """Which figures of each step the summary prints (imported when a run has finished: zenml is loaded by then)."""
    from steps import names

    evaluation = ("accuracy", "extraction_failed", "eval_loss", "scored", "no_reference", "hit_token_cap")
    return {names.LOAD_DATA: ("rows_read",),
            names.PREPROCESS: ("rows_read", "rows_kept", "dropped", "converted", "splits"),
            names.TRAIN: ("eval_loss_before", "eval_loss", "global_step", "train_tokens_per_second", "wall_time_s"),
            names.EVALUATE_BASE: evaluation, names.EVALUATE_FINETUNED: evaluation,
            names.REGISTER: ("model_version", "stage", "reason")}


def print_summary(summary: dict[str, Any]) -> None:
    from steps import names

    print(f"\n{summary['pipeline']} run {summary['run_name']}: {summary['status']} in {summary['wall_time_s']} s")
    for name, figures in summary["steps"].items():
        shown = {k: figures[k] for k in shown_figures().get(name, ()) if k in figures}
        if name == names.TOKENIZE:
            train = figures.get("splits", {}).get("train", {})
            shown = {k: train[k] for k in ("samples", "tokens", "blocks", "packing_efficiency") if k in train}
            if "overlength" in train:
                shown["too_long_dropped"] = train["overlength"].get("dropped_rows")
        print(f"  {name:<19} {figures['status']:<10} {json.dumps(shown, default=str)}")
        for warning in figures.get("warnings", []):
            print(f"  {'':<19} warning: {warning}")
    evaluated = {label: summary["steps"][name] for label, name in (("base", names.EVALUATE_BASE),
                 ("fine-tuned", names.EVALUATE_FINETUNED)) if name in summary["steps"]}
    if any("count_none" in figures for figures in evaluated.values()):
        from llm_trainer.evaluation.report import per_type_text

        print("\n  test answers by type (accuracy on verifiable references; F1 / ROUGE-L on long ones):")
        for line in per_type_text(evaluated):
            print(f"    {line}")
    from llm_trainer.evaluation.report import per_task_text

    by_task = per_task_text(evaluated)
    if by_task:
        print("\n  test accuracy by task family:")
        for line in by_task:
            print(f"    {line}")


def print_estimate(cfg: Any, summary: dict[str, Any]) -> None:
    """After processing: how long training the processed data should take on the configured card."""
    from llm_trainer.estimates import training_time_estimate
    from steps.names import TOKENIZE

    train = summary["steps"].get(TOKENIZE, {}).get("splits", {}).get("train", {})
    line = training_time_estimate(cfg, int(train.get("tokens", 0)))
    if line and summary["pipeline"] in ("process_pipeline", "full_pipeline"):
        print(f"\n{line}")
