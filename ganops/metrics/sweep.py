# SPDX-License-Identifier: BSD-3-Clause
"""A generator against a real set (FID, KID, precision/recall of N fakes); every checkpoint of a run in one table."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .._io import write_text
from ..data import to_uint8
from ._images import ImageSource

__all__ = ["FakesFn", "dataset_source", "fake_features", "compare_features", "evaluate_generator",
           "sweep_checkpoints", "best_row", "format_table"]

#: ``fakes(n, start) -> (n, 3, H, W)`` in [-1, 1]: images ``start .. start + n - 1`` of a fixed sequence
FakesFn = Callable[[int, int], torch.Tensor]
COLUMNS = ("step", "fid", "kid", "kid_std", "precision", "recall")


class _U8View(Sequence):
    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return to_uint8(self.dataset[i])


class _DatasetSource(ImageSource):
    def fingerprint(self) -> str:
        if self._fp is None:
            import hashlib

            h = hashlib.sha256()
            for i in range(len(self.items)):
                x = self.items[i]
                h.update(str(tuple(x.shape)).encode())
                h.update(x.numpy().tobytes())
            self._fp = h.hexdigest()
        return self._fp


def dataset_source(dataset: Any, name: str = "dataset") -> ImageSource:
    """A dataset of float (3, H, W) images in [-1, 1] as an :class:`ImageSource` of uint8 images, read lazily (no
    copy of the whole set in memory), fingerprinted by its pixels (the key of the real-feature cache)."""
    return _DatasetSource(_U8View(dataset), name=name)


@torch.no_grad()
def fake_features(fakes: FakesFn, num: int, *, batch: int = 16, device: str | torch.device = "cpu",
                  progress: bool = False) -> np.ndarray:
    """Inception pool3 features of ``num`` generated images, made ``batch`` at a time (never all in memory).

    Returns:
        (num, 2048) float64.
    """
    from .features import inception_features

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num, desc="generating + inception", unit="img", leave=False, file=sys.stderr)
    out = []
    for s in range(0, num, batch):
        b = min(batch, num - s)
        x = fakes(b, s)
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != b or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"fakes({b}, {s}) must return ({b}, 3, H, W) images in [-1, 1], got {got}")
        out.append(inception_features(to_uint8(x), batch_size=b, device=device))
        if bar is not None:
            bar.update(b)
    if bar is not None:
        bar.close()
    return np.concatenate(out)


def compare_features(real: np.ndarray, fake: np.ndarray, *, kid_subset: int = 1000, k: int = 3) -> dict[str, float]:
    """FID, KID (mean and std over 100 subsets of min(kid_subset, N_real, N_fake)), and improved precision/recall
    (k nearest neighbours; NaN when a set has k or fewer images)."""
    from .fid import fid_from_features, kid_from_features
    from .prdc import precision_recall

    n = min(len(real), len(fake))
    kid, kid_std = kid_from_features(real, fake, subset_size=min(kid_subset, n))
    p = r = float("nan")
    if n > k:
        p, r = precision_recall(real, fake, k=k)
    return {"fid": float(fid_from_features(real, fake)), "kid": float(kid), "kid_std": float(kid_std),
            "precision": float(p), "recall": float(r)}


def evaluate_generator(real_feats: np.ndarray, fakes: FakesFn, num: int, *, batch: int = 16,
                       device: str | torch.device = "cpu", progress: bool = False, kid_subset: int = 1000) -> dict:
    """``num`` fakes (as many as asked, whatever the size of the real set) against ``real_feats``: a row
    ``{"fid", "kid", "kid_std", "precision", "recall", "num_fake", "num_real", "seconds"}``."""
    t = time.time()
    ff = fake_features(fakes, num, batch=batch, device=device, progress=progress)
    row = compare_features(real_feats, ff, kid_subset=kid_subset)
    return {**row, "num_fake": int(num), "num_real": int(len(real_feats)), "seconds": round(time.time() - t, 2)}


def best_row(rows: Sequence[Mapping], key: str = "fid") -> int | None:
    """Index of the row with the lowest finite ``key`` (None if there is none)."""
    vals = [(r.get(key), i) for i, r in enumerate(rows)]
    vals = [(v, i) for v, i in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(vals)[1] if vals else None


def format_table(rows: Sequence[Mapping], *, best: int | None = None, columns: Sequence[str] = COLUMNS) -> str:
    """A fixed-width text table of ``rows`` (``checkpoint`` first), the ``best`` row marked with ``*``."""
    head = ["checkpoint", *columns, ""]
    body = [[str(r.get("checkpoint", "")),
             *[("-" if r.get(c) is None else f"{r[c]:.5g}" if isinstance(r[c], float) else str(r[c])) for c in columns],
             "* best" if i == best else ""] for i, r in enumerate(rows)]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), *(line(b) for b in body)])


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"checkpoint": path.name, "bytes": st.st_size}


def sweep_checkpoints(checkpoints: Sequence[str | os.PathLike], load: Callable[[Path], tuple[int, FakesFn]],
                      real_feats: np.ndarray, num: int, *, table: str | os.PathLike | None = None,
                      settings: Mapping[str, Any] | None = None, batch: int = 16, device: str | torch.device = "cpu",
                      progress: bool = False, kid_subset: int = 1000, key: str = "fid",
                      log: Callable[[str], None] = print) -> dict:
    """Evaluate every checkpoint with the same ``num`` fakes against the same reals; one table, the best marked.

    The table (JSON: ``settings``, ``rows`` sorted by step, ``best``: the index of the lowest ``key``) is rewritten
    atomically after each checkpoint, so an interrupted sweep resumes: rows of a checkpoint with the same file name
    and size, computed under the same ``settings`` (the caller puts the fake count, latent seed, real-set
    fingerprint... there), are reused.

    Args:
        checkpoints: files to evaluate.
        load: ``load(path) -> (step, fakes)`` for one checkpoint (``fakes`` as in :data:`FakesFn`).
        real_feats: Inception features of the real set (e.g. :func:`ganops.metrics.cached_features`).
        num: generated images per checkpoint.
        table: JSON file to write (and resume from), or None.
        settings: what the rows depend on besides the checkpoint (stored; a change discards cached rows).

    Returns:
        ``{"settings", "rows", "best"}``.
    """
    settings = {**(settings or {}), "num_fake": int(num), "num_real": int(len(real_feats)), "kid_subset": kid_subset}
    cached: dict[tuple, dict] = {}
    if table is not None and Path(table).is_file():
        try:
            old = json.loads(Path(table).read_text(encoding="utf-8"))
            if old.get("settings") == json.loads(json.dumps(settings)):
                cached = {(r["checkpoint"], r.get("bytes")): r for r in old.get("rows", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            cached = {}
    rows: list[dict] = []
    out: dict = {"settings": settings, "rows": rows, "best": None}
    for path in map(Path, checkpoints):
        ident = _identity(path)
        hit = cached.get((ident["checkpoint"], ident["bytes"]))
        if hit is not None:
            rows.append(hit)
            log(f"{path.name}: cached (step {hit.get('step')}, {key} {hit.get(key)})")
        else:
            step, fakes = load(path)
            row = {**ident, "step": int(step), **evaluate_generator(real_feats, fakes, num, batch=batch, device=device,
                                                                   progress=progress, kid_subset=kid_subset)}
            rows.append(row)
            log(f"{path.name}: step {step}  " + "  ".join(f"{c}={row[c]:.5g}" for c in COLUMNS[1:])
                + f"  ({row['seconds']:.1f} s)")
        rows.sort(key=lambda r: (r.get("step", 0), r["checkpoint"]))
        out["best"] = best_row(rows, key)
        if table is not None:
            write_text(table, json.dumps(out, indent=1, allow_nan=True) + "\n")
    return out
