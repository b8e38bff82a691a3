"""The fork server that runs inside the code sandbox (``python -I -S code_harness.py``); the library never imports it.

Started by llm_trainer/code_sandbox.py under unshare (it is PID 1 of a fresh PID namespace, so nothing it starts can
signal it). It reads a batch of jobs (a length-prefixed marshal record) from stdin, keeps stdin from its children, mounts a size-capped private tmpfs on
its folder, and for each job forks a fresh child in a fresh sub-folder. The child, before it runs any of the job's
code, takes its own process group, sets the resource limits, restricts itself with Landlock and seccomp (exiting
with status 70 if any of them fails), then runs setup + program + tests in one namespace and, only after the last
test passed, writes ``V`` + a per-job nonce to its pipe. The server kills the child at the time limit, reads the
pipe and the wait status, kills whatever the job left, removes the sub-folder and sends the verdict to the host.
In a session the host sends further batches on the same pipe. Only the standard library.
"""

import marshal
import os
import select
import signal
import sys
import time

# Landlock (linux/landlock.h) and seccomp (linux/seccomp.h, linux/filter.h) constants.
LL_CREATE_RULESET, LL_ADD_RULE, LL_RESTRICT_SELF = 444, 445, 446
LL_FS_READ = 1 | 4 | 8  # execute, read file, read dir
LL_FS_FILE_ONLY = 1 | 2 | 4 | (1 << 14) | (1 << 15)  # execute, write, read, truncate, ioctl on a device
SECCOMP_ALLOW, SECCOMP_ERRNO, EPERM, ENOSYS = 0x7FFF0000, 0x00050000, 1, 38
CLONE_THREAD = 0x00010000
# arch -> (AUDIT_ARCH, denied with EPERM, clone, clone3): process creation, exec, namespaces, ptrace, mounts, bpf.
SYSCALLS = {
    "x86_64": (0xC000003E, (57, 58, 59, 322, 101, 272, 308, 165, 166, 155, 161, 321, 323, 298, 250, 248, 249), 56, 435),
    "aarch64": (0xC00000B7, (221, 281, 117, 97, 268, 40, 39, 41, 51, 280, 282, 241, 219, 217, 218), 220, 435),
}
SANDBOX_FAILED = 70
KEEP_OUTPUT = 2000


