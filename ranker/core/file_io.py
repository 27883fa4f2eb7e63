"""Write folders and files atomically, and fail loudly when the disk refuses them.

Readers see the old folder (or file) or the new one, never half of either. A crash at any moment
(SIGKILL, power cut) leaves the old version or the new one in place, plus at worst a hidden staging
entry beside it (`.<name>.<8 random chars>.tmp`, or `...tmp.old`), which `stale_staging` finds.
Everything is fsynced before it is renamed into place, and the folder after, so a power cut
cannot leave an empty file under the new name.

A write the file system refuses (read-only folder, no space left, file size limit) raises an
OSError (errno kept, so PermissionError / OSError subclasses still match) whose message names
the target, says which it was, and that the previous version is unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
STAGING_SUFFIX = ".tmp"
# mkdtemp/mkstemp names: prefix + 8 characters from [a-z0-9_] + suffix.
_STAGING_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.old)?$")
_OS_ERROR_RE = re.compile(r"\(os error (\d+)\)")  # how safetensors' Rust I/O errors carry the errno


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_error(error: BaseException, target: str | os.PathLike) -> BaseException:
    """`error` as an OSError that names `target` and says "read-only" or "full"; other errors unchanged.

    Also understands safetensors' SafetensorError, which is no OSError but ends in "(os error N)".
    """
    code = getattr(error, "errno", None)
    if code is None and (match := _OS_ERROR_RE.search(str(error))):
        code = int(match.group(1))
    target = Path(target)
    anchor = _nearest_existing(target.parent)
    filename = getattr(error, "filename", None)
    if isinstance(filename, (str, os.PathLike)) and not Path(os.path.abspath(filename)).is_relative_to(os.path.abspath(anchor)):
        return error  # it failed on some other path (say, reading an input): not a write of `target`
    if code in READ_ONLY_ERRNOS:
        reason = f"{anchor} is read-only (this process may not write there)"
    elif code in FULL_ERRNOS:
        reason = "the disk is full or the file size limit was reached"
    else:
        return error
    return OSError(code, f"cannot write {target}: {reason} ({os.strerror(code)}); the previous version, if any, is unchanged")


@contextlib.contextmanager
def clear_write_errors(target: str | os.PathLike) -> Iterator[None]:
    """Re-raise an error of the block as `write_error(error, target)` (the same error when it is no write fault)."""
    try:
        yield
    except BaseException as error:
        clear = write_error(error, target)
        if clear is error:
            raise
        raise clear from error


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make the entries of `folder` (renames, new files) durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: a file system that cannot sync folders (it has nothing to sync)
            raise
    finally:
        os.close(handle)


def _fsync_tree(folder: Path) -> None:
    for parent, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(parent, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_folder(parent)


def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a libc older than glibc 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux RENAME_EXCHANGE); False where unsupported."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Put `staging` at `target`; returns where the old target now lies (None if there was none)."""
    if not os.path.lexists(target):
        os.replace(staging, target)
        return None
    if _exchange(staging, target):  # target is never absent, not even for an instant
        return staging
    # A folder cannot replace a non-empty folder: move the old one aside first, and back on failure.
    old = staging.with_name(staging.name + ".old")
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    return old


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder next to `target`; on success it replaces `target`.

    The staging folder is on the same file system, so the final rename is atomic (an exchange of
    the two folders where the kernel supports it). On any error the staging folder is removed,
    `target` is untouched, and a read-only or full disk raises the clear OSError of `write_error`.
    """
    target = Path(target)
    with clear_write_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=target.parent))
    try:
        with clear_write_errors(target):
            os.chmod(staging, 0o755)  # mkdtemp makes it private; the result should be readable like any folder
            yield staging
            _fsync_tree(staging)
            old = _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)
    fsync_folder(target.parent)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary file path next to `target` for the block to write; on success it replaces `target`.

    For writers that want a path rather than bytes (pyarrow's `write_table`, `safetensors.save_file`).
    The file gets permissions `mode` (0o600 for private data) and is synced before the rename, the
    folder after; on any error the temporary file is removed, `target` is untouched, and a read-only
    or full disk raises the clear OSError of `write_error`.
    """
    target = Path(target)
    with clear_write_errors(target):
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=target.parent)
        os.close(handle)
    try:
        with clear_write_errors(target):
            yield Path(temp)
            with open(temp, "rb") as file:
                os.fsync(file.fileno())
            os.chmod(temp, mode)  # mkstemp makes it private (0o600)
            os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)


def atomic_write(target: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to the file `target` through a synced temporary file and a rename; returns `target`."""
    with atomic_file(target) as temp:
        temp.write_bytes(data)
    return Path(target)


def stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Staging entries that `atomic_folder`/`atomic_file` left in `folder` when a process died mid-write."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _STAGING_RE.match(p.name))


def remove_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Delete `stale_staging(folder)`; returns what was removed.

    Only the owner of `folder` can tell that no writer is still running: call it under its lock.
    """
    removed = stale_staging(folder)
    for path in removed:
        _remove(path)
    return removed
