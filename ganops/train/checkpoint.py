# SPDX-License-Identifier: BSD-3-Clause
"""Atomic, ``weights_only``-loadable checkpoints with a ``latest`` pointer, RNG state capture and config checks."""
from __future__ import annotations

import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .._io import atomic_write, write_text
from .errors import UserError
from .runtime import ganops_version

__all__ = [
    "ConfigMismatchError", "CheckpointError", "CheckpointNotFoundError", "FORMAT", "save_checkpoint",
    "load_checkpoint", "load_run_checkpoint", "load_torch_file", "resolve_checkpoint", "latest_checkpoint",
    "check_checkpoint", "load_state", "get_rng_state", "set_rng_state", "config_diff", "check_config", "NON_ARCH_KEYS",
]

LATEST = "latest"
#: the ``format`` entry of every checkpoint the TrainLoop writes: ``ganops.train/<version>``. Bump the version when
#: a change makes older ganops releases misread new checkpoints; loading refuses versions above it.
FORMAT_NAME, FORMAT_VERSION = "ganops.train", 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
# Options that may change between a run and its resume without changing what is being trained.
NON_ARCH_KEYS = frozenset({
    "data", "outdir", "resume", "iters", "kimg", "dry_run", "device", "snap", "sample_every", "impl", "compile",
    "workers", "log_every", "channels_last", "precision", "deterministic", "skip_bad", "allow_upscale", "metrics",
    "metrics_every", "keep", "seed", "batch",
})


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: damaged, not a ganops checkpoint, another recipe's, from a newer ganops,
    or holding NaN/Inf. A click error (one ``Error:`` line naming the flag and path, exit status 2)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path given (also a ``FileNotFoundError``)."""


class ConfigMismatchError(CheckpointError):
    """Resuming with an incompatible configuration; the message lists every differing key. A click error, so a
    recipe's command line prints it on one line without a traceback (exit status 2)."""


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

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(path, write)
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
    """A checkpoint file, or a run directory (its ``latest``); raises :class:`CheckpointNotFoundError` naming
    ``flag``."""
    p = Path(path)
    if p.is_dir():
        ck = latest_checkpoint(p)
        if ck is None:
            ptr = p / LATEST
            why = (f"its '{LATEST}' names {ptr.read_text(encoding='utf-8', errors='replace').strip()!r}, which is "
                   "missing" if ptr.is_file() else f"run directory has no '{LATEST}' checkpoint pointer")
            files = sorted(p.glob("checkpoint-*.pt"))
            raise CheckpointNotFoundError(f"{flag} {p}: {why}; "
                                          + (f"pass one of its checkpoint files, e.g. {flag} {files[-1]}" if files
                                             else "pass a run directory holding checkpoints, or a checkpoint file"))
        return ck
    if not p.is_file():
        raise CheckpointNotFoundError(f"{flag} {p}: no such checkpoint file or run directory")
    return p


def _load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words, without torch's advice to retry with
    ``weights_only=False`` (wrong for a damaged file and unsafe for a foreign one)."""
    msg = str(e)
    glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    if glob:
        return f"it holds a pickled Python object of class {glob.group(1)}, which ganops checkpoints never do; " \
               "left unpickled for safety"
    if isinstance(e, EOFError):
        return "the file is empty or ends early"
    if isinstance(e, (zipfile.BadZipFile, OSError)) or "zip archive" in msg or "PytorchStreamReader" in msg:
        return "truncated, or not a torch zip archive"
    if isinstance(e, pickle.UnpicklingError) or "WeightsUnpickler" in msg:
        return "unreadable pickle data: truncated, or not written by torch.save"
    return f"unreadable: {type(e).__name__}"


def load_torch_file(path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu",
                    advice: str = "") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is a :class:`CheckpointError` starting with ``what``
    (e.g. ``"--resume run/checkpoint-00000100.pt"``): 'damaged or not a ganops file', the reason, ``advice``."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CheckpointError(f"{what}: cannot read it ({e.strerror or e})") from e
    with f, warnings.catch_warnings():  # torch warns about pickle protocols of foreign files before failing
        warnings.simplefilter("ignore", UserWarning)
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:  # RuntimeError, UnpicklingError, EOFError, OSError, KeyError... for bad data
            raise CheckpointError(f"{what}: damaged or not a ganops checkpoint ({_load_failure(e)})"
                                  + (f"; {advice}" if advice else "")) from e


def load_state(obj: Any, state: Any, what: str) -> None:
    """``obj.load_state_dict(state)``; a state that does not fit ``obj`` (missing or unexpected keys, wrong shapes, a
    hand-edited or foreign checkpoint) is a :class:`CheckpointError` starting with ``what`` (e.g. ``"--resume
    run/checkpoint-00000100.pt: models['G']"``), naming the first differences instead of a traceback."""
    try:
        obj.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines)
        detail = detail.rstrip(".") if len(detail) <= 400 else detail[:400] + " ..."
        raise CheckpointError(f"{what} does not fit this {type(obj).__name__} ({type(e).__name__}: "
                              f"{detail or 'no detail'}): the checkpoint was written by another configuration or "
                              "edited; use a checkpoint of this run, or start a new run") from e


