# SPDX-License-Identifier: BSD-3-Clause
"""Triton kernels for the gradient penalty, launched from the custom ops ganops::gp_*_triton.

A leaf: kernels, launchers and the custom ops; their autograd and fake kernels are registered by
:func:`ganops.ops.penalty.triton_kernels`, which imports this module.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .._layout import dense_output_like

__all__ = ["gp_interpolate_triton", "gp_norm_penalty_triton", "gp_norm_penalty_backward_triton"]

_BLOCK = 1024  # elementwise kernels and the per-sample sum-of-squares slices
_BLOCK_P = 128  # pixels per program in the per-pixel channel norm
# Grid axis 0 takes up to 2^31 - 1 programs, axes 1 and 2 only 65535: the (sample, slice) grids are folded into
# axis 0 and walked by a grid-stride loop; tests set _MAX_PROGRAMS small to run the loop on CPU.
_MAX_PROGRAMS = 2**31 - 1


def _programs(work: int) -> int:
    return max(1, min(work, _MAX_PROGRAMS))


def _scalar(v: float, dtype: torch.dtype, device) -> torch.Tensor:
    """A Python float as a 1-element tensor of the accumulation dtype: a float argument reaches a Triton kernel as
    fp32, which would round e.g. target = 0.1 in the float64 kernels."""
    return torch.full((1,), float(v), dtype=dtype, device=device)


# x_hat[i] = real[i] + alpha[i // K] * (fake[i] - real[i]); sample n owns [n K, (n + 1) K) in both dense layouts;
# a_step = 0 broadcasts one alpha over the batch.
@triton.jit
def _gp_interp_kernel(r_ptr, f_ptr, a_ptr, o_ptr, total, K, a_step, BLOCK: tl.constexpr, ACC_F64: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    a = tl.load(a_ptr + (offs // K) * a_step, mask=m, other=0.0).to(acc_t)
    r = tl.load(r_ptr + offs, mask=m, other=0.0).to(acc_t)
    f = tl.load(f_ptr + offs, mask=m, other=0.0).to(acc_t)
    tl.store(o_ptr + offs, (r + a * (f - r)).to(o_ptr.dtype.element_ty), mask=m)


# part[n, b] = sum of g^2 over slice b of sample n (norm over the whole sample); item = n * NB + b.
@triton.jit
def _gp_sumsq_kernel(g_ptr, part_ptr, K, NB, n_items, BLOCK: tl.constexpr, ACC_F64: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    for it in range(tl.program_id(0).to(tl.int64), n_items, tl.num_programs(0)):
        n = it // NB
        b = it % NB
        offs = b * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(g_ptr + n * K + offs, mask=offs < K, other=0.0).to(acc_t)
        tl.store(part_ptr + it, tl.sum(v * v, axis=0))


# Per pixel p of sample n: ss = sum_c g[n, c, p]^2, norm = sqrt(ss); part[n, b] = sum over the block of
# (norm - t)^2 (ss when t == 0). Addresses n*C*S + c*s_c + p*s_p: (s_c, s_p) = (S, 1) NCHW, (1, C) NHWC.
# item = n * NB + b; target read from t_ptr (in the accumulation dtype).
@triton.jit
def _gp_channel_kernel(g_ptr, part_ptr, norm_ptr, t_ptr, C, S, NB, s_c, s_p, n_items, BLOCK_P: tl.constexpr,
                       ACC_F64: tl.constexpr, T_ZERO: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    target = tl.load(t_ptr).to(acc_t)
    for it in range(tl.program_id(0).to(tl.int64), n_items, tl.num_programs(0)):
        n = it // NB
        b = it % NB
        p = b * BLOCK_P + tl.arange(0, BLOCK_P)
        m = p < S
        base = g_ptr + n * C * S + p * s_p
        ss = tl.zeros([BLOCK_P], dtype=acc_t)
        for c in range(0, C):
            v = tl.load(base + c * s_c, mask=m, other=0.0).to(acc_t)
            ss += v * v
        nrm = tl.sqrt(ss)
        tl.store(norm_ptr + n * S + p, nrm, mask=m)
        if T_ZERO:
            pen = ss
        else:
            d = nrm - target
            pen = d * d
        pen = tl.where(m, pen, 0.0)
        tl.store(part_ptr + it, tl.sum(pen, axis=0))


# gx[i] = k[n] * (1 - t / norm[group(i)]) * g[i] (factor 1 when t == 0, 0 where norm == 0); group(i) = n (MODE 0),
# n*S + i % S (MODE 1, channel norm NCHW) or i // C (MODE 2, channel norm NHWC).
@triton.jit
def _gp_bwd_kernel(g_ptr, k_ptr, norm_ptr, gx_ptr, t_ptr, total, K, C, S, BLOCK: tl.constexpr, MODE: tl.constexpr,
                   ACC_F64: tl.constexpr, T_ZERO: tl.constexpr):
    acc_t = tl.float64 if ACC_F64 else tl.float32
    target = tl.load(t_ptr).to(acc_t)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    n = offs // K
    k = tl.load(k_ptr + n, mask=m, other=0.0).to(acc_t)
    if not T_ZERO:
        if MODE == 0:
            grp = n
        elif MODE == 1:
            grp = n * S + offs % S
        else:
            grp = offs // C
        nrm = tl.load(norm_ptr + grp, mask=m, other=0.0).to(acc_t)
        safe = tl.where(nrm > 0, nrm, 1.0)
        k = k * tl.where(nrm > 0, 1.0 - target / safe, 0.0)
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(acc_t)
    tl.store(gx_ptr + offs, (k * g).to(gx_ptr.dtype.element_ty), mask=m)


def _cl(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _dense(t: torch.Tensor, cl: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if cl else t.contiguous()


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@torch.library.custom_op("ganops::gp_interpolate_triton", mutates_args=())
def gp_interpolate_triton(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    out = dense_output_like(real)
    cl = _cl(out)
    real, fake, alpha = _dense(real, cl), _dense(fake, cl), alpha.contiguous()
    total = real.numel()
    if total:
        _gp_interp_kernel[(triton.cdiv(total, _BLOCK),)](real, fake, alpha, out, total, total // real.shape[0],
                                                         int(alpha.numel() != 1),
                                                         BLOCK=_BLOCK, ACC_F64=real.dtype == torch.float64)
    return out


@torch.library.custom_op("ganops::gp_norm_penalty_triton", mutates_args=())
def gp_norm_penalty_triton(grad: torch.Tensor, target: float, scale: float, norm_over: int,
                           reduction: int) -> tuple[torch.Tensor, torch.Tensor]:
    cl = _cl(grad)
    g = _dense(grad, cl)
    N, C = g.shape[:2]
    S = math.prod(g.shape[2:])  # also when C == 0 (S groups of no channels, each of norm 0)
    acc = _acc(g.dtype)
    f64 = g.dtype == torch.float64
    if norm_over == 0:
        K = C * S
        nb = max(1, triton.cdiv(K, _BLOCK))
        part = torch.empty(N, nb, dtype=acc, device=g.device)
        if N:
            _gp_sumsq_kernel[(_programs(N * nb),)](g, part, K, nb, N * nb, BLOCK=_BLOCK, ACC_F64=f64)
        ss = part.sum(1)
        norm = ss.sqrt()
        per = ss if target == 0 else (norm - target).pow(2)
    else:
        nb = max(1, triton.cdiv(S, _BLOCK_P))
        part = torch.empty(N, nb, dtype=acc, device=g.device)
        norm = torch.empty((N,) + tuple(g.shape[2:]), dtype=acc, device=g.device)
        s_c, s_p = (1, C) if cl else (S, 1)
        if N:
            _gp_channel_kernel[(_programs(N * nb),)](g, part, norm, _scalar(target, acc, g.device), C, S, nb, s_c, s_p,
                                                     N * nb, BLOCK_P=_BLOCK_P, ACC_F64=f64, T_ZERO=target == 0)
        per = part.sum(1) / S if S else torch.full((N,), float("nan"), dtype=acc, device=g.device)
    per = per * scale
    out = per if reduction == 0 else (per.mean() if reduction == 1 else per.sum())
    return out.to(g.dtype), norm


@torch.library.custom_op("ganops::gp_norm_penalty_backward_triton", mutates_args=())
def gp_norm_penalty_backward_triton(grad_out: torch.Tensor, grad: torch.Tensor, norm: torch.Tensor, target: float,
                                    scale: float, norm_over: int, reduction: int) -> torch.Tensor:
    gx = dense_output_like(grad)
    cl = _cl(gx)
    g = _dense(grad, cl)
    N, C = g.shape[:2]
    S = math.prod(g.shape[2:])
    groups = 1 if norm_over == 0 else max(S, 1)
    go = grad_out.to(_acc(g.dtype)).reshape(-1)
    if reduction == 1:
        go = go / N
    k = (go * (2.0 * scale / groups)).expand(N).contiguous()
    mode = 0 if norm_over == 0 else (2 if cl else 1)
    total = g.numel()
    if total:
        t = _scalar(target, _acc(g.dtype), g.device)
        _gp_bwd_kernel[(triton.cdiv(total, _BLOCK),)](g, k, norm.contiguous(), gx, t, total, C * S, C, S,
                                                      BLOCK=_BLOCK, MODE=mode, ACC_F64=g.dtype == torch.float64,
                                                      T_ZERO=target == 0)
    return gx
