# SPDX-License-Identifier: BSD-3-Clause
"""Frozen pretrained networks (Inception, LPIPS/VGG16, EfficientNet): the base class and one shared instance each."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

__all__ = ["FrozenNet", "freeze", "shared_net", "NETS"]

M = TypeVar("M", bound=nn.Module)


def freeze(net: M) -> M:
    """``net`` without parameter gradients and in eval mode (gradients still flow to its input); returns it."""
    net.requires_grad_(False)
    return net.eval()


class FrozenNet(nn.Module):
    """A pretrained network used as a fixed function: call :meth:`freeze` at the end of ``__init__``.

    It stays in eval mode (batch norm uses stored statistics) even when a parent module calls ``.train()``.
    """

    def freeze(self: M) -> M:
        """No parameter gradients, eval mode; returns self."""
        return freeze(self)

    def train(self, mode: bool = True) -> "FrozenNet":
        """Stays in eval mode (a frozen pretrained net); accepted so parents can call ``.train()``."""
        return super().train(False)


#: the per-process instances of :func:`shared_net`, by (name, device, dtype)
NETS: dict[tuple[str, str, torch.dtype | None], nn.Module] = {}


def shared_net(name: str, build: Callable[[], M], device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> M:
    """The network ``name`` on ``device`` (cast to ``dtype`` if given), built by ``build()`` once per process.

    Args:
        name: what identifies the network and its options (e.g. ``"vgg16:[0,1]"``).
        build: makes a fresh (CPU, float32) instance.
    """
    key = (name, str(torch.device(device)), dtype)
    net = NETS.get(key)
    if net is None:
        net = NETS[key] = build().to(device=device, dtype=dtype)
    return net  # type: ignore[return-value]
