"""The command line's arguments: one sub-parser per command, each with its own options, and the checks that
need no file (an option of another command, options that go together)."""

from __future__ import annotations

import argparse
from typing import Any

from runner.argument_types import number as _number
from runner.commands import COMMANDS
from runner.models_cli import add_arguments as add_models_arguments
from runner.serve import add_arguments as add_serve_arguments

DESCRIPTION = """Command line: run the project's ZenML pipelines with one validated YAML config.

    python run_pipeline.py [full] --config configs/quickstart.yaml      # the whole workflow (default)
    python run_pipeline.py process --config configs/reasoning.yaml --set data.max_samples=1000
    python run_pipeline.py use --config configs/quickstart.yaml --model-version production --interactive

Every bad config or data source is one line on stderr and exit status 2 (``--debug`` shows the
traceback). The config and the data source are checked before ZenML or torch load.
"""

PIPELINE_COMMANDS = ("process", "train", "evaluate", "full")


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and one sub-parser per command (by name): each command's --help lists its own options, and an
    option of another command is an error."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--verbose", action="store_true", help="show the libraries' logs (ZenML, MLflow, "
                        "transformers, bitsandbytes) instead of only their warnings and errors")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", action="append", metavar="YAML", required=True,
                        help="experiment YAML, e.g. configs/quickstart.yaml; repeat to merge overlays in order, "
                             "e.g. --config configs/reasoning.yaml --config configs/stacks/kubernetes.yaml")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.learning_rate=1e-4 (repeatable)")
    pipeline = argparse.ArgumentParser(add_help=False)
    pipeline.add_argument("--summary", metavar="PATH", help="write the run's key figures as JSON to PATH")
    pipeline.add_argument("--no-cache", action="store_true", help="re-run every step even if unchanged")
    pipeline.add_argument("--schedule", metavar="CRON",
                          help='run on a schedule, e.g. "0 3 * * 1" (needs an orchestrator that supports schedules)')
    which = argparse.ArgumentParser(add_help=False)
    group = which.add_argument_group("which adapter")
    group.add_argument("--adapter", metavar="PATH", help="an adapter folder")
    group.add_argument("--model-version", metavar="VERSION",
                       help="a registered version: number, production, staging, latest")

    parser = argparse.ArgumentParser(prog="run_pipeline.py", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help="`run_pipeline.py COMMAND --help` lists a command's own options")
    subparsers: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        subparsers[name] = commands.add_parser(name, parents=parents, help=COMMANDS[name].help,
                                               description=COMMANDS[name].help)
        return subparsers[name]

    for name in PIPELINE_COMMANDS:
        add(name, [common, config, pipeline, which] if name == "evaluate" else [common, config, pipeline])
    subparsers["evaluate"].add_argument(
        "--questions", metavar="FILE.jsonl", help="score the version on these questions instead of the test split "
        "(a `serve --capture` file: lines with a 'reference' are scored, the others skipped); no pipeline runs")
    use = add("use", [common, config, which])
    mode = use.add_argument_group("what to do (at least one)")
    mode.add_argument("--interactive", action="store_true", help="chat with history and streamed replies")
    mode.add_argument("--prompt", help="answer one prompt (only the answer goes to stdout)")
    mode.add_argument("--input", metavar="IN.jsonl", help='answer {"prompt": ...} lines in batches; every other '
                      "field of a line is kept in its output line")
    mode.add_argument("--output", metavar="OUT.jsonl", help="where --input answers go")
    mode.add_argument("--merge", metavar="DIR", help="write the base model with the adapter merged (safetensors) "
                      "to DIR, which must be new or empty")
    mode.add_argument("--merge-weights", choices=("original", "dequantized"), default="original",
                      help="with --merge: merge into the base model's original 16-bit weights (default), or into "
                      "the NF4 weights a 4-bit run trained and was evaluated on, dequantized (answers as evaluated)")
    mode.add_argument("--overwrite", action="store_true", help="with --merge: replace DIR if it holds a merged "
                      "model written by an earlier --merge (never any other folder)")
    sampling = use.add_argument_group("decoding (greedy unless --temperature > 0)")
    sampling.add_argument("--temperature", type=_number(float, 0.0), default=0.0,
                          help="0 (default): greedy, as in evaluation; above 0: sample")
    sampling.add_argument("--top-p", type=_number(float, 0.0, 1.0, low_open=True), default=1.0,
                          help="nucleus sampling: keep the most likely tokens up to this probability (default 1)")
    sampling.add_argument("--max-new-tokens", type=_number(int, 1), metavar="N",
                          help="tokens per answer at most (default: the config's evaluation.max_new_tokens)")
    add_serve_arguments(add("serve", [common, config, which]))
    pairs = add("pairs", [common, config, which])
    pairs.add_argument("--output", metavar="PAIRS.jsonl", required=True, help="where the pairs go (pairs_chat "
                       "shape: data.processor: preference reads it)")
    pairs.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    add("stack", [common])
    add_models_arguments(add("models", [common, config]))
    return parser, subparsers


def _takes(parser: argparse.ArgumentParser, option: str) -> bool:
    """Whether ``parser`` has the option string ``option``: argparse has no public way to ask."""
    return option in parser._option_string_actions  # noqa: SLF001


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["full", *argv]  # the whole workflow is the default command
    parser, subparsers = build_parsers()
    args, extra = parser.parse_known_args(argv)
    command = subparsers[args.command]
    if extra:
        unknown = next((a for a in extra if a.startswith("-")), extra[0])
        option = unknown.split("=", 1)[0]
        owners = [name for name, sub in subparsers.items() if _takes(sub, option)]
        where = f"; it is an option of: {', '.join(owners)}" if owners else ""
        command.error(f"{args.command} does not take {' '.join(extra)}{where} "
                      f"(`run_pipeline.py {args.command} --help` lists its options)")
    if args.command == "use":
        if not (args.interactive or args.prompt is not None or args.input or args.merge):
            command.error("use needs --interactive, --prompt, --input or --merge")
        if args.input and not args.output:
            command.error("--input needs --output")
        if args.output and not args.input:
            command.error("--output goes with --input")
        if args.overwrite and not args.merge:
            command.error("--overwrite goes with --merge")
        if args.merge_weights != "original" and not args.merge:
            command.error("--merge-weights goes with --merge")
        if args.temperature == 0 and args.top_p != 1.0:
            command.error("--top-p applies when sampling: give --temperature above 0 too")
    return args
