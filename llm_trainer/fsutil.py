"""Files and folders: atomic folder writes, what a failed write means, one run per run folder."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from llm_trainer.errors import UserError, exception_chain

logger = logging.getLogger(__name__)

# torch's checkpoint writer (C++) reports a failed write without errno: "unexpected pos 576 vs 534",
# "PytorchStreamWriter failed writing file data/0: file write failed", "basic_ios::clear: iostream error".
TORCH_WRITE_FAILURES = ("PytorchStreamWriter", "inline_container", "file write failed", "iostream error")
LOW_SPACE_BYTES = 64 << 20  # a write that failed with less free than this ran out of space
LOCK_FILE = "run.lock"


def write_dir_atomically(target: Path, save: Callable[[str], None], replace: bool = False) -> Path:
    """Run ``save(staging_dir)`` in a temporary sibling folder, then rename it to ``target``.

    With ``replace`` an existing target is swapped out only after the new one is complete, so a failed
    save (disk full, permissions) leaves the previous version untouched. The folder and its files get the
    modes the user's umask gives (mkdtemp makes 0700 and safetensors writes 0600, which a server running as
    another user, e.g. vLLM in a container, could not read).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save(str(staging))
        apply_umask(staging)
        if target.exists() and replace:
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, retired)
            try:
                os.replace(staging, target)
            except BaseException:  # the new version could not take its place: put the previous one back
                os.replace(retired, target)
                raise
            if retired.is_dir() and not retired.is_symlink():
                shutil.rmtree(retired, ignore_errors=True)
            else:
                retired.unlink()
        elif not target.exists():
            try:
                os.replace(staging, target)
            except OSError as error:
                # Another process finished the same folder between the check and the rename (two runs building one
                # cached tiny model at once): its complete copy stands and this one is dropped.
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def apply_umask(folder: Path) -> None:
    """Folders 0777 and files 0666 less the umask, as ``open`` and ``mkdir`` would have made them."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows."""
    try:  # Linux shows it without changing it (os.umask would, for a moment, in every thread)
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s*([0-7]+)", status, re.MULTILINE).group(1), 8)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def storage_failure(exc: BaseException, folder: Path) -> str | None:
    """Why a write under ``folder`` failed ("No space left on device", "Permission denied"), when ``exc`` is a
    failed write; None for anything else. Writes fail as OSError, as safetensors' SafetensorError (no OSError:
    "I/O error: No space left on device (os error 28)") or as torch's RuntimeError, which names no cause: a
    full disk is then recognised by the free space left."""
    chain = exception_chain(exc)
    for error in chain:
        if code := _errno_of(error):
            return os.strerror(code)
    text = " ".join(str(error) for error in chain)
    if any(isinstance(error, RuntimeError) for error in chain) and any(s in text for s in TORCH_WRITE_FAILURES):
        if free_bytes(folder) < LOW_SPACE_BYTES:
            return os.strerror(errno.ENOSPC)
        return f"write failed ({' '.join(text.split())[:200]})"
    return None


def disk_full(exc: BaseException) -> str | None:
    """One line for a write that failed for want of space (full disk, quota), wherever it happened; None for
    anything else."""
    for error in exception_chain(exc):
        if (code := _errno_of(error)) in (errno.ENOSPC, errno.EDQUOT):
            where = getattr(error, "filename", None)
            return f"cannot write {where}: {os.strerror(code)}" if where else f"a write failed: {os.strerror(code)}"
    return None


def _errno_of(error: BaseException) -> int | None:
    """The errno of an OSError, or of a Rust error's text ("(os error 28)", from safetensors)."""
    if isinstance(error, OSError):
        return error.errno or None
    code = re.search(r"\(os error (\d+)\)", str(error))
    return int(code.group(1)) if code else None


def free_bytes(path: Path) -> int:
    """Free bytes for this user on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's contents, or one line saying why not: missing, a folder, unreadable, or binary."""
    from llm_trainer.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not {what}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not {what}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8 "
                        "text (a binary file?)") from None


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, links resolved, lies under ``folder``."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


@contextmanager
def run_folder_lock(run_dir: Path, poll_seconds: float = 5.0) -> Iterator[None]:
    """Hold the run folder for this process. Another process that holds it (the same config, started
    earlier) is waited for, with a message naming it; a lock left by a killed process is free (the kernel
    drops a dead process's locks), so it is taken over at once."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _lock_failure(path, exc) from exc
    with open(fd, "r+") as handle:
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    logger.warning("run folder %s is in use by %s (a run of the same config and data); waiting "
                                   "for it to finish", run_dir, holder)
                    announced = True
                time.sleep(poll_seconds)
        holder = f"process {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        try:  # unbuffered: a write the disk refused must not be retried when the file closes
            os.pwrite(fd, holder.encode(), 0)
            os.ftruncate(fd, len(holder.encode()))
        except OSError as exc:
            raise _lock_failure(path, exc) from exc
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)


def _lock_failure(path: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write the run folder's lock {path}: {storage_failure(exc, path.parent)}")
