# SPDX-License-Identifier: BSD-3-Clause
"""Triton kernels for SLE, launched from the Python custom ops ganops::sle_{forward,backward}_triton.

A leaf: kernels, launchers and the custom ops; their autograd and fake kernels are registered by
:func:`ganops.ops.sle.triton_kernels`, which imports this module.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import dense_output_like

__all__ = ["sle_forward_triton", "sle_backward_triton"]


# Grid limits: axis 0 up to 2^31 - 1 programs, axes 1 and 2 up to 65535. Every kernel here runs on axis 0 alone
# and walks its tiles with a grid-stride loop (tile t = pid, pid + programs, ...), so any shape launches; the tests
# set _MAX_PROGRAMS small to run the loop on CPU. The backward splits each row's pixels into chunks so that about
# _TARGET_PROGRAMS programs work even when N * C is small (8 x 16 x 512^2: 8 programs before), each chunk holding
# at least _MIN_CHUNK elements; the partial sums go to a workspace that a second kernel reduces in chunk order
# (deterministic, no atomics). The split depends on the shape only.
_MAX_PROGRAMS = 2**31 - 1
_TARGET_PROGRAMS = 1024
_MIN_CHUNK = 8192
_TILE = 2048  # elements per (channel x pixel) tile


def _tiles(C: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): up to 32 channels (fewer for small C), pixels to fill a tile of _TILE elements."""
    bc = min(32, triton.next_power_of_2(max(C, 1)))
    return bc, max(16, _TILE // bc)


def _programs(work: int) -> int:
    return max(1, min(work, _MAX_PROGRAMS))


def bwd_plan(N: int, C: int, HW: int) -> dict[str, int]:
    """The backward's split: channel tiles, pixel chunks per (n, channel tile) row, pixels per chunk, programs."""
    bc, bp = _tiles(C)
    n_ct = triton.cdiv(C, bc)
    rows = N * n_ct
    max_chunks = max(1, HW * min(C, bc) // _MIN_CHUNK)
    chunks = min(max(1, triton.cdiv(_TARGET_PROGRAMS, max(rows, 1))), max_chunks)
    chunk = triton.cdiv(triton.cdiv(HW, chunks), bp) * bp if HW else bp  # a multiple of BLOCK_P
    chunks = triton.cdiv(HW, chunk) if HW else 1
    return dict(BLOCK_C=bc, BLOCK_P=bp, n_ct=n_ct, chunks=chunks, chunk=chunk, items=rows * chunks,
                programs=_programs(rows * chunks))


@triton.jit
def _sigmoid(g):
    return 1.0 / (1.0 + tl.exp(-g))


@triton.jit
def _grad_gate(acc, s):
    # d loss / d g[n, c] from acc = sum over pixels of gy * x.
    return acc * s * (1.0 - s)


@triton.jit
def _row_gate(g_ptr, r, n_ct, C, BLOCK_C: tl.constexpr, ACC_F64: tl.constexpr):
    # Row r = (n, channel tile): the sample n, the tile's channels c with their mask, and sigmoid(g[n, c]).
    acc_t = tl.float64 if ACC_F64 else tl.float32
    n = r // n_ct
    c = (r % n_ct) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    s = _sigmoid(tl.load(g_ptr + n * C + c, mask=cm, other=0.0).to(acc_t))
    return n, c, cm, s


# y[n, c, p] = x[n, c, p] * sigmoid(g[n, c]); tile t = (n, channel tile, pixel tile), pixel tile fastest.
# Addresses: n * C * HW + c * s_c + p * s_p, with (s_c, s_p) = (HW, 1) for NCHW and (1, C) for NHWC.
@triton.jit
def _sle_fwd_kernel(x_ptr, g_ptr, y_ptr, C, HW, s_c, s_p, n_ct, n_pt, n_tiles, BLOCK_C: tl.constexpr,
                    BLOCK_P: tl.constexpr, ACC_F64: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    for t in range(tl.program_id(0).to(tl.int64), n_tiles, tl.num_programs(0)):
        pt = t % n_pt
        n, c, cm, s = _row_gate(g_ptr, t // n_pt, n_ct, C, BLOCK_C, ACC_F64)
        p = pt * BLOCK_P + tl.arange(0, BLOCK_P)
        offs = n * C * HW + c[:, None] * s_c + p[None, :] * s_p
        m = cm[:, None] & (p[None, :] < HW)
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(acc_t)
        tl.store(y_ptr + offs, (x * s[:, None]).to(y_ptr.dtype.element_ty), mask=m)


# Pass 1: gx = gy * s; item = (n, channel tile, pixel chunk k): ws[(n*C + c) * chunks + k] = sum over the chunk of
# gy * x (WRITE_GG: one chunk per row, gg[n, c] = sum * s * (1 - s) directly).
@triton.jit
def _sle_bwd_kernel(gy_ptr, x_ptr, g_ptr, gx_ptr, gg_ptr, ws_ptr, C, HW, s_c, s_p, n_ct, chunks, chunk, n_items,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC_F64: tl.constexpr, WRITE_GG: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    for it in range(tl.program_id(0).to(tl.int64), n_items, tl.num_programs(0)):
        k = it % chunks
        n, c, cm, s = _row_gate(g_ptr, it // chunks, n_ct, C, BLOCK_C, ACC_F64)
        acc = tl.zeros([BLOCK_C], dtype=acc_t)
        p_lo = k * chunk
        p_hi = tl.minimum(p_lo + chunk, HW)
        for p0 in range(p_lo, p_hi, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P).to(tl.int64)
            offs = n * C * HW + c[:, None] * s_c + p[None, :] * s_p
            m = cm[:, None] & (p[None, :] < p_hi)
            gy = tl.load(gy_ptr + offs, mask=m, other=0.0).to(acc_t)
            x = tl.load(x_ptr + offs, mask=m, other=0.0).to(acc_t)
            acc += tl.sum(gy * x, axis=1)
            tl.store(gx_ptr + offs, (gy * s[:, None]).to(gx_ptr.dtype.element_ty), mask=m)
        if WRITE_GG:
            tl.store(gg_ptr + n * C + c, _grad_gate(acc, s).to(gg_ptr.dtype.element_ty), mask=cm)
        else:
            tl.store(ws_ptr + (n * C + c) * chunks + k, acc, mask=cm)


# Pass 2: gg[i] = (sum_k ws[i * chunks + k]) * s * (1 - s) for i = n*C + c, the chunks summed in order.
@triton.jit
def _sle_bwd_finalize_kernel(ws_ptr, g_ptr, gg_ptr, NC, chunks, n_blocks, BLOCK: tl.constexpr,
                             ACC_F64: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    for b in range(tl.program_id(0).to(tl.int64), n_blocks, tl.num_programs(0)):
        i = b * BLOCK + tl.arange(0, BLOCK)
        m = i < NC
        acc = tl.zeros([BLOCK], dtype=acc_t)
        for k in range(0, chunks):
            acc += tl.load(ws_ptr + i * chunks + k, mask=m, other=0.0).to(acc_t)
        s = _sigmoid(tl.load(g_ptr + i, mask=m, other=0.0).to(acc_t))
        tl.store(gg_ptr + i, _grad_gate(acc, s).to(gg_ptr.dtype.element_ty), mask=m)


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
        return out  # nothing to launch (a 0-program grid)
    BC, BP = _tiles(C)
    n_ct, n_pt = triton.cdiv(C, BC), triton.cdiv(HW, BP)
    n_tiles = N * n_ct * n_pt
    _sle_fwd_kernel[(_programs(n_tiles),)](x, gate, out, C, HW, *_strides(C, HW, cl), n_ct, n_pt, n_tiles,
                                           BLOCK_C=BC, BLOCK_P=BP, ACC_F64=x.dtype == torch.float64)
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
        return gx, gg  # N * C == 0: gx is empty too, nothing to launch
    f64 = x.dtype == torch.float64
    pl = bwd_plan(N, C, HW)
    acc = torch.float64 if f64 else torch.float32
    one = pl["chunks"] == 1
    ws = torch.empty(1 if one else N * C * pl["chunks"], dtype=acc, device=x.device)
    _sle_bwd_kernel[(pl["programs"],)](gy, x, gate, gx, gg, ws, C, HW, *_strides(C, HW, cl), pl["n_ct"],
                                       pl["chunks"], pl["chunk"], pl["items"], BLOCK_C=pl["BLOCK_C"],
                                       BLOCK_P=pl["BLOCK_P"], ACC_F64=f64, WRITE_GG=one)
    if not one:
        BLOCK = 256
        n_blocks = triton.cdiv(N * C, BLOCK)
        _sle_bwd_finalize_kernel[(_programs(n_blocks),)](ws, gate, gg, N * C, pl["chunks"], n_blocks, BLOCK=BLOCK,
                                                         ACC_F64=f64)
    return gx, gg
