# SPDX-License-Identifier: BSD-3-Clause
"""Atomic file writes: a temporary file beside the target, flushed to disk, then renamed onto it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["temp_path", "atomic_write", "write_text"]


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """The temporary name :func:`atomic_write` uses for ``path``: ``.NAME.tmpPID`` (hidden), or ``NAME.tmpPID.EXT``
    with ``suffix=".EXT"`` for writers that pick the file format from the name (PIL, ``np.savez``).
    ``ganops.train.rundir.remove_stale_temps`` recognises both."""
    path = Path(path)
    name = f"{path.name}.tmp{os.getpid()}{suffix}" if suffix else f".{path.name}.tmp{os.getpid()}"
    return path.with_name(name)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, suffix: str = "",
                 fsync: bool = True) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (:func:`temp_path`), fsync it, then ``os.replace`` it
    onto ``path``: a crash at any moment leaves either the old file or the new one, never a torn one.

    Args:
        path: destination.
        write: writes the whole file at the path it is given.
        suffix: extension of the temporary name, for writers that pick the format from it.
        fsync: flush the file to disk before the rename (off for bulk outputs where a torn file after a power
            loss costs nothing).

    Raises:
        OSError: naming ``path`` (the user's choice), not the temporary name. A failure leaves no temporary file.
    """
    tmp = os.fspath(temp_path(path, suffix))
    try:
        write(tmp)
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, os.fspath(path)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (UTF-8) atomically, see :func:`atomic_write`."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
