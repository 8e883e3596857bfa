# SPDX-License-Identifier: BSD-3-Clause
"""Run directories ``{outdir}/{id:05d}-{name}`` with ``config.json`` written before step 0."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .._io import write_text
from .errors import UserError

__all__ = ["RunDirError", "check_outdir", "make_run_dir", "find_run_dirs", "remove_stale_temps", "write_json",
           "write_text"]

_RUN_RE = re.compile(r"^(\d{5,})-(.+)$")


class RunDirError(UserError, OSError):
    """The output directory cannot be used (the message names --outdir and the reason; a click error, exit 2)."""


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


# Temporary names of the atomic writer (ganops._io.temp_path): ".NAME.tmpPID" (checkpoints, text) and
# "NAME.tmpPID.EXT" (images).
_TEMP = re.compile(r"^(\..+\.tmp(\d+)|.+\.tmp(\d+)\.(png|gif))$")


def remove_stale_temps(run_dir: str | os.PathLike) -> list[str]:
    """Delete the temporary files that a killed process left in ``run_dir`` (a SIGKILL in the middle of an atomic
    write leaves its temp file; what they would have replaced is intact). Files of a process still running are
    kept. Returns the names removed."""
    removed = []
    for p in Path(run_dir).iterdir() if Path(run_dir).is_dir() else []:
        m = _TEMP.match(p.name)
        if not m or not p.is_file():
            continue
        pid = int(m.group(2) or m.group(3))
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (non-JSON values are stringified)."""
    write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def find_run_dirs(outdir: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Run directories in ``outdir`` (optionally only those ``*-{name}``), sorted by id."""
    outdir = Path(outdir)
    if not outdir.is_dir():
        return []
    runs = []
    for p in outdir.iterdir():
        m = _RUN_RE.match(p.name)
        if p.is_dir() and m and (name is None or m.group(2) == name):
            runs.append((int(m.group(1)), p))
    return [p for _, p in sorted(runs)]


def check_outdir(outdir: str | os.PathLike) -> None:
    """Raise :class:`RunDirError` if ``outdir`` cannot hold a new run directory; creates nothing.

    ``outdir`` must be a directory, or not exist yet with its nearest existing parent a directory this user can
    write into (so that training fails before the data pass, not after it).
    """
    outdir = Path(outdir)
    if outdir.exists():
        if not outdir.is_dir():
            raise RunDirError(f"--outdir {outdir}: exists and is not a directory; choose another --outdir")
        if not os.access(outdir, os.W_OK | os.X_OK):
            raise RunDirError(f"--outdir {outdir}: not writable by this user; choose another --outdir")
        return
    parent = outdir.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RunDirError(f"--outdir {outdir}: cannot be created, {parent} is a file; choose another --outdir")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"--outdir {outdir}: cannot be created, {parent} is not writable by this user; choose "
                          "another --outdir")


def make_run_dir(outdir: str | os.PathLike, name: str, config: dict | None = None) -> Path:
    """Create ``{outdir}/{id:05d}-{name}`` with the next free id and write ``config.json`` into it.

    Args:
        outdir: parent folder (created if missing).
        name: run description, e.g. ``fastgan-emoji-256``; path separators are replaced by ``_``.
        config: resolved options, written as ``config.json`` (None: not written).

    Returns:
        The new run directory.

    Raises:
        RunDirError: ``outdir`` cannot be created or written.
    """
    outdir = Path(outdir)
    name = re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("_") or "run"
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--outdir {outdir}: cannot create the output directory ({e.strerror or e}); choose "
                          "another --outdir") from e
    check_outdir(outdir)  # it exists now: a directory this user can write into
    ids = [int(_RUN_RE.match(p.name).group(1)) for p in outdir.iterdir() if _RUN_RE.match(p.name)]
    rid = max(ids, default=-1) + 1
    while True:
        run = outdir / f"{rid:05d}-{name}"
        try:
            run.mkdir()
            break
        except FileExistsError:  # another process took this id
            rid += 1
        except OSError as e:
            raise RunDirError(f"--outdir {outdir}: cannot create run directory {run.name} ({e.strerror or e}); "
                              "choose another --outdir") from e
    if config is not None:
        write_json(run / "config.json", config)
    return run