class Kernel:
    """ctypes access to mount, prctl and the Landlock system calls (imported once, before any fork)."""

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.abi = max(0, self.libc.syscall(LL_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
        self.program = None  # the seccomp filter, built by seccomp_program

    def tmpfs(self, folder, size_mb):
        """Mount a fresh tmpfs (size and inode capped) over ``folder``; it vanishes with the mount namespace."""
        options = f"size={size_mb}m,nr_inodes=8192,mode=0700".encode()
        return self.libc.mount(b"tmpfs", folder.encode(), b"tmpfs", 0, options) == 0

    def landlock(self, read_paths, write_path):
        """Writes only under ``write_path``; reads only there and under ``read_paths``; no TCP bind or connect; from
        ABI 6 no signal or abstract socket outside the sandbox. True when in force."""
        ctypes, syscall, abi = self.ctypes, self.libc.syscall, self.abi
        if abi < 1:
            return False
        handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (
            1 << 15 if abi >= 5 else 0)

        class Ruleset(ctypes.Structure):
            _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

        class PathBeneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

        attr = Ruleset(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
        size = 8 if abi < 4 else 16 if abi < 6 else 24
        ruleset = syscall(LL_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
        if ruleset < 0:
            return False
        for path, access in [*((p, LL_FS_READ) for p in read_paths), (write_path, handled)]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            allowed = (access if os.path.isdir(path) else access & LL_FS_FILE_ONLY) & handled
            rule = PathBeneath(allowed, fd)
            syscall(LL_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
            os.close(fd)
        restricted = self.libc.prctl(38, 1, 0, 0, 0) == 0 and syscall(
            LL_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
        os.close(ruleset)
        return restricted

    def seccomp(self):
        """Install the seccomp filter (built once, in the server, before any fork). True when installed."""
        if self.program is None:
            self.program = self.seccomp_program()
        if self.program is False:
            return False
        return self.libc.prctl(38, 1, 0, 0, 0) == 0 and self.libc.prctl(
            22, 2, self.ctypes.byref(self.program[0]), 0, 0) == 0

    def seccomp_program(self):
        """A filter that fails process creation (fork, vfork, clone other than a thread; clone3 says ENOSYS so libc
        falls back to clone), exec, namespaces, ptrace and mounts with EPERM: (program, its filters), or False
        on a machine whose system call numbers this file does not know."""
        ctypes, arch = self.ctypes, SYSCALLS.get(os.uname().machine)
        if arch is None:
            return False
        audit_arch, denied, clone, clone3 = arch
        deny = SECCOMP_ERRNO | EPERM
        body = [(0x20, 0, 0, 4), (0x15, 1, 0, audit_arch), (0x06, 0, 0, deny),  # another ABI: deny everything
                (0x20, 0, 0, 0), (0x35, 0, 1, 0x40000000), (0x06, 0, 0, deny),  # the x32 system calls
                (0x15, 0, 1, clone3), (0x06, 0, 0, SECCOMP_ERRNO | ENOSYS),
                # clone: a thread (CLONE_THREAD in args[0]) is allowed, a new process is not
                (0x15, 0, 4, clone), (0x20, 0, 0, 16), (0x45, 1, 0, CLONE_THREAD), (0x06, 0, 0, deny),
                (0x06, 0, 0, SECCOMP_ALLOW)]
        for nr in denied:
            body += [(0x15, 0, 1, nr), (0x06, 0, 0, deny)]
        body.append((0x06, 0, 0, SECCOMP_ALLOW))

        class Filter(ctypes.Structure):
            _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                        ("k", ctypes.c_uint32)]

        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

        filters = (Filter * len(body))(*[Filter(*instruction) for instruction in body])
        return Program(len(body), filters), filters


def classify(exc):
    """The failure reason of an exception raised by the code or its tests."""
    import errno

    if isinstance(exc, AssertionError):
        return "wrong_answer"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno in (
            errno.EPERM, errno.EACCES, errno.EROFS, errno.ENETUNREACH, errno.ENETDOWN, errno.EAFNOSUPPORT,
            errno.EFBIG, errno.ENOSPC, errno.EMFILE, errno.EAGAIN, errno.EDQUOT, errno.ECONNREFUSED)):
        return "denied"
    if isinstance(exc, SyntaxError):
        return "syntax_error"
    return "crashed"


def child(job, spec, kernel, folder, pipe, nonce):
    """In the forked child: lock down, run the job, write the verdict; never returns."""
    try:
        os.setpgid(0, 0)
        os.dup2(pipe, 3)
        os.closerange(4, 1 << 16)  # the host's result pipe and every other job's descriptors
        os.chdir(folder)
        os.environ.update(HOME=folder, TMPDIR=folder)
        import resource  # imported by the server before the first fork: a dictionary look-up here

        for name, value in spec["limits"].items():
            soft = value
            resource.setrlimit(getattr(resource, name), (soft, value + 1 if name == "RLIMIT_CPU" else value))
        if spec["landlock"] and not kernel.landlock(spec["read_paths"], folder):
            os.write(3, b"Slandlock could not be applied")
            os._exit(SANDBOX_FAILED)
        if spec["seccomp"] and not kernel.seccomp():
            os.write(3, b"Sseccomp could not be applied")
            os._exit(SANDBOX_FAILED)
    except BaseException as exc:  # noqa: BLE001 - nothing of the job runs unless every layer is in place
        try:
            os.write(3, f"S{type(exc).__name__}: {exc}"[:300].encode(errors="replace"))
        finally:
            os._exit(SANDBOX_FAILED)
    program, setup, tests = job
    del job, spec, kernel
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    write, exit_now = os.write, os._exit
    try:
        for source, name in ((setup, "<setup>"), (program, "<solution>"), (tests, "<tests>")):
            exec(compile(source, name, "exec"), namespace)  # noqa: S102 - running it is the point; it is sandboxed
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included: no verdict
        flush()
        try:
            detail = f"{type(exc).__name__}: {exc}"[:500]
        except BaseException:  # noqa: BLE001 - an exception whose str() raises
            detail = type(exc).__name__
        try:
            write(3, f"F{classify(exc)}\t{detail}".encode(errors="replace"))
        finally:
            exit_now(1)
    flush()
    try:
        write(3, b"V" + nonce)
    finally:
        exit_now(0)


def flush():
    """Flush the child's stdout and stderr into its output file (what the code printed), ignoring failures."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001, S110 - the code may have replaced or broken them
            pass


def wait(pid, timeout):
    """(wait status, timed out): the child's status, after killing its process group at ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    while True:
        left = deadline - time.monotonic()
        if pidfd is not None:
            ready = select.select([pidfd], [], [], max(0.0, left))[0]
        else:
            time.sleep(min(0.005, max(0.0, left)))
            ready = True
        done, status = os.waitpid(pid, os.WNOHANG) if ready else (0, 0)
        if done:
            break
        if time.monotonic() >= deadline:
            for target in (-pid, pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
            status = os.waitpid(pid, 0)[1]
            if pidfd is not None:
                os.close(pidfd)
            return status, True
    if pidfd is not None:
        os.close(pidfd)
    return status, False


def verdict(status, timed_out, record, nonce):
    """(passed, reason, detail) from the child's wait status and what it wrote to its pipe."""
    if timed_out:
        return False, "timeout", "over the time limit"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return False, "timeout", "over the CPU time limit"
        if sig == signal.SIGKILL:
            return False, "memory", "killed (SIGKILL)"
        return False, "crashed", f"killed by signal {signal.Signals(sig).name}"
    code = os.WEXITSTATUS(status)
    if code == 0 and record == b"V" + nonce:
        return True, None, ""
    if code == SANDBOX_FAILED and record.startswith(b"S"):
        return False, "sandbox_failed", record[1:].decode(errors="replace")
    if record.startswith(b"F"):
        reason, _, detail = record[1:].decode(errors="replace").partition("\t")
        return False, reason, detail
    return False, "crashed", f"exited with status {code} before its tests finished"


def read_some(fd, limit=8192):
    """Up to ``limit`` bytes already written to a pipe whose writers are gone (or a non-blocking read)."""
    os.set_blocking(fd, False)
    chunks, kept = [], 0
    while kept < limit:
        try:
            chunk = os.read(fd, limit - kept)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        kept += len(chunk)
    return b"".join(chunks)


def run_job(index, job, spec, kernel, root):
    """Fork, run and judge one job in its own sub-folder; the record sent to the host."""
    started = time.monotonic()
    folder = os.path.join(root, f"job{index}")
    os.mkdir(folder, 0o700)
    output = os.open(os.path.join(folder, ".output"), os.O_RDWR | os.O_CREAT, 0o600)
    read_end, write_end = os.pipe()
    nonce = os.urandom(24)
    pid = os.fork()
    if pid == 0:
        os.dup2(output, 1)
        os.dup2(output, 2)
        child(job, spec, kernel, folder, write_end, nonce)
    os.close(write_end)
    status, timed_out = wait(pid, spec["timeout"])
    record = read_some(read_end)
    os.close(read_end)
    passed, reason, detail = verdict(status, timed_out, record, nonce)
    init = os.getpid() == 1
    if init:  # init of the PID namespace: whatever the job left running (no seccomp) dies now
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    while True:  # and is reaped (waited for when we are init: nothing of the job outlives it)
        try:
            if os.waitpid(-1, 0 if init else os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    text = os.pread(output, KEEP_OUTPUT, 0).decode(errors="replace")
    os.close(output)
    remove(folder)
    return index, passed, reason, detail, text, time.monotonic() - started


def remove(folder):
    """Remove a job's folder, whatever the code did to its permissions."""
    for top, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(top, name))
            except OSError:
                pass
        for name in dirs:
            path = os.path.join(top, name)
            try:
                os.chmod(path, 0o700)
                os.rmdir(path)
            except OSError:
                pass
    try:
        os.rmdir(folder)
    except OSError:
        pass


def read_frame(fd):
    """One length-prefixed marshal record from ``fd``, or None at its end."""
    data = b""
    for size in (4, None):
        want = 4 if size else int.from_bytes(data, "little")
        chunk = b""
        while len(chunk) < want:
            more = os.read(fd, want - len(chunk))
            if not more:
                return None
            chunk += more
        if size:
            data = chunk
        else:
            return marshal.loads(chunk)
    return None


def main():
    """Read the first batch (with the settings), set the sandbox up, run each job, stream the records to the host;
    then each further batch the host sends (a session) until it closes the pipe."""
    jobs_fd = os.dup(0)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # no child can read the host's later batches from stdin
    spec = read_frame(jobs_fd)
    if spec is None:
        os._exit(0)
    out, root, layers = spec["result_fd"], spec["folder"], []
    kernel = Kernel() if spec["tmpfs_mb"] or spec["landlock"] or spec["seccomp"] else None
    import resource  # noqa: F401 - for the children, which set their limits with it

    if spec["seccomp"]:
        kernel.program = kernel.seccomp_program()  # built once; each child only installs it
    # Only as init of a fresh PID namespace (started under unshare, with its own mount namespace): a tmpfs mounted
    # in the caller's mount namespace would outlive the server.
    if spec["tmpfs_mb"] and os.getpid() == 1 and kernel.tmpfs(root, spec["tmpfs_mb"]):
        layers.append("tmpfs")
    os.chdir(root)
    if spec["landlock"] and kernel.abi:
        layers.append(f"landlock{kernel.abi}")
    if spec["seccomp"] and os.uname().machine in SYSCALLS:
        layers.append("seccomp")
    header = ",".join(layers).encode()
    os.write(out, len(header).to_bytes(4, "little") + header)
    batch = spec["jobs"]
    while batch is not None:
        for index, job in enumerate(batch):
            record = marshal.dumps(run_job(index, job, spec, kernel, root))
            os.write(out, len(record).to_bytes(4, "little") + record)
        following = read_frame(jobs_fd)
        batch = None if following is None else following["jobs"]
    os._exit(0)


if __name__ == "__main__":
    main()
