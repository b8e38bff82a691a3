"""Move a folder between a local temporary directory and the artifact store (local or remote)."""

from __future__ import annotations

import hashlib
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


def folder_content_hash(uri: str, ignore: tuple[str, ...] = ()) -> str | None:
    """A hash of the saved folder's files (names and bytes) but those named in ``ignore``, for ZenML's cache key: a
    step whose inputs were saved again with the same content (``process --no-cache``, then ``full``) is cached
    instead of re-run. None (the artifact's id is used) for a remote store, where reading the files back would
    cost a download."""
    if not _is_local(uri):
        return None
    root = Path(uri)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ignore):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
