"""`evaluate --questions FILE`: score a version (or an adapter) on questions captured by `serve --capture FILE`.

    python run_pipeline.py evaluate --config configs/quickstart.yaml --model-version production \\
        --questions captured.jsonl [--summary out.json]

Runs here, without a pipeline: the file is read first (the lines with a ``reference`` are scored, the others
counted and skipped with one line), then the model loads as `use` loads it and the config's evaluator (reasoning
or chat) scores its greedy answers, as it scores the test split. The metrics go to stdout, and with ``--summary``
to a JSON file with every example.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig
from llm_trainer.errors import UserError

SHOWN = ("accuracy", "accuracy_verifiable", "token_f1", "rouge_l", "exact_match", "extraction_failed", "examples",
         "scored", "generated_tokens", "generation_tokens_per_second")


def check_questions_args(args: argparse.Namespace) -> None:
    """Before anything loads: --questions goes without the pipeline's --schedule and --no-cache, with an adapter
    or a version, and names a file."""
    for flag, given in (("--schedule", args.schedule), ("--no-cache", args.no_cache)):
        if given:
            raise UserError(f"--questions runs no pipeline: {flag} does not go with it")
    if not (args.adapter or args.model_version):
        raise UserError("evaluate --questions needs --adapter PATH or --model-version VERSION")
    if not Path(args.questions).is_file():
        raise UserError(f"--questions {args.questions}: no such file")


def evaluate_questions(cfg: RunConfig, adapter: Any, label: str | None, args: argparse.Namespace) -> int:
    """Score ``adapter`` on the file's questions that have a reference; print the metrics; exit status 0."""
    from llm_trainer.evaluation.captured import load_questions, questions_dataset, skipped_message

    if cfg.evaluation.evaluator == "sql":
        raise UserError("--questions: the sql evaluator needs each question's database; captured questions are "
                        "scored by the reasoning or chat evaluator (evaluation.evaluator)")
    if adapter is None:
        raise UserError("evaluate --questions needs --adapter PATH or --model-version VERSION")
    found = load_questions(args.questions, cfg.data.system_prompt)
    if (note := skipped_message(found, args.questions)) is not None:
        print(note, file=sys.stderr, flush=True)

    from llm_trainer.evaluation import build_evaluator
    from llm_trainer.inference import load_for_inference
    from llm_trainer.modeling import load_tokenizer

    label = label or f"the adapter in {adapter.path}"
    print(f"evaluating {label} on {len(found.rows)} questions from {args.questions}", file=sys.stderr, flush=True)
    # Every scored line, no judge and no benchmarks: this evaluation is about the captured questions.
    evaluation = cfg.evaluation.model_copy(update={"max_samples": None, "judge": None, "benchmarks": []})
    spec = cfg.model_copy(update={"evaluation": evaluation})
    tokenizer = load_tokenizer(str(adapter.path), cfg.model)
    model = load_for_inference(cfg.model, adapter.base_model, adapter.path, tokenizer)
    result = build_evaluator(spec, adapter.base_model).evaluate(model, tokenizer, questions_dataset(found), [])
    served = {row["row_id"]: row["served_answer"] for row in found.rows}
    for example in result.examples:
        example["served_answer"] = served.get(example.get("row_id"), "")
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    shown = [k for k in SHOWN if k in metrics] or sorted(metrics)
    print(f"{label} on {args.questions}: " + ", ".join(f"{k} {_number(metrics[k])}" for k in shown))
    if args.summary:
        summary = {"questions": str(args.questions), "model": label, "adapter": str(adapter.path),
                   "lines": found.lines, "scored": len(found.rows), "no_reference": found.no_reference,
                   "unreadable_lines": found.unreadable, "metrics": metrics, "examples": result.examples}
        Path(args.summary).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def _number(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
