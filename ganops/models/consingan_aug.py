# SPDX-License-Identifier: BSD-3-Clause
"""ConSinGAN harmonisation/editing inputs: torch stand-ins for albumentations' strong_aug, shuffle_grid, masks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["strong_aug", "shuffle_grid", "editing_input", "prepare_mask", "composite"]


def _u(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _ri(lo: int, hi: int) -> int:
    """Integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, ()))


_SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def _hue_sat_val(x: torch.Tensor, hue: float, sat: float, val: float) -> torch.Tensor:
    """HueSaturationValue stand-in on [0,1] RGB: hue rotation in YIQ (hue in OpenCV units of 2 degrees),
    saturation scaled by (1 + sat/255) around the luma, value shifted by val/255."""
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=x.dtype)
    t = math.radians(2 * hue)
    rot = torch.tensor([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]], dtype=x.dtype)
    s = 1 + sat / 255
    m = torch.linalg.inv(yiq) @ torch.diag(torch.tensor([1.0, s, s], dtype=x.dtype)) @ rot @ yiq
    y = torch.einsum("ij,njhw->nihw", m.to(x.device), x)
    return (y + val / 255).clamp(0, 1)


def strong_aug(x: torch.Tensor, p: float = 0.25, cutout_p: float = 0.9) -> torch.Tensor:
    """Harmonisation's stage-0 input: the reference's albumentations ``strong_aug`` rebuilt in torch.

    Each group is applied with probability ``p`` (one member chosen uniformly): {multiplicative noise U[0.9, 1.1],
    additive Gaussian noise (variance U[10, 50] in 8-bit units)}, {invert, sepia}, {channel dropout, channel
    shuffle}, hue/saturation/value shifts up to (20, 30, 20); then with ``cutout_p`` one hole of 30-60 px or two
    of 15-30 px (clamped to the image) filled with a random RGB colour. Randomness: torch's global RNG.

    Args:
        x: (1, 3, H, W) in [-1, 1].

    Returns:
        Augmented image, same shape, in [-1, 1].
    """
    y = (x.detach() + 1) / 2
    if float(torch.rand(())) < p:
        if _ri(0, 1) == 0:
            y = y * (0.9 + 0.2 * torch.rand_like(y[:, :1]))
        else:
            y = y + torch.randn_like(y) * math.sqrt(_u(10, 50)) / 255
    if float(torch.rand(())) < p:
        y = 1 - y if _ri(0, 1) == 0 else torch.einsum("ij,njhw->nihw", _SEPIA.to(y), y)
    if float(torch.rand(())) < p:
        if _ri(0, 1) == 0:
            y = y.clone()
            y[:, _ri(0, 2)] = 0
        else:
            y = y[:, torch.randperm(3)]
    if float(torch.rand(())) < p:
        y = _hue_sat_val(y.clamp(0, 1), _u(-20, 20), _u(-30, 30), _u(-20, 20))
    y = y.clamp(0, 1)
    if float(torch.rand(())) < cutout_p:
        h, w = y.shape[-2:]
        n = _ri(1, 2)
        lo, hi = (30, 60) if n == 1 else (15, 30)
        y = y.clone()
        for _ in range(n):
            s = min(_ri(lo, hi), h, w)
            t, left = _ri(0, h - s), _ri(0, w - s)
            y[:, :, t:t + s, left:left + s] = torch.rand(3, 1, 1)
    return y * 2 - 1


def shuffle_grid(x: torch.Tensor, max_tiles: int = 5) -> torch.Tensor:
    """Editing's stage-0 input: copy 1..max_tiles random tiles (1/8 to 1/3 of each side) to shifted positions."""
    y = x.detach().clone()
    h, w = y.shape[-2:]
    for _ in range(_ri(1, max_tiles)):
        th, tw = max(1, _ri(h // 8, max(h // 8, h // 3))), max(1, _ri(w // 8, max(w // 8, w // 3)))
        sy, sx = _ri(0, h - th), _ri(0, w - tw)
        dy, dx = _ri(0, h - th), _ri(0, w - tw)
        y[:, :, dy:dy + th, dx:dx + tw] = x[:, :, sy:sy + th, sx:sx + tw]
    return y


def editing_input(x: torch.Tensor) -> torch.Tensor:
    """shuffle_grid(x) + 0.1 N(0, 1) (the reference's editing stage-0 input)."""
    return shuffle_grid(x) + 0.1 * torch.randn_like(x)


def prepare_mask(mask: torch.Tensor, radius: int, sigma: float = 5.0) -> torch.Tensor:
    """Binarise (> 0.5), dilate with a disk of ``radius`` px and Gaussian-blur (sigma, truncated at 4 sigma).

    Args:
        mask: (1, 1, H, W) in [0, 1].

    Returns:
        (1, 1, H, W) soft mask in [0, 1].
    """
    m = (mask > 0.5).float()
    if radius > 0:
        r = torch.arange(-radius, radius + 1, dtype=torch.float32)
        disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()[None, None]
        m = (F.conv2d(m, disk.to(m), padding=radius) > 0).float()
    if sigma > 0:
        k = int(4 * sigma + 0.5)
        g = torch.exp(-0.5 * (torch.arange(-k, k + 1, dtype=torch.float32) / sigma) ** 2)
        g = (g / g.sum()).to(m)
        m = F.conv2d(F.pad(m, (k, k, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, (0, 0, k, k), mode="replicate"), g.view(1, 1, -1, 1))
    return m.clamp(0, 1)


def composite(naive: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1 - mask) * naive + mask * fake."""
    return (1 - mask) * naive + mask * fake
