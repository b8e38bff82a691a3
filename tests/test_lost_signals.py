"""A Ctrl-C or SIGTERM whose exception Python swallows (it arrived while a weakref callback or a ``__del__`` ran, and
was printed as "Exception ignored") is raised again, so the command still stops. CI saw a training run go on for 60 s
after SIGTERM that way, inside a WeakKeyDictionary's callback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from helpers.cli import as_at_a_terminal

# The signal arrives inside a weakref callback (the handler runs on the loop's backward jump, still inside it); then
# the main line goes on for up to 5 s. "stopped" if the stop reached it, "lost" if it did not.
SCRIPT = """
import os, signal, sys, time, weakref
from runner.quiet import Terminated, stop_on_signals
{install}

class Thing:
    pass

def callback(_):
    os.kill(os.getpid(), signal.{signal})
    for _ in range(100_000):
        pass

thing = Thing()
ref = weakref.ref(thing, callback)
try:
    del thing
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.01)
    print("lost")
except KeyboardInterrupt as exc:
    print("stopped", type(exc).__name__)
"""


def run(signal_name: str, install: bool) -> subprocess.CompletedProcess:
    script = SCRIPT.format(signal=signal_name, install="stop_on_signals()" if install else "")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          preexec_fn=as_at_a_terminal)


@pytest.mark.parametrize("signal_name, raised", [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")])
def test_a_stop_swallowed_in_a_weakref_callback_is_raised_again(signal_name, raised):
    result = run(signal_name, install=True)
    assert result.returncode == 0 and result.stdout.strip() == f"stopped {raised}", result
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_without_the_hook_python_loses_the_stop():
    """The case the hook exists for: Python's own behaviour loses a Ctrl-C raised inside a weakref callback."""
    result = run("SIGINT", install=False)
    assert result.stdout.strip() == "lost" and "Exception ignored" in result.stderr, result
