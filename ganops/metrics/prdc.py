# SPDX-License-Identifier: BSD-3-Clause
"""Improved precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) on features."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["knn_radii", "precision_recall", "prdc", "compute_precision_recall"]


def _t(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"ganops.metrics.prdc: features must be (N, D), got {tuple(t.shape)}")
    return t


def _blocked_cdist(a: torch.Tensor, b: torch.Tensor, block: int, fn):
    """Apply ``fn(distances_block, start)`` over row blocks of ``cdist(a, b)`` (bounded memory)."""
    outs = []
    for s in range(0, a.shape[0], block):
        outs.append(fn(torch.cdist(a[s:s + block], b), s))
    return torch.cat(outs)


def knn_radii(x, k: int = 3, block: int = 1024) -> torch.Tensor:
    """Distance from each sample to its k-th nearest neighbour in the same set (itself excluded).

    Shape:
        (N, D) -> (N,), float64.
    """
    x = _t(x)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"knn_radii: need 1 <= k < N, got k={k}, N={x.shape[0]}")
    return _blocked_cdist(x, x, block, lambda d, s: d.topk(k + 1, dim=1, largest=False).values[:, k])


def _coverage_counts(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    """For each query, how many support balls ``|q - s| <= radius(s)`` contain it."""
    return _blocked_cdist(query, support, block, lambda d, s: (d <= radii.unsqueeze(0)).sum(1))


def precision_recall(real, fake, k: int = 3, block: int = 1024, k_recall: int | None = None) -> tuple[float, float]:
    """Improved precision and recall of generated ``fake`` features against ``real`` features.

    Precision: fraction of fake samples inside the real manifold (the union of balls around each real sample
    with radius = distance to its k-th nearest real neighbour). Recall: fraction of real samples inside the
    fake manifold, built the same way from the fakes. k = 3 as in the paper.

    Args:
        real, fake: (N, D) and (M, D) features (numpy or torch), compared in float64.
        k: neighbourhood size (of precision, and of recall unless ``k_recall`` is given).
        k_recall: a separate neighbourhood size for recall (the fakes' balls).

    Returns:
        (precision, recall) in [0, 1].
    """
    r, f = _t(real), _t(fake)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"precision_recall: feature sizes differ: {r.shape[1]} vs {f.shape[1]}")
    prec = (_coverage_counts(f, r, knn_radii(r, k, block), block) > 0).double().mean()
    rec = (_coverage_counts(r, f, knn_radii(f, k if k_recall is None else k_recall, block), block) > 0).double().mean()
    return float(prec), float(rec)


def prdc(real, fake, k: int = 5, block: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020; k = 5 there).

    Density: mean over fakes of the number of real balls containing it, divided by k. Coverage: fraction of real
    samples whose ball contains at least one fake.

    Returns:
        dict with keys precision, recall, density, coverage.
    """
    r, f = _t(real), _t(fake)
    rr = knn_radii(r, k, block)
    counts = _coverage_counts(f, r, rr, block)
    nearest_fake = _blocked_cdist(r, f, block, lambda d, s: d.min(1).values)
    p, rec = precision_recall(r, f, k, block)
    return {"precision": p, "recall": rec, "density": float(counts.double().mean() / k),
            "coverage": float((nearest_fake <= rr).double().mean())}


def compute_precision_recall(real, fake, *, k: int = 3, num: int | None = None, batch_size: int = 32,
                             device="cpu", progress: bool = False, use_cache: bool = True) -> tuple[float, float]:
    """Precision/recall between image sets on FID-Inception pool3 features (real features cached).

    The paper uses VGG16 fc2 features; those fully connected weights are not available offline, so the
    Inception features shared with FID/KID are used (as torch-fidelity and clean-fid users commonly do).
    """
    from .features import cached_features, inception_features

    fr = cached_features(real, num=num, batch_size=batch_size, device=device, progress=progress,
                         use_cache=use_cache)
    ff = inception_features(fake, num=num, batch_size=batch_size, device=device, progress=progress)
    return precision_recall(fr, ff, k)
