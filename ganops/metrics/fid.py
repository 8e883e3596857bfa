# SPDX-License-Identifier: BSD-3-Clause
"""FID (Frechet distance of Inception features) with a tested matrix square root, and KID (unbiased MMD)."""
from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["feature_statistics", "sqrtm_psd", "trace_sqrt_product", "frechet_distance", "fid_from_features",
           "kid_from_features", "compute_fid", "compute_kid"]


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov``, rowvar False) of (N, D) features, in float64.

    Raises:
        ValueError: fewer than 2 samples.
    """
    f = _as_np(features, "features")
    if f.shape[0] < 2:
        raise ValueError(f"feature_statistics: need at least 2 samples, got {f.shape[0]}")
    return f.mean(0), np.cov(f, rowvar=False)


def _as_np(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"ganops.metrics: {name} must be (N, D), got shape {x.shape}")
    return x


def sqrtm_psd(a) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix through ``eigh`` (negative eigenvalues -> 0).

    LAPACK ``syevd`` through numpy in float64 (several times faster than ``torch.linalg.eigh`` on CPU here).

    Shape:
        (D, D) -> (D, D), symmetric, float64.
    """
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    a = 0.5 * (a + a.T)
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2, method: str = "eigen") -> float:
    """``tr(sqrtm(sigma1 @ sigma2))`` for covariance matrices.

    Args:
        method: "eigen" (float64: ``sum(sqrt(eigvalsh(S1^1/2 S2 S1^1/2)))``, the symmetric form, exact for PSD
            inputs and fast) or "scipy" (``scipy.linalg.sqrtm`` of the product, as pytorch-fid/StyleGAN do,
            with their eps-offset retry when the product is singular).
    """
    if method == "eigen":
        r = sqrtm_psd(sigma1)
        m = r @ np.asarray(sigma2, np.float64) @ r
        ev = np.linalg.eigvalsh(0.5 * (m + m.T))
        return float(np.sqrt(np.clip(ev, 0, None)).sum())
    if method == "scipy":
        import scipy.linalg

        s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            warnings.warn("FID: singular product of covariances; adding 1e-6 to the diagonals", stacklevel=2)
            off = np.eye(s1.shape[0]) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"FID: sqrtm has a large imaginary part {np.abs(covmean.imag).max():.3g}")
            covmean = covmean.real
        return float(np.trace(covmean))
    raise ValueError(f"trace_sqrt_product: method must be 'eigen' or 'scipy', got {method!r}")


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigen") -> float:
    """Frechet distance of two Gaussians: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))``.

    Args:
        mu1, mu2: (D,) means; sigma1, sigma2: (D, D) covariances.
        method: matrix square root, see :func:`trace_sqrt_product`.

    Returns:
        The distance (float, clamped at 0 against rounding).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    tr = trace_sqrt_product(sigma1, sigma2, method)
    return max(float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr), 0.0)


def fid_from_features(real, fake, method: str = "auto") -> float:
    """FID between two (N, D) feature sets, in float64.

    Args:
        method: "auto" ("svd" when a set has fewer samples than dimensions, else "eigen"), "svd", "eigen" or
            "scipy". "svd" is exact and cheap for small sets: with ``A = (X1 - mu1) / sqrt(n1 - 1)`` and
            ``B`` likewise, ``S1 = A^T A`` and ``S2 = B^T B``, so ``tr sqrt(S1 S2)`` is the sum of the singular
            values of the (n1, n2) matrix ``A B^T`` (the nonzero eigenvalues of ``S1 S2`` are those of
            ``(A B^T)(A B^T)^T``).
    """
    x, y = _as_np(real, "real"), _as_np(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"fid_from_features: feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    if method == "auto":
        method = "svd" if min(x.shape[0], y.shape[0]) < x.shape[1] else "eigen"
    if method != "svd":
        mu1, s1 = feature_statistics(x)
        mu2, s2 = feature_statistics(y)
        return frechet_distance(mu1, s1, mu2, s2, method)
    if min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(f"fid_from_features: need at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    mu1, mu2 = x.mean(0), y.mean(0)
    a = (x - mu1) / np.sqrt(x.shape[0] - 1)
    b = (y - mu2) / np.sqrt(y.shape[0] - 1)
    tr = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * tr), 0.0)


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel ``k(a, b) = (a.b / d + 1)^3`` (Binkowski et al. 2018)."""
    d = x.shape[1]
    m, n = x.shape[0], y.shape[0]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid_from_features(real, fake, *, num_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 averaged over random subsets.

    Args:
        real, fake: (N, D) features.
        num_subsets: number of random subset pairs (drawn without replacement within a subset).
        subset_size: samples per subset, reduced to the smaller set size when needed.
        seed: subset sampling seed (deterministic).

    Returns:
        (mean, std) over subsets. Can be slightly negative for equal distributions (the estimator is unbiased).
    """
    x, y = _as_np(real, "real"), _as_np(fake, "fake")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"kid_from_features: feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"kid_from_features: need at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        xi = x[rng.choice(x.shape[0], size, replace=False)]
        yi = y[rng.choice(y.shape[0], size, replace=False)]
        vals.append(_poly_mmd2(xi, yi))
        if size == x.shape[0] == y.shape[0]:  # every subset is the whole set: one evaluation is enough
            break
    v = np.asarray(vals)
    return float(v.mean()), float(v.std())


def compute_fid(real, fake, *, num: int | None = None, batch_size: int = 32, device="cpu",
                progress: bool = False, use_cache: bool = True, method: str = "auto") -> float:
    """FID between image sets (folders, ``builtin:<name>``, tensors); real features are cached on disk.

    Args:
        real, fake: image sets, see :func:`ganops.metrics.features.inception_features`.
        num: use at most ``num`` images of each set (name the metric after it, e.g. ``fid5k``).
    """
    from .features import cached_features, inception_features

    fr = cached_features(real, num=num, batch_size=batch_size, device=device, progress=progress,
                         use_cache=use_cache)
    ff = inception_features(fake, num=num, batch_size=batch_size, device=device, progress=progress)
    return fid_from_features(fr, ff, method)


def compute_kid(real, fake, *, num: int | None = None, batch_size: int = 32, device="cpu",
                progress: bool = False, use_cache: bool = True, **kid_kwargs) -> tuple[float, float]:
    """KID (mean, std) between image sets; real features cached like :func:`compute_fid`."""
    from .features import cached_features, inception_features

    fr = cached_features(real, num=num, batch_size=batch_size, device=device, progress=progress,
                         use_cache=use_cache)
    ff = inception_features(fake, num=num, batch_size=batch_size, device=device, progress=progress)
    return kid_from_features(fr, ff, **kid_kwargs)
