"""The CLI in a fresh process, as the tests call it: ``run_cli`` (optionally with a kill injected first) and
``one_error_line`` for the one-line errors; ``cli`` and ``use_cli`` (``use`` on the tiny model in float32)."""

from __future__ import annotations

import signal
import subprocess
import sys

from conftest import ROOT

QUICK = ["--config", "configs/quickstart.yaml", "--set", "training.max_steps=2", "--set", "training.save_steps=2",
         "--set", "evaluation.max_samples=4", "--set", "evaluation.max_new_tokens=8",
         "--set", "registry.promotion_metric=eval_loss"]  # 2 steps learn the loss, not the answers


def run_cli(*args: str, env: dict | None = None, prelude: str = "", timeout: int = 600) -> subprocess.CompletedProcess:
    """The CLI in a fresh process; ``prelude`` runs first (to inject a kill)."""
    command = [sys.executable, "run_pipeline.py"]
    if prelude:  # ZenML finds its source root from the main module's file, which `-c` has not
        command = [sys.executable, "-c", "import sys\nfrom zenml.utils import source_utils\n"
                   f"source_utils.set_custom_source_root({str(ROOT)!r})\n{prelude}\n"
                   "import run_pipeline\nsys.exit(run_pipeline.main(sys.argv[1:]))"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def as_at_a_terminal() -> None:
    """``preexec_fn`` for a child that must take Ctrl-C as a terminal's foreground job does. A shell without job
    control (`make test &`, a CI runner's script) starts background commands with SIGINT and SIGQUIT ignored, every
    child inherits that, and Python then installs no Ctrl-C handler: the test would wait for an exit that never comes."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def cli(*args: str, timeout: int = 300):
    import subprocess

    return subprocess.run([sys.executable, "run_pipeline.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


FP32 = ["--set", "model.load_in_4bit=false", "--set", "model.dtype=float32"]


def use_cli(adapter, *args: str, timeout: int = 300):
    return cli("use", "--config", "configs/quickstart.yaml", *FP32, "--adapter", str(adapter.path), *args,
               timeout=timeout)
