"""A quiet terminal by default: the dependencies' notices that are not the user's problem are silenced where
they come from; ``--verbose`` brings the libraries' logs back. Also: the answer stream kept apart from
everything else, and Ctrl-C and SIGTERM as one line.

Call ``quiet_dependencies`` before zenml, bitsandbytes or transformers are imported: some of them read their
settings (or log) at import time.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
import warnings
from typing import TextIO

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped with Ctrl-C
TERMINATED = 143  # 128 + SIGTERM

# Each entry: the logger a notice comes from, and a piece of its text.
SILENCED = (
    # bitsandbytes tries to download an optional CPU kernel from the Hub at import time and says so when it
    # cannot; its own fallback is what the project tests and uses.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    # ZenML's MLflow tracker disables autologging framework by framework; fastai is not installed here.
    ("zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker",
     "Failed to disable MLflow autologging"),
    # Hints that point at the user's global ZenML store (which shows none of the project's runs) and at ZenML
    # Pro; `make dashboard` and `run_pipeline.py models` are the project's ways in.
    ("zenml.pipelines.pipeline_definition", "zenml login --local"),
    ("zenml.orchestrators.step_run_utils", "ZenML Pro"),
)
# peft's prepare_model_for_kbit_training still calls the old names (transformers 5 renamed them).
DEPRECATED_NAMES = r".*`(gradient_checkpointing_enable|is_gradient_checkpointing)` is deprecated"


class _DropMessages(logging.Filter):
    def __init__(self, pieces: tuple[str, ...]):
        super().__init__()
        self.pieces = pieces

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(piece in message for piece in self.pieces)


def quiet_dependencies(verbose: bool = False) -> None:
    """Silence the known notices (or, with ``verbose``, show the libraries' INFO logs)."""
    if verbose:
        os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "INFO")
        logging.getLogger("llm_trainer").setLevel(logging.INFO)
        return
    os.environ.setdefault("ZENML_LOGGING_VERBOSITY", "WARN")  # run and step chatter; warnings still show
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, piece in SILENCED:
        by_logger[name] = (*by_logger.get(name, ()), piece)
    for name, pieces in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(pieces))
    warnings.filterwarnings("ignore", message=DEPRECATED_NAMES, category=FutureWarning)
    # MLflow sets its own loggers' level when imported: "Creating initial MLflow database tables...",
    # "Validating input example...", and a bar for every artifact download.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def split_answer_stream() -> TextIO:
    """From here on everything written to stdout (file descriptor 1, libraries and subprocesses included)
    goes to stderr; the returned stream is the original stdout, for the answer alone."""
    sys.stdout.flush()
    answer = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    return answer


def interrupted_line() -> str:
    return "interrupted (Ctrl-C)"


class Terminated(KeyboardInterrupt):
    """SIGTERM (Kubernetes, systemd, `kill`), raised where Ctrl-C raises KeyboardInterrupt: the same clean stop
    (locks released, the run marked as ZenML marks an interrupted one) instead of the default instant death."""


def stop_on_signals() -> None:
    """From here on SIGTERM raises Terminated in the main thread, and a Ctrl-C or SIGTERM that Python swallowed is
    raised again. ZenML's step signal handler calls this one after its own, as it calls Python's Ctrl-C handler;
    uvicorn re-raises the signal once it has shut down. Only the main thread can set a handler: elsewhere (``main``
    called from a thread) the signals stay as they are."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    if getattr(sys.unraisablehook, "__wrapped__", None) is None:
        sys.unraisablehook = _redeliver_lost_stops(sys.unraisablehook)


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends it at once
    raise Terminated()


def _redeliver_lost_stops(previous):
    """A signal handler's exception raised while Python runs a weakref callback, a ``__del__`` or the garbage
    collector is printed as "Exception ignored" and dropped: the stop is lost and a training run goes on. This
    hook signals the main thread again instead, from a thread, so that the handler runs once the callback is over
    (if it lands in another callback, this hook sees it again)."""

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        if signum == signal.SIGTERM and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_terminated)  # the lost one had set the default, instant death
        resend = threading.Timer(0.01, _thread.interrupt_main, args=(signum,))
        resend.daemon = True
        resend.start()

    hook.__wrapped__ = previous
    return hook
