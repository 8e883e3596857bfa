# SPDX-License-Identifier: BSD-3-Clause
"""The mit-han-lab DiffAugment semantics, re-implemented from ../shared/spec/methods.md §2 (not copied).

Draws come from the global torch RNG of x's device in the order of the calls below: uniform draws in x's dtype,
integer draws int64. Translation pads by one zero row/column and indexes with clamped integer grids; cutout builds
a ones mask and zeroes a square through clamped index grids, exactly as the spec describes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _brightness(x):
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    return x + (r - 0.5)


def _saturation(x):
    m = x.mean(dim=1, keepdim=True)
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    return (x - m) * (r * 2) + m


def _contrast(x):
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    r = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    return (x - m) * (r + 0.5) + m


def _translation(x, ratio=0.125):
    n, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sx, sx + 1, size=[n, 1, 1], device=x.device)
    ty = torch.randint(-sy, sy + 1, size=[n, 1, 1], device=x.device)
    b, gx, gy = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[b, gx, gy].permute(0, 3, 1, 2).contiguous()


def _cutout(x, ratio=0.5):
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), size=[n, 1, 1], device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), size=[n, 1, 1], device=x.device)
    b, gx, gy = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gx, gy] = 0
    return x * mask.unsqueeze(1)


FNS = {"color": [_brightness, _saturation, _contrast], "translation": [_translation], "cutout": [_cutout]}


def reference_diff_augment(x, policy="", channels_first=True, translation_ratio=0.125, cutout_ratio=0.5):
    """DiffAugment(x, policy) with the reference's draws and math."""
    if not policy:
        return x
    if not channels_first:
        x = x.permute(0, 3, 1, 2)
    for p in policy.split(","):
        for f in FNS[p]:
            if f is _translation:
                x = f(x, translation_ratio)
            elif f is _cutout:
                x = f(x, cutout_ratio)
            else:
                x = f(x)
    if not channels_first:
        x = x.permute(0, 2, 3, 1)
    return x.contiguous()
