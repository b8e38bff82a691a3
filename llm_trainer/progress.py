"""Training progress a person can read: step/total, elapsed time, ETA, loss and tokens/s.

On a terminal the line is redrawn in place; elsewhere (CI, a log file) one plain line is printed per logging
step. Evaluations get a line of their own either way. Only the main process reports.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from transformers import TrainerCallback

REDRAW_EVERY_S = 0.5  # in-place redraws at most this often (every write is also copied to the step's logs)


def clock_text(seconds: float | None) -> str:
    """0:07, 12:05, 3:04:05; '?' when not known yet."""
    if seconds is None:
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(step: int, total: int, elapsed: float, eta: float | None, loss: float | None,
                  tokens_per_second: float | None) -> str:
    """One progress line: step/total, percent, elapsed, ETA, and loss and tokens/s when known."""
    width = len(str(total))
    percent = 100.0 * step / total if total else 0.0
    parts = [f"train {step:>{width}}/{total} {percent:3.0f}%", f"elapsed {clock_text(elapsed)}",
             f"ETA {clock_text(eta)}"]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if tokens_per_second is not None:
        parts.append(f"{tokens_per_second:,.0f} tokens/s")
    return " | ".join(parts)


class TrainingProgress(TrainerCallback):
    """A TrainerCallback that replaces transformers' PrinterCallback (which prints dicts of quoted numbers)."""

    def __init__(self, stream: TextIO | None = None, in_place: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._stream = stream
        self._in_place = in_place
        self._clock = clock
        self._started = 0.0
        self._first_step = 0
        self._pace_from: tuple[float, int] | None = None
        self._final = False
        self._last_draw = float("-inf")
        self._drawn = False
        self.loss: float | None = None
        self.tokens_per_second: float | None = None

    @property
    def stream(self) -> TextIO:
        """Where progress is written: the stream given, else stderr."""
        return self._stream if self._stream is not None else sys.stderr

    @property
    def in_place(self) -> bool:
        """Whether the line is redrawn in place: as given, else whether the stream is a terminal."""
        if self._in_place is None:
            isatty = getattr(self.stream, "isatty", None)
            self._in_place = bool(isatty and isatty())
        return self._in_place

    def eta(self, step: int, total: int, now: float) -> float | None:
        """Remaining time at the pace of the steps this process has run (a resumed run starts its own count).
        The pace is measured from the end of the first step once there is a second one, so model start-up and
        the evaluation before the first step do not inflate it."""
        since, from_step = self._pace_from or (self._started, self._first_step)
        if step - from_step <= 0:
            since, from_step = self._started, self._first_step
        done = step - from_step
        if done <= 0 or total <= 0:
            return None
        return (now - since) / done * max(total - step, 0)

    def line(self, state: Any) -> str:
        """The progress line for the Trainer's current state."""
        now = self._clock()
        return progress_line(state.global_step, state.max_steps, now - self._started,
                             self.eta(state.global_step, state.max_steps, now), self.loss, self.tokens_per_second)

    def on_train_begin(self, args, state, control, **kwargs):
        """Start the clock; a resumed run says the step it resumes at."""
        self._started = self._clock()
        self._first_step = state.global_step
        if state.is_world_process_zero and state.global_step:
            self._print(f"resuming at step {state.global_step}/{state.max_steps}")

    def on_step_end(self, args, state, control, **kwargs):
        """Start the pace after the first step; redraw the line in place at most every 0.5 s."""
        if self._pace_from is None:
            self._pace_from = (self._clock(), state.global_step)
        if state.is_world_process_zero and self.in_place and self._clock() - self._last_draw >= REDRAW_EVERY_S:
            self._draw(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Show a logged training loss, an evaluation or the closing summary, on the main process."""
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.loss = float(logs["loss"])
            if "train_tokens_per_second" in logs:
                self.tokens_per_second = float(logs["train_tokens_per_second"])
            if self.in_place:
                self._draw(state)
            else:
                self._print(self.line(state))
        elif "eval_loss" in logs:
            label = "final eval" if self._final else f"eval  step {state.global_step}/{state.max_steps}"
            self._print(f"{label} | eval_loss {float(logs['eval_loss']):.4f}", state)
        elif "train_runtime" in logs:
            self._finish_line(state)
            self._print(f"trained {state.global_step} steps in {clock_text(float(logs['train_runtime']))}"
                        + (f", mean loss {float(logs['train_loss']):.4f}" if "train_loss" in logs else ""))

    def on_train_end(self, args, state, control, **kwargs):
        """End the in-place line; an evaluation after this is labelled the final one."""
        self._final = True  # an evaluation after this is the final one
        if state.is_world_process_zero:
            self._finish_line(state)

    def _finish_line(self, state: Any) -> None:
        """Leave the last progress line on the terminal."""
        if self.in_place and self._drawn:
            self._draw(state)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self, state: Any) -> None:
        self.stream.write("\r" + self.line(state) + "\x1b[K")
        self.stream.flush()
        self._drawn = True
        self._last_draw = self._clock()

    def _print(self, text: str, state: Any = None) -> None:
        """A line of its own; on a terminal the progress line is redrawn below it while training runs."""
        redraw = self.in_place and self._drawn and state is not None and not self._final
        if self.in_place and self._drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = False
        if redraw:
            self._draw(state)


class ProgressWithFigures(TrainingProgress):
    """The progress line with figures a trainer logs besides the loss (GRPO's mean reward, DPO's reward margin):
    ``figures`` maps a logged key to its text, e.g. ``{"reward": "reward {:.3f}"}``, shown once logged."""

    def __init__(self, figures: dict[str, str], **kwargs: Any):
        super().__init__(**kwargs)
        self.figures = figures
        self.values: dict[str, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Keep the latest value of each figure, then as the plain progress line."""
        self.values.update({key: float(logs[key]) for key in self.figures if logs and key in logs})
        super().on_log(args, state, control, logs=logs, **kwargs)

    def line(self, state: Any) -> str:
        """The plain line, then each figure logged so far."""
        return super().line(state) + "".join(f" | {text.format(self.values[key])}"
                                             for key, text in self.figures.items() if key in self.values)
