# SPDX-License-Identifier: BSD-3-Clause
"""Winograd F(4x4, 3x3) convolutions on CPU: the three primitives of a stride-1, unpadded 3x3 convolution's
autograd (forward, input gradient, weight gradient), for float32 and float64 channels_last tensors.

The same convolution as ``F.conv2d`` (equal to ~1e-14 in float64, ~1e-5 relative in float32: the transform's
rounding, as cuDNN's Winograd kernels on a GPU), with 2.25 instead of 9 multiply-adds per output element and
channel pair. On one CPU thread at ConSinGAN's 64-channel 250 px maps the forward is ~2x and forward + both
gradients ~3x faster than oneDNN's direct convolution (docs/consingan.md). The C++ kernels are in
``csrc/cpu/winograd.cpp``; the weight transforms G w G^T (and G^T dU G back) are ATen ops here, so the results
stay differentiable in the weights.

CPU only: on CUDA, cuDNN already chooses Winograd (or FFT, implicit GEMM) itself; :func:`usable` says where
these kernels apply and callers fall back to ``F.conv2d``.

The op is registered as "conv3x3": backends "cpu" (these kernels) and "ref" (ATen's convolution primitives,
``F.conv2d``, ``F.conv_transpose2d`` and the weight gradient of ``aten.convolution_backward``). Its autograd:
:class:`Conv3x3` (first order, e.g. the adversarial losses) and :class:`Conv3x3GP` (a gradient penalty's D(x_hat):
twice differentiable in the weights through :class:`Conv3x3InputGrad`), each with an ``impl``.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import _ext
from .._dispatch import OpInfo, register_op, resolve_impl_cached

__all__ = [
    "Conv3x3",
    "Conv3x3GP",
    "Conv3x3InputGrad",
    "conv3x3",
    "conv3x3_input_grad",
    "conv3x3_input_grad_ref",
    "conv3x3_ref",
    "conv3x3_weight_grad",
    "conv3x3_weight_grad_ref",
    "usable",
    "weight_transform",
    "weight_untransform",
]

register_op(OpInfo("conv3x3", compiled="wino3x3_forward", cuda=False))

# F(4x4, 3x3) with the points 0, +-1, +-2, inf (Lavin & Gray 2016); B^T and A^T are in the C++ kernels.
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))


@functools.lru_cache(maxsize=8)
def _gg(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kron(G, G), (36, 9): U[6r + s] = sum_ij G[r, i] G[s, j] w[3i + j] as one matrix product."""
    g = torch.tensor(_G, dtype=torch.float64)
    return torch.kron(g, g).to(device=device, dtype=dtype)


def usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """True where the kernels apply: the extension loaded, CPU, float32/float64, a 3x3 kernel, autocast off."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and w.dtype == x.dtype
            and x.dim() == 4 and tuple(w.shape[2:]) == (3, 3) and x.shape[2] >= 3 and x.shape[3] >= 3
            and not torch.is_autocast_enabled("cpu") and _has_kernels())


@functools.lru_cache(maxsize=1)
def _has_kernels() -> bool:
    return _ext.has_kernel("wino3x3_forward", "CPU") and _ext.has_kernel("wino3x3_wgrad", "CPU")


def weight_transform(w: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) -> U (36, C, K), U[6r + s, c, k] = (G w[k, c] G^T)[r, s]; differentiable."""
    k, c = w.shape[:2]
    u = torch.mm(_gg(w.dtype, w.device), w.reshape(k * c, 9).t())  # (36, K*C): one product, not K*C tiny ones
    return u.reshape(36, k, c).transpose(1, 2).contiguous()


def weight_untransform(du: torch.Tensor) -> torch.Tensor:
    """dU (36, C, K) -> dW (K, C, 3, 3) = G^T dU G, the adjoint of :func:`weight_transform`; differentiable."""
    c, k = du.shape[1:]
    dw = torch.mm(_gg(du.dtype, du.device).t(), du.transpose(1, 2).reshape(36, k * c))  # (9, K*C)
    return dw.t().reshape(k, c, 3, 3)


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------------------------
# References: ATen's convolution primitives.


def conv3x3_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, pad: int = 0) -> torch.Tensor:
    """``F.conv2d(x, w, b, padding=pad)``."""
    return F.conv2d(x, w, b, padding=pad)


def conv3x3_input_grad_ref(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.conv_transpose2d(g, w)``."""
    return F.conv_transpose2d(g, w)


def conv3x3_weight_grad_ref(x: torch.Tensor, g: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The weight gradient of ``aten.convolution_backward``; ``weight`` (its shape and layout) defaults to a
    contiguous (K, C, 3, 3) tensor."""
    if weight is None:
        weight = x.new_empty((g.shape[1], x.shape[1], 3, 3))
    return torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]


# ----------------------------------------------------------------------------------------------------------------
# The three primitives, each on the backend ``impl`` names ("auto" | "ref" | "cpu"; GANOPS_IMPL overrides "auto").


def conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, pad: int = 0, *,
            impl: str = "auto") -> torch.Tensor:
    """``F.conv2d(x, w, b, padding=pad)`` for a 3x3 kernel, stride 1.

    Returns:
        (N, K, H + 2 pad - 2, W + 2 pad - 2); channels_last from the "cpu" backend.

    Not differentiable on the "cpu" backend (the building block of :class:`Conv3x3` and :class:`Conv3x3GP`).
    """
    if resolve_impl_cached("conv3x3", impl, x) == "ref":
        return conv3x3_ref(x, w, b, pad)
    return _wino_forward(x, w, b, pad)


def _wino_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, pad: int) -> torch.Tensor:
    """:func:`conv3x3` on the "cpu" backend, the backend already resolved."""
    return torch.ops.ganops.wino3x3_forward(_cl(x), weight_transform(w.detach()),
                                            None if b is None else b.detach().contiguous(), pad)


def conv3x3_input_grad(g: torch.Tensor, w: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """``F.conv_transpose2d(g, w)``: the input gradient of an unpadded stride-1 3x3 convolution (a full
    convolution of g with the flipped, transposed kernel)."""
    if resolve_impl_cached("conv3x3", impl, g) == "ref":
        return conv3x3_input_grad_ref(g, w)
    return _wino_forward(g, w.flip(2, 3).transpose(0, 1), None, 2)


def conv3x3_weight_grad(x: torch.Tensor, g: torch.Tensor, *, weight: torch.Tensor | None = None,
                        impl: str = "auto") -> torch.Tensor:
    """The weight gradient of ``F.conv2d(x, w)`` (unpadded, stride 1) for output gradient g: (K, C, 3, 3).
    ``weight``: the convolution's weight, whose shape and layout the "ref" backend uses (optional)."""
    if resolve_impl_cached("conv3x3", impl, x) == "ref":
        return conv3x3_weight_grad_ref(x, g, weight)
    return weight_untransform(torch.ops.ganops.wino3x3_wgrad(_cl(x), _cl(g)))


# ----------------------------------------------------------------------------------------------------------------
# Autograd of an unpadded stride-1 3x3 convolution built on the primitives.


class Conv3x3(torch.autograd.Function):
    """conv2d(x, w, b) (3x3, stride 1, no padding), the forward and both first-order gradients on backend ``impl``.
    Not twice differentiable: penalties use :class:`Conv3x3GP`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, impl: str) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.impl = impl
        return conv3x3(x, w, b, impl=impl)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        dx = conv3x3_input_grad(g, w, impl=ctx.impl) if ctx.needs_input_grad[0] else None
        dw = conv3x3_weight_grad(x, g, weight=w, impl=ctx.impl) if ctx.needs_input_grad[1] else None
        db = g.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return dx, dw, db, None


class Conv3x3GP(torch.autograd.Function):
    """conv2d(x, w, b) (stride 1, no padding) for a gradient penalty's D(x_hat): its backward returns only the input
    gradient, as a transposed convolution that stays differentiable in w (:class:`Conv3x3InputGrad`). The first-order
    gradients of D(x_hat) w.r.t. w and b are not part of a gradient penalty and are not computed. All three
    primitives on backend ``impl``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, impl: str) -> torch.Tensor:
        ctx.save_for_backward(w)
        ctx.impl = impl
        return conv3x3(x, w, b, impl=impl)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (w,) = ctx.saved_tensors
        return Conv3x3InputGrad.apply(g, w, ctx.impl), None, None, None


class Conv3x3InputGrad(torch.autograd.Function):
    """dx = conv_transpose2d(g, w), the input gradient of a stride-1 unpadded conv; its backward uses the dedicated
    weight-gradient primitive (autograd's double backward of a convolution forms it as a grouped convolution with a
    feature-map-sized kernel: ~3x slower on CPU at 64 x 163 x 246)."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, w: torch.Tensor, impl: str) -> torch.Tensor:
        ctx.save_for_backward(g, w)
        ctx.impl = impl
        return conv3x3_input_grad(g, w, impl=impl)

    @staticmethod
    def backward(ctx, gg: torch.Tensor):
        g, w = ctx.saved_tensors
        d_g = conv3x3(gg, w, None, impl=ctx.impl) if ctx.needs_input_grad[0] else None
        d_w = conv3x3_weight_grad(gg, g, weight=w, impl=ctx.impl) if ctx.needs_input_grad[1] else None
        return d_g, d_w, None


def _register_fakes() -> None:
    if not _has_kernels():
        return

    @torch.library.register_fake("ganops::wino3x3_forward")
    def _fake_fwd(x, u, bias, pad):
        n, _, h, w = x.shape
        return x.new_empty((n, u.shape[2], h + 2 * pad - 2, w + 2 * pad - 2)).contiguous(
            memory_format=torch.channels_last)

    @torch.library.register_fake("ganops::wino3x3_wgrad")
    def _fake_wgrad(x, grad_out):
        return x.new_empty((36, x.shape[1], grad_out.shape[1]))


_register_fakes()
