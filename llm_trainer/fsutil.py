"""Atomic folder writes: a reader never sees half a model, checkpoint or adapter."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_dir_atomically(target: Path, save: Callable[[str], None], replace: bool = False) -> Path:
    """Run ``save(staging_dir)`` in a temporary sibling folder, then rename it to ``target``.

    With ``replace`` an existing target is swapped out only after the new one is complete, so a failed
    save (disk full, permissions) leaves the previous version untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save(str(staging))
        if target.exists() and replace:
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        elif not target.exists():
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
