"""Run untrusted Python (model output is hostile input) against its tests, in layered isolation.

A batch of jobs goes to one fork server (``code_harness.py``, a fresh ``python -I -S`` started through util-linux
``unshare``); it forks a fresh process per job, in its own folder, which locks itself down before any of the job's
code runs. The layers, and what each stops:

    process     a new interpreter per batch and a new forked process per job, isolated mode (no user site, no
                PYTHON* variables, no script folder on sys.path), a scrubbed environment (HOME and TMPDIR are the
                job's folder; no HF_TOKEN or any other variable of the caller), its own process group,
                stdout/stderr to a file capped by RLIMIT_FSIZE
    pid_ns      a PID namespace whose init is the fork server: the code sees no process outside it (it cannot
                signal the server or the scorer), and after each answer (at its time limit or when it ends) the
                server kills every other process in it, so nothing an answer started outlives it
    net_ns      a network namespace with only a downed loopback: no connection anywhere, loopback included
    mount_ns    a mount namespace in which the server's folder is a private tmpfs (16 MiB, 8,192 files) that
                vanishes with it: nothing a job writes is left behind (each job's folder is also removed after it)
    landlock    writes only inside the job's folder; reads only there and in Python's and the system's libraries (not
                the project, the home folder, /proc or /etc); no TCP bind or connect; from ABI 6 no signals to
                processes outside the sandbox
    seccomp     no new process (fork, vfork, clone other than a thread), no exec (no shell), no namespaces,
                ptrace or mounts: a fork storm or ``subprocess.run("sh")`` fails with EPERM
    rlimits     CPU seconds, address space, processes, file size and open files
    verdict     a random nonce per job, written to a pipe the server owns only after the last test passed:
                exiting with status 0 early (os._exit, sys.exit), printing "passed" or killing the harness passes
                nothing. (The nonce is in the job's own interpreter, so code written to read that memory could
                find it: the verdict stops model output that skips its tests, not an attacker who studies the
                harness.)

``layers()`` says which layers this machine offers. ``CodeSandbox(mode="strict")`` refuses in one line when one is
missing; ``mode="weak"`` runs with what there is. ``run_many`` deals jobs to one server per worker (parallel);
``session()`` keeps one server for many calls. A server that dies (only possible without the PID namespace) costs
only the job it was running.
"""

from __future__ import annotations

import marshal
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llm_trainer.errors import ConfigError

HARNESS = Path(__file__).with_name("code_harness.py")
LAYERS = ("process", "pid_ns", "net_ns", "mount_ns", "landlock", "seccomp", "rlimits", "verdict")
ERRORS = ("no_code", "syntax_error", "wrong_answer", "timeout", "memory", "crashed", "denied")
MODES = ("strict", "weak")
MAX_OUTPUT_BYTES = 1 << 20  # stdout + stderr, and any file the code writes (RLIMIT_FSIZE)
MAX_SOURCE_CHARS = 200_000
TMPFS_MB = 16
UNSHARE = ("unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child")
SYSTEM_READ_PATHS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/etc/ld.so.cache", "/dev/null", "/dev/zero",
                     "/dev/urandom")


class SandboxUnavailable(ConfigError):
    """The sandbox cannot give the isolation the config asks for (a layer is missing and the mode is strict)."""


@dataclass
class Limits:
    """What one run may use: wall and CPU seconds, memory (address space), processes, open files."""

    timeout_seconds: float = 5.0
    memory_mb: int = 1024
    max_processes: int = 64
    max_open_files: int = 64

    def rlimits(self) -> dict[str, int]:
        """The harness's RLIMIT_* values (CPU one second over the wall limit: the wall limit fires first)."""
        return {"RLIMIT_CPU": int(self.timeout_seconds) + 2, "RLIMIT_AS": self.memory_mb << 20,
                "RLIMIT_NPROC": self.max_processes, "RLIMIT_FSIZE": MAX_OUTPUT_BYTES,
                "RLIMIT_NOFILE": self.max_open_files, "RLIMIT_CORE": 0}


@dataclass
class RunResult:
    """One run's verdict: passed, or why not (a reason of ERRORS), with a short detail and the captured output."""

    passed: bool
    error: str | None
    detail: str = ""
    output: str = ""
    seconds: float = 0.0
    layers: list[str] = field(default_factory=list)


@dataclass
class Job:
    """What to run: the program, the setup run before it and the tests (asserts) run after it, in one namespace."""

    program: str
    tests: str
    setup: str = ""


