"""The command line's main: parse the arguments, set up logging and signals, run the command, and turn what the
user can act on (a bad config or data source, an unreachable Hub, a full disk) into one line on stderr and exit
status 2; Ctrl-C and SIGTERM are one line too, and exit statuses 130 and 143."""

from __future__ import annotations

import logging
import os
import sys

from llm_trainer.errors import UserError
from llm_trainer.fsutil import disk_full
from llm_trainer.hub_check import hub_failure
from runner.arguments import parse_args
from runner.commands import run_command
from runner.quiet import (INTERRUPTED, TERMINATED, Terminated, quiet_dependencies, split_answer_stream,
                          stop_on_signals)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.verbose)
    stop_on_signals()
    # `use`: only the answer goes to stdout (`use --prompt ... > answer.txt`), everything else to stderr.
    args.answer_stream = split_answer_stream() if args.command == "use" else sys.stdout
    try:
        return run_command(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # an unreachable Hub or a full disk is one line, wherever it shows up
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


class _LevelPrefix(logging.Formatter):
    """'warning: ...' and 'error: ...'; INFO lines (--verbose) as they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: bool = False) -> None:
    """The library's warnings (skipped input lines, truncated prompts) go to stderr as one line each; with
    --verbose its INFO lines too. Dependencies' notices that are not the user's problem are silenced."""
    quiet_dependencies(verbose)
    if not (sys.stdout.isatty() and sys.stderr.isatty()):  # colour codes only on a terminal (ZenML logs to stdout)
        os.environ.setdefault("ZENML_LOGGING_COLORS_DISABLED", "true")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix())
    library = logging.getLogger("llm_trainer")
    library.addHandler(handler)
    library.setLevel(logging.INFO if verbose else logging.WARNING)
    library.propagate = False
