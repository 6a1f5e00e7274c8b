"""Atomic file writes: a temp file beside the target, then a rename, so a reader never sees half a file.

Used for fused images, weights files and training checkpoints.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open() would give; mkstemp's 0600 is too private


def _write_all(fd: int, payload: bytes | memoryview) -> None:
    """The one low-level write (tests replace it to simulate a full disk)."""
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` via a temp file in the same folder and a rename: never half a file.

    The temp file is `.<name>.<random>.part`; on any failure (disk full, interrupt) it is removed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


__all__ = ["write_bytes_atomic"]
