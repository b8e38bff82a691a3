"""Command line: run the project's ZenML pipelines with one validated YAML config.

    python run_pipeline.py [full] --config configs/quickstart.yaml      # the whole workflow (default)
    python run_pipeline.py process --config configs/reasoning.yaml --set data.max_samples=1000
    python run_pipeline.py use --config configs/quickstart.yaml --model-version production --interactive

Every bad config or data source is one line on stderr and exit status 2 (``--debug`` shows the
traceback). The config, the data source and its fingerprint are checked before ZenML or torch load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from llm_trainer.paths import state_dir

COMMANDS = {
    "process": "load -> preprocess -> tokenize",
    "train": "process (cached when unchanged) -> QLoRA training, tracked in MLflow",
    "evaluate": "process (cached) -> evaluate the base model, or --adapter / --model-version",
    "full": "process -> train -> evaluate base and fine-tuned -> register and promote (default)",
    "use": "chat (--interactive), answer --prompt or --input FILE, or --merge DIR, with an adapter",
    "serve": "an OpenAI-compatible API (/v1/chat/completions, /v1/models) for an adapter, on 127.0.0.1 by default",
    "stack": "set up (once) and show the ZenML stack and MLflow store the pipelines run on",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="full", choices=list(COMMANDS),
                        help="; ".join(f"{k}: {v}" for k, v in COMMANDS.items()))
    parser.add_argument("--config", action="append", metavar="YAML",
                        help="experiment YAML, e.g. configs/quickstart.yaml; repeat to merge overlays in order, "
                             "e.g. --config configs/reasoning.yaml --config configs/stacks/kubernetes.yaml")
    parser.add_argument("--schedule", metavar="CRON",
                        help='run on a schedule, e.g. "0 3 * * 1" (needs an orchestrator that supports schedules)')
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.learning_rate=1e-4 (repeatable)")
    parser.add_argument("--summary", metavar="PATH", help="write the run's key figures as JSON to PATH")
    parser.add_argument("--no-cache", action="store_true", help="re-run every step even if unchanged")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    model = parser.add_argument_group("evaluate and use: which adapter")
    model.add_argument("--adapter", metavar="PATH", help="an adapter folder")
    model.add_argument("--model-version", metavar="VERSION", help="a registered version: number, production, staging, latest")
    use = parser.add_argument_group("use")
    use.add_argument("--interactive", action="store_true", help="chat with history and streamed replies")
    use.add_argument("--prompt", help="answer one prompt")
    use.add_argument("--input", metavar="IN.jsonl", help='answer {"prompt": ...} lines in batches')
    use.add_argument("--output", metavar="OUT.jsonl", help="where --input answers go")
    use.add_argument("--merge", metavar="DIR", help="write the base model with the adapter merged (safetensors)")
    from runner.serve import add_arguments as add_serve_arguments

    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    if args.command != "stack" and not args.config:
        parser.error("--config is required")
    if args.command == "use" and not (args.interactive or args.prompt or args.input or args.merge):
        parser.error("use needs --interactive, --prompt, --input or --merge")
    if args.schedule and args.command in ("use", "serve", "stack"):
        parser.error(f"--schedule runs pipelines; {args.command} is not one")
    if args.input and not args.output:
        parser.error("--input needs --output")
    return args


def configure_environment(local_data_and_model: bool) -> None:
    """Project-local ZenML store, no analytics; offline Hub when nothing needs to be downloaded."""
    os.environ.setdefault("ZENML_CONFIG_PATH", str(state_dir() / "zenml"))
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local_data_and_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def configure_logging() -> None:
    """The library's warnings (skipped input lines, truncated prompts) go to stderr as one line each."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    library = logging.getLogger("llm_trainer")
    library.addHandler(handler)
    library.setLevel(logging.WARNING)
    library.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging()
    from llm_trainer.errors import UserError

    try:
        if args.command == "stack":
            configure_environment(local_data_and_model=True)
            from runner import stack

            stack.init_store()
            stack.ensure_stack()
            print(json.dumps(stack.describe_stack(), indent=2))
            return 0
        return run_command(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a Hub that cannot be reached is one line, wherever it shows up
        from llm_trainer.hub_check import hub_failure

        if args.debug or (message := hub_failure(exc)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    from llm_trainer.config import load_config
    from llm_trainer.data.sources import is_local_source, source_fingerprint

    cfg = load_config(args.config, args.overrides)
    fingerprint = source_fingerprint(cfg.data)  # fails fast on a missing source
    if not (cfg.zenml.stack or cfg.zenml.step_operator):  # the model loads on this machine: check it can
        from llm_trainer.modeling import check_attention

        check_attention(cfg.model)
    configure_environment(is_local_source(cfg.data.source) and cfg.model.is_tiny)
    if not cfg.zenml.stack:  # the tokenizer (and model) load here: from the cache, or the Hub must answer
        from llm_trainer.hub_check import check_models

        check_models(cfg)
    from runner.models import resolve_adapter

    adapter = resolve_adapter(cfg, args.adapter, args.model_version)
    if args.command == "use":
        if adapter is None:
            raise_user("use needs --adapter PATH or --model-version VERSION")
        from runner.use import use

        return use(cfg, adapter, args)
    if args.command == "serve":
        from runner.serve import serve

        return serve(cfg, adapter, args)
    from runner.run import run_pipeline_command

    summary = run_pipeline_command(args.command, cfg, fingerprint, adapter_path=str(adapter.path) if adapter else None,
                                   no_cache=args.no_cache, debug=args.debug, schedule=args.schedule)
    summary["config"] = {"name": cfg.name, "paths": args.config, "overrides": args.overrides}
    print_summary(summary)
    print_estimate(cfg, summary)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["status"] in ("completed", "scheduled") else 1


def raise_user(message: str) -> None:
    from llm_trainer.errors import UserError

    raise UserError(message)


SHOWN = {
    "load_data": ("rows_read",),
    "preprocess": ("rows_read", "rows_kept", "dropped", "splits"),
    "train_model": ("eval_loss_before", "eval_loss", "global_step", "train_tokens_per_second", "wall_time_s"),
    "evaluate_base": ("accuracy", "extraction_failed", "eval_loss", "scored", "no_reference"),
    "evaluate_finetuned": ("accuracy", "extraction_failed", "eval_loss", "scored", "no_reference"),
    "register_model": ("model_version", "stage", "reason"),
}


def print_summary(summary: dict[str, Any]) -> None:
    print(f"\n{summary['pipeline']} run {summary['run_name']}: {summary['status']} in {summary['wall_time_s']} s")
    for name, figures in summary["steps"].items():
        shown = {k: figures[k] for k in SHOWN.get(name, ()) if k in figures}
        if name == "tokenize":
            train = figures.get("splits", {}).get("train", {})
            shown = {k: train[k] for k in ("samples", "tokens", "blocks", "packing_efficiency") if k in train}
        print(f"  {name:<19} {figures['status']:<10} {json.dumps(shown, default=str)}")
    evaluated = {label: summary["steps"][name] for label, name in (("base", "evaluate_base"),
                 ("fine-tuned", "evaluate_finetuned")) if name in summary["steps"]}
    if any("count_none" in figures for figures in evaluated.values()):
        from llm_trainer.evaluation.report import per_type_text

        print("\n  test answers by type (accuracy on verifiable references; F1 / ROUGE-L on long ones):")
        for line in per_type_text(evaluated):
            print(f"    {line}")


def print_estimate(cfg: Any, summary: dict[str, Any]) -> None:
    """After processing: how long training the processed data should take on the configured card."""
    from llm_trainer.estimates import training_time_estimate

    train = summary["steps"].get("tokenize", {}).get("splits", {}).get("train", {})
    line = training_time_estimate(cfg, int(train.get("tokens", 0)))
    if line and summary["pipeline"] in ("process_pipeline", "full_pipeline"):
        print(f"\n{line}")


if __name__ == "__main__":
    sys.exit(main())
