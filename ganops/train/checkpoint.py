# SPDX-License-Identifier: BSD-3-Clause
"""Atomic, ``weights_only``-loadable checkpoints with a ``latest`` pointer, RNG state capture and config checks."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterable

import click
import numpy as np
import torch

from .rundir import write_text

__all__ = [
    "ConfigMismatchError", "save_checkpoint", "load_checkpoint", "load_run_checkpoint", "resolve_checkpoint",
    "latest_checkpoint",
    "get_rng_state", "set_rng_state", "config_diff", "check_config", "NON_ARCH_KEYS",
]

LATEST = "latest"
# Options that may change between a run and its resume without changing what is being trained.
NON_ARCH_KEYS = frozenset({
    "data", "outdir", "resume", "iters", "kimg", "dry_run", "device", "snap", "sample_every", "impl", "compile",
    "workers", "log_every", "channels_last", "precision", "deterministic", "skip_bad", "allow_upscale", "metrics",
    "metrics_every", "keep", "seed", "batch",
})


class ConfigMismatchError(click.ClickException, ValueError):
    """Resuming with an incompatible configuration; the message lists every differing key. A click error, so a
    recipe's command line prints it without a traceback (exit status 1)."""


def get_rng_state() -> dict:
    """RNG states of Python, numpy, torch CPU and all CUDA devices, as tensors and plain lists
    (accepted by ``torch.load(weights_only=True)``)."""
    py = random.getstate()
    npst = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [str(npst[0]), torch.from_numpy(np.asarray(npst[1], dtype=np.int64)), int(npst[2]),
                  int(npst[3]), float(npst[4])],
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only for devices present)."""
    v, internal, gauss = state["python"]
    random.setstate((int(v), tuple(int(x) for x in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


def save_checkpoint(state: dict, path: str | os.PathLike, *, update_latest: bool = True) -> Path:
    """Write ``state`` with ``torch.save`` to a temp file, fsync, ``os.replace`` onto ``path``, then point the
    ``latest`` file of the same folder at it (also atomically). A crash at any moment leaves the previous
    checkpoint and pointer intact.

    Args:
        state: tensors, dicts, lists, numbers and strings only (no pickled classes) so that
            ``weights_only=True`` can load it.
        path: destination file.
        update_latest: write the ``latest`` pointer.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if update_latest:
        write_text(path.parent / LATEST, path.name + "\n")
    return path


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Checkpoint named by ``run_dir/latest``, or None when there is none."""
    ptr = Path(run_dir) / LATEST
    if not ptr.is_file():
        return None
    target = Path(run_dir) / ptr.read_text(encoding="utf-8").strip()
    return target if target.is_file() else None


def resolve_checkpoint(path: str | os.PathLike, flag: str = "--resume") -> Path:
    """A checkpoint file, or a run directory (its ``latest``); raises FileNotFoundError naming ``flag``."""
    p = Path(path)
    if p.is_dir():
        ck = latest_checkpoint(p)
        if ck is None:
            raise FileNotFoundError(f"{flag} {p}: run directory has no '{LATEST}' checkpoint pointer")
        return ck
    if not p.is_file():
        raise FileNotFoundError(f"{flag} {p}: no such checkpoint file or run directory")
    return p


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    flag: str = "--resume") -> dict:
    """Load a checkpoint (file or run directory) with ``weights_only=True``; errors name ``flag``."""
    p = resolve_checkpoint(path, flag)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{flag} {p}: cannot load checkpoint ({type(e).__name__}: {e})") from e


def load_run_checkpoint(run: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, Path]:
    """The checkpoint a recipe's ``--run`` names (a run directory's latest, or a file) and its run directory.
    A missing path is a click usage error and an unreadable file a click error, both naming --run (no traceback).
    """
    try:
        ck = load_checkpoint(run, map_location, flag="--run")
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from None
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    p = Path(run)
    return ck, (p if p.is_dir() else p.resolve().parent)


def config_diff(saved: dict, current: dict, keys: Iterable[str] | None = None) -> dict[str, tuple[Any, Any]]:
    """Differences ``{key: (saved, current)}`` over ``keys`` (default: all keys not in :data:`NON_ARCH_KEYS`)."""
    if keys is None:
        keys = sorted((set(saved) | set(current)) - NON_ARCH_KEYS)
    missing = object()
    out = {}
    for k in keys:
        a, b = saved.get(k, missing), current.get(k, missing)
        if a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            out[k] = ("<missing>" if a is missing else a, "<missing>" if b is missing else b)
    return out


def check_config(saved: dict, current: dict, keys: Iterable[str] | None = None, *, source: str = "") -> None:
    """Raise :class:`ConfigMismatchError` listing every differing architecture key."""
    diff = config_diff(saved, current, keys)
    if diff:
        lines = "\n".join(f"  {k}: checkpoint={a!r}, now={b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigMismatchError(
            f"cannot resume{' from ' + source if source else ''}: the architecture config differs in "
            f"{len(diff)} key(s) ({', '.join(sorted(diff))}):\n{lines}\n"
            "Pass the same values as the checkpointed run (see its config.json), or start a new run.")
