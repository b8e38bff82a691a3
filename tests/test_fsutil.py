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


def test_without_replace_an_existing_folder_is_kept(tmp_path):
    target = tmp_path / "model"
    write_dir_atomically(target, write_files("first"))
    write_dir_atomically(target, write_files("second"))
    assert (target / "weights.safetensors").read_text() == "first"