@lru_cache(maxsize=1)
def layers() -> dict[str, str]:
    """Each layer -> "" when this machine offers it, else one line saying why not (probed once per process by a
    real sandboxed run)."""
    missing = {name: "" for name in LAYERS}
    if not sys.platform.startswith("linux"):
        return {name: f"not Linux ({sys.platform})" if name != "process" and name != "verdict" and name != "rlimits"
                else "" for name in LAYERS}
    unshare = shutil.which("unshare")
    if unshare is None:
        for name in ("pid_ns", "net_ns", "mount_ns"):
            missing[name] = "no unshare command (util-linux)"
    else:
        probe = subprocess.run([unshare, *UNSHARE[1:], "true"], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            why = " ".join(probe.stderr.split())[:160] or f"exit status {probe.returncode}"
            for name in ("pid_ns", "net_ns", "mount_ns"):
                missing[name] = f"unshare fails: {why}"
    for _ in range(3):  # a layer the kernel reports but will not apply is marked missing, and the probe runs again
        try:
            probe = _run_batch([Job("pass", "")], Limits(timeout_seconds=20), missing)[0]
            break
        except SandboxUnavailable as exc:
            failed = [name for name in ("landlock", "seccomp") if name in str(exc) and not missing[name]]
            if not failed:
                raise
            for name in failed:
                missing[name] = f"present but could not be applied ({str(exc)[:120]})"
    took = set(probe.layers)
    if not missing["mount_ns"] and "tmpfs" not in took:
        missing["mount_ns"] = "no private tmpfs could be mounted"
    if not missing["landlock"] and not any(layer.startswith("landlock") for layer in took):
        missing["landlock"] = "the kernel offers no Landlock"
    if not missing["seccomp"] and "seccomp" not in took:
        missing["seccomp"] = f"no seccomp filter for this machine ({os.uname().machine})"
    if not probe.passed:
        missing["verdict"] = f"a sandboxed run of 'pass' failed: {probe.error} {probe.detail}"[:200]
    return missing


def describe_layers() -> str:
    """One line: the active layers, and the missing ones with why."""
    offered = layers()
    active = [name for name, why in offered.items() if not why]
    absent = [f"{name} ({why})" for name, why in offered.items() if why]
    return f"code sandbox layers active: {', '.join(active) or 'none'}" + (
        f"; missing: {', '.join(absent)}" if absent else "")


def check_mode(mode: str) -> dict[str, str]:
    """The layers to use for ``mode``: in strict mode a SandboxUnavailable (one line) when any is missing."""
    if mode not in MODES:
        raise ConfigError(f"evaluation.code_sandbox: unknown mode '{mode}'; known: {', '.join(MODES)}")
    offered = layers()
    if mode == "strict" and any(offered.values()):
        raise SandboxUnavailable(f"{describe_layers()}; refusing to run model-written code (set "
                                 "evaluation.code_sandbox: weak to run it with the active layers only)")
    return offered


class CodeSandbox:
    """Runs jobs under ``limits`` with the layers ``mode`` allows (strict: all of them, or refuse)."""

    def __init__(self, limits: Limits | None = None, mode: str = "strict"):
        self.limits = limits or Limits()
        self.mode = mode
        self.offered = check_mode(mode)

    def run(self, job: Job) -> RunResult:
        """One job in a fresh sandboxed process: the verdict, never an exception for what the code does."""
        return _run_batch([job], self.limits, self.offered)[0]

    def session(self) -> SandboxSession:
        """A fork server kept for many calls (a context manager): one job at a time without a server start each."""
        return SandboxSession(self.limits, self.offered)

    def run_many(self, jobs: list[Job], workers: int | None = None) -> list[RunResult]:
        """The jobs, each in a fresh sandboxed process, through ``workers`` fork servers at once (default: the CPU
        count; jobs dealt to them in turn); results in the jobs' order."""
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        if workers <= 1:
            return _run_batch(jobs, self.limits, self.offered)
        shares = [list(range(start, len(jobs), workers)) for start in range(workers)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda share: _run_batch([jobs[i] for i in share], self.limits, self.offered),
                                  shares))
        results: list[RunResult | None] = [None] * len(jobs)
        for share, part in zip(shares, parts):
            for index, result in zip(share, part):
                results[index] = result
        return [r for r in results if r is not None]


def syntax_error(source: str) -> str | None:
    """Why ``source`` does not compile (one line), or None. Compiled in this process: compiling runs nothing."""
    if len(source) > MAX_SOURCE_CHARS:
        return f"over {MAX_SOURCE_CHARS} characters"
    try:
        compile(source, "<solution>", "exec")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return None


def _uses_namespaces(offered: dict[str, str]) -> bool:
    """Whether the server starts under unshare: only when the PID, network and mount namespaces all work."""
    return not (offered["pid_ns"] or offered["net_ns"] or offered["mount_ns"])


def _command(offered: dict[str, str]) -> list[str]:
    prefix = [shutil.which("unshare") or "unshare", *UNSHARE[1:]] if _uses_namespaces(offered) else []
    # The last argument only marks the process (for ps, and for tests that look for anything left running).
    return [*prefix, sys.executable, "-I", "-S", str(HARNESS), f"llm-trainer-code-sandbox:{os.getpid()}"]


