"""Move a folder between a local temporary directory and the artifact store (local or remote)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from zenml.utils import io_utils


def save_folder(uri: str, write: Callable[[str], None]) -> None:
    """Write with ``write(local_dir)``; straight into a local store, through a temporary folder otherwise."""
    if _is_local(uri):
        write(uri)
        return
    with tempfile.TemporaryDirectory() as staging:
        write(staging)
        io_utils.copy_dir(staging, uri, overwrite=True)


def local_folder(uri: str) -> str:
    """A local path holding the artifact's files (a copy for remote stores, kept for memory-mapping)."""
    if _is_local(uri):
        return uri
    staging = tempfile.mkdtemp(prefix="llm-trainer-artifact-")
    io_utils.copy_dir(uri, staging, overwrite=True)
    return staging


def _is_local(uri: str) -> bool:
    return "://" not in uri and Path(uri).parent.exists()
