"""Atomic folder writes: a failed save leaves the previous version untouched and no temporary folder behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from llm_trainer.fsutil import write_dir_atomically


def write_files(content: str):
    def save(folder: str) -> None:
        (Path(folder) / "weights.safetensors").write_text(content)
        (Path(folder) / "config.json").write_text("{}")

    return save


def test_replace_swaps_in_a_complete_new_version(tmp_path):
    target = tmp_path / "adapter"
    write_dir_atomically(target, write_files("v1"))
    write_dir_atomically(target, write_files("v2"), replace=True)
    assert (target / "weights.safetensors").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_save_keeps_the_previous_version(tmp_path, code):
    target = tmp_path / "adapter"
    write_dir_atomically(target, write_files("v1"))

    def fails_half_way(folder: str) -> None:
        (Path(folder) / "weights.safetensors").write_text("partial")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OSError, match=os.strerror(code)):
        write_dir_atomically(target, fails_half_way, replace=True)
    assert (target / "weights.safetensors").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_folder_that_is_not_writable_keeps_the_previous_version(tmp_path, monkeypatch):
    """Root ignores file modes, so the refusal to create the staging folder is simulated."""
    import tempfile

    target = tmp_path / "adapter"
    write_dir_atomically(target, write_files("v1"))

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(PermissionError):
        write_dir_atomically(target, write_files("v2"), replace=True)
    assert (target / "weights.safetensors").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_failed_swap_puts_the_previous_version_back(tmp_path, monkeypatch):
    """The old folder is moved aside first; if the new one then cannot take its place, the old one returns."""
    target = tmp_path / "adapter"
    write_dir_atomically(target, write_files("v1"))
    real_replace, calls = os.replace, []

    def second_fails(source, destination):
        calls.append((str(source), str(destination)))
        if len(calls) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(destination))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError):
        write_dir_atomically(target, write_files("v2"), replace=True)
    assert len(calls) == 3  # aside, the failed swap, and back
    assert (target / "weights.safetensors").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_without_replace_an_existing_folder_is_kept(tmp_path):
    target = tmp_path / "model"
    write_dir_atomically(target, write_files("first"))
    write_dir_atomically(target, write_files("second"))
    assert (target / "weights.safetensors").read_text() == "first"


def test_a_folder_another_process_finished_first_stands_and_this_copy_is_dropped(tmp_path, monkeypatch):
    """Two runs building one cached model at once: the other one renames its folder into place between this one's
    check and its rename (which then fails with ENOTEMPTY). Theirs stands, no staging folder is left, no error."""
    target = tmp_path / "model"
    real_replace = os.replace

    def the_other_run_wins(source, destination):
        Path(destination).mkdir()
        write_files("theirs")(str(destination))  # their complete folder, just renamed into place
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", the_other_run_wins)
    assert write_dir_atomically(target, write_files("ours")) == target
    assert (target / "weights.safetensors").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    def disk_error(source, destination):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(destination))

    monkeypatch.setattr(os, "replace", disk_error)
    with pytest.raises(OSError, match="Input/output error"):  # any other failure is still an error
        write_dir_atomically(tmp_path / "other", write_files("ours"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --- file modes: a server running as another user can read what was saved ------------------------------------


@pytest.mark.parametrize(("umask", "folder_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_saved_folders_and_files_follow_the_umask(tmp_path, umask, folder_mode, file_mode):
    """mkdtemp makes 0700 folders and safetensors writes 0600 files; save_pretrained's modes are the umask's."""
    import stat

    import torch
    from safetensors.torch import save_file

    def save(folder: str) -> None:
        save_file({"w": torch.zeros(4)}, os.path.join(folder, "model.safetensors"))
        (Path(folder) / "tokenizer").mkdir()
        (Path(folder) / "tokenizer" / "tokenizer.json").write_text("{}")

    previous = os.umask(umask)
    try:
        target = write_dir_atomically(tmp_path / "merged", save)
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [target, *target.rglob("*")]}
    assert modes == {"merged": folder_mode, "merged/tokenizer": folder_mode,
                     "merged/model.safetensors": file_mode, "merged/tokenizer/tokenizer.json": file_mode}


# --- what a failed write means ----------------------------------------------------------------------------------


def test_storage_failures_are_named_whatever_raised_them(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from llm_trainer import fsutil

    full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert fsutil.storage_failure(full, tmp_path) == "No space left on device"
    assert fsutil.storage_failure(OSError(errno.EACCES, "denied"), tmp_path) == "Permission denied"
    torch_writer = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert fsutil.storage_failure(torch_writer, tmp_path).startswith("write failed")  # disk not full here
    monkeypatch.setattr(fsutil.shutil, "disk_usage", lambda path: shutil_usage(free=4096))
    assert fsutil.storage_failure(torch_writer, tmp_path / "not" / "made") == "No space left on device"
    assert fsutil.storage_failure(ValueError("a bug"), tmp_path) is None


def shutil_usage(free: int):
    import shutil

    return shutil._ntuple_diskusage(total=1 << 30, used=(1 << 30) - free, free=free)


# --- one run per run folder ---------------------------------------------------------------------------------------

HOLDER = """
import sys, time
from llm_trainer.fsutil import run_folder_lock
with run_folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_waits_for_the_holder_and_takes_over_once_it_is_killed(tmp_path, caplog):
    import subprocess
    import sys
    import threading

    from conftest import ROOT
    from llm_trainer.fsutil import run_folder_lock

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        acquired = threading.Event()

        def second_run() -> None:
            with run_folder_lock(run_dir, poll_seconds=0.05):
                acquired.set()

        thread = threading.Thread(target=second_run)
        with caplog.at_level("WARNING", logger="llm_trainer.fsutil"):
            thread.start()
            assert not acquired.wait(1.0)  # it waits while the first run lives
            holder.kill()  # kill -9: the lock file stays behind, the kernel's lock does not
            holder.wait()
            assert acquired.wait(10)
        thread.join()
    finally:
        holder.kill()
    assert (run_dir / "run.lock").exists()
    [message] = [r.getMessage() for r in caplog.records]
    assert f"run folder {run_dir} is in use by process {holder.pid} on " in message and "waiting" in message
