"""Command line: run the project's ZenML pipelines with one validated YAML config.

    python run_pipeline.py [full] --config configs/quickstart.yaml      # the whole workflow (default)
    python run_pipeline.py process --config configs/reasoning.yaml --set data.max_samples=1000
    python run_pipeline.py use --config configs/quickstart.yaml --model-version production --interactive

Every bad config or data source is one line on stderr and exit status 2 (``--debug`` shows the
traceback). The config and the data source are checked before ZenML or torch load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from llm_trainer.paths import state_dir
from runner.arguments import parse_args
from runner.summary import check_summary_path, print_estimate, print_summary, write_summary


def configure_environment(local_data_and_model: bool) -> None:
    """Project-local ZenML store, no analytics; offline Hub when nothing needs to be downloaded."""
    os.environ.setdefault("ZENML_CONFIG_PATH", str(state_dir() / "zenml"))
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local_data_and_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


class _LevelPrefix(logging.Formatter):
    """'warning: ...' and 'error: ...'; INFO lines (--verbose) as they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: bool = False) -> None:
    """The library's warnings (skipped input lines, truncated prompts) go to stderr as one line each; with
    --verbose its INFO lines too. Dependencies' notices that are not the user's problem are silenced."""
    from runner.quiet import quiet_dependencies

    quiet_dependencies(verbose)
    if not (sys.stdout.isatty() and sys.stderr.isatty()):  # colour codes only on a terminal (ZenML logs to stdout)
        os.environ.setdefault("ZENML_LOGGING_COLORS_DISABLED", "true")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix())
    library = logging.getLogger("llm_trainer")
    library.addHandler(handler)
    library.setLevel(logging.INFO if verbose else logging.WARNING)
    library.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.verbose)
    from llm_trainer.errors import UserError
    from runner.quiet import INTERRUPTED, TERMINATED, Terminated, split_answer_stream, stop_on_sigterm

    stop_on_sigterm()
    # `use`: only the answer goes to stdout (`use --prompt ... > answer.txt`), everything else to stderr.
    args.answer_stream = split_answer_stream() if args.command == "use" else sys.stdout
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
    except Exception as exc:  # an unreachable Hub or a full disk is one line, wherever it shows up
        from llm_trainer.hub_check import hub_failure

        from llm_trainer.fsutil import disk_full

        if args.debug or (message := hub_failure(exc) or disk_full(exc)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        terminated = isinstance(exc, Terminated)
        print(f"\n{'terminated (SIGTERM)' if terminated else 'interrupted (Ctrl-C)'}", file=sys.stderr)
        return TERMINATED if terminated else INTERRUPTED
    except BrokenPipeError:  # `... | head`: the reader has gone, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run_command(args: argparse.Namespace) -> int:
    from llm_trainer.config import load_config
    from llm_trainer.data.sources import is_local_source, local_files

    cfg = load_config(args.config, args.overrides)
    if getattr(args, "summary", None):  # a path that cannot take the summary fails now, not after the run
        check_summary_path(Path(args.summary))
    if args.command == "models":
        configure_environment(local_data_and_model=True)
        from runner.models_cli import run_models

        return run_models(cfg, args)
    if args.command == "use":  # before anything loads: a bad file costs seconds, not a model load
        from llm_trainer.chat import check_input_file, check_merge_target

        if args.input:
            check_input_file(Path(args.input), Path(args.output))
        if args.merge:
            check_merge_target(Path(args.merge), args.overwrite)
    if is_local_source(cfg.data.source):  # fails fast on a missing or unreadable source; the run hashes it
        local_files(cfg.data.source)
    if not (cfg.zenml.stack or cfg.zenml.step_operator):  # the model loads on this machine: check it can
        from llm_trainer.modeling import check_attention

        check_attention(cfg.model)
    configure_environment(is_local_source(cfg.data.source) and cfg.model.is_tiny)
    if not cfg.zenml.stack:  # the tokenizer (and model) load here: from the cache, or the Hub must answer
        from llm_trainer.hub_check import check_models

        check_models(cfg)
    from runner.models import adapter_and_label

    adapter, label = adapter_and_label(cfg, getattr(args, "adapter", None), getattr(args, "model_version", None))
    if adapter is not None and args.command in ("use", "serve"):  # evaluate loads the config's base model
        adapter = with_base_model_here(cfg, adapter, args)
    if args.command == "use":
        if adapter is None:
            raise_user("use needs --adapter PATH or --model-version VERSION")
        from runner.use import use

        return use(cfg, adapter, args, label)
    if args.command == "serve":
        from runner.serve import serve

        return serve(cfg, adapter, args)
    from runner.run import run_pipeline_command

    summary = run_pipeline_command(args.command, cfg, adapter_path=str(adapter.path) if adapter else None,
                                   no_cache=args.no_cache, debug=args.debug, schedule=args.schedule)
    summary["config"] = {"name": cfg.name, "paths": args.config, "overrides": args.overrides}
    print_summary(summary)
    print_estimate(cfg, summary)
    if args.summary:
        write_summary(Path(args.summary), summary)
    return 0 if summary["status"] in ("completed", "scheduled") else 1


def with_base_model_here(cfg: Any, adapter: Any, args: argparse.Namespace) -> Any:
    """The adapter with a base model that is on this machine (see base_model_here): a tiny base model that is gone
    is named with the `process` command that rebuilds it from this config."""
    import dataclasses
    import shlex

    from llm_trainer.base_model import base_model_here

    rebuild = shlex.join(["python", "run_pipeline.py", "process", *[part for path in args.config
                                                                     for part in ("--config", path)],
                          *[part for item in args.overrides for part in ("--set", item)]])
    return dataclasses.replace(adapter, base_model=base_model_here(adapter.base_model, adapter.path, cfg.model,
                                                                  cfg.seed, rebuild))


def raise_user(message: str) -> None:
    from llm_trainer.errors import UserError

    raise UserError(message)


if __name__ == "__main__":
    sys.exit(main())
