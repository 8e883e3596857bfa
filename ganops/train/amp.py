# SPDX-License-Identifier: BSD-3-Clause
"""Mixed precision from ``--precision fp32|fp16|bf16``: an autocast context plus a GradScaler (fp16 only)."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

__all__ = ["PRECISIONS", "Amp"]

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Amp:
    """Autocast + loss scaling for one precision setting.

    ``fp32`` is a no-op; ``bf16`` autocasts without scaling; ``fp16`` autocasts and scales losses with a
    ``torch.amp.GradScaler`` (one scaler for all optimizers, as PyTorch recommends). Gradient penalties under fp16:
    take ``torch.autograd.grad(amp.scale(out), x, create_graph=True)`` then divide by ``amp.scaler_value()``
    (PyTorch AMP examples, "gradient penalty"), or compute the penalty in fp32 outside :meth:`autocast`.

    Args:
        precision: "fp32" | "fp16" | "bf16".
        device: the training device (autocast device type).
    """

    def __init__(self, precision: str = "fp32", device: torch.device | str = "cpu") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.device_type = torch.device(device).type
        self.dtype = _DTYPE.get(precision)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=precision == "fp16")

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> ContextManager:
        """Context for forward passes (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """Scaled loss to call ``backward()`` on (unchanged unless fp16)."""
        return self.scaler.scale(loss)

    def scaler_value(self) -> float:
        """Current loss scale (1.0 unless fp16)."""
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` through the scaler (skipped on inf/NaN gradients under fp16)."""
        self.scaler.step(optimizer)

    def update(self) -> None:
        """Update the loss scale once per iteration, after all :meth:`step` calls."""
        self.scaler.update()

    def grad(self, outputs: torch.Tensor, inputs: torch.Tensor | list[torch.Tensor], *,
             create_graph: bool = True) -> list[torch.Tensor]:
        """Unscaled ``torch.autograd.grad`` for gradient penalties (R1, WGAN-GP) that survives fp16: the graph is
        differentiated at the loss scale (no underflow) and divided back (PyTorch AMP "gradient penalty" recipe).
        DDP-safe (no ``backward(create_graph=True)``). Inf/NaN from overflow make the scaler skip the step.

        Args:
            outputs: e.g. ``D(x).sum()`` (summed to a scalar if not one).
            inputs: tensor(s) requiring grad.
            create_graph: keep the graph so the penalty can be backpropagated (second order).

        Returns:
            List of gradients, one per input, in the inputs' dtype.
        """
        single = isinstance(inputs, torch.Tensor)
        ins = [inputs] if single else list(inputs)
        out = outputs if outputs.dim() == 0 else outputs.sum()
        if not self.scaler.is_enabled():
            return list(torch.autograd.grad(out, ins, create_graph=create_graph))
        scaled = torch.autograd.grad(self.scaler.scale(out), ins, create_graph=create_graph)
        inv = 1.0 / self.scaler.get_scale()
        return [g * inv for g in scaled]

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """``scale(loss).backward()`` and, if given, :meth:`step` the optimizer."""
        self.scale(loss).backward()
        if optimizer is not None:
            self.step(optimizer)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One optimizer step on ``loss``: ``optimizer.zero_grad(set_to_none=True)``, then :meth:`backward` and
        :meth:`step` (call :meth:`update` once per iteration after the last one). The gradients are cleared here,
        after the forward, which is the same as before it unless something reads them in between."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss, optimizer)

    def state_dict(self) -> dict:
        return {"precision": self.precision, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
