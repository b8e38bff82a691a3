"""`serve` and the pipeline commands as processes: ports are range-checked, the loser of two servers on one port
fails at once, and SIGTERM (what Kubernetes and systemd send) stops a server or a training run within seconds,
as Ctrl-C does, with one line and the run folder's lock released."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from runner.serve import _signal_group
from test_serve import free_port, serve_command

FP32 = ["--set", "model.load_in_4bit=false", "--set", "model.dtype=float32"]


def test_a_port_out_of_range_is_refused(capsys):
    from runner.arguments import parse_args

    base = ["serve", "--config", "configs/quickstart.yaml", "--adapter", "a"]
    for port in ("70000", "-1", "http"):
        with pytest.raises(SystemExit) as caught:
            parse_args([*base, "--port", port])
        assert caught.value.code == 2
        assert "argument --port: " in capsys.readouterr().err.strip().splitlines()[-1]
    assert parse_args([*base, "--port", "65535"]).port == 65535


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)
    return found


def stop_in(process: subprocess.Popen, signum: int = signal.SIGTERM) -> float:
    """Send ``signum`` to the process alone (not its group) and return the seconds it took to exit."""
    started = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        pass
    return time.monotonic() - started


def answers_health(port: int) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_two_servers_on_one_port_the_loser_fails_at_once_and_sigterm_stops_the_winner(tiny_adapter, tmp_path):
    port, env = free_port(), {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    processes = []
    try:
        for log in logs:  # started together: both load while the port is taken
            with log.open("w") as out:
                processes.append(subprocess.Popen(serve_command(tiny_adapter, port), cwd=ROOT, env=env, stdout=out,
                                                  stderr=subprocess.PIPE, text=True, start_new_session=True))
        loser = wait_for(lambda: next((p for p in processes if p.poll() is not None), None), 120,
                         "one of the two servers to give up the port")
        winner = processes[1 - processes.index(loser)]
        stderr = loser.stderr.read()
        lines = stderr.strip().splitlines()
        assert loser.returncode == 2 and len(lines) == 1, stderr
        assert lines[0].startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there: "), stderr
        wait_for(lambda: answers_health(port) or winner.poll() is not None, 240, "the winner to serve")
        assert winner.poll() is None, winner.stderr.read()

        seconds = stop_in(winner)
        output = logs[processes.index(winner)].read_text() + winner.stderr.read()
        print(f"serve stopped {seconds:.2f} s after SIGTERM")
        assert winner.returncode == 0 and "stopped" in output and "Traceback" not in output, output
        assert seconds < 5, seconds
        assert not answers_health(port)
    finally:
        for process in processes:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(30)


def run_lock_holder(folder: Path) -> Path | None:
    """A run.lock under ``folder`` that a process holds (training has started), or None."""
    for path in folder.rglob("run.lock"):
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
            except BlockingIOError:
                return path
    return None


@pytest.mark.slow
def test_sigterm_stops_a_training_run_like_ctrl_c_and_releases_its_lock(tiny_fp32, tmp_path):
    """`train` on the quickstart config with more steps than it will get to run; SIGTERM once it holds the run
    folder. tiny_fp32 builds the tiny base model in this session's state folder, which the run reuses."""
    command = [sys.executable, "run_pipeline.py", "train", "--config", "configs/quickstart.yaml", *FP32,
               "--set", f"output_dir={tmp_path / 'outputs'}", "--set", "training.max_steps=100000",
               "--set", "training.save_steps=100000", "--set", "training.eval_steps=100000"]
    log = tmp_path / "train.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        def held() -> Path | None:
            assert process.poll() is None, log.read_text()[-3000:]
            return run_lock_holder(tmp_path / "outputs")

        lock = wait_for(held, 600, "training to hold its run folder", poll=0.5)
        time.sleep(1)  # well inside the training loop
        seconds = stop_in(process)
        print(f"train stopped {seconds:.2f} s after SIGTERM")
        text = log.read_text()
        assert process.returncode == 143, text[-3000:]
        assert text.rstrip().splitlines()[-1] == "terminated (SIGTERM)" and "Traceback" not in text, text[-3000:]
        assert seconds < 6, seconds
        assert run_lock_holder(tmp_path / "outputs") is None and lock.read_text() == ""  # released, not stale
        live = Path(os.environ["LLM_TRAINER_HOME"]) / "live"
        assert not any(live.glob(f"{process.pid}-*.lock"))  # the process marker went with it
    finally:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(30)
