# SPDX-License-Identifier: BSD-3-Clause
"""Gradient penalties: WGAN-GP (per-sample or per-pixel norm), R1, R2 and lazy regularisation, built on two fused
ops, the interpolation x_hat (``interpolate``) and the penalty from a gradient tensor (``norm_penalty``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import _ext
from .._dispatch import OpInfo, register_op, resolve_impl_cached, triton_loader
from .._layout import dense_output_like

__all__ = ["gradient_penalty", "r1_penalty", "r2_penalty", "LazyRegularizer", "d_output_for_grad", "interpolate",
           "interpolate_ref", "norm_penalty", "norm_penalty_ref", "NORM_OVER", "REDUCTIONS", "triton_kernels"]

Reducer = Callable[[Any], torch.Tensor]


# Loaded when the triton backend is first picked; it registers the kernels' autograd and fakes (register_* below).
triton_kernels = triton_loader("penalty_kernels", lambda: register_penalty_autograd(
    "gp_interpolate_triton", "gp_norm_penalty_triton", "gp_norm_penalty_backward_triton"))


# Registry names keep their gp_ prefix: they are the compiled ops' names (ganops::gp_*), and GANOPS_IMPL users,
# `python -m ganops info`, the tests and the benchmarks know the ops by them.
register_op(OpInfo("gp_interpolate", compiled="gp_interpolate", triton=True, load_triton=triton_kernels))
register_op(OpInfo("gp_norm_penalty", compiled="gp_norm_penalty", triton=True, load_triton=triton_kernels))

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
    if backend == "triton":  # the kernels were loaded when the backend was picked
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
    _check_modes("norm_penalty", norm_over, reduce)
    backend = resolve_impl_cached("gp_norm_penalty", impl, grad)
    if backend == "ref":
        return norm_penalty_ref(grad, float(target), float(scale), norm_over, reduce)
    args = (float(target), float(scale), NORM_OVER.index(norm_over), REDUCTIONS.index(reduce))
    if backend == "triton":
        return torch.ops.ganops.gp_norm_penalty_triton(grad, *args)[0]
    return torch.ops.ganops.gp_norm_penalty(grad, *args)[0]


# ----------------------------------------------------------------------------------------------------------------
# Gradient penalties of a discriminator: WGAN-GP, R1, R2, lazy regularisation.


def _eager(D: Callable) -> Callable:
    """The eager module/function behind a ``torch.compile``d one: double backward needs the eager graph."""
    if isinstance(D, torch.nn.Module) and hasattr(D, "_orig_mod") and type(D).__name__ == "OptimizedModule":
        return D._orig_mod
    orig = getattr(D, "_torchdynamo_orig_callable", None)
    return orig if callable(orig) else D


def d_output_for_grad(out: Any, output_reducer: Reducer | None = None) -> torch.Tensor:
    """The tensor whose sum is differentiated w.r.t. D's input.

    A tensor is used as is; a tuple/list gives its first element; a dict gives the sum of its tensor values'
    sums. ``output_reducer(out)``, when given, is used instead (it may return any tensor). The gradient is that
    of ``sum(output)`` (``grad_outputs`` = ones), i.e. every logit of a patch discriminator counts.
    """
    if output_reducer is not None:
        y = output_reducer(out)
    elif isinstance(out, torch.Tensor):
        y = out
    elif isinstance(out, (tuple, list)):
        if not out:
            raise ValueError("ganops: D returned an empty tuple/list; nothing to differentiate")
        y = out[0]
    elif isinstance(out, Mapping):
        vals = [v for v in out.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
        if not vals:
            raise ValueError("ganops: D returned a dict without floating-point tensors; nothing to differentiate")
        y = vals[0].sum() if len(vals) == 1 else torch.stack([v.float().sum() for v in vals]).sum()
    else:
        raise TypeError(f"ganops: D must return a tensor, tuple/list or dict, got {type(out).__name__}; "
                        "pass output_reducer= to pick the tensor to differentiate")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"ganops: the output to differentiate must be a tensor, got {type(y).__name__}")
    return y


def _grad_of_D(D, x, scaler, output_reducer, who):
    """(D's raw output, dsum(D(x))/dx) with the graph kept when grad mode is on (for training D)."""
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        out = _eager(D)(x)
        y = d_output_for_grad(out, output_reducer)
        if not y.requires_grad:
            raise ValueError(f"ganops.{who}: D's output does not require grad, so it does not depend "
                             "differentiably on its input (detached output, no_grad inside D, or integer output?)")
        if scaler is not None and scaler.is_enabled():
            y = scaler.scale(y)  # PyTorch AMP gradient-penalty recipe: scale before autograd.grad ...
        (g,) = torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y), create_graph=create, allow_unused=True)
    if g is None:
        raise ValueError(f"ganops.{who}: D's output does not depend on its input (the gradient is None)")
    if scaler is not None and scaler.is_enabled():
        g = g * (1.0 / scaler.get_scale())  # ... and unscale the gradient before the norm
    return out, g


