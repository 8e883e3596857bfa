# SPDX-License-Identifier: BSD-3-Clause
"""Skip-layer excitation (FastGAN): ``x_high * sigmoid(gate_logits)``, the gate broadcast over H x W."""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import OpInfo, register_op, resolve_impl_cached, triton_loader
from .._layout import dense_output_like

__all__ = ["sle", "sle_ref", "triton_kernels"]


# Loaded when the triton backend is first picked; it registers the kernels' autograd and fakes (register_* below).
triton_kernels = triton_loader("sle_kernels",
                               lambda: register_sle_autograd("sle_forward_triton", "sle_backward_triton"))


register_op(OpInfo("sle", compiled="sle_forward", triton=True, load_triton=triton_kernels))


def sle_ref(x_high: torch.Tensor, gate_logits: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch reference, differentiable to any order."""
    n, c = x_high.shape[:2]
    return x_high * torch.sigmoid(gate_logits.reshape(n, c, 1, 1))


def _check(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not isinstance(g, torch.Tensor):
        raise TypeError("ganops.sle: x_high and gate_logits must be tensors")
    if x.dim() != 4:
        raise ValueError(f"ganops.sle: x_high must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    n, c = x.shape[:2]
    if g.dim() == 4:
        if g.shape[2:] != (1, 1):
            raise ValueError(f"ganops.sle: a 4-D gate_logits must be N x C x 1 x 1, got {tuple(g.shape)}")
        g = g.flatten(1)
    if g.dim() != 2 or g.shape[0] != n or g.shape[1] != c:
        raise ValueError(f"ganops.sle: gate_logits must be (N, C) = ({n}, {c}) or (N, C, 1, 1), got {tuple(g.shape)}")
    if x.device != g.device:
        raise ValueError(f"ganops.sle: x_high is on {x.device} but gate_logits on {g.device}")
    if not x.is_floating_point() or not g.is_floating_point():
        raise TypeError(f"ganops.sle: floating-point tensors required, got {x.dtype} and {g.dtype}")
    if g.dtype != x.dtype:
        # Under autocast the gate's 1x1 conv may come out in another precision: compute in x's dtype.
        g = g.to(x.dtype)
    return g


def sle(x_high: torch.Tensor, gate_logits: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Skip-layer excitation gate-multiply, fused: one pass forward, one pass backward.

    Args:
        x_high: feature map (N, C, H, W); contiguous, channels_last or strided.
        gate_logits: gate pre-activations (N, C) or (N, C, 1, 1); cast to ``x_high``'s dtype.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton" (``GANOPS_IMPL`` overrides "auto").

    Returns:
        ``x_high * sigmoid(gate_logits)`` broadcast over H x W, in ``x_high``'s memory format (a strided input
        gives a contiguous output).

    Shape:
        x_high (N, C, H, W), gate_logits (N, C[, 1, 1]) -> (N, C, H, W).

    Gradients of every order (the backward is itself a differentiable op). float32/16/bf16 accumulate in
    float32; float64 in float64.
    """
    g = _check(x_high, gate_logits)
    backend = resolve_impl_cached("sle", impl, x_high)
    if backend == "ref":
        return sle_ref(x_high, g)
    if backend == "triton":  # the kernels were loaded when the backend was picked
        return torch.ops.ganops.sle_forward_triton(x_high, g)
    return torch.ops.ganops.sle_forward(x_high, g)


# ----------------------------------------------------------------------------------------------------------------
# Autograd, shared by the compiled and the Triton op pairs: forward -> backward op -> differentiable composite.


def _sle_double_backward(ggx, ggg, gy, x, g):
    """Gradients of (gx, gg) = sle_backward(gy, x, g) w.r.t. (gy, x, g), in plain (differentiable) torch ops."""
    n, c = x.shape[:2]
    s = torch.sigmoid(g.reshape(n, c, 1, 1))
    ds = s * (1 - s)
    d_gy = d_x = None
    d_g = torch.zeros_like(g)
    if ggx is not None:
        d_gy = ggx * s
        d_g = d_g + ((ggx * gy).sum((2, 3), keepdim=True) * ds).reshape(n, c)
    if ggg is not None:
        g4 = ggg.reshape(n, c, 1, 1)
        t = g4 * ds
        d_gy = t * x if d_gy is None else d_gy + t * x
        d_x = t * gy
        d_g = d_g + (g4 * (gy * x).sum((2, 3), keepdim=True) * ds * (1 - 2 * s)).reshape(n, c)
    return d_gy, d_x, d_g


def register_sle_autograd(fwd_name: str, bwd_name: str) -> None:
    """Register fake kernels and autograd for an (sle forward, sle backward) op pair in the ganops namespace."""
    bwd_op = getattr(torch.ops.ganops, bwd_name)

    @torch.library.register_fake(f"ganops::{fwd_name}")
    def _fake_fwd(x, gate):
        return dense_output_like(x)  # the layout rule of csrc/cpu/sle.cpp new_output

    @torch.library.register_fake(f"ganops::{bwd_name}")
    def _fake_bwd(grad_out, x, gate):
        return dense_output_like(x), torch.empty_like(gate, memory_format=torch.contiguous_format)

    def setup_fwd(ctx, inputs, output):
        x, gate = inputs
        ctx.save_for_backward(x, gate)

    def backward_fwd(ctx, grad):
        x, gate = ctx.saved_tensors
        gx, gg = bwd_op(grad, x, gate)
        return gx, gg

    def setup_bwd(ctx, inputs, output):
        gy, x, gate = inputs
        ctx.save_for_backward(gy, x, gate)

    def backward_bwd(ctx, ggx, ggg):
        gy, x, gate = ctx.saved_tensors
        return _sle_double_backward(ggx, ggg, gy, x, gate)

    torch.library.register_autograd(f"ganops::{fwd_name}", backward_fwd, setup_context=setup_fwd)
    torch.library.register_autograd(f"ganops::{bwd_name}", backward_bwd, setup_context=setup_bwd)


if _ext.loaded and _ext.has_kernel("sle_forward", "CPU"):
    register_sle_autograd("sle_forward", "sle_backward")
