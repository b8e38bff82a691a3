"""Training progress a user reads: an ETA, redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io
import re
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(step: int, total: int = 10) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=total, is_world_process_zero=True)


def run_steps(progress, clock, total: int, seconds_per_step: float, log_every: int, start: int = 0):
    progress.on_train_begin(None, state(start, total), None)
    for step in range(start + 1, total + 1):
        clock.now += seconds_per_step
        progress.on_step_end(None, state(step, total), None)
        if step % log_every == 0:
            progress.on_log(None, state(step, total), None,
                            logs={"loss": 1.0 + 1.0 / step, "train_tokens_per_second": 1234.4, "epoch": 0.5})
    progress.on_log(None, state(total, total), None, logs={"train_runtime": total * seconds_per_step,
                                                           "train_loss": 1.5})
    progress.on_train_end(None, state(total, total), None)


def test_plain_lines_off_a_terminal_one_per_logging_step_with_eta():
    from llm_trainer.progress import TrainingProgress

    clock, out = FakeClock(), io.StringIO()
    run_steps(TrainingProgress(stream=out, clock=clock), clock, total=10, seconds_per_step=2.0, log_every=5)
    lines = out.getvalue().splitlines()
    assert lines == ["train  5/10  50% | elapsed 0:10 | ETA 0:10 | loss 1.2000 | 1,234 tokens/s",
                     "train 10/10 100% | elapsed 0:20 | ETA 0:00 | loss 1.1000 | 1,234 tokens/s",
                     "trained 10 steps in 0:20, mean loss 1.5000"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()  # no terminal codes in a log file


def test_eta_ignores_start_up_and_a_resumed_run_counts_its_own_steps():
    from llm_trainer.progress import TrainingProgress, clock_text

    clock, out = FakeClock(), io.StringIO()
    progress = TrainingProgress(stream=out, clock=clock)
    progress.on_train_begin(None, state(40, 100), None)  # resumed from step 40
    clock.now += 30.0  # model loading and the evaluation before the first step
    progress.on_step_end(None, state(41, 100), None)
    clock.now += 3 * 1.5
    assert progress.eta(44, 100, clock.now) == pytest.approx(56 * 1.5)  # pace from the first step's end
    assert out.getvalue() == "resuming at step 40/100\n"
    assert [clock_text(s) for s in (None, 0, 59.6, 61, 3725)] == ["?", "0:00", "1:00", "1:01", "1:02:05"]


def test_on_a_terminal_the_line_is_redrawn_in_place_and_evaluations_stay_above_it():
    from llm_trainer.progress import TrainingProgress

    clock, out = FakeClock(), io.StringIO()
    progress = TrainingProgress(stream=out, in_place=True, clock=clock)
    progress.on_train_begin(None, state(0, 4), None)
    for step in range(1, 5):
        clock.now += 1.0
        progress.on_step_end(None, state(step, 4), None)
        if step == 2:
            progress.on_log(None, state(step, 4), None, logs={"loss": 2.5})
            progress.on_log(None, state(step, 4), None, logs={"eval_loss": 2.25})
    progress.on_train_end(None, state(4, 4), None)
    progress.on_log(None, state(4, 4), None, logs={"eval_loss": 2.0})
    text = out.getvalue()
    assert text.count("\n") == 3  # the eval line, the finished progress line, the final eval
    assert "\r\x1b[Keval  step 2/4 | eval_loss 2.2500\n\rtrain 2/4" in text  # the bar is redrawn below it
    assert text.endswith("\rtrain 4/4 100% | elapsed 0:04 | ETA 0:00 | loss 2.5000\x1b[K\nfinal eval | eval_loss 2.0000\n")


def test_the_qlora_trainer_reports_with_training_progress(make_config):
    from llm_trainer.progress import TrainingProgress
    from llm_trainer.training.qlora import QLoraTrainer

    callbacks = QLoraTrainer(make_config())._callbacks()
    assert sum(isinstance(c, TrainingProgress) for c in callbacks) == 1


def test_progress_bar_on_a_real_terminal(tmp_path):
    """The Trainer under a pseudo-terminal: the line is redrawn in place (carriage returns), the ETA falls to
    0:00, the last line stays, and transformers' dicts of quoted numbers are gone."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, [str(ROOT / "tests" / "helpers" / "toy_progress.py"), "8", "2", "0.4",
                                           str(tmp_path / "out")], cwd=str(ROOT), encoding="utf-8", timeout=240,
                          dimensions=(24, 160))
    child.expect(pexpect.EOF)
    child.close()
    text = child.before
    assert child.exitstatus == 0, text[-2000:]
    drawn = re.findall(r"\rtrain (\d+)/8 +\d+% \| elapsed (\d+):(\d\d) \| ETA (\d+):(\d\d)[^\r\n]*\x1b\[K", text)
    steps = [int(s) for s, *_ in drawn]
    assert steps == sorted(steps) and steps[-1] == 8 and len(set(steps)) >= 4  # redrawn as it goes
    etas = [int(m) * 60 + int(s) for _, _, _, m, s in drawn]
    assert etas[-1] == 0 and max(etas) >= 1
    assert re.search(r"train 8/8 100% \| elapsed [^\r\n]* \| loss \d+\.\d{4}\x1b\[K\r\n", text)  # left on screen
    assert re.search(r"trained 8 steps in \d+:\d\d, mean loss \d+\.\d{4}", text)
    assert "{'loss'" not in text and "'loss':" not in text
