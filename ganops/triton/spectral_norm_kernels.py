# SPDX-License-Identifier: BSD-3-Clause
"""Triton kernels for grouped spectral norm, launched from the custom ops ganops::spectral_norm_*_triton.

Same design as the CUDA kernels: one int64 table describes every layer (pointers and sizes) and the work tiles,
so a forward costs 4 * n_power_iterations + 2 launches and a backward 2, whatever the number of layers. Each
weight is read as a contiguous (P, H, R) block; the matrix (H, P*R) has element (i, j = p*R + r) at
(p*H + i)*R + r. Math (see csrc/include/ganops/spectral_norm.h):
    v = normalize(W^T u), u = normalize(W v) (n times), sigma = u . (W v), out = W / sigma,
    gW = g / sigma + (g_sigma - <g, W> / sigma^2) u_i v_j.

A leaf: kernels, launchers and the custom ops; their autograd and fake kernels are registered by
:func:`ganops.ops.spectral_norm.triton_kernels`, which imports this module.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["spectral_norm_forward_triton", "spectral_norm_backward_triton"]

# Table columns per layer.
_W, _OUT, _UIN, _VIN, _UOUT, _VOUT, _G, _P, _H, _R, _TOFF, _SOFF, _TILE0, _NTILES = range(14)
_NF = 14
_COL, _ROW, _ELEM = 128, 16, 8192  # columns / rows / elements per tile


@triton.jit
def _ptr(meta, l, field: tl.constexpr, wit):
    return tl.load(meta + l * 14 + field).to(wit.dtype)


@triton.jit
def _denom(x, n, eps, BLOCK: tl.constexpr):
    # max(||x[:n]||, eps) of a vector in the scratch dtype (the C++ kernels' sn::denom).
    ss = tl.zeros([BLOCK], dtype=x.dtype.element_ty)
    for k0 in range(0, n, BLOCK):
        k = k0 + tl.arange(0, BLOCK).to(tl.int64)
        xk = tl.load(x + k, mask=k < n, other=0.0)
        ss += xk * xk
    return tl.maximum(tl.sqrt(tl.sum(ss, axis=0)), eps)


@triton.jit
def _sn_colsum_kernel(meta, tiles, scratch, wit, FROM_INPUT: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_H: tl.constexpr):
    # t[j] = sum_i W[p, i, r] u[i] for a tile of BLOCK_C columns j = p*R + r.
    tile = tl.program_id(0).to(tl.int64)
    l = tl.load(tiles + tile * 2)
    j = tl.load(tiles + tile * 2 + 1) + tl.arange(0, BLOCK_C).to(tl.int64)
    P, H, R = tl.load(meta + l * 14 + 7), tl.load(meta + l * 14 + 8), tl.load(meta + l * 14 + 9)
    w = _ptr(meta, l, 0, wit)
    u = _ptr(meta, l, 2, wit) if FROM_INPUT else _ptr(meta, l, 4, wit)
    jm = j < P * R
    p, r = j // R, j % R
    acc = tl.zeros([BLOCK_C], dtype=scratch.dtype.element_ty)
    for i0 in range(0, H, BLOCK_H):
        i = i0 + tl.arange(0, BLOCK_H).to(tl.int64)
        im = i < H
        wt = tl.load(w + (p[None, :] * H + i[:, None]) * R + r[None, :], mask=im[:, None] & jm[None, :], other=0.0)
        ut = tl.load(u + i, mask=im, other=0.0)
        acc += tl.sum(wt.to(acc.dtype) * ut.to(acc.dtype)[:, None], axis=0)
    tl.store(scratch + tl.load(meta + l * 14 + 10) + j, acc, mask=jm)


@triton.jit
def _sn_normv_kernel(meta, scratch, wit, eps_ptr, BLOCK: tl.constexpr):
    # v = t / max(||t||, eps), one program per layer; eps read in the scratch dtype (a float argument is fp32).
    l = tl.program_id(0).to(tl.int64)
    eps = tl.load(eps_ptr)
    C = tl.load(meta + l * 14 + 7) * tl.load(meta + l * 14 + 9)
    t = scratch + tl.load(meta + l * 14 + 10)
    v = _ptr(meta, l, 5, wit)
    d = _denom(t, C, eps, BLOCK)
    for j0 in range(0, C, BLOCK):
        j = j0 + tl.arange(0, BLOCK).to(tl.int64)
        x = tl.load(t + j, mask=j < C, other=0.0)
        tl.store(v + j, (x / d).to(wit.dtype.element_ty), mask=j < C)


@triton.jit
def _sn_rowdot_kernel(meta, tiles, scratch, wit, FROM_INPUT: tl.constexpr, BLOCK_R: tl.constexpr,
                      BLOCK_J: tl.constexpr):
    # s[i] = sum_j W[i, j] v[j] for a tile of BLOCK_R rows.
    tile = tl.program_id(0).to(tl.int64)
    l = tl.load(tiles + tile * 2)
    i = tl.load(tiles + tile * 2 + 1) + tl.arange(0, BLOCK_R).to(tl.int64)
    P, H, R = tl.load(meta + l * 14 + 7), tl.load(meta + l * 14 + 8), tl.load(meta + l * 14 + 9)
    w = _ptr(meta, l, 0, wit)
    v = _ptr(meta, l, 3, wit) if FROM_INPUT else _ptr(meta, l, 5, wit)
    im = i < H
    acc = tl.zeros([BLOCK_R], dtype=scratch.dtype.element_ty)
    for j0 in range(0, P * R, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J).to(tl.int64)
        jm = j < P * R
        p, r = j // R, j % R
        wt = tl.load(w + (p[None, :] * H + i[:, None]) * R + r[None, :], mask=im[:, None] & jm[None, :], other=0.0)
        vt = tl.load(v + j, mask=jm, other=0.0)
        acc += tl.sum(wt.to(acc.dtype) * vt.to(acc.dtype)[None, :], axis=1)
    tl.store(scratch + tl.load(meta + l * 14 + 11) + i, acc, mask=im)


@triton.jit
def _sn_normu_kernel(meta, scratch, sigmas, wit, eps_ptr, UPDATE: tl.constexpr, BLOCK: tl.constexpr):
    # u = s / max(||s||, eps) (UPDATE) or the given u (evaluation, v copied through); sigma = u . s.
    l = tl.program_id(0).to(tl.int64)
    eps = tl.load(eps_ptr)
    H = tl.load(meta + l * 14 + 8)
    s = scratch + tl.load(meta + l * 14 + 11)
    u_out = _ptr(meta, l, 4, wit)
    d = 1.0
    if UPDATE:
        d = _denom(s, H, eps, BLOCK)
    else:
        C = tl.load(meta + l * 14 + 7) * tl.load(meta + l * 14 + 9)
        v_in, v_out = _ptr(meta, l, 3, wit), _ptr(meta, l, 5, wit)
        for j0 in range(0, C, BLOCK):
            j = j0 + tl.arange(0, BLOCK).to(tl.int64)
            tl.store(v_out + j, tl.load(v_in + j, mask=j < C), mask=j < C)
    u_in = _ptr(meta, l, 2, wit)
    dot = tl.zeros([BLOCK], dtype=scratch.dtype.element_ty)
    for i0 in range(0, H, BLOCK):
        i = i0 + tl.arange(0, BLOCK).to(tl.int64)
        x = tl.load(s + i, mask=i < H, other=0.0)
        if UPDATE:
            ui = (x / d).to(wit.dtype.element_ty)
        else:
            ui = tl.load(u_in + i, mask=i < H, other=0.0)
        tl.store(u_out + i, ui, mask=i < H)
        dot += ui.to(dot.dtype) * x
    tl.store(sigmas + l, tl.sum(dot, axis=0).to(sigmas.dtype.element_ty))


@triton.jit
def _sn_scale_kernel(meta, tiles, sigmas, wit, TILE: tl.constexpr, BLOCK: tl.constexpr):
    # out = W / sigma over one element tile.
    tile = tl.program_id(0).to(tl.int64)
    l = tl.load(tiles + tile * 2)
    start = tl.load(tiles + tile * 2 + 1)
    N = tl.load(meta + l * 14 + 7) * tl.load(meta + l * 14 + 8) * tl.load(meta + l * 14 + 9)
    w, out = _ptr(meta, l, 0, wit), _ptr(meta, l, 1, wit)
    sg = tl.load(sigmas + l).to(tl.float64 if wit.dtype.element_ty == tl.float64 else tl.float32)
    for k0 in range(0, TILE, BLOCK):
        k = start + k0 + tl.arange(0, BLOCK).to(tl.int64)
        m = k < N
        x = tl.load(w + k, mask=m, other=0.0).to(sg.dtype)
        tl.store(out + k, (x / sg).to(wit.dtype.element_ty), mask=m)


@triton.jit
def _sn_gdot_kernel(meta, tiles, partial, wit, TILE: tl.constexpr, BLOCK: tl.constexpr):
    # partial[tile] = sum over the tile of g * W (no atomics: deterministic).
    tile = tl.program_id(0).to(tl.int64)
    l = tl.load(tiles + tile * 2)
    start = tl.load(tiles + tile * 2 + 1)
    N = tl.load(meta + l * 14 + 7) * tl.load(meta + l * 14 + 8) * tl.load(meta + l * 14 + 9)
    w, g = _ptr(meta, l, 0, wit), _ptr(meta, l, 6, wit)
    acc = tl.zeros([BLOCK], dtype=partial.dtype.element_ty)
    for k0 in range(0, TILE, BLOCK):
        k = start + k0 + tl.arange(0, BLOCK).to(tl.int64)
        m = k < N
        acc += tl.load(g + k, mask=m, other=0.0).to(acc.dtype) * tl.load(w + k, mask=m, other=0.0).to(acc.dtype)
    tl.store(partial + tile, tl.sum(acc, axis=0))


@triton.jit
def _sn_gradw_kernel(meta, tiles, partial, sigmas, g_sigmas, wit, TILE: tl.constexpr, BLOCK: tl.constexpr):
    # gW = g / sigma + (g_sigma - <g, W> / sigma^2) u_i v_j over one element tile.
    tile = tl.program_id(0).to(tl.int64)
    l = tl.load(tiles + tile * 2)
    start = tl.load(tiles + tile * 2 + 1)
    P, H, R = tl.load(meta + l * 14 + 7), tl.load(meta + l * 14 + 8), tl.load(meta + l * 14 + 9)
    t0, nt = tl.load(meta + l * 14 + 12), tl.load(meta + l * 14 + 13)
    dacc = tl.zeros([BLOCK], dtype=partial.dtype.element_ty)
    for q0 in range(0, nt, BLOCK):
        q = q0 + tl.arange(0, BLOCK).to(tl.int64)
        dacc += tl.load(partial + t0 + q, mask=q < nt, other=0.0)
    dot = tl.sum(dacc, axis=0)
    sg = tl.load(sigmas + l).to(dacc.dtype)
    coef = tl.load(g_sigmas + l).to(dacc.dtype) - dot / (sg * sg)
    w, gw, g = _ptr(meta, l, 0, wit), _ptr(meta, l, 1, wit), _ptr(meta, l, 6, wit)
    u, v = _ptr(meta, l, 2, wit), _ptr(meta, l, 3, wit)
    N = P * H * R
    for k0 in range(0, TILE, BLOCK):
        k = start + k0 + tl.arange(0, BLOCK).to(tl.int64)
        m = k < N
        r = k % R
        pi = k // R
        i = pi % H
        p = pi // H
        gk = tl.load(g + k, mask=m, other=0.0).to(dacc.dtype)
        ui = tl.load(u + i, mask=m, other=0.0).to(dacc.dtype)
        vj = tl.load(v + p * R + r, mask=m, other=0.0).to(dacc.dtype)
        tl.store(gw + k, (gk / sg + coef * ui * vj).to(wit.dtype.element_ty), mask=m)


def _shape(w: torch.Tensor, d: int) -> tuple[int, int, int]:
    P = 1
    for s in w.shape[:d]:
        P *= s
    R = 1
    for s in w.shape[d + 1:]:
        R *= s
    return P, w.shape[d], R


def _tiles(n: int, per: int, layer: int) -> list[list[int]]:
    return [[layer, s] for s in range(0, n, per)]


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _upload(tables: list[list[list[int]]], dev: torch.device) -> list[torch.Tensor]:
    """The int64 tables on `dev` (flat views of one buffer), copied in one transfer.

    On CUDA the host buffer is pinned and the copy non_blocking on the current stream (the caching host allocator
    keeps the pinned block until the copy is done): a non_blocking copy from pageable memory would be a synchronous
    one in disguise. Elsewhere (the interpreter on CPU tensors) a plain copy.
    """
    flat = [torch.tensor(t, dtype=torch.int64).reshape(-1) for t in tables]
    host = torch.cat(flat)
    if dev.type == "cuda":
        buf = host.pin_memory().to(dev, non_blocking=True)
    else:
        buf = host.to(dev)
    return list(buf.split([f.numel() for f in flat]))


def _forward_into(weights, us, vs, dims, n_iter, eps, outs, un, vn, sigmas) -> None:
    """Run the grouped forward writing into the given outputs (contiguous)."""
    dev = weights[0].device
    keep = [w.contiguous() for w in weights] + [u.contiguous() for u in us] + [v.contiguous() for v in vs]
    L = len(weights)
    ws, ui, vi = keep[:L], keep[L:2 * L], keep[2 * L:]
    rows, ct, rt, et = [], [], [], []
    t_off = s_off = 0
    for l, (w, d) in enumerate(zip(ws, dims)):
        P, H, R = _shape(w, d)
        tile0 = len(et)
        ct += _tiles(P * R, _COL, l)
        rt += _tiles(H, _ROW, l)
        et += _tiles(P * H * R, _ELEM, l)
        rows.append([w.data_ptr(), outs[l].data_ptr(), ui[l].data_ptr(), vi[l].data_ptr(), un[l].data_ptr(),
                     vn[l].data_ptr(), 0, P, H, R, t_off, s_off, tile0, len(et) - tile0])
        t_off += P * R
        s_off += H
    meta, *tiles = _upload([rows] + [t or [[0, 0]] for t in (ct, rt, et)], dev)
    acc = _acc(ws[0].dtype)
    scratch = torch.empty(t_off + s_off, dtype=acc, device=dev)
    eps_t = torch.full((1,), float(eps), dtype=acc, device=dev)
    wit = ws[0]
    # No launch with 0 programs: layers without columns (rows) have no column (row) tiles.
    for it in range(n_iter):
        if ct:
            _sn_colsum_kernel[(len(ct),)](meta, tiles[0], scratch, wit, FROM_INPUT=it == 0, BLOCK_C=_COL,
                                          BLOCK_H=32)
        _sn_normv_kernel[(L,)](meta, scratch, wit, eps_t, BLOCK=1024)
        if rt:
            _sn_rowdot_kernel[(len(rt),)](meta, tiles[1], scratch, wit, FROM_INPUT=False, BLOCK_R=_ROW, BLOCK_J=128)
        _sn_normu_kernel[(L,)](meta, scratch, sigmas, wit, eps_t, UPDATE=True, BLOCK=1024)
    if n_iter == 0:
        if rt:
            _sn_rowdot_kernel[(len(rt),)](meta, tiles[1], scratch, wit, FROM_INPUT=True, BLOCK_R=_ROW, BLOCK_J=128)
        _sn_normu_kernel[(L,)](meta, scratch, sigmas, wit, eps_t, UPDATE=False, BLOCK=1024)
    if et:
        _sn_scale_kernel[(len(et),)](meta, tiles[2], sigmas, wit, TILE=_ELEM, BLOCK=1024)


@torch.library.custom_op("ganops::spectral_norm_forward_triton", mutates_args=())
def spectral_norm_forward_triton(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor],
                                 dims: list[int], n_power_iterations: int, eps: float
                                 ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    outs = [torch.empty(w.shape, dtype=w.dtype, device=w.device) for w in weights]
    un = [torch.empty(u.shape, dtype=u.dtype, device=u.device) for u in us]
    vn = [torch.empty(v.shape, dtype=v.dtype, device=v.device) for v in vs]
    sigmas = weights[0].new_empty(len(weights))
    _forward_into(weights, us, vs, dims, n_power_iterations, eps, outs, un, vn, sigmas)
    return outs, sigmas, un, vn


@torch.library.custom_op("ganops::spectral_norm_backward_triton", mutates_args=())
def spectral_norm_backward_triton(grads: list[torch.Tensor], grad_sigmas: torch.Tensor, weights: list[torch.Tensor],
                                  us: list[torch.Tensor], vs: list[torch.Tensor], dims: list[int],
                                  sigmas: torch.Tensor) -> list[torch.Tensor]:
    dev = weights[0].device
    L = len(weights)
    keep = [t.contiguous() for t in (*weights, *grads, *us, *vs)]
    ws, gs, ui, vi = keep[:L], keep[L:2 * L], keep[2 * L:3 * L], keep[3 * L:]
    gws = [torch.empty(w.shape, dtype=w.dtype, device=dev) for w in ws]
    rows, et = [], []
    for l, (w, d) in enumerate(zip(ws, dims)):
        P, H, R = _shape(w, d)
        tile0 = len(et)
        et += _tiles(P * H * R, _ELEM, l)
        rows.append([w.data_ptr(), gws[l].data_ptr(), ui[l].data_ptr(), vi[l].data_ptr(), 0, 0, gs[l].data_ptr(),
                     P, H, R, 0, 0, tile0, len(et) - tile0])
    if not et:
        return gws
    meta, tiles = _upload([rows, et], dev)
    partial = torch.empty(len(et), dtype=_acc(ws[0].dtype), device=dev)
    sg, gsg = sigmas.contiguous(), grad_sigmas.contiguous()
    _sn_gdot_kernel[(len(et),)](meta, tiles, partial, ws[0], TILE=_ELEM, BLOCK=1024)
    _sn_gradw_kernel[(len(et),)](meta, tiles, partial, sg, gsg, ws[0], TILE=_ELEM, BLOCK=1024)
    return gws

