"""The code sandbox: model-written Python is hostile. Every hostile case is scored wrong, in bounded time, leaves
nothing behind and no process running; the verdict cannot be forged by exiting early or printing; a missing layer
is refused in strict mode."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT

from llm_trainer.code_sandbox import CodeSandbox, Job, Limits, layers

pytestmark = pytest.mark.skipif(any(layers().values()), reason="this machine lacks a code sandbox layer")

MARK = "llm_trainer_sandbox_test_mark"
TEST = "assert add(2, 3) == 5"
GOOD = "def add(a, b):\n    return a + b"
PARENT_OF_PROJECT = ROOT.parent


def hostile_cases(targets: dict[str, Path]) -> dict[str, tuple[str, set[str]]]:
    """name -> (program run before the test ``add(2, 3) == 5``, the reasons it may be scored wrong for)."""
    write = "open({path!r}, 'w').write('pwned')\n" + GOOD
    return {
        "os._exit(0) before the asserts": ("import os\nos._exit(0)\n" + GOOD, {"crashed"}),
        "sys.exit(0) before the asserts": ("import sys\nsys.exit(0)\n" + GOOD, {"crashed"}),
        "raise SystemExit(0)": ("raise SystemExit(0)", {"crashed"}),
        "prints passed": ("print('passed')\nprint('All tests passed')\ndef add(a, b):\n    return 0", {"wrong_answer"}),
        "kills its parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n"
                             + GOOD, {"denied"}),
        "kills every process it can": ("import os, signal\nfor pid in range(1, 400):\n    try:\n"
                                       "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
                                       "os.kill(-1, signal.SIGKILL)\n" + GOOD, {"denied", "crashed", "memory"}),
        "stack overflow": ("import sys, functools\nsys.setrecursionlimit(10**8)\n@functools.lru_cache(None)\n"
                           "def add(a, b):\n    return add(a + 1, b)", {"crashed", "memory", "timeout"}),
        "deep recursion": ("import sys\nsys.setrecursionlimit(10**8)\ndef add(a, b):\n    return add(a, b + 1)",
                           {"crashed", "memory", "timeout"}),
        "fork storm": ("import os\nwhile True:\n    os.fork()", {"denied"}),
        "300 MB of output": ("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(300):\n    sys.stdout.write(chunk)\n"
                             + GOOD, {"denied"}),
        "endless loop": ("while True:\n    pass", {"timeout"}),
        "6 GiB allocation": ("data = bytearray(6 << 30)\n" + GOOD, {"memory"}),
        "write to /tmp": (write.format(path=str(targets["tmp"])), {"denied"}),
        "write to the home folder": (write.format(path=str(targets["home"])), {"denied"}),
        "write to the working folder": (write.format(path=str(targets["cwd"])), {"denied"}),
        "write to its parent": (write.format(path=str(targets["parent"])), {"denied"}),
        "write beside its own folder": ("import os\nopen(os.path.join(os.getcwd(), '..', 'escaped.txt'), 'w')"
                                        ".write('x')\n" + GOOD, {"denied"}),
        "loopback connection": (f"import socket\nsocket.create_connection(('127.0.0.1', {{port}}), timeout=2)\n{GOOD}",
                                {"denied"}),
        "shell through subprocess": ("import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned > /tmp/"
                                     f"{MARK}_shell'])\n" + GOOD, {"denied"}),
        "os.system": (f"import os\nassert os.system('touch /tmp/{MARK}_system') == 0\n" + GOOD, {"denied", "wrong_answer"}),
        "reads HF_TOKEN": ("import os\ndef add(a, b):\n    return len(os.environ['HF_TOKEN'])", {"crashed"}),
        "reads the token file": ("from pathlib import Path\ntoken = (Path.home() / '.cache/huggingface/token')\n"
                                 "def add(a, b):\n    return open({token!r}).read()", {"crashed", "denied"}),
        "reads the project": (f"open({str(ROOT / 'README.md')!r}).read()\n" + GOOD, {"denied"}),
    }


def sandbox_processes() -> list[int]:
    """The process ids whose command line names a sandbox server of this process (none may outlive a run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"llm-trainer-code-sandbox:{os.getpid()}".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def listener():
    """A TCP server on loopback that records whether anything connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    connected = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                connected.append(True)
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connected
    stop.set()
    thread.join(timeout=5)
    server.close()


def own_temp_folder(tmp_path: Path, monkeypatch) -> Path:
    """The sandbox's run folders go to a folder of this test's own: the other test worker's code-domain runs make
    and remove theirs in the shared temp folder at the same time."""
    folder = tmp_path / "sandbox-folders"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_every_hostile_case_is_wrong_in_bounded_time_and_leaves_nothing(tmp_path, listener, monkeypatch):
    port, connected = listener
    monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token")
    targets = {"tmp": Path(tempfile.gettempdir()) / f"{MARK}_tmp", "home": Path.home() / f"{MARK}_home",
               "cwd": Path.cwd() / f"{MARK}_cwd", "parent": Path.cwd().parent / f"{MARK}_parent"}
    cases = hostile_cases(targets)
    cases["loopback connection"] = (cases["loopback connection"][0].format(port=port), {"denied"})
    token = Path.home() / ".cache/huggingface/token"
    cases["reads the token file"] = (cases["reads the token file"][0].format(token=str(token)), {"crashed", "denied"})
    folders = own_temp_folder(tmp_path, monkeypatch)
    sandbox = CodeSandbox(Limits(timeout_seconds=3, memory_mb=512))
    started = time.monotonic()
    results = sandbox.run_many([Job(program, TEST) for program, _ in cases.values()])
    assert time.monotonic() - started < 120
    for (name, (_, allowed)), result in zip(cases.items(), results):
        assert not result.passed, name
        assert result.error in allowed, (name, result.error, result.detail)
        assert result.seconds < 30, name
    assert connected == [], "the sandbox reached a loopback server"
    for path in targets.values():
        assert not path.exists(), path
    assert not any(targets["tmp"].parent.glob(f"{MARK}*"))
    assert list(folders.iterdir()) == []  # no sandbox folder left behind
    assert sandbox_processes() == []


@pytest.mark.parametrize("program, tests, passed, error", [
    (GOOD, TEST, True, None),
    ("def add(a, b):\n    return a - b", TEST, False, "wrong_answer"),
    ("def add(a, b):\n    return a +", TEST, False, "syntax_error"),
    ("def add(a, b):\n    return undefined_name", TEST, False, "crashed"),
    ("import math, re, collections, heapq, itertools, functools, json\n" + GOOD, TEST, True, None),
    ("import threading\nout = []\nt = threading.Thread(target=out.append, args=(1,))\nt.start()\nt.join()\n" + GOOD,
     TEST + "\nassert out == [1]", True, None),
    ("open('scratch.txt', 'w').write('ok')\n" + GOOD, TEST + "\nassert open('scratch.txt').read() == 'ok'", True, None),
])
def test_ordinary_code_is_judged_by_its_tests(program, tests, passed, error):
    result = CodeSandbox(Limits(timeout_seconds=10)).run(Job(program, tests))
    assert (result.passed, result.error) == (passed, error), result.detail


def test_setup_runs_before_the_program_and_tests():
    sandbox = CodeSandbox(Limits(timeout_seconds=10))
    job = Job("def area(s):\n    return Square(s).area()", "assert area(3) == 9",
              setup="class Square:\n    def __init__(self, s):\n        self.s = s\n    def area(self):\n"
                    "        return self.s * self.s")
    assert sandbox.run(job).passed


def test_the_verdict_cannot_be_forged_by_writing_to_the_result_pipe():
    forgeries = [
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'V' + b'0' * 24)\n    except OSError:\n"
        "        pass\nos._exit(0)",
        "import os\nos.write(3, b'V')\nos.close(3)\n" + GOOD,
        "import sys\nsys.stdout.write('V')\nsys.exit(0)",
        "import os\nos.dup2(1, 3)\n" + GOOD,
    ]
    results = CodeSandbox(Limits(timeout_seconds=10)).run_many([Job(p, TEST) for p in forgeries])
    assert [r.passed for r in results] == [False] * len(forgeries)


def test_the_scorer_survives_a_batch_of_hostile_code_and_judges_the_rest():
    jobs = [Job("import os\nos.kill(1, 9)\nos.kill(os.getppid(), 9)", TEST), Job(GOOD, TEST),
            Job("while True:\n    pass", TEST), Job(GOOD, TEST), Job("import os\nos._exit(0)", TEST), Job(GOOD, TEST)]
    results = CodeSandbox(Limits(timeout_seconds=2)).run_many(jobs, workers=2)
    assert [r.passed for r in results] == [False, True, False, True, False, True]
    assert sandbox_processes() == []


def test_layers_are_reported_and_a_missing_one_is_refused_unless_weak(monkeypatch):
    from llm_trainer import code_sandbox
    from llm_trainer.code_sandbox import SandboxUnavailable, describe_layers

    assert describe_layers().startswith("code sandbox layers active: process, pid_ns, net_ns, mount_ns, landlock")
    result = CodeSandbox().run(Job(GOOD, TEST))
    assert {"tmpfs", "seccomp"} <= set(result.layers) and any(x.startswith("landlock") for x in result.layers)
    offered = {**layers(), "landlock": "the kernel offers no Landlock"}
    monkeypatch.setattr(code_sandbox, "layers", lambda: offered)
    with pytest.raises(SandboxUnavailable) as refused:
        CodeSandbox(mode="strict")
    message = str(refused.value)
    assert "\n" not in message and "landlock (the kernel offers no Landlock)" in message
    assert "evaluation.code_sandbox: weak" in message
    weak = CodeSandbox(Limits(timeout_seconds=10), mode="weak").run(Job(GOOD, TEST))
    assert weak.passed and not any(x.startswith("landlock") for x in weak.layers)


def test_weak_mode_without_namespaces_survives_code_that_kills_the_server(monkeypatch):
    """Without a PID namespace the code can signal the server: its job is scored crashed and a new server judges
    the rest of the batch."""
    from llm_trainer import code_sandbox

    offered = {**layers(), **{name: "switched off for the test" for name in ("pid_ns", "net_ns", "mount_ns",
                                                                              "landlock", "seccomp")}}
    monkeypatch.setattr(code_sandbox, "layers", lambda: offered)
    jobs = [Job(GOOD, TEST), Job("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + GOOD, TEST),
            Job(GOOD, TEST), Job("def add(a, b):\n    return 0", TEST)]
    results = CodeSandbox(Limits(timeout_seconds=10), mode="weak").run_many(jobs, workers=1)
    assert [(r.passed, r.error) for r in results] == [(True, None), (False, "crashed"), (True, None),
                                                     (False, "wrong_answer")]
    assert "server" in results[1].detail
    assert sandbox_processes() == []


def test_a_process_left_behind_dies_with_its_job(monkeypatch):
    """With seccomp (and Landlock's signal scope) switched off, a job can start a process that leaves its session;
    the server, init of the PID namespace, kills it before the next job runs."""
    from llm_trainer import code_sandbox

    offered = {**layers(), "seccomp": "switched off for the test", "landlock": "switched off for the test"}
    monkeypatch.setattr(code_sandbox, "layers", lambda: offered)
    straggler = "import os\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        pass\n"
    census = ("import os\nalive = []\nfor pid in range(2, 200):\n    try:\n        os.kill(pid, 0)\n"
              "        alive.append(pid)\n    except OSError:\n        pass\n")
    results = CodeSandbox(Limits(timeout_seconds=10), mode="weak").run_many(
        [Job(straggler, ""), Job(census, "assert alive == [os.getpid()], alive")], workers=1)
    assert [(r.passed, r.error) for r in results] == [(True, None), (True, None)], results[1].detail
    assert sandbox_processes() == []


def test_a_session_keeps_one_server_for_many_calls_and_leaves_nothing():
    jobs = [Job(GOOD, TEST), Job("import os\nos.kill(1, 9)\nos.kill(os.getppid(), 9)", TEST),
            Job("while True:\n    pass", TEST), Job("import os\nos._exit(0)", TEST), Job(GOOD, TEST),
            Job("def add(a, b):\n    return 0", TEST), Job("def add(a, b)", TEST), Job(GOOD, TEST)]
    with CodeSandbox(Limits(timeout_seconds=2)).session() as session:
        results = [session.run(job) for job in jobs]
        servers = {session.process.pid}
        results += session.run_many(jobs[:2])
        servers.add(session.process.pid)
    assert [(r.passed, r.error) for r in results] == [
        (True, None), (False, "denied"), (False, "timeout"), (False, "crashed"), (True, None),
        (False, "wrong_answer"), (False, "syntax_error"), (True, None), (True, None), (False, "denied")]
    assert len(servers) == 1 and session.process is None
    assert sandbox_processes() == []


def test_a_layer_that_will_not_apply_is_reported_missing(monkeypatch):
    """A kernel that reports Landlock but refuses to apply it: the probe says so instead of failing."""
    from llm_trainer import code_sandbox

    real = code_sandbox._run_batch
    calls = []

    def refusing(jobs, limits, offered):
        calls.append(dict(offered))
        if not offered["landlock"]:
            raise code_sandbox.SandboxUnavailable("code sandbox: a layer failed to apply in a run: landlock could "
                                                  "not be applied")
        return real(jobs, limits, offered)

    monkeypatch.setattr(code_sandbox, "_run_batch", refusing)
    code_sandbox.layers.cache_clear()
    try:
        offered = code_sandbox.layers()
    finally:
        code_sandbox.layers.cache_clear()
    assert offered["landlock"].startswith("present but could not be applied") and len(calls) == 2
    assert not offered["seccomp"] and not offered["pid_ns"]


@pytest.mark.parametrize("switched_off", [("net_ns",), ("pid_ns",), ("mount_ns",), ("pid_ns", "net_ns", "mount_ns")])
def test_without_the_namespaces_no_tmpfs_is_mounted_where_it_would_outlive_the_run(tmp_path, monkeypatch,
                                                                                   switched_off):
    from llm_trainer import code_sandbox

    folders = own_temp_folder(tmp_path, monkeypatch)
    offered = {**layers(), **{name: "switched off for the test" for name in switched_off}}
    monkeypatch.setattr(code_sandbox, "layers", lambda: offered)
    result = CodeSandbox(Limits(timeout_seconds=10), mode="weak").run(Job(GOOD, TEST))
    assert result.passed and "tmpfs" not in result.layers
    assert "llm-trainer-code-" not in Path("/proc/self/mounts").read_text()
    assert list(folders.iterdir()) == []
