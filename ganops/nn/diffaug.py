# SPDX-License-Identifier: BSD-3-Clause
"""DiffAugment as a module in kornia's two-phase style: forward_parameters(), then a deterministic forward()."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..ops.diffaug import diff_augment, diff_augment_params, parse_policy

__all__ = ["DiffAugment"]


class DiffAugment(nn.Module):
    """Differentiable augmentation for GAN training (apply to reals and fakes, in the D and the G step).

    Args:
        policy: comma-separated names from "color", "translation", "cutout", applied in order.
        p: probability that a sample is augmented (kornia's ``p``); 1.0 keeps parity with the reference draws.
        same_on_batch: one set of parameters for the whole batch.
        channels_first: False for NHWC input.
        translation_ratio, cutout_ratio: reference defaults 1/8 and 1/2.
        impl: backend (see :func:`ganops.diff_augment`).

    Shape:
        (N, C, H, W) -> (N, C, H, W)  (NHWC -> NHWC with ``channels_first=False``).

    ``forward(x)`` draws new parameters (kept in ``self.last_params``); ``forward(x, params=m.last_params)``
    replays them on another tensor. Gradients of every order flow to x.
    """

    def __init__(self, policy: str | Sequence[str] = "color,translation,cutout", *, p: float = 1.0,
                 same_on_batch: bool = False, channels_first: bool = True, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5, impl: str = "auto") -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"DiffAugment: p must lie in [0, 1], got {p}")
        self.names = parse_policy(policy)
        self.policy = ",".join(self.names)
        self.p = float(p)
        self.same_on_batch = bool(same_on_batch)
        self.channels_first = bool(channels_first)
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.impl = impl
        self.last_params: dict[str, torch.Tensor] | None = None

    def extra_repr(self) -> str:
        return (f"policy={self.policy!r}, p={self.p}, same_on_batch={self.same_on_batch}, "
                f"channels_first={self.channels_first}, impl={self.impl!r}")

    def forward_parameters(self, shape: Sequence[int], device=None, generator: torch.Generator | None = None,
                           dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Draw parameters for an input of ``shape`` (as given to forward, NHWC when channels_first=False)."""
        if len(shape) != 4:
            raise ValueError(f"DiffAugment: shape must be 4-D, got {tuple(shape)}")
        n, a, b, c = shape
        nchw = (n, a, b, c) if self.channels_first else (n, c, a, b)
        return diff_augment_params(self.names, nchw, device=device, dtype=dtype, generator=generator,
                                   translation_ratio=self.translation_ratio, cutout_ratio=self.cutout_ratio,
                                   p=self.p, same_on_batch=self.same_on_batch)

    def forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.names:
            return x
        if params is None:
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                raise ValueError(f"DiffAugment: x must be a 4-D tensor, got {getattr(x, 'shape', type(x))}")
            params = self.forward_parameters(x.shape, x.device, generator, x.dtype if x.is_floating_point()
                                             else torch.float32)
        self.last_params = params
        return diff_augment(x, self.names, params=params, channels_first=self.channels_first,
                            translation_ratio=self.translation_ratio, cutout_ratio=self.cutout_ratio,
                            impl=self.impl)