def _non_finite(st: dict) -> list[str]:
    """Names of floating-point tensors with NaN/Inf in a checkpoint's models, EMA copies, optimizers and extras."""
    bad: list[str] = []

    def walk(x: Any, name: str) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                bad.append(name)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{name}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{name}[{i}]")

    for group in ("models", "ema", "optimizers", "extra"):
        walk(st.get(group) or {}, group)
    return bad


def check_checkpoint(st: Any, path: str | os.PathLike, *, flag: str = "--resume", recipe: str | None = None) -> dict:
    """Refuse what is not a usable ganops checkpoint (a :class:`CheckpointError` naming ``flag`` and ``path``).

    Always: a dict whose ``format`` (when present: checkpoints written before it existed load) is
    ``ganops.train/N`` with N at most :data:`FORMAT_VERSION` (a newer one is from a newer ganops). With ``recipe``
    (what a recipe resumes or samples from): the ``step`` and ``config`` entries, a ``name`` equal to ``recipe``
    when recorded, and no NaN/Inf in the weights, EMA copies, optimizer state or extras."""
    where = f"{flag} {path}"
    if not isinstance(st, dict):
        raise CheckpointError(f"{where}: not a ganops checkpoint (it holds a {type(st).__name__}, not a checkpoint "
                              "dict)")
    fmt = st.get("format")
    if fmt is not None:
        name, _, ver = str(fmt).partition("/")
        if name != FORMAT_NAME or not ver.isdigit():
            raise CheckpointError(f"{where}: not a ganops checkpoint (format {fmt!r}, expected {FORMAT_NAME}/N)")
        if int(ver) > FORMAT_VERSION:
            by = st.get("ganops_version") or "an unknown version"
            raise CheckpointError(f"{where}: written by a newer ganops ({by}, checkpoint format {fmt}); this ganops "
                                  f"({ganops_version() or 'unknown version'}) reads up to {FORMAT}: upgrade ganops "
                                  "to use it")
    if recipe is None:
        return st
    missing = [k for k in ("step", "config") if k not in st]
    if missing:
        keys = ", ".join(map(repr, list(st)[:4])) + (", ..." if len(st) > 4 else "")
        raise CheckpointError(f"{where}: not a ganops checkpoint (no {' or '.join(missing)} entry; it holds "
                              f"{keys or 'nothing'}: a bare state_dict?)")
    if st.get("name") not in (None, recipe):
        raise CheckpointError(f"{where}: a '{st['name']}' checkpoint, not '{recipe}': pass a {recipe} run, or use "
                              f"the recipe that wrote it")
    bad = _non_finite(st)
    if bad:
        raise CheckpointError(f"{where}: holds NaN/Inf values ({len(bad)} tensor(s), e.g. {bad[0]}); use an earlier "
                              "checkpoint of that run")
    return st


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    flag: str = "--resume", recipe: str | None = None) -> dict:
    """Load a checkpoint (file or run directory) with ``weights_only=True``; every error is a
    :class:`CheckpointError` naming ``flag`` and the path (missing, damaged or foreign, from a newer ganops; with
    ``recipe``: another recipe's, or holding NaN/Inf — see :func:`check_checkpoint`)."""
    p = resolve_checkpoint(path, flag)
    advice = ("resume from another checkpoint-*.pt of that run, or start a new run without --resume"
              if flag == "--resume" else f"pass a run directory or one of its checkpoint-*.pt files as {flag}")
    st = load_torch_file(p, f"{flag} {p}", map_location, advice)
    return check_checkpoint(st, p, flag=flag, recipe=recipe)


def load_run_checkpoint(run: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                        recipe: str | None = None) -> tuple[dict, Path]:
    """The checkpoint a recipe's ``--run`` names (a run directory's latest, or a file) and its run directory.
    Every problem is a :class:`CheckpointError` naming --run (a click error: one line, exit status 2); with
    ``recipe``, a checkpoint of another recipe is one too.
    """
    ck = load_checkpoint(run, map_location, flag="--run", recipe=recipe)
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
    """Raise :class:`ConfigMismatchError` listing every differing architecture key (one line)."""
    diff = config_diff(saved, current, keys)
    if diff:
        keys_ = "; ".join(f"{k}: checkpoint={a!r}, now={b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigMismatchError(
            f"{'--resume ' + source if source else 'cannot resume'}: the architecture config differs in "
            f"{len(diff)} key(s): {keys_}; pass the same values as the checkpointed run (see its config.json), "
            "or start a new run without --resume")
