# SPDX-License-Identifier: BSD-3-Clause
"""Triton kernels for DiffAugment, launched from the Python custom op ganops::diffaug_apply_triton.

A leaf: kernels, launchers and the custom ops; their autograd and fake kernels are registered by
:func:`ganops.ops.diffaug.triton_kernels`, which imports this module.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import dense_output_like

__all__ = ["diffaug_apply_triton"]

_MAX_PROGRAMS = 2**31 - 1  # grid axis 0 limit


def _programs(work: int) -> int:
    return max(1, min(work, _MAX_PROGRAMS))


# Per sample n with color (b, s, k) and spatial (tx, ty, ox, oy) (see csrc/include/ganops/diffaug.h):
#   y[c, i, j] = valid(i, j) ? a * in[c, i + sx, j + sy] + bm * mp + c0 : fill
#   a = k s, bm = k (1 - s), c0 = (1 - k) * sum / (C H W) + (b if MODE == 0 else 0)
#   MODE 0/1: (sx, sy) = (tx, ty), fill = 0, sum over all of in;  MODE 2 (adjoint): (sx, sy) = (-tx, -ty),
#   fill = c0, sum over the valid gathered values. The cut test uses source coords iff CUT_AT_SRC.
@triton.jit
def _valid(sp_ptr, n, i, j, H, W, cut_h, half_h, cut_w, half_w, MODE: tl.constexpr, CUT_AT_SRC: tl.constexpr):
    tx = tl.load(sp_ptr + n * 4 + 0)
    ty = tl.load(sp_ptr + n * 4 + 1)
    r0 = tl.load(sp_ptr + n * 4 + 2) - half_h
    k0 = tl.load(sp_ptr + n * 4 + 3) - half_w
    if MODE == 2:
        tx = -tx
        ty = -ty
    si = i + tx
    sj = j + ty
    inb = (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
    if CUT_AT_SRC:
        cut = (si >= r0) & (si < r0 + cut_h) & (sj >= k0) & (sj < k0 + cut_w)
    else:
        cut = (i >= r0) & (i < r0 + cut_h) & (j >= k0) & (j < k0 + cut_w)
    return inb & (cut == 0), si, sj


# Grids: (sample, block) pairs folded into axis 0 (axes 1 and 2 take only 65535 programs) and walked by a
# grid-stride loop; tests set _MAX_PROGRAMS small to run the loop on CPU.
@triton.jit
def _diffaug_sum_kernel(x_ptr, color_ptr, sp_ptr, part_ptr, N, PB, C, H, W, cut_h, half_h, cut_w, half_w,
                        MODE: tl.constexpr, CUT_AT_SRC: tl.constexpr, CL: tl.constexpr, BLOCK: tl.constexpr,
                        ACC_F64: tl.constexpr):
    for item in range(tl.program_id(0).to(tl.int64), N * PB, tl.num_programs(0)):
        n = item // PB
        pid = item % PB
        acc_t = tl.float64 if ACC_F64 else tl.float32
        k = tl.load(color_ptr + n * 3 + 2).to(acc_t)
        HW = H * W
        E = C * HW
        acc = tl.zeros([BLOCK], dtype=acc_t)
        if k != 1.0:
            for start in range(pid * BLOCK, E, PB * BLOCK):
                e = start + tl.arange(0, BLOCK).to(tl.int64)
                em = e < E
                if MODE == 2:
                    if CL:
                        p = e // C
                        c = e % C
                    else:
                        c = e // HW
                        p = e % HW
                    ok, si, sj = _valid(sp_ptr, n, p // W, p % W, H, W, cut_h, half_h, cut_w, half_w, MODE, CUT_AT_SRC)
                    q = si * W + sj
                    offs = n * E + (q * C + c if CL else c * HW + q)
                    acc += tl.load(x_ptr + offs, mask=em & ok, other=0.0).to(acc_t)
                else:
                    acc += tl.load(x_ptr + n * E + e, mask=em, other=0.0).to(acc_t)
        tl.store(part_ptr + n * PB + pid, tl.sum(acc, axis=0))


@triton.jit
def _diffaug_main_kernel(x_ptr, y_ptr, color_ptr, sp_ptr, part_ptr, N, PXB, PB, C, H, W, cut_h, half_h, cut_w,
                         half_w, MODE: tl.constexpr, CUT_AT_SRC: tl.constexpr, CL: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_PB: tl.constexpr, ACC_F64: tl.constexpr):
    for item in range(tl.program_id(0).to(tl.int64), N * PXB, tl.num_programs(0)):
        n = item // PXB
        pb_id = item % PXB
        acc_t = tl.float64 if ACC_F64 else tl.float32
        HW = H * W
        b = tl.load(color_ptr + n * 3 + 0).to(acc_t)
        s = tl.load(color_ptr + n * 3 + 1).to(acc_t)
        k = tl.load(color_ptr + n * 3 + 2).to(acc_t)
        pb = tl.arange(0, BLOCK_PB)
        total = tl.sum(tl.load(part_ptr + n * PB + pb, mask=pb < PB, other=0.0).to(acc_t), axis=0)
        c0 = (1.0 - k) * (total / (C * HW))
        if MODE == 0:
            c0 = c0 + b
        a = k * s
        bm = k * (1.0 - s)
        p = pb_id * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        c = tl.arange(0, BLOCK_C).to(tl.int64)
        cm = c < C
        ok, si, sj = _valid(sp_ptr, n, p // W, p % W, H, W, cut_h, half_h, cut_w, half_w, MODE, CUT_AT_SRC)
        q = si * W + sj
        if CL:
            src = n * C * HW + q[None, :] * C + c[:, None]
            dst = n * C * HW + p[None, :] * C + c[:, None]
        else:
            src = n * C * HW + c[:, None] * HW + q[None, :]
            dst = n * C * HW + c[:, None] * HW + p[None, :]
        m = cm[:, None] & (pm & ok)[None, :]
        v = tl.load(x_ptr + src, mask=m, other=0.0).to(acc_t)
        mp = tl.sum(v, axis=0) / C
        out = a * v + bm * mp[None, :] + c0
        if MODE == 2:
            fill = c0
        else:
            fill = 0.0
        out = tl.where(ok[None, :], out, fill)
        tl.store(y_ptr + dst, out.to(y_ptr.dtype.element_ty), mask=cm[:, None] & pm[None, :])


def _layout(out: torch.Tensor):
    cl = (not out.is_contiguous()) and out.is_contiguous(memory_format=torch.channels_last)
    return cl, (torch.channels_last if cl else torch.contiguous_format)


@torch.library.custom_op("ganops::diffaug_apply_triton", mutates_args=())
def diffaug_apply_triton(x: torch.Tensor, color: torch.Tensor, spatial: torch.Tensor, cut_h: int, cut_w: int,
                         cutout_first: bool, mode: int) -> torch.Tensor:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"diffaug_apply_triton: x must be a 4-D float tensor, got {tuple(x.shape)} {x.dtype}")
    if mode not in (0, 1, 2):
        raise ValueError(f"diffaug_apply_triton: mode must be 0, 1 or 2, got {mode}")
    out = dense_output_like(x)
    cl, fmt = _layout(out)
    x = x.contiguous(memory_format=fmt)
    N, C, H, W = x.shape
    if out.numel() == 0:
        return out
    f64 = x.dtype == torch.float64
    acc = torch.float64 if f64 else torch.float32
    color = color.to(acc).contiguous()
    spatial = spatial.to(torch.int64).contiguous()
    BLOCK = 1024
    PB = max(1, min(64, triton.cdiv(C * H * W, BLOCK * 4)))
    part = torch.empty(N * PB, dtype=acc, device=x.device)
    cut_at_src = cutout_first if mode != 2 else not cutout_first
    geo = (cut_h, cut_h // 2, cut_w, cut_w // 2)
    _diffaug_sum_kernel[(_programs(N * PB),)](x, color, spatial, part, N, PB, C, H, W, *geo, MODE=mode,
                                              CUT_AT_SRC=cut_at_src, CL=cl, BLOCK=BLOCK, ACC_F64=f64)
    BP = 256
    PXB = triton.cdiv(H * W, BP)
    _diffaug_main_kernel[(_programs(N * PXB),)](x, out, color, spatial, part, N, PXB, PB, C, H, W, *geo, MODE=mode,
                                                CUT_AT_SRC=cut_at_src, CL=cl, BLOCK_C=triton.next_power_of_2(C),
                                                BLOCK_P=BP, BLOCK_PB=triton.next_power_of_2(PB), ACC_F64=f64)
    return out
