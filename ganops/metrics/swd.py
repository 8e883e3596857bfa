# SPDX-License-Identifier: BSD-3-Clause
"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018), no pretrained network."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._images import open_images

__all__ = ["laplacian_pyramid", "patch_positions", "pyramid_descriptors", "sliced_wasserstein", "swd",
           "swd_from_descriptors", "compute_swd"]

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    k1 = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device)
    k = torch.outer(k1, k1) / 256.0 * gain
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(x, k.expand(c, 1, 5, 5), groups=c)


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, 2 * h, 2 * w)
    z[:, :, ::2, ::2] = x
    return _blur(z, gain=4.0)


def laplacian_pyramid(x: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    """Laplacian pyramid (5-tap binomial filter, mirror padding), finest level first, down to ``min_size``.

    The last entry is the low-pass residual at ``min_size``; the others are band-pass differences.

    Shape:
        (N, C, R, R) with R a power-of-two multiple of ``min_size`` -> [(N, C, R, R), ..., (N, C, min, min)].
    """
    levels = []
    g = x
    while g.shape[-1] > min_size:
        d = _down(g)
        levels.append(g - _up(d))
        g = d
    levels.append(g)
    return levels


def patch_positions(n: int, side: int, *, per_image: int = 128, patch: int = 7, min_size: int = 16,
                    generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random top-left corners (ys, xs), each (n, per_image), for every pyramid level of ``side``-sized images."""
    out = []
    while True:
        ys = torch.randint(0, side - patch + 1, (n, per_image), generator=generator)
        xs = torch.randint(0, side - patch + 1, (n, per_image), generator=generator)
        out.append((ys, xs))
        if side <= min_size:
            return out
        side //= 2


def pyramid_descriptors(images: torch.Tensor, *, per_image: int = 128, patch: int = 7, min_size: int = 16,
                        generator: torch.Generator | None = None,
                        positions: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """Random ``patch`` x ``patch`` neighbourhoods from every pyramid level, ``per_image`` per image and level.

    Args:
        images: (N, 3, R, R) float (any consistent range) or uint8.
        positions: corners from :func:`patch_positions` (drawn from ``generator`` when None).

    Returns:
        per level a (N * per_image, C * patch * patch) float32 tensor of raw (un-normalised) descriptors.
    """
    x = images.to(torch.float32) if images.dtype == torch.uint8 else images.float()
    if positions is None:
        positions = patch_positions(x.shape[0], x.shape[-1], per_image=per_image, patch=patch, min_size=min_size,
                                    generator=generator)
    out = []
    for lvl, (ys, xs) in zip(laplacian_pyramid(x, min_size), positions):
        n, c, h, w = lvl.shape
        per_image = ys.shape[1]
        ar = torch.arange(patch)
        rows = (ys[..., None] + ar).reshape(n, per_image, patch, 1)
        cols = (xs[..., None] + ar).reshape(n, per_image, 1, patch)
        bidx = torch.arange(n).view(n, 1, 1, 1)
        p = lvl.permute(0, 2, 3, 1)[bidx, rows, cols]  # (n, per_image, patch, patch, c)
        out.append(p.permute(0, 1, 4, 2, 3).reshape(n * per_image, c * patch * patch))
    return out


def _normalize(d: torch.Tensor, c: int = 3) -> torch.Tensor:
    """Zero mean, unit std per colour channel over all descriptors of one set and level."""
    v = d.view(d.shape[0], c, -1)
    mean = v.mean(dim=(0, 2), keepdim=True)
    std = v.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
    return ((v - mean) / std).view_as(d)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, num_dirs: int = 512, dirs_per_repeat: int = 128,
                       generator: torch.Generator | None = None) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between projected sample sets.

    Both sets must hold the same number of samples (sorted projections are compared elementwise).
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein: sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    total, done = 0.0, 0
    while done < num_dirs:
        k = min(dirs_per_repeat, num_dirs - done)
        dirs = torch.randn(a.shape[1], k, generator=generator, dtype=a.dtype)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa, _ = (a @ dirs).sort(dim=0)
        pb, _ = (b @ dirs).sort(dim=0)
        total += float((pa - pb).abs().mean(dim=0).sum())
        done += k
    return total / num_dirs


def _check_side(shape, min_size: int) -> int:
    r = shape[-1]
    if shape[-2] != r or r < min_size or r & (r - 1):
        raise ValueError(f"swd: images must be square with a power-of-two side >= {min_size}, got {tuple(shape)}")
    return r


def swd_from_descriptors(dr: list[torch.Tensor], df: list[torch.Tensor], side: int, *, num_dirs: int = 512,
                         seed: int = 0) -> dict[str, float]:
    """SWD per level from raw descriptors (see :func:`pyramid_descriptors`), x 1e3, plus their average."""
    out = {}
    for lvl, (a, b) in enumerate(zip(dr, df)):
        gd = torch.Generator().manual_seed(seed + 1 + lvl)
        out[f"swd_{side >> lvl}"] = 1e3 * sliced_wasserstein(_normalize(a), _normalize(b), num_dirs=num_dirs,
                                                              generator=gd)
    out["swd_avg"] = sum(out.values()) / len(out)
    return out


def swd(real: torch.Tensor, fake: torch.Tensor, *, per_image: int = 128, num_dirs: int = 512,
        min_size: int = 16, seed: int = 0) -> dict[str, float]:
    """SWD between two image batches of the same size, per pyramid level and averaged, reported x 1e3.

    Args:
        real, fake: (N, 3, R, R) images, same N and R (R a power of two >= ``min_size``), float or uint8.
        per_image: descriptors drawn per image and level (PGGAN: 128).
        num_dirs: random projection directions (PGGAN: 4 repeats x 128).
        seed: patch and direction sampling seed (deterministic).

    Returns:
        ``{"swd_<res>": ..., ..., "swd_avg": ...}`` (x 1e3, PGGAN's convention; 0 for identical sets).
    """
    if real.shape != fake.shape:
        raise ValueError(f"swd: real and fake must have equal shapes, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    r = _check_side(real.shape, min_size)
    dr = pyramid_descriptors(real, per_image=per_image, min_size=min_size,
                             generator=torch.Generator().manual_seed(seed))
    df = pyramid_descriptors(fake, per_image=per_image, min_size=min_size,
                             generator=torch.Generator().manual_seed(seed))
    return swd_from_descriptors(dr, df, r, num_dirs=num_dirs, seed=seed)


def compute_swd(real, fake, *, num: int | None = None, resolution: int | None = None, seed: int = 0,
                per_image: int = 128, num_dirs: int = 512, min_size: int = 16, chunk: int = 64) -> dict[str, float]:
    """SWD between image sets (folders, ``builtin:<name>``, tensors), resized to a common power-of-two side.

    Images are read ``chunk`` at a time; the descriptors take ~``per_image * 147 * 4`` bytes per image and level
    (75 KB at the default), so limit ``num`` for large sets (PGGAN used 16k images).

    Args:
        num: images per set (the smaller set size by default; both sets use the same count).
        resolution: common side (default: the largest power of two <= the fake images' side, at least 16).
    """
    rs, fs = open_images(real), open_images(fake)
    n = min(len(rs), len(fs)) if num is None else min(num, len(rs), len(fs))
    if resolution is None:
        side = min(fs.get(0).shape[1:])
        resolution = max(min_size, 1 << (int(side).bit_length() - 1))
    _check_side((resolution, resolution), min_size)
    pos = patch_positions(n, resolution, per_image=per_image, min_size=min_size,
                          generator=torch.Generator().manual_seed(seed))
    descs = []
    for src in (rs, fs):
        parts = [pyramid_descriptors(torch.stack([src.get(i, resolution) for i in range(s, min(n, s + chunk))]),
                                     min_size=min_size, positions=[(y[s:s + chunk], x[s:s + chunk]) for y, x in pos])
                 for s in range(0, n, chunk)]
        descs.append([torch.cat(level) for level in zip(*parts)])
    return swd_from_descriptors(descs[0], descs[1], resolution, num_dirs=num_dirs, seed=seed)
