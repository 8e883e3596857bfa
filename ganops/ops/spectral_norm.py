# SPDX-License-Identifier: BSD-3-Clause
"""Fused spectral normalisation: power iteration, sigma and W / sigma for one weight or a whole group of weights."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .. import _ext
from .._dispatch import OpInfo, register_op, resolve_impl_cached, triton_loader

__all__ = ["spectral_norm_weights", "spectral_norm_weight", "spectral_norm_ref", "spectral_norm_backward_ref",
           "weight_matrix", "triton_kernels"]


# Loaded when the triton backend is first picked; it registers the kernels' autograd and fakes (register_* below).
triton_kernels = triton_loader("spectral_norm_kernels", lambda: register_spectral_norm_autograd(
    "spectral_norm_forward_triton", "spectral_norm_backward_triton"))


register_op(OpInfo("spectral_norm", compiled="spectral_norm_forward", triton=True, load_triton=triton_kernels))

Tensors = list[torch.Tensor]


def weight_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """``weight`` with ``dim`` moved first and the rest flattened: (h, w) exactly as torch's spectral norm."""
    if dim != 0:
        weight = weight.permute(dim, *[d for d in range(weight.dim()) if d != dim])
    return weight.reshape(weight.size(0), -1)


def spectral_norm_ref(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                      dims: Sequence[int], n_power_iterations: int = 1,
                      eps: float = 1e-12) -> tuple[Tensors, torch.Tensor, Tensors, Tensors]:
    """Reference: torch's legacy ``SpectralNorm.compute_weight`` op for op, per weight (bitwise equal to it).

    Returns (weights / sigma, sigmas (L,), u after the iterations, v after the iterations); u and v are returned
    as given when ``n_power_iterations == 0``. Differentiable to any order in the weights; u, v are constants.
    """
    outs, sigmas, un, vn = [], [], [], []
    for w, u, v, d in zip(weights, us, vs, dims):
        wm = weight_matrix(w, d)
        if n_power_iterations > 0:
            with torch.no_grad():
                for _ in range(n_power_iterations):
                    v = F.normalize(torch.mv(wm.t(), u), dim=0, eps=eps)
                    u = F.normalize(torch.mv(wm, v), dim=0, eps=eps)
        sigma = torch.dot(u, torch.mv(wm, v))
        outs.append(w / sigma)
        sigmas.append(sigma)
        un.append(u)
        vn.append(v)
    return outs, torch.stack(sigmas) if sigmas else weights[0].new_empty(0), un, vn


def spectral_norm_backward_ref(grads: Sequence[torch.Tensor], grad_sigmas: torch.Tensor,
                               weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor],
                               vs: Sequence[torch.Tensor], dims: Sequence[int], sigmas: torch.Tensor) -> Tensors:
    """Gradient of (W / sigma, sigma) w.r.t. W with sigma = u^T W v (u, v constant), in differentiable torch ops.

    ``grad_W = g / sigma + (g_sigma - <g, W> / sigma^2) * (u v^T mapped back to W's shape)``.
    """
    out = []
    for k, (g, w, u, v, d) in enumerate(zip(grads, weights, us, vs, dims)):
        s = sigmas[k]
        coef = grad_sigmas[k] - (g * w).sum() / (s * s)
        shape = [w.shape[d]] + [w.shape[i] for i in range(w.dim()) if i != d]
        outer = torch.outer(u, v).reshape(shape)
        if d != 0:
            perm = list(range(1, w.dim()))
            perm.insert(d, 0)
            outer = outer.permute(perm)
        out.append(g / s + coef * outer)
    return out


