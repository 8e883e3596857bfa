# SPDX-License-Identifier: BSD-3-Clause
"""Conditional BatchNorm (SNGAN/BigGAN): per-sample gain and bias predicted from a condition vector."""
from __future__ import annotations

import torch
from torch import nn

from .spectral_norm import sn_wrap

__all__ = ["CondBatchNorm2d"]


class CondBatchNorm2d(nn.Module):
    """BatchNorm2d whose affine parameters are linear functions of a condition vector.

    ``y = BN(x) * (1 + W_gain c) + W_bias c`` with ``BN`` the non-affine batch normalisation. The gain is
    parametrised around 1 and both linear maps start at zero, so at initialisation the layer is a plain
    BatchNorm (BigGAN's convention). Differentiable to any order (plain PyTorch ops).

    Args:
        num_features: channels C of the input.
        cond_dim: size of the condition vector (e.g. ``W_G c`` concatenated with a latent chunk).
        eps: BatchNorm epsilon.
        momentum: BatchNorm running-statistics momentum.
        spectral_norm: wrap the two linear maps in spectral norm (BigGAN does).
        bias: give the two linear maps a bias term.

    Shape:
        x (N, C, H, W), cond (N, cond_dim) -> (N, C, H, W), same memory format as x.
    """

    def __init__(self, num_features: int, cond_dim: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 spectral_norm: bool = False, bias: bool = True) -> None:
        super().__init__()
        if num_features <= 0 or cond_dim <= 0:
            raise ValueError(f"CondBatchNorm2d: num_features ({num_features}) and cond_dim ({cond_dim}) must be > 0")
        self.num_features = num_features
        self.cond_dim = cond_dim
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum, affine=False)
        gain = nn.Linear(cond_dim, num_features, bias=bias)
        shift = nn.Linear(cond_dim, num_features, bias=bias)
        for lin in (gain, shift):
            nn.init.zeros_(lin.weight)
            if bias:
                nn.init.zeros_(lin.bias)
        if spectral_norm:  # SN of an all-zero matrix is undefined: start from a small random matrix instead
            for lin in (gain, shift):
                nn.init.normal_(lin.weight, std=0.02)
        self.gain = sn_wrap(gain, spectral_norm)
        self.shift = sn_wrap(shift, spectral_norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and modulate it with the gain and bias predicted from ``cond``."""
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"CondBatchNorm2d: x must be (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        if cond.dim() != 2 or cond.shape[0] != x.shape[0] or cond.shape[1] != self.cond_dim:
            raise ValueError(f"CondBatchNorm2d: cond must be ({x.shape[0]}, {self.cond_dim}), "
                             f"got {tuple(cond.shape)}")
        g = (1.0 + self.gain(cond)).to(x.dtype)[:, :, None, None]
        b = self.shift(cond).to(x.dtype)[:, :, None, None]
        return self.bn(x) * g + b

    def extra_repr(self) -> str:
        return f"{self.num_features}, cond_dim={self.cond_dim}"
