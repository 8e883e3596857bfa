# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN's skip-layer excitation block using the fused gate-multiply."""
from __future__ import annotations

import torch
from torch import nn

from ..ops.sle import sle
from .spectral_norm import sn_wrap

__all__ = ["SLE", "Swish"]


class Swish(nn.Module):
    """x * sigmoid(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SLE(nn.Module):
    """Skip-layer excitation (FastGAN ``SEBlock``): gate a high-resolution map by a low-resolution one.

    ``out = x_high * sigmoid(conv1x1(swish(conv4x4(avgpool4(x_low)))))``, the gate broadcast over H x W.

    Args:
        ch_low: channels of the low-resolution input.
        ch_high: channels of the high-resolution input (and of the gate).
        spectral_norm: wrap both convs in spectral norm (FastGAN does).
        impl: backend of the fused gate-multiply (see :func:`ganops.sle`).

    Shape:
        x_low (N, ch_low, h, w), x_high (N, ch_high, H, W) -> (N, ch_high, H, W).
    """

    def __init__(self, ch_low: int, ch_high: int, *, spectral_norm: bool = True, impl: str = "auto") -> None:
        super().__init__()
        self.impl = impl
        self.main = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            sn_wrap(nn.Conv2d(ch_low, ch_high, 4, 1, 0, bias=False), spectral_norm),
            Swish(),
            sn_wrap(nn.Conv2d(ch_high, ch_high, 1, 1, 0, bias=False), spectral_norm),
        )

    def gate_logits(self, x_low: torch.Tensor) -> torch.Tensor:
        """The gate before the sigmoid, (N, ch_high, 1, 1)."""
        return self.main(x_low)

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor) -> torch.Tensor:
        return sle(x_high, self.gate_logits(x_low), impl=self.impl)