def _check(weights, us, vs, dims, n_power_iterations, eps) -> list[int]:
    if len(weights) == 0:
        raise ValueError("ganops.spectral_norm_weights: weights must not be empty")
    if not (len(weights) == len(us) == len(vs)):
        raise ValueError(f"ganops.spectral_norm_weights: weights, us and vs must have the same length, got "
                         f"{len(weights)}, {len(us)}, {len(vs)}")
    dims = [0] * len(weights) if dims is None else [int(d) for d in dims]
    if len(dims) != len(weights):
        raise ValueError(f"ganops.spectral_norm_weights: dims has {len(dims)} entries for {len(weights)} weights")
    if n_power_iterations < 0:
        raise ValueError(f"ganops.spectral_norm_weights: n_power_iterations must be >= 0, got {n_power_iterations}")
    if not eps > 0:
        raise ValueError(f"ganops.spectral_norm_weights: eps must be > 0, got {eps}")
    w0 = weights[0]
    for i, (w, u, v) in enumerate(zip(weights, us, vs)):
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            raise TypeError(f"ganops.spectral_norm_weights: weights[{i}] must be a floating-point tensor")
        if w.dim() < 1:
            raise ValueError(f"ganops.spectral_norm_weights: weights[{i}] must have at least 1 dimension")
        d = dims[i]
        if d < 0:
            d += w.dim()
            dims[i] = d
        if not 0 <= d < w.dim():
            raise ValueError(f"ganops.spectral_norm_weights: dims[{i}]={dims[i]} out of range for a "
                             f"{w.dim()}-D weight")
        h = w.shape[d]
        if u.shape != (h,) or v.shape != (w.numel() // max(h, 1),):
            raise ValueError(f"ganops.spectral_norm_weights: weights[{i}] of shape {tuple(w.shape)} (dim {d}) needs "
                             f"u of shape ({h},) and v of shape ({w.numel() // max(h, 1)},), got "
                             f"{tuple(u.shape)} and {tuple(v.shape)}")
        if w.device != w0.device or u.device != w.device or v.device != w.device:
            raise ValueError(f"ganops.spectral_norm_weights: weights[{i}], us[{i}], vs[{i}] must all be on "
                             f"{w0.device}")
        if w.dtype != w0.dtype or u.dtype != w.dtype or v.dtype != w.dtype:
            raise TypeError(f"ganops.spectral_norm_weights: weights[{i}], us[{i}], vs[{i}] must all be "
                            f"{w0.dtype} (group weights by dtype)")
    return dims


def spectral_norm_weights(weights: Sequence[torch.Tensor], us: Sequence[torch.Tensor], vs: Sequence[torch.Tensor],
                          dims: Sequence[int] | None = None, *, n_power_iterations: int = 1, eps: float = 1e-12,
                          impl: str = "auto") -> tuple[Tensors, torch.Tensor, Tensors, Tensors]:
    """Spectral-normalise a group of weights in one fused call (torch's legacy ``spectral_norm`` semantics).

    Per weight W (matrix view (h, w) with ``dim`` first), ``n_power_iterations`` times: ``v = normalize(W^T u)``,
    then ``u = normalize(W v)`` (``normalize(x) = x / max(||x||, eps)``); then ``sigma = u^T W v`` and
    ``W / sigma``. The C++ CPU and CUDA kernels handle all weights in one call: a constant number of launches
    (CUDA: 4 * n_power_iterations + 2 kernels forward, 2 backward) whatever the number of weights.

    Args:
        weights: L tensors of one dtype and device (e.g. conv weights (out, in, kh, kw)).
        us: L vectors of size h (the ``weight_u`` buffers); not modified.
        vs: L vectors of size w (the ``weight_v`` buffers); not modified.
        dims: L dims to treat as the output dim (0, or 1 for transposed convs); default all 0.
        n_power_iterations: power iterations before sigma (0 = evaluation: sigma from the given u, v).
        eps: the normalisation epsilon.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton" (``GANOPS_IMPL`` overrides "auto").

    Returns:
        (normalised weights (contiguous, W's shape), sigmas (L,), new us, new vs). Copy the new u, v into the
        buffers to commit the iteration (``torch._foreach_copy_``).

    Shape:
        weights[i] (d0, ..., dk); us[i] (h,); vs[i] (numel / h,) -> same shapes; sigmas (L,).

    Gradients: first order w.r.t. the weights (sigma differentiable in W only, as torch), and the backward is
    itself differentiable (any order). No gradient flows to u or v.
    """
    weights, us, vs = list(weights), list(us), list(vs)
    dims = _check(weights, us, vs, dims, n_power_iterations, eps)
    backend = resolve_impl_cached("spectral_norm", impl, weights[0])
    if backend == "ref":
        return spectral_norm_ref(weights, us, vs, dims, n_power_iterations, eps)
    if backend == "triton":  # the kernels were loaded when the backend was picked
        op = torch.ops.ganops.spectral_norm_forward_triton
    else:
        op = torch.ops.ganops.spectral_norm_forward
    outs, sigmas, un, vn = op(weights, us, vs, dims, int(n_power_iterations), float(eps))
    return list(outs), sigmas, list(un), list(vn)


def spectral_norm_weight(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, *, dim: int = 0,
                         n_power_iterations: int = 1, eps: float = 1e-12,
                         impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One weight through :func:`spectral_norm_weights`: returns (W / sigma, sigma (0-d), new u, new v).

    Args/Gradients: as :func:`spectral_norm_weights` with L = 1.
    """
    outs, sigmas, un, vn = spectral_norm_weights([weight], [u], [v], [dim], n_power_iterations=n_power_iterations,
                                                 eps=eps, impl=impl)
    return outs[0], sigmas[0], un[0], vn[0]


# ----------------------------------------------------------------------------------------------------------------
# Autograd, shared by the compiled and the Triton op pairs: forward -> backward op -> differentiable composite.


def register_spectral_norm_autograd(fwd_name: str, bwd_name: str, cpp_fwd_autograd: bool = False) -> None:
    """Register fake kernels and autograd for a (spectral norm forward, backward) op pair in the ganops namespace.

    ``cpp_fwd_autograd``: the forward op already has a C++ Autograd kernel (csrc/cpu/spectral_norm.cpp, same
    semantics as ``backward_fwd`` below; its backward calls ``bwd_name``, whose autograd is registered here).
    """
    bwd_op = getattr(torch.ops.ganops, bwd_name)

    @torch.library.register_fake(f"ganops::{fwd_name}")
    def _fake_fwd(weights, us, vs, dims, n_power_iterations, eps):
        return ([torch.empty(w.shape, dtype=w.dtype, device=w.device) for w in weights],
                weights[0].new_empty(len(weights)), [torch.empty_like(u, memory_format=torch.contiguous_format)
                                                     for u in us],
                [torch.empty_like(v, memory_format=torch.contiguous_format) for v in vs])

    @torch.library.register_fake(f"ganops::{bwd_name}")
    def _fake_bwd(grads, grad_sigmas, weights, us, vs, dims, sigmas):
        return [torch.empty(w.shape, dtype=w.dtype, device=w.device) for w in weights]

    def setup_fwd(ctx, inputs, output):
        weights, _, _, dims, _, _ = inputs
        _, sigmas, un, vn = output
        ctx.n = len(weights)
        ctx.dims = list(dims)
        ctx.set_materialize_grads(False)  # tell unused outputs (None) from zero gradients
        ctx.save_for_backward(*weights, *un, *vn, sigmas)

    def backward_fwd(ctx, g_outs, g_sigmas, g_un, g_vn):
        saved = ctx.saved_tensors
        n = ctx.n
        weights, un, vn, sigmas = list(saved[:n]), list(saved[n:2 * n]), list(saved[2 * n:3 * n]), saved[3 * n]
        # An unused output (a layer skipped in this forward) gets no gradient, as with per-layer updates.
        unused = [g is None for g in g_outs]
        g_outs = [torch.zeros_like(w) if g is None else g for g, w in zip(g_outs, weights)]
        if g_sigmas is None:
            g_sigmas = torch.zeros_like(sigmas)
        else:
            unused = [False] * n
        gw = bwd_op(g_outs, g_sigmas, weights, un, vn, ctx.dims, sigmas)
        return [None if x else g for g, x in zip(gw, unused)], [None] * n, [None] * n, None, None, None

    def setup_bwd(ctx, inputs, output):
        grads, g_sigmas, weights, us, vs, dims, sigmas = inputs
        ctx.n = len(weights)
        ctx.dims = list(dims)
        ctx.save_for_backward(*grads, g_sigmas, *weights, *us, *vs, sigmas)

    def backward_bwd(ctx, gg):
        saved = ctx.saved_tensors
        n = ctx.n
        grads, g_sig = list(saved[:n]), saved[n]
        weights, us, vs, sigmas = (list(saved[n + 1:2 * n + 1]), list(saved[2 * n + 1:3 * n + 1]),
                                   list(saved[3 * n + 1:4 * n + 1]), saved[4 * n + 1])
        # Vector-Jacobian product of the differentiable composite (works to any order with create_graph).
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (*grads, g_sig, *weights, sigmas)]
            lg, lgs, lw, ls = leaves[:n], leaves[n], leaves[n + 1:2 * n + 1], leaves[-1]
            y = spectral_norm_backward_ref(lg, lgs, lw, us, vs, ctx.dims, ls)
            pairs = [(a, b) for a, b in zip(y, gg) if b is not None]
            if not pairs:
                return [None] * n, None, [None] * n, [None] * n, [None] * n, None, None
            res = torch.autograd.grad([a for a, _ in pairs], leaves, [b for _, b in pairs], allow_unused=True,
                                      create_graph=create_graph)
        res = list(res)
        return res[:n], res[n], res[n + 1:2 * n + 1], [None] * n, [None] * n, None, res[-1]

    if not cpp_fwd_autograd:
        torch.library.register_autograd(f"ganops::{fwd_name}", backward_fwd, setup_context=setup_fwd)
    torch.library.register_autograd(f"ganops::{bwd_name}", backward_bwd, setup_context=setup_bwd)


if _ext.loaded and _ext.has_kernel("spectral_norm_forward", "CPU"):
    register_spectral_norm_autograd("spectral_norm_forward", "spectral_norm_backward",
                                    cpp_fwd_autograd=_ext.has_kernel("spectral_norm_forward", "Autograd"))
