# SPDX-License-Identifier: BSD-3-Clause
"""Exponential moving average of a model's parameters (optionally buffers), with a swap-in context manager."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """EMA copy of a model: ``ema = decay * ema + (1 - decay) * param`` after each :meth:`update`.

    The average lives in ``ema.module``, a frozen deep copy in eval mode (sample with it directly). Buffers are
    copied from the model on each update, or averaged too with ``average_buffers=True`` (floating buffers only;
    e.g. BatchNorm running stats). Pass the unwrapped model (not the DDP/compiled wrapper).

    Args:
        model: the model to track.
        decay: weight of the old average, in [0, 1).
        average_buffers: EMA floating-point buffers instead of copying them.
        warmup: if > 0, use ``min(decay, (1 + n) / (warmup + n))`` at update ``n`` (a faster start).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, average_buffers: bool = False,
                 warmup: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must be in [0, 1), got {decay}")
        self.decay, self.average_buffers, self.warmup = float(decay), average_buffers, int(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """Decay the next update will use."""
        if self.warmup > 0:
            return min(self.decay, (1.0 + self.num_updates) / (self.warmup + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current parameters into the average."""
        d = self.current_decay()
        ema_p = list(self.module.parameters())
        src_p = list(model.parameters())
        if len(ema_p) != len(src_p):
            raise ValueError(f"EMA.update: model has {len(src_p)} parameters, the EMA copy {len(ema_p)}")
        src = [s.detach().to(e.dtype) for e, s in zip(ema_p, src_p)]
        if ema_p:
            torch._foreach_lerp_(ema_p, src, 1.0 - d)  # one fused launch per dtype/device group
        for e, s in zip(self.module.buffers(), model.buffers()):
            if self.average_buffers and e.is_floating_point():
                e.lerp_(s.to(e.dtype), 1.0 - d)
            else:
                e.copy_(s)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "decay": self.decay, "num_updates": self.num_updates,
                "average_buffers": self.average_buffers, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state.get("num_updates", 0))

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the EMA weights (and buffers) into ``model``; the originals come back on exit,
        also on exceptions. Useful when ``model`` is wrapped (DDP/compile) and must be called as is."""
        saved = [t.detach().clone() for t in _tensors(model)]
        try:
            with torch.no_grad():
                for t, e in zip(_tensors(model), _tensors(self.module)):
                    t.copy_(e)
            yield model
        finally:
            with torch.no_grad():
                for t, s in zip(_tensors(model), saved):
                    t.copy_(s)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters and buffers with the EMA ones."""
        for t, e in zip(_tensors(model), _tensors(self.module)):
            t.copy_(e)


def _tensors(m: nn.Module) -> list[torch.Tensor]:
    return list(m.parameters()) + list(m.buffers())
