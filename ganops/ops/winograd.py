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
"""
from __future__ import annotations

import functools

import torch

from .. import _ext

__all__ = [
    "conv3x3",
    "conv3x3_input_grad",
    "conv3x3_weight_grad",
    "usable",
    "weight_transform",
    "weight_untransform",
]

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


def conv3x3(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, pad: int = 0) -> torch.Tensor:
    """``F.conv2d(x, w, b, padding=pad)`` for a 3x3 kernel, stride 1; channels_last output. Not differentiable
    itself (the building block of autograd Functions; see :func:`ganops.models.consingan.Discriminator`)."""
    return torch.ops.ganops.wino3x3_forward(_cl(x), weight_transform(w.detach()),
                                            None if b is None else b.detach().contiguous(), pad)


def conv3x3_input_grad(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.conv_transpose2d(g, w)``: the input gradient of an unpadded stride-1 3x3 convolution (a full
    convolution of g with the flipped, transposed kernel)."""
    return conv3x3(g, w.flip(2, 3).transpose(0, 1), None, 2)


def conv3x3_weight_grad(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The weight gradient of ``F.conv2d(x, w)`` (unpadded, stride 1) for output gradient g: (K, C, 3, 3)."""
    return weight_untransform(torch.ops.ganops.wino3x3_wgrad(_cl(x), _cl(g)))


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
