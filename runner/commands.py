"""The CLI's commands: one function each, listed with its help line in COMMANDS (runner/cli.py runs the one named).

A command that reads a config loads it first (a bad one is one line, exit status 2); those that run a model share
``prepare``: the data source and the model are checked before ZenML or torch load, the environment is set, and the
adapter that --adapter or --model-version names is found. What a command alone needs is imported when it runs, so
that ``--help`` and a bad config answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_trainer.config import RunConfig, load_config
from llm_trainer.errors import UserError
from llm_trainer.hub_check import check_models
from llm_trainer.paths import state_dir
from runner import stack
from runner.models import adapter_and_label
from runner.models_cli import run_models
from runner.serve import serve
from runner.summary import check_summary_path, print_estimate, print_summary, write_summary


def configure_environment(local_data_and_model: bool) -> None:
    """Project-local ZenML store, no analytics; offline Hub when nothing needs to be downloaded."""
    os.environ.setdefault("ZENML_CONFIG_PATH", str(state_dir() / "zenml"))
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local_data_and_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def prepare(cfg: RunConfig, args: argparse.Namespace) -> tuple[Any, str | None]:
    """Before a command runs a model: the data source and the model are checked here, the environment is set,
    and the adapter that --adapter or --model-version names is found; (adapter, what it is), or (None, None)."""
    from llm_trainer.data.sources import is_local_source, local_files

    if is_local_source(cfg.data.source):  # fails fast on a missing or unreadable source; the run hashes it
        local_files(cfg.data.source)
    if not (cfg.zenml.stack or cfg.zenml.step_operator):  # the model loads on this machine: check it can
        from llm_trainer.modeling import check_attention

        check_attention(cfg.model)
    configure_environment(is_local_source(cfg.data.source) and cfg.model.is_tiny)
    if not cfg.zenml.stack:  # the tokenizer (and model) load here: from the cache, or the Hub must answer
        check_models(cfg)
    return adapter_and_label(cfg, getattr(args, "adapter", None), getattr(args, "model_version", None))


def pipeline_command(args: argparse.Namespace) -> int:
    """process, train, evaluate, full: run the command's pipeline and print its summary (and write it with
    --summary); exit status 0 if the run completed or is scheduled, else 1."""
    cfg = load_config(args.config, args.overrides)
    if args.summary:  # a path that cannot take the summary fails now, not after the run
        check_summary_path(Path(args.summary))
    adapter, _ = prepare(cfg, args)  # evaluate loads the config's base model (use and serve: see with_base_model_here)
    from runner.run import run_pipeline_command

    summary = run_pipeline_command(args.command, cfg, adapter_path=str(adapter.path) if adapter else None,
                                   no_cache=args.no_cache, debug=args.debug, schedule=args.schedule)
    summary["config"] = {"name": cfg.name, "paths": args.config, "overrides": args.overrides}
    print_summary(summary)
    print_estimate(cfg, summary)
    if args.summary:
        write_summary(Path(args.summary), summary)
    return 0 if summary["status"] in ("completed", "scheduled") else 1


def evaluate_command(args: argparse.Namespace) -> int:
    """evaluate: the pipeline on the test split, or with --questions FILE the captured questions, here."""
    if not getattr(args, "questions", None):
        return pipeline_command(args)
    from runner.evaluate_questions import check_questions_args, evaluate_questions

    check_questions_args(args)
    cfg = load_config(args.config, args.overrides)
    if args.summary:
        check_summary_path(Path(args.summary))
    adapter, label = prepare(cfg, args)
    return evaluate_questions(cfg, with_base_model_here(cfg, adapter, args) if adapter is not None else None,
                              label, args)


def use_command(args: argparse.Namespace) -> int:
    from llm_trainer.chat import check_input_file, check_merge_target

    cfg = load_config(args.config, args.overrides)
    if args.input:  # before anything loads: a bad file costs seconds, not a model load
        check_input_file(Path(args.input), Path(args.output))
    if args.merge:
        check_merge_target(Path(args.merge), args.overwrite)
    adapter, label = prepare(cfg, args)
    if adapter is None:
        raise UserError("use needs --adapter PATH or --model-version VERSION")
    from runner.use import use

    return use(cfg, with_base_model_here(cfg, adapter, args), args, label)


def serve_command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    adapter, _ = prepare(cfg, args)
    return serve(cfg, with_base_model_here(cfg, adapter, args) if adapter is not None else None, args)


def pairs_command(args: argparse.Namespace) -> int:
    from runner.pairs import check_output, write_pairs

    cfg = load_config(args.config, args.overrides)
    check_output(Path(args.output), args.overwrite)
    adapter, label = prepare(cfg, args)
    if adapter is None:
        raise UserError("pairs needs --adapter PATH or --model-version VERSION: the model whose answers are paired")
    return write_pairs(cfg, with_base_model_here(cfg, adapter, args), Path(args.output), label)


def models_command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    configure_environment(local_data_and_model=True)
    return run_models(cfg, args)


def stack_command(args: argparse.Namespace) -> int:
    configure_environment(local_data_and_model=True)
    stack.init_store()
    stack.ensure_stack()
    print(json.dumps(stack.describe_stack(), indent=2))
    return 0


def with_base_model_here(cfg: RunConfig, adapter: Any, args: argparse.Namespace) -> Any:
    """The adapter with a base model that is on this machine (see base_model_here): a tiny base model that is gone
    is named with the `process` command that rebuilds it from this config."""
    from llm_trainer.base_model import base_model_here

    rebuild = shlex.join(["python", "run_pipeline.py", "process", *[part for path in args.config
                                                                     for part in ("--config", path)],
                          *[part for item in args.overrides for part in ("--set", item)]])
    return dataclasses.replace(adapter, base_model=base_model_here(adapter.base_model, adapter.path, cfg.model,
                                                                  cfg.seed, rebuild))


@dataclasses.dataclass(frozen=True)
class Command:
    run: Callable[[argparse.Namespace], int]
    help: str  # one line: the command's entry in --help, and its own --help's description


COMMANDS = {
    "process": Command(pipeline_command, "load -> preprocess -> tokenize"),
    "train": Command(pipeline_command, "process (cached when unchanged) -> training (SFT, GRPO or DPO), tracked in "
                                       "MLflow"),
    "evaluate": Command(evaluate_command,
                        "process (cached) -> evaluate the base model, or --adapter / --model-version; "
                        "--questions FILE: captured questions"),
    "full": Command(pipeline_command,
                    "process -> train -> evaluate base and fine-tuned -> register and promote (default)"),
    "use": Command(use_command,
                   "chat (--interactive), answer --prompt or --input FILE, or --merge DIR, with an adapter"),
    "serve": Command(serve_command, "an OpenAI-compatible API (/v1/chat/completions, /v1/models) for an adapter, "
                                    "on 127.0.0.1 by default"),
    "pairs": Command(pairs_command, "preference pairs for DPO: a version answers the train questions several times, "
                                    "the verifier judges, a correct and a wrong answer make a pair (--output FILE)"),
    "stack": Command(stack_command, "set up (once) and show the ZenML stack and MLflow store the pipelines run on"),
    "models": Command(models_command,
                      "list a model's registered versions or compare them; promote or stage one by hand; push one "
                      "to the Hub"),
}


def run_command(args: argparse.Namespace) -> int:
    return COMMANDS[args.command].run(args)
