# SPDX-License-Identifier: BSD-3-Clause
"""Triton kernels for SLE, launched from the Python custom ops ganops::sle_{forward,backward}_triton."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import dense_output_like
from ..ops.sle import register_sle_autograd

__all__ = ["sle_forward_triton", "sle_backward_triton"]


# y[n, c, p] = x[n, c, p] * sigmoid(g[n, c]); one program per (n, channel tile, pixel tile).
# Addresses: n * C * HW + c * s_c + p * s_p, with (s_c, s_p) = (HW, 1) for NCHW and (1, C) for NHWC.
@triton.jit
def _sle_fwd_kernel(x_ptr, g_ptr, y_ptr, C, HW, s_c, s_p, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                    ACC_F64: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.program_id(2).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    cm = c < C
    acc_t = tl.float64 if ACC_F64 else tl.float32
    g = tl.load(g_ptr + n * C + c, mask=cm, other=0.0).to(acc_t)
    s = 1.0 / (1.0 + tl.exp(-g))
    offs = n * C * HW + c[:, None] * s_c + p[None, :] * s_p
    m = cm[:, None] & (p[None, :] < HW)
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(acc_t)
    tl.store(y_ptr + offs, (x * s[:, None]).to(y_ptr.dtype.element_ty), mask=m)


# gx = gy * s;  gg[n, c] = (sum_p gy * x) * s * (1 - s); one program per (n, channel tile), looping over pixels.
@triton.jit
def _sle_bwd_kernel(gy_ptr, x_ptr, g_ptr, gx_ptr, gg_ptr, C, HW, s_c, s_p, BLOCK_C: tl.constexpr,
                    BLOCK_P: tl.constexpr, ACC_F64: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    acc_t = tl.float64 if ACC_F64 else tl.float32
    g = tl.load(g_ptr + n * C + c, mask=cm, other=0.0).to(acc_t)
    s = 1.0 / (1.0 + tl.exp(-g))
    acc = tl.zeros([BLOCK_C], dtype=acc_t)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P).to(tl.int64)
        offs = n * C * HW + c[:, None] * s_c + p[None, :] * s_p
        m = cm[:, None] & (p[None, :] < HW)
        gy = tl.load(gy_ptr + offs, mask=m, other=0.0).to(acc_t)
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(acc_t)
        acc += tl.sum(gy * x, axis=1)
        tl.store(gx_ptr + offs, (gy * s[:, None]).to(gx_ptr.dtype.element_ty), mask=m)
    tl.store(gg_ptr + n * C + c, (acc * s * (1.0 - s)).to(gg_ptr.dtype.element_ty), mask=cm)


def _layout(out: torch.Tensor):
    cl = (not out.is_contiguous()) and out.is_contiguous(memory_format=torch.channels_last)
    return cl, (torch.channels_last if cl else torch.contiguous_format)


def _strides(C: int, HW: int, cl: bool):
    return (1, C) if cl else (HW, 1)


@torch.library.custom_op("ganops::sle_forward_triton", mutates_args=())
def sle_forward_triton(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    out = dense_output_like(x)
    cl, fmt = _layout(out)
    x = x.contiguous(memory_format=fmt)
    gate = gate.contiguous()
    N, C, H, W = x.shape
    HW = H * W
    if out.numel() == 0:
        return out
    BC, BP = 32, 64
    grid = (N, triton.cdiv(C, BC), triton.cdiv(HW, BP))
    _sle_fwd_kernel[grid](x, gate, out, C, HW, *_strides(C, HW, cl), BLOCK_C=BC, BLOCK_P=BP,
                          ACC_F64=x.dtype == torch.float64)
    return out


@torch.library.custom_op("ganops::sle_backward_triton", mutates_args=())
def sle_backward_triton(grad_out: torch.Tensor, x: torch.Tensor, gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx = dense_output_like(x)
    cl, fmt = _layout(gx)
    x = x.contiguous(memory_format=fmt)
    gy = grad_out.contiguous(memory_format=fmt)
    gate = gate.contiguous()
    gg = torch.empty_like(gate, memory_format=torch.contiguous_format)
    N, C, H, W = x.shape
    HW = H * W
    if gate.numel() == 0:
        return gx, gg
    BC, BP = 32, 64
    grid = (N, triton.cdiv(C, BC))
    _sle_bwd_kernel[grid](gy, x, gate, gx, gg, C, HW, *_strides(C, HW, cl), BLOCK_C=BC, BLOCK_P=BP,
                          ACC_F64=x.dtype == torch.float64)
    return gx, gg


register_sle_autograd("sle_forward_triton", "sle_backward_triton")
