# SPDX-License-Identifier: BSD-3-Clause
"""Gradient penalties: WGAN-GP (per-sample or per-pixel norm), R1, R2, and lazy regularisation."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .penalty_ops import NORM_OVER, REDUCTIONS, interpolate, norm_penalty

__all__ = ["gradient_penalty", "r1_penalty", "r2_penalty", "LazyRegularizer", "d_output_for_grad"]

Reducer = Callable[[Any], torch.Tensor]


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