def _check_pair(real, fake):
    if not isinstance(real, torch.Tensor) or not isinstance(fake, torch.Tensor):
        raise TypeError("ganops.gradient_penalty: real and fake must be tensors")
    if real.shape != fake.shape:
        raise ValueError(f"ganops.gradient_penalty: real and fake must have the same shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if real.device != fake.device:
        raise ValueError(f"ganops.gradient_penalty: real is on {real.device} but fake on {fake.device}")


def _alpha(alpha, real: torch.Tensor, generator) -> torch.Tensor:
    n = real.shape[0]
    dt = real.dtype if real.is_floating_point() else torch.float32
    if isinstance(alpha, torch.Tensor):
        return alpha
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        return torch.full((1,), float(alpha), dtype=dt, device=real.device)
    if alpha == "per_sample":
        return torch.rand(n, generator=generator, dtype=dt, device=real.device)
    if alpha == "per_batch":
        return torch.rand(1, generator=generator, dtype=dt, device=real.device)  # broadcast by interpolate
    raise ValueError(f"ganops.gradient_penalty: alpha must be 'per_sample', 'per_batch', a float or a tensor, "
                     f"got {alpha!r}")


def _check_modes(who, norm_over, reduce):
    if norm_over not in NORM_OVER:
        raise ValueError(f"ganops.{who}: norm_over must be one of {NORM_OVER}, got {norm_over!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"ganops.{who}: reduce must be one of {REDUCTIONS}, got {reduce!r}")


def gradient_penalty(D: Callable, real: torch.Tensor, fake: torch.Tensor, *, weight: float = 10.0,
                     target: float = 1.0, alpha: str | float | torch.Tensor = "per_sample",
                     norm_over: str = "sample", reduce: str = "mean", generator: torch.Generator | None = None,
                     return_output: bool = False, scaler: torch.amp.GradScaler | None = None,
                     output_reducer: Reducer | None = None, detach_inputs: bool = True, impl: str = "auto"):
    """WGAN-GP: ``weight * E[(||grad_x_hat D(x_hat)|| - target)^2]`` at ``x_hat = real + alpha (fake - real)``.

    Args:
        D: discriminator (module or callable; a ``torch.compile``d one is run eagerly here, because compiled
            graphs do not support double backward). DDP-wrapped modules work: the gradient is taken with
            ``torch.autograd.grad(..., inputs=x_hat, create_graph=True)``.
        real, fake: batches of the same shape (N, C, H, W); fake is cast to real's dtype.
        weight: lambda (10 in WGAN-GP, 0.1 in ConSinGAN).
        target: the norm pulled towards (1).
        alpha: "per_sample" (one U[0,1) per sample, WGAN-GP), "per_batch" (one for the batch, ConSinGAN), a float,
            or a tensor of N values (or 1).
        norm_over: "sample" (norm over C, H, W) or "channel" (per pixel over C, mean over pixels; ConSinGAN).
        reduce: "mean" | "sum" over the batch, or "none" for (N,) per-sample penalties.
        generator: torch.Generator for alpha (on real's device).
        return_output: also return D's output on x_hat.
        scaler: a GradScaler under AMP: D's output is scaled before the gradient and the gradient unscaled
            before the norm (PyTorch's AMP gradient-penalty recipe). Not needed for bfloat16.
        output_reducer: picks the tensor to differentiate from D's output (see :func:`d_output_for_grad`);
            its sum is differentiated (``grad_outputs`` = ones).
        detach_inputs: detach real and fake (default: the penalty trains D only).
        impl: backend of the fused interpolate and penalty ops: "auto" | "ref" | "cpu" | "cuda" | "triton".

    Returns:
        The penalty (0-D, or (N,) for reduce="none"); with ``return_output``, ``(penalty, D(x_hat))``.

    Shape:
        real, fake (N, C, H, W) -> () or (N,).

    Under grad mode the result is differentiable w.r.t. D's parameters (second order through D); any-order
    gradients for the fused ops. Under ``torch.no_grad()`` the value is computed without a graph.
    """
    _check_pair(real, fake)
    _check_modes("gradient_penalty", norm_over, reduce)
    a = _alpha(alpha, real, generator)
    if detach_inputs:
        with torch.no_grad():
            x_hat = interpolate(real, fake, a, impl=impl)
        x_hat.requires_grad_(True)
    else:
        x_hat = interpolate(real, fake, a, impl=impl)
        if not x_hat.requires_grad:
            x_hat.requires_grad_(True)
    out, g = _grad_of_D(D, x_hat, scaler, output_reducer, "gradient_penalty")
    pen = norm_penalty(g, target=target, scale=weight, norm_over=norm_over, reduce=reduce, impl=impl)
    return (pen, out) if return_output else pen


def _r_penalty(who, D, x, gamma, reduce, return_output, scaler, output_reducer, impl):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"ganops.{who}: the input batch must be a floating-point tensor")
    _check_modes(who, "sample", reduce)
    x = x.detach().requires_grad_(True)
    out, g = _grad_of_D(D, x, scaler, output_reducer, who)
    pen = norm_penalty(g, target=0.0, scale=0.5 * float(gamma), norm_over="sample", reduce=reduce, impl=impl)
    return (pen, out) if return_output else pen


def r1_penalty(D: Callable, real: torch.Tensor, gamma: float = 10.0, *, reduce: str = "mean",
               return_output: bool = False, scaler: torch.amp.GradScaler | None = None,
               output_reducer: Reducer | None = None, impl: str = "auto"):
    """R1 (Mescheder et al. 2018): ``gamma / 2 * E[||grad_x D(x)||^2]`` on real data.

    Args:
        D: discriminator (see :func:`gradient_penalty`; augmentation inside D is differentiated through).
        real: real batch (N, ...), detached and made to require grad here.
        gamma: R1 weight (the penalty is ``gamma / 2`` times the squared norm, as in StyleGAN2).
        reduce, return_output, scaler, output_reducer, impl: as in :func:`gradient_penalty`. With
            ``return_output`` the D(real) logits come back too, ready for the real-data loss term.

    Returns:
        The penalty (0-D or (N,)); with ``return_output``, ``(penalty, D(real))``.

    Shape:
        real (N, C, H, W) -> () or (N,).

    Differentiable w.r.t. D's parameters (second order through D).
    """
    return _r_penalty("r1_penalty", D, real, gamma, reduce, return_output, scaler, output_reducer, impl)


def r2_penalty(D: Callable, fake: torch.Tensor, gamma: float = 10.0, *, reduce: str = "mean",
               return_output: bool = False, scaler: torch.amp.GradScaler | None = None,
               output_reducer: Reducer | None = None, impl: str = "auto"):
    """R2: ``gamma / 2 * E[||grad_x D(x)||^2]`` on (detached) fake data; arguments as :func:`r1_penalty`."""
    return _r_penalty("r2_penalty", D, fake, gamma, reduce, return_output, scaler, output_reducer, impl)


class LazyRegularizer:
    """Lazy regularisation (StyleGAN2): apply a penalty every ``every``-th D step with its weight x ``every``.

    Args:
        every: interval k (1 = every step, plain regularisation).

    Example::

        lazy = LazyRegularizer(every=16)
        lr, betas = lazy.adam_hparams(2e-3, (0.0, 0.99))   # StyleGAN2's compensation for the skipped steps
        ...
        reg = lazy(step, ganops.r1_penalty, D, real, gamma=10.0)   # None on the steps in between
        loss = loss_adv + reg if reg is not None else loss_adv
    """

    def __init__(self, every: int = 16) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"LazyRegularizer: every must be a positive int, got {every!r}")
        self.every = every

    def due(self, step: int) -> bool:
        """Whether the penalty runs at D step ``step`` (steps 0, k, 2k, ...)."""
        return step % self.every == 0

    def __call__(self, step: int, penalty_fn: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor | None:
        """``penalty_fn(*args, **kwargs) * every`` when :meth:`due`, else ``None`` (nothing is computed)."""
        if not self.due(step):
            return None
        pen = penalty_fn(*args, **kwargs)
        if isinstance(pen, tuple):
            return (pen[0] * self.every,) + tuple(pen[1:])
        return pen * self.every

    def adam_hparams(self, lr: float, betas: tuple[float, float]) -> tuple[float, tuple[float, float]]:
        """StyleGAN2's optimiser correction: ``lr * r`` and ``betas ** r`` with ``r = k / (k + 1)``."""
        r = self.every / (self.every + 1)
        return lr * r, (betas[0] ** r, betas[1] ** r)


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