def _read_paths() -> list[str]:
    roots = {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    return sorted(roots) + list(SYSTEM_READ_PATHS)


def _run_batch(jobs: list[Job], limits: Limits, offered: dict[str, str]) -> list[RunResult]:
    """The jobs through a fork server started for them (and closed after)."""
    with SandboxSession(limits, offered) as session:
        return session.run_many(jobs)


class SandboxSession:
    """One fork server kept for many calls: ``with sandbox.session() as session: session.run(job)`` pays the
    server's start once (each job still runs in a fresh forked process and folder). A server that dies (only
    possible without the PID namespace) costs only the job it was running; the next job starts a new one."""

    def __init__(self, limits: Limits, offered: dict[str, str]):
        self.limits, self.offered = limits, offered
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, job: Job) -> RunResult:
        """One job in a fresh sandboxed process of this session's server."""
        return self.run_many([job])[0]

    def run_many(self, jobs: list[Job]) -> list[RunResult]:
        """The jobs one after another through this session's server, results in order."""
        results: list[RunResult | None] = [None] * len(jobs)
        for index, job in enumerate(jobs):
            why = syntax_error(job.program)
            if why is not None:
                results[index] = RunResult(False, "syntax_error", why)
        todo = [i for i, result in enumerate(results) if result is None]
        while todo:
            done, header = self._send([jobs[i] for i in todo])
            for position, result in done.items():
                results[todo[position]] = result
            missing = [i for position, i in enumerate(todo) if position not in done]
            if missing:
                why = "the sandbox did not start" if header is None else "it ended the sandbox's server"
                results[missing[0]] = RunResult(False, "crashed", why, layers=header or [])
            todo = missing[1:]
        return [r for r in results if r is not None]

    def _send(self, jobs: list[Job]) -> tuple[dict[int, RunResult], list[str] | None]:
        """One batch to the server (started first if needed): {position: result} for the jobs it judged before it
        ended, if it did, and its layers (None when it never started)."""
        batch = [(job.program, job.setup, job.tests) for job in jobs]
        if self.process is None:
            self._start(batch)
        else:
            try:
                self.process.stdin.write(_frame({"jobs": batch}))
                self.process.stdin.flush()
            except OSError:  # it is gone: a new one takes the batch
                self.close()
                self._start(batch)
        if self.header is None:
            self.header = self._next(30.0 + self.limits.timeout_seconds)
            if self.header is None:
                self.close()
                return {}, None
        header = [layer for layer in self.header.decode(errors="replace").split(",") if layer]
        done: dict[int, RunResult] = {}
        for _ in jobs:
            frame = self._next(self.limits.timeout_seconds + 30.0)
            if frame is None:  # the server ended (or hung past every limit): the rest go to a new one
                self.close()
                break
            index, passed, reason, detail, output, seconds = marshal.loads(frame)
            if reason == "sandbox_failed":
                self.close()
                raise SandboxUnavailable(f"code sandbox: a layer failed to apply in a run: {detail}")
            done[index] = RunResult(passed, reason, detail, output, seconds, header)
        return done, header

    def _start(self, batch: list[tuple[str, str, str]]) -> None:
        self.folder = tempfile.mkdtemp(prefix="llm-trainer-code-")
        read_end, write_end = os.pipe()
        spec = {"result_fd": write_end, "folder": self.folder, "timeout": self.limits.timeout_seconds,
                "jobs": batch, "limits": self.limits.rlimits(),
                # Only inside the namespaces: a tmpfs mounted in the caller's mount namespace would outlive the run.
                "tmpfs_mb": TMPFS_MB if _uses_namespaces(self.offered) else 0, "landlock": not self.offered["landlock"],
                "seccomp": not self.offered["seccomp"], "read_paths": _read_paths()}
        env = {"PATH": "/usr/bin:/bin", "HOME": self.folder, "TMPDIR": self.folder, "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8"}
        self.errors = open(os.path.join(self.folder, ".server-errors"), "w+b")  # noqa: SIM115 - closed in close()
        try:
            self.process = subprocess.Popen(_command(self.offered), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=self.errors, cwd=self.folder, env=env, pass_fds=(write_end,),
                                            start_new_session=True)
        finally:
            os.close(write_end)
        self.read_end, self.header = read_end, None
        self.frames: queue.Queue[bytes | None] = queue.Queue()
        self.reader = threading.Thread(target=_read_frames, args=(read_end, self.frames), daemon=True)
        self.reader.start()
        try:
            self.process.stdin.write(_frame(spec))
            self.process.stdin.flush()
        except OSError:  # it is already gone; the missing results say so
            pass

    def _next(self, timeout: float) -> bytes | None:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """End the server (its PID namespace, and with it anything left in it) and remove its folder."""
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.reader.join(timeout=10)  # the pipe closes when the server exits
        _kill_group(self.process)
        self.reader.join(timeout=10)
        os.close(self.read_end)
        self.errors.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.process = None


def _frame(record: object) -> bytes:
    """A length-prefixed marshal record, as the server reads its batches."""
    data = marshal.dumps(record)
    return len(data).to_bytes(4, "little") + data


def _read_frames(fd: int, frames: queue.Queue) -> None:
    """Put the server's length-prefixed records on ``frames`` as they come, then None when the pipe closes."""
    buffer = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            frames.put(None)
            return
        buffer += chunk
        while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "little"):
            size = int.from_bytes(buffer[:4], "little")
            frames.put(buffer[4:4 + size])
            buffer = buffer[4 + size:]


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the server's whole session (unshare, and through --kill-child its PID namespace), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
        process.kill()
        process.wait()
