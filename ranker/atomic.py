"""Write a folder atomically: readers see the old folder or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder next to `target`; on success it replaces `target`.

    The staging folder is on the same file system, so the final rename is atomic. An existing
    `target` is moved aside first (a folder cannot replace a non-empty folder) and deleted
    after the swap. On any error the staging folder is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the result should be readable like any folder
    try:
        yield staging
        old = None
        if target.exists():
            old = target.parent / f"{staging.name}.old"
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
