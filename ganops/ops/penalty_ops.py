# SPDX-License-Identifier: BSD-3-Clause
"""Fused gradient-penalty building blocks: the interpolation x_hat and the penalty from a gradient tensor."""
from __future__ import annotations

import torch

from .. import _ext
from .._dispatch import OpInfo, register_op, resolve_impl_cached
from .._layout import dense_output_like

__all__ = ["interpolate", "interpolate_ref", "norm_penalty", "norm_penalty_ref", "NORM_OVER", "REDUCTIONS"]

register_op(OpInfo("gp_interpolate", compiled="gp_interpolate", triton=True))
register_op(OpInfo("gp_norm_penalty", compiled="gp_norm_penalty", triton=True))

NORM_OVER = ("sample", "channel")  # codes 0, 1 in the compiled ops
REDUCTIONS = ("none", "mean", "sum")  # codes 0, 1, 2 in the compiled ops


# ----------------------------------------------------------------------------------------------------------------
# References (plain PyTorch, differentiable to any order).


def interpolate_ref(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``real + alpha[n] * (fake - real)``, alpha of shape (N,)."""
    a = alpha.reshape((-1,) + (1,) * (real.dim() - 1))
    return real + a * (fake - real)


def norm_penalty_ref(grad: torch.Tensor, target: float = 1.0, scale: float = 1.0, norm_over: str = "sample",
                     reduce: str = "mean") -> torch.Tensor:
    """``scale * mean over groups of (||g_group||_2 - target)^2`` per sample, then ``reduce`` over the batch.

    A group is a whole sample (``norm_over="sample"``) or the C channels of one pixel (``"channel"``). With
    ``target == 0`` the squared norm is used directly (R1/R2; differentiable at g = 0).
    """
    g = grad.float() if grad.dtype in (torch.float16, torch.bfloat16) else grad
    n = g.shape[0]
    flat = g.reshape(n, -1) if norm_over == "sample" else g
    if target == 0:
        per = flat.pow(2).sum(1)
    else:  # torch's norm: gradient 0 (not NaN) at a zero group
        per = (torch.linalg.vector_norm(flat, dim=1) - target).pow(2)
    if norm_over == "channel":
        per = per.reshape(n, -1).mean(1)
    per = per * scale
    out = per.mean() if reduce == "mean" else (per.sum() if reduce == "sum" else per)
    return out.to(grad.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Checks and public op functions.


def _check_interp(real, fake, alpha):
    for name, t in (("real", real), ("fake", fake), ("alpha", alpha)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"ganops.interpolate: {name} must be a tensor, got {type(t).__name__}")
    if real.shape != fake.shape:
        raise ValueError(f"ganops.interpolate: real and fake must have the same shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if real.dim() < 1 or real.shape[0] == 0:
        raise ValueError(f"ganops.interpolate: real must have a non-empty batch dimension, got {tuple(real.shape)}")
    if real.device != fake.device or alpha.device != real.device:
        raise ValueError(f"ganops.interpolate: real, fake and alpha must be on one device, got {real.device}, "
                         f"{fake.device} and {alpha.device}")
    if not real.is_floating_point() or not fake.is_floating_point():
        raise TypeError(f"ganops.interpolate: floating-point tensors required, got {real.dtype} and {fake.dtype}")
    if fake.dtype != real.dtype:  # e.g. a generator run under autocast: interpolate in real's precision
        fake = fake.to(real.dtype)
    if alpha.numel() != real.shape[0] and alpha.numel() != 1:
        raise ValueError(f"ganops.interpolate: alpha must have one value per sample ({real.shape[0]}) or one in "
                         f"all, got shape {tuple(alpha.shape)}")
    # Few tensor ops here: at ConSinGAN's small stages the Python overhead is the op's cost.
    if alpha.dim() != 1:
        alpha = alpha.reshape(-1)
    if alpha.dtype != real.dtype:
        alpha = alpha.to(real.dtype)
    if alpha.stride(0) != 1 and alpha.numel() > 1:
        alpha = alpha.contiguous()
    return fake, alpha


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Fused ``x_hat = real + alpha[n] * (fake - real)`` in one pass.

    Args:
        real: real batch (N, ...), any layout (channels_last kept).
        fake: fake batch, same shape; cast to ``real``'s dtype.
        alpha: (N,) (or (N, 1, 1, 1)) mixing weights, or a single one for the whole batch.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton".

    Returns:
        x_hat, same shape, dtype and memory format as ``real``.

    Shape:
        real, fake (N, ...), alpha (N,) -> (N, ...).

    Gradients of every order w.r.t. real, fake and alpha (the backward is written in differentiable torch ops).
    """
    fake, alpha = _check_interp(real, fake, alpha)
    backend = resolve_impl_cached("gp_interpolate", impl, real)
    if backend == "ref":
        return interpolate_ref(real, fake, alpha)
    if backend == "triton":
        from ..triton import penalty_kernels  # noqa: F401 - registers ganops::gp_*_triton

        return torch.ops.ganops.gp_interpolate_triton(real, fake, alpha)
    return torch.ops.ganops.gp_interpolate(real, fake, alpha)


def norm_penalty(grad: torch.Tensor, *, target: float = 1.0, scale: float = 1.0, norm_over: str = "sample",
                 reduce: str = "mean", impl: str = "auto") -> torch.Tensor:
    """Fused penalty from a gradient tensor: L2 norms, ``(||g|| - target)^2``, mean, scale, in one pass.

    Args:
        grad: gradient of D w.r.t. its input, (N, C, ...) (any dense layout; strided inputs are copied).
        target: the norm the penalty pulls towards (1 for WGAN-GP, 0 for R1/R2: then ``||g||^2``).
        scale: multiplies the result (the penalty weight).
        norm_over: "sample" (norm over all of C, H, W; WGAN-GP) or "channel" (per pixel over C, then the mean
            over pixels; ConSinGAN/SinGAN).
        reduce: "mean" | "sum" over the batch, or "none" for the (N,) per-sample penalties.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton".

    Returns:
        A 0-D tensor (mean/sum) or (N,) tensor, in ``grad``'s dtype (float32 accumulation for 16-bit inputs).

    Shape:
        grad (N, C, *S) -> () or (N,).

    Gradients of every order w.r.t. ``grad`` (the backward is a registered op whose own backward is written in
    differentiable torch ops), so ``loss.backward()`` reaches D's parameters through ``create_graph=True``.
    """
    if not isinstance(grad, torch.Tensor) or not grad.is_floating_point():
        raise TypeError("ganops.norm_penalty: grad must be a floating-point tensor")
    if grad.dim() < 2 or grad.shape[0] == 0:
        raise ValueError(f"ganops.norm_penalty: grad must be (N, C, ...) with N > 0, got {tuple(grad.shape)}")
    if norm_over not in NORM_OVER:
        raise ValueError(f"ganops.norm_penalty: norm_over must be one of {NORM_OVER}, got {norm_over!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"ganops.norm_penalty: reduce must be one of {REDUCTIONS}, got {reduce!r}")
    backend = resolve_impl_cached("gp_norm_penalty", impl, grad)
    if backend == "ref":
        return norm_penalty_ref(grad, float(target), float(scale), norm_over, reduce)
    args = (float(target), float(scale), NORM_OVER.index(norm_over), REDUCTIONS.index(reduce))
    if backend == "triton":
        from ..triton import penalty_kernels  # noqa: F401

        return torch.ops.ganops.gp_norm_penalty_triton(grad, *args)[0]
    return torch.ops.ganops.gp_norm_penalty(grad, *args)[0]


# ----------------------------------------------------------------------------------------------------------------
# Autograd, shared by the compiled and the Triton ops.


def _groups(grad: torch.Tensor, norm_over: int) -> int:
    return 1 if norm_over == 0 else max(1, grad[0, 0].numel())


def _per_sample(go: torch.Tensor, n: int, reduction: int) -> torch.Tensor:
    """Upstream gradient of each sample's penalty: (N,) from a 0-D (mean/sum) or (N,) grad_out."""
    if reduction == 0:
        return go.reshape(n)
    return (go / n if reduction == 1 else go).reshape(1).expand(n)


def _bcast(t: torch.Tensor, grad: torch.Tensor, norm_over: int) -> torch.Tensor:
    """Per-sample (N,) or per-group norm tensor -> broadcastable against grad (N, C, *S)."""
    if t.dim() == 1:
        return t.reshape((-1,) + (1,) * (grad.dim() - 1))
    return t.unsqueeze(1)


def _group_sum(t: torch.Tensor, norm_over: int) -> torch.Tensor:
    if norm_over == 0:
        return t.sum(dim=tuple(range(1, t.dim())), keepdim=True)
    return t.sum(1, keepdim=True)


def _penalty_double_backward(ggx, go, grad, norm, target, scale, norm_over, reduction):
    """Gradients of gx = k * (1 - t / ||g||) * g (k = go_n * scale * 2 / groups) w.r.t. (go, grad); norm unused.

    d gx_i / d g_j = k (1 - t/n) delta_ij + k t / n^3 g_i g_j within a group.
    """
    n = grad.shape[0]
    c = 2.0 * scale / _groups(grad, norm_over)
    k = _bcast(_per_sample(go, n, reduction) * c, grad, norm_over)
    g = grad.to(ggx.dtype) if ggx.dtype != grad.dtype else grad
    if target == 0:
        d_g = k * ggx
        d_n = (ggx * g).reshape(n, -1).sum(1) * c
    else:
        # Recompute the norms from g (differentiably) rather than using the saved ones, so that this composite
        # is itself correct under a further derivative (third order); guarded at zero-norm groups.
        ss = _group_sum(g * g, norm_over)
        pos = ss > 0
        inv = torch.where(pos, torch.where(pos, ss, torch.ones_like(ss)).rsqrt(), torch.zeros_like(ss))
        f = torch.where(pos, 1.0 - target * inv, torch.zeros_like(ss))
        d_g = k * f * ggx + k * target * inv.pow(3) * _group_sum(ggx * g, norm_over) * g
        d_n = (ggx * g * f).reshape(n, -1).sum(1) * c
    if reduction == 0:
        d_go = d_n
    else:
        d_go = d_n.sum() / n if reduction == 1 else d_n.sum()
    return d_go.reshape(go.shape).to(go.dtype), d_g.to(grad.dtype)


def register_penalty_autograd(interp_name: str, fwd_name: str, bwd_name: str, cpp_fwd_autograd: bool = False) -> None:
    """Register fake kernels and autograd for (interpolate, penalty, penalty backward) ops in ganops::.

    ``cpp_fwd_autograd``: the penalty op already has a C++ Autograd kernel (its backward calls ``bwd_name``).
    """
    bwd_op = getattr(torch.ops.ganops, bwd_name)

    @torch.library.register_fake(f"ganops::{interp_name}")
    def _fake_interp(real, fake, alpha):
        return dense_output_like(real)  # the layout rule of the kernels

    @torch.library.register_fake(f"ganops::{fwd_name}")
    def _fake_fwd(grad, target, scale, norm_over, reduction):
        n = grad.shape[0]
        out = grad.new_empty((n,) if reduction == 0 else ())
        acc = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype
        norm = grad.new_empty((n,) if norm_over == 0 else (n,) + tuple(grad.shape[2:]), dtype=acc)
        return out, norm

    @torch.library.register_fake(f"ganops::{bwd_name}")
    def _fake_bwd(grad_out, grad, norm, target, scale, norm_over, reduction):
        return dense_output_like(grad)

    def setup_interp(ctx, inputs, output):
        real, fake, alpha = inputs
        ctx.save_for_backward(real, fake, alpha)

    def backward_interp(ctx, go):
        real, fake, alpha = ctx.saved_tensors
        a = alpha.reshape((-1,) + (1,) * (real.dim() - 1))
        need = ctx.needs_input_grad
        g_real = go * (1 - a) if need[0] else None
        g_fake = go * a if need[1] else None
        g_alpha = None
        if need[2]:
            g_alpha = (go * (fake - real)).reshape(real.shape[0], -1).sum(1)
            if alpha.numel() == 1 and real.shape[0] != 1:  # one alpha broadcast over the batch
                g_alpha = g_alpha.sum().reshape(alpha.shape)
        return g_real, g_fake, g_alpha

    def setup_fwd(ctx, inputs, output):
        grad, target, scale, norm_over, reduction = inputs
        ctx.save_for_backward(grad, output[1])
        ctx.args = (target, scale, norm_over, reduction)
        ctx.mark_non_differentiable(output[1])

    def backward_fwd(ctx, go, _gnorm):
        grad, norm = ctx.saved_tensors
        # The norms are a non-differentiable by-product saved for the backward: detach them so that the double
        # backward differentiates through grad alone (it accounts for the norm's dependence on grad itself).
        return bwd_op(go.contiguous(), grad, norm.detach(), *ctx.args), None, None, None, None

    def setup_bwd(ctx, inputs, output):
        go, grad, norm, target, scale, norm_over, reduction = inputs
        ctx.save_for_backward(go, grad, norm)
        ctx.args = (target, scale, norm_over, reduction)

    def backward_bwd(ctx, ggx):
        go, grad, norm = ctx.saved_tensors
        d_go, d_g = _penalty_double_backward(ggx, go, grad, norm, *ctx.args)
        return d_go, d_g, None, None, None, None, None

    torch.library.register_autograd(f"ganops::{interp_name}", backward_interp, setup_context=setup_interp)
    if not cpp_fwd_autograd:  # else the first-order autograd is C++ (csrc/cpu/penalty_autograd.cpp, same formula)
        torch.library.register_autograd(f"ganops::{fwd_name}", backward_fwd, setup_context=setup_fwd)
    torch.library.register_autograd(f"ganops::{bwd_name}", backward_bwd, setup_context=setup_bwd)
    for dev in ("cpu", "cuda"):  # autocast policy: the penalty is computed (and returned) in float32
        torch.library.register_autocast(f"ganops::{fwd_name}", dev, torch.float32)


if _ext.loaded and _ext.has_kernel("gp_interpolate", "CPU") and _ext.has_kernel("gp_norm_penalty", "CPU"):
    register_penalty_autograd("gp_interpolate", "gp_norm_penalty", "gp_norm_penalty_backward",
                              cpp_fwd_autograd=_ext.has_kernel("gp_norm_penalty", "Autograd"))
