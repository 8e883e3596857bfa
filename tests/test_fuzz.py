# SPDX-License-Identifier: BSD-3-Clause
"""Property-based fuzzing of every op on every backend against the float64 reference.

Hypothesis draws shapes (0 and 1 in every dimension, odd sizes, sizes across the kernels' tiles and blocks: 32
channels, 256/1024/2048 elements, the 8192-element chunks of the SLE backward), dtypes (fp32, fp64, fp16, bf16
where the op takes them) and layouts (contiguous, channels_last, each of the 24 dense permutations, sliced views
with a storage offset, stepped non-dense views, broadcast inputs with stride 0) and checks, for each case, the
forward and the input gradients against the reference run in float64 on the same rounded inputs, and that outputs
keep a channels_last input's layout where the op promises it.

``GANOPS_FUZZ_CASES`` sets the cases per op on the cpu and cuda backends (default 25: the fixed-seed CI subset,
well under 3 minutes), ``GANOPS_FUZZ_TRITON_CASES`` on the Triton interpreter (default a quarter of that);
``GANOPS_FUZZ_CASES=500 GANOPS_FUZZ_TRITON_CASES=500`` is the long run of docs/fuzzing.md. The cases are derived
from a fixed seed (``derandomize``), so a failure reproduces; ``GANOPS_FUZZ_SEED`` picks another stream. Triton runs
under the interpreter on CPU (smaller shapes); the cuda backend runs the same generator on a GPU (the device
check's ``fuzz`` step).
"""
from __future__ import annotations

import inspect
import itertools
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import ganops
from conftest import backends, device_for, skip_unless_available
from ganops.ops.penalty import interpolate, interpolate_ref, norm_penalty, norm_penalty_ref
from ganops.ops.spectral_norm import spectral_norm_ref, weight_matrix

CASES = int(os.environ.get("GANOPS_FUZZ_CASES", "25"))
TRITON_CASES = int(os.environ.get("GANOPS_FUZZ_TRITON_CASES", str(max(1, CASES // 4))))
SEED = int(os.environ.get("GANOPS_FUZZ_SEED", "20261206"))
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# machine epsilon-scale tolerance per dtype: outputs are rounded once from fp32 (fp64) accumulation
RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
# element budget per input: the Triton interpreter is ~100x slower than the C++ kernels
MAX_NUMEL = {"cpu": 40_000, "ref": 40_000, "triton": 3_000, "cuda": 300_000}
# sizes that cross the kernels' tiles and blocks (and their neighbours), plus 0, 1 and odd sizes
CHANNELS = (0, 1, 2, 3, 4, 5, 7, 16, 31, 32, 33, 64, 65)
SPATIAL = (0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 45, 64, 65, 91, 128, 129)
BATCH = (0, 1, 2, 3, 5, 8)
PERMS = list(itertools.permutations(range(4)))


def fuzz_settings(backend: str):
    n = TRITON_CASES if backend == "triton" else CASES
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def fuzz(op: str | None, backend: str, name: str | None = None, **strategies):
    """Decorator: run the case function at once over Hypothesis draws of ``strategies`` and ``case_seed`` (the seed
    of the case's torch generator), with ``backend``'s number of cases and the fixed seed; skip a backend that is
    not available here."""
    if op is not None:
        skip_unless_available(op, backend)

    def run(fn):
        key = f"{name or op}[{backend}]"

        def counted(*a, **kw):
            COUNTS[key] = COUNTS.get(key, 0) + 1
            return fn(*a, **kw)

        counted.__signature__ = inspect.signature(fn)
        fuzz_settings(backend)(seed(SEED)(given(**strategies, case_seed=st.integers(0, 2**31))(counted)))()
        if os.environ.get("GANOPS_FUZZ_REPORT"):  # the case counts of this process, for docs/fuzzing.md
            with open(os.environ["GANOPS_FUZZ_REPORT"], "w") as f:
                json.dump(COUNTS, f, indent=1, sort_keys=True)
        return fn

    return run


COUNTS: dict[str, int] = {}  # cases run per "op[backend]" (the last run's, shrinking included)


# ---------------------------------------------------------------------------------------------------------------
# inputs


@st.composite
def shapes4(draw, backend: str, min_n=0, min_c=0, min_hw=0, c_values=CHANNELS):
    """(N, C, H, W) within the backend's element budget."""
    cap = MAX_NUMEL[backend]
    n = draw(st.sampled_from([b for b in BATCH if b >= min_n]))
    c = draw(st.sampled_from([v for v in c_values if v >= min_c]))
    h = draw(st.sampled_from([v for v in SPATIAL if v >= min_hw and max(n, 1) * max(c, 1) * v <= cap] or [min_hw]))
    room = cap // max(1, n * c * h)
    w = draw(st.sampled_from([v for v in SPATIAL if v >= min_hw and v <= room] or [min_hw]))
    return (n, c, h, w)


LAYOUTS = st.one_of(st.sampled_from(["contiguous", "channels_last", "sliced", "stepped", "broadcast"]),
                    st.sampled_from(PERMS))


def make_input(shape, dtype, layout, gen: torch.Generator, device: str, scale: float = 1.0) -> torch.Tensor:
    """A tensor of ``shape`` with values ~ N(0, scale^2) rounded to ``dtype``, in ``layout``: a memory-order
    permutation (tuple, outermost dim first), contiguous, channels_last, ``sliced`` (a window of a larger tensor:
    storage offset, not dense), ``stepped`` (every other element of W and H: not dense) or ``broadcast`` (sample 0
    expanded over N: stride 0)."""
    def rnd(s):
        return (torch.randn(s, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)

    if isinstance(layout, tuple):
        base = rnd([shape[d] for d in layout])
        return base.permute([layout.index(d) for d in range(4)])
    if layout == "contiguous":
        return rnd(shape)
    if layout == "channels_last":
        return rnd(shape).contiguous(memory_format=torch.channels_last)
    n, c, h, w = shape
    if layout == "sliced":
        big = rnd((n + 1, c + 2, h + 1, w + 3))
        return big[1:, 1:c + 1, :h, 2:w + 2]
    if layout == "stepped":
        big = rnd((n, c, 2 * h, 2 * w))
        return big[:, :, ::2, ::2]
    if layout == "broadcast":
        return rnd((1, c, h, w)).expand(n, c, h, w)
    raise ValueError(layout)


def _ref_view(x: torch.Tensor) -> torch.Tensor:
    """x in float64 with equal values (the reference's input)."""
    return x.detach().double()


def close(got: torch.Tensor, want: torch.Tensor, dtype, what: str, scale: float | None = None,
          ulps: float = 1.0) -> None:
    """|got - want| <= rtol |want| + rtol * max(rms(want), scale), elementwise, with NaN where want has NaN;
    rtol = RTOL[dtype] * ulps."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if w.numel() == 0:
        return
    rtol = RTOL[dtype] * ulps
    # the reference rounded to the output's dtype: where that overflows (fp16 past 65504), the op must too
    over = torch.isinf(want.detach().cpu().to(got.dtype).double()) & ~torch.isinf(w)
    if over.any():
        assert torch.equal(g[over], want.detach().cpu().to(got.dtype).double()[over]), f"{what}: overflow differs"
        g, w = g.masked_fill(over, 0), w.masked_fill(over, 0)
    rms = w.nan_to_num().pow(2).mean().sqrt().item()
    atol = rtol * max(rms, scale or 0.0, 1e-30 if dtype == torch.float64 else 1e-6)
    nan_w, nan_g = torch.isnan(w), torch.isnan(g)
    assert torch.equal(nan_w, nan_g), f"{what}: NaN where the reference has none (or the reverse)"
    assert torch.equal(torch.isinf(w), torch.isinf(g)), f"{what}: inf where the reference has none (or the reverse)"
    err = (g - w).abs().nan_to_num() - rtol * w.abs().nan_to_num()
    worst = err.max().item()
    assert worst <= atol, (f"{what}: max excess error {worst:.3e} > atol {atol:.3e} (rtol {rtol:g}, rms {rms:.3e}, "
                           f"dtype {dtype})")


def _keeps_layout(out: torch.Tensor, x: torch.Tensor, what: str) -> None:
    """A channels_last input (dense, not also NCHW-contiguous) gives a channels_last output; others NCHW."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    ok = out.is_contiguous(memory_format=torch.channels_last) if cl else (
        out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last))
    assert ok, f"{what}: output strides {out.stride()} for input strides {x.stride()}"


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A leaf to differentiate with respect to, keeping x's strides (also stride 0 for a broadcast input)."""
    return x.detach().requires_grad_(True)


def _grads(outs, inputs, gys):
    pairs = [(o, g) for o, g in zip(outs, gys) if o.requires_grad]
    if not pairs or not any(i.requires_grad for i in inputs):
        return [None] * len(inputs)
    return list(torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True))


FAST = backends("cpu", "triton", "cuda")


# ---------------------------------------------------------------------------------------------------------------
# SLE


@pytest.mark.parametrize("backend", FAST)
def test_fuzz_sle(backend):
    dev = device_for(backend)

    @fuzz("sle", backend, shape=shapes4(backend), dtype=st.sampled_from(DTYPES), layout=LAYOUTS)
    def case(shape, dtype, layout, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        x = _leaf(make_input(shape, dtype, layout, gen, dev))
        gate = _leaf(make_input(shape[:2], dtype, "contiguous", gen, dev, 2.0))
        y = ganops.sle(x, gate, impl=backend)
        gy = make_input(shape, dtype, "contiguous", gen, dev)
        gx, gg = _grads([y], [x, gate], [gy])
        x64, g64 = _leaf(_ref_view(x)), _leaf(_ref_view(gate))
        ry = ganops.sle_ref(x64, g64)
        rgx, rgg = torch.autograd.grad(ry, (x64, g64), gy.double())
        what = f"sle[{backend}] {shape} {dtype} {layout}"
        close(y, ry, dtype, what + " y")
        close(gx, rgx, dtype, what + " grad x")
        close(gg, rgg, dtype, what + " grad gate")
        assert y.dtype == dtype and gx.dtype == dtype and gg.dtype == dtype
        _keeps_layout(y, x, what)


# ---------------------------------------------------------------------------------------------------------------
# DiffAugment: each policy, and all three in both orders


POLICIES = ("color", "translation", "cutout", "color,translation,cutout", "cutout,translation,color")


@pytest.mark.parametrize("backend", FAST)
def test_fuzz_diff_augment(backend):
    dev = device_for(backend)

    @fuzz("diff_augment", backend, shape=shapes4(backend), dtype=st.sampled_from(DTYPES), layout=LAYOUTS,
          policy=st.sampled_from(POLICIES))
    def case(shape, dtype, layout, policy, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        if shape[1] == 0 and "color" in policy:
            shape = (shape[0], 3, shape[2], shape[3])  # color needs channels (mean over C); 0 channels elsewhere
        x = _leaf(make_input(shape, dtype, layout, gen, dev))
        params = {k: v.to(dev) for k, v in ganops.diff_augment_params(policy, shape, generator=gen).items()}
        y = ganops.diff_augment(x, policy, params=params, impl=backend)
        gy = make_input(shape, dtype, "contiguous", gen, dev)
        (gx,) = _grads([y], [x], [gy])
        p64 = {k: (v.double() if v.is_floating_point() else v) for k, v in params.items()}
        x64 = _leaf(_ref_view(x))
        ry = ganops.diff_augment_ref(x64, policy, p64)
        (rgx,) = torch.autograd.grad(ry, x64, gy.double())
        what = f"diff_augment[{backend}] {shape} {dtype} {layout} {policy}"
        # contrast: a mean over the sample then (x - m) k + m; scale its absolute error by the input's rms
        scale = _ref_view(x).pow(2).mean().sqrt().item() if x.numel() else 0.0
        close(y, ry, dtype, what + " y", scale)
        close(gx, rgx, dtype, what + " grad", _ref_view(gy).pow(2).mean().sqrt().item() if gy.numel() else 0.0)
        assert y.dtype == dtype
        _keeps_layout(y, x, what)


# ---------------------------------------------------------------------------------------------------------------
# gradient penalty: interpolation, norm penalty (sample / channel norm, every reduction, target 1 and 0), R1


@pytest.mark.parametrize("backend", FAST)
def test_fuzz_gp_interpolate(backend):
    dev = device_for(backend)

    @fuzz("gp_interpolate", backend, shape=shapes4(backend, min_n=1), dtype=st.sampled_from(DTYPES), layout=LAYOUTS,
          per_batch=st.booleans())
    def case(shape, dtype, layout, per_batch, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        real = _leaf(make_input(shape, dtype, layout, gen, dev))
        fake = _leaf(make_input(shape, dtype, layout, gen, dev))
        alpha = _leaf(torch.rand(1 if per_batch else shape[0], generator=gen, dtype=torch.float64).to(dtype).to(dev))
        out = interpolate(real, fake, alpha, impl=backend)
        gy = make_input(shape, dtype, "contiguous", gen, dev)
        grads = _grads([out], [real, fake, alpha], [gy])
        r64, f64, a64 = (_leaf(_ref_view(t)) for t in (real, fake, alpha))
        ro = interpolate_ref(r64, f64, a64)
        rgrads = torch.autograd.grad(ro, (r64, f64, a64), gy.double())
        what = f"gp_interpolate[{backend}] {shape} {dtype} {layout}"
        close(out, ro, dtype, what + " out", _ref_view(real).abs().max().item() if real.numel() else 0)
        # grad alpha = sum over a sample of gy * (fake - real), each term rounded in a low-precision dtype: its
        # error scales with the sum of |terms|, not with the (cancelling) result
        terms = (gy.double() * (_ref_view(fake) - _ref_view(real))).abs().flatten(1).sum(1)
        scales = (None, None, terms.sum().item())
        for name, a, b, sc in zip(("real", "fake", "alpha"), grads, rgrads, scales):
            close(a, b, dtype, f"{what} grad {name}", sc)
        _keeps_layout(out, real, what)


@pytest.mark.parametrize("backend", FAST)
def test_fuzz_gp_norm_penalty(backend):
    dev = device_for(backend)

    @fuzz("gp_norm_penalty", backend, shape=shapes4(backend, min_n=1), dtype=st.sampled_from(DTYPES), layout=LAYOUTS,
          norm_over=st.sampled_from(["sample", "channel"]), reduce=st.sampled_from(["mean", "sum", "none"]),
          target=st.sampled_from([1.0, 0.0, 0.1]), scale=st.sampled_from([1.0, 10.0, 0.3]))
    def case(shape, dtype, layout, norm_over, reduce, target, scale, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        g = _leaf(make_input(shape, dtype, layout, gen, dev, 0.7))
        y = norm_penalty(g, target=target, scale=scale, norm_over=norm_over, reduce=reduce, impl=backend)
        go = (torch.rand(y.shape, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(dev)
        (gx,) = _grads([y], [g], [go]) if y.numel() else [None]
        g64 = _leaf(_ref_view(g))
        ry = norm_penalty_ref(g64, target, scale, norm_over, reduce)
        what = f"gp_norm_penalty[{backend}] {shape} {dtype} {layout} {norm_over}/{reduce}/t={target}/s={scale}"
        # (||g|| - t)^2 near ||g|| = t cancels: scale the tolerance by the penalty's size with t = 0
        ref0 = norm_penalty_ref(_ref_view(g), 0.0, scale, norm_over, reduce)
        s0 = ref0.nan_to_num().pow(2).mean().sqrt().item() if ref0.numel() else 0.0
        close(y, ry.detach(), dtype, what + " out", s0)
        assert y.dtype == dtype
        if gx is not None and ry.numel():
            (rgx,) = torch.autograd.grad(ry, g64, go.double())
            g0 = _leaf(_ref_view(g))
            (sgx,) = torch.autograd.grad(norm_penalty_ref(g0, 0.0, scale, norm_over, reduce), g0, go.double())
            close(gx, rgx, dtype, what + " grad", sgx.nan_to_num().pow(2).mean().sqrt().item())
            _keeps_layout(gx, g, what)


@pytest.mark.parametrize("backend", FAST)
def test_fuzz_r1(backend):
    """R1 through a small convolutional D: the penalty and its gradient w.r.t. D's weight (second order)."""
    dev = device_for(backend)

    @fuzz("gp_norm_penalty", backend, "r1",
          shape=shapes4(backend, min_n=1, min_c=1, min_hw=3, c_values=(1, 2, 3, 4, 5, 7)),
          dtype=st.sampled_from((torch.float32, torch.float64)), layout=LAYOUTS,
          reduce=st.sampled_from(["mean", "sum", "none"]))
    def case(shape, dtype, layout, reduce, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        real = make_input(shape, dtype, layout, gen, dev)
        w0 = torch.randn(2, shape[1], 3, 3, generator=gen, dtype=torch.float64)

        def penalty(impl, x, wt):
            D = lambda t: F.softplus(F.conv2d(t, wt)).flatten(1).sum(1)  # noqa: E731
            return ganops.r1_penalty(D, x, gamma=10.0, reduce=reduce, impl=impl)

        w = _leaf(w0.to(dtype).to(dev))
        p = penalty(backend, real, w)
        (gw,) = torch.autograd.grad(p.sum(), w)
        w64 = _leaf(_ref_view(w))
        rp = penalty("ref", _ref_view(real), w64)
        (rgw,) = torch.autograd.grad(rp.sum(), w64)
        what = f"r1[{backend}] {shape} {dtype} {layout} {reduce}"
        close(p, rp.detach(), dtype, what + " out")
        close(gw, rgw, dtype, what + " grad D weight")


# ---------------------------------------------------------------------------------------------------------------
# spectral norm: a group of L weights (the grouped form), dims 0/1, 0-3 power iterations


@st.composite
def sn_group(draw, backend):
    L = draw(st.integers(1, 4 if backend == "triton" else 7))
    cap = MAX_NUMEL[backend] // L
    ws = []
    for _ in range(L):
        kind = draw(st.sampled_from(["linear", "conv", "convT", "embed"]))
        a = draw(st.sampled_from([1, 2, 3, 5, 16, 31, 32, 33, 64, 129]))
        b = draw(st.sampled_from([1, 2, 3, 5, 16, 31, 32, 33, 64, 129]))
        k = draw(st.sampled_from([1, 2, 3, 4]))
        if kind in ("linear", "embed"):
            shape, dim = (a, b), 0
        else:
            shape, dim = (a, b, k, k), (1 if kind == "convT" else 0)
        while math.prod(shape) > cap:
            shape = tuple(max(1, s // 2) for s in shape)
        ws.append((shape, dim))
    return ws


@pytest.mark.parametrize("backend", FAST)
def test_fuzz_spectral_norm(backend):
    dev = device_for(backend)

    @fuzz("spectral_norm", backend, group=sn_group(backend), dtype=st.sampled_from(DTYPES), iters=st.integers(0, 3))
    def case(group, dtype, iters, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        ws = [_leaf(make_input(s, dtype, "contiguous", gen, dev)) for s, _ in group]
        dims = [d for _, d in group]
        us, vs = [], []
        for w, d in zip(ws, dims):
            h, wd = weight_matrix(w.detach().double(), d).shape
            us.append(F.normalize(torch.randn(h, generator=gen, dtype=torch.float64), dim=0).to(dtype).to(dev))
            vs.append(F.normalize(torch.randn(wd, generator=gen, dtype=torch.float64), dim=0).to(dtype).to(dev))
        outs, sig, un, vn = ganops.spectral_norm_weights(ws, us, vs, dims, n_power_iterations=iters, impl=backend)
        w64 = [_leaf(_ref_view(w)) for w in ws]
        r_outs, r_sig, r_un, r_vn = spectral_norm_ref(w64, [u.double() for u in us], [v.double() for v in vs], dims,
                                                      iters, 1e-12)
        what = f"spectral_norm[{backend}] L={len(ws)} {[s for s, _ in group]} dims {dims} {dtype} iters={iters}"
        # fp16/bf16: u, v and sigma are outputs in the low precision and the backward reads them back rounded;
        # several rounded factors meet in each gradient element (4 ulps, as tests/test_spectral_norm.py allows)
        ulps = 1.0 if dtype in (torch.float32, torch.float64) else 4.0
        # sigma = u^T W v sums terms of both signs (u, v not converged: 0 iterations): rounded in fp32 or lower, its
        # error follows the terms, sum |u_j W_jk v_k| = cond * |sigma|, not the cancelling sum, and each output and
        # gradient of that weight divides by it: allow 1 + cond roundings there (torch's own fp32 computation, the
        # "ref" backend, is as far off; docs/fuzzing.md).
        conds = [(u[:, None] * weight_matrix(w.detach(), d) * v[None, :]).abs().sum().item()
                 / max(abs(s.item()), 1e-300) for w, u, v, d, s in zip(w64, r_un, r_vn, dims, r_sig)]
        wulps = [ulps * (1.0 + (c if dtype != torch.float64 else 0.0)) for c in conds]
        for i, (a, b) in enumerate(zip(outs, r_outs)):
            close(a, b.detach(), dtype, f"{what} out{i} (cond {conds[i]:.3g})", ulps=wulps[i])
            assert a.is_contiguous() and a.dtype == dtype
        for i in range(len(ws)):
            close(sig[i:i + 1], r_sig[i:i + 1].detach(), dtype, f"{what} sigma{i} (cond {conds[i]:.3g})", ulps=wulps[i])
        for i, (a, b) in enumerate(zip(un + vn, r_un + r_vn)):
            close(a, b.detach(), dtype, f"{what} u/v {i}", ulps=ulps)
        gys = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in ws]
        gsig = torch.randn(len(ws), generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad(list(outs) + [sig], ws, [g.to(dtype).to(dev) for g in gys] +
                                    [gsig.to(dtype).to(dev)])
        r_grads = torch.autograd.grad(list(r_outs) + [r_sig], w64, [g.to(dtype).double() for g in gys] +
                                      [gsig.to(dtype).double()])
        for i, (a, b) in enumerate(zip(grads, r_grads)):
            close(a, b, dtype, f"{what} grad{i} (cond {conds[i]:.3g})", ulps=wulps[i])


# ---------------------------------------------------------------------------------------------------------------
# Winograd 3x3 convolutions (CPU kernels; float32/float64)


@pytest.mark.slow
def test_fuzz_winograd():
    from ganops.ops import winograd

    if not winograd._has_kernels():
        pytest.skip("the Winograd kernels are not built")

    @fuzz(None, "cpu", "winograd", n=st.sampled_from([1, 2, 3]), c=st.sampled_from([1, 2, 3, 5, 8, 16, 17]),
          k=st.sampled_from([1, 2, 3, 8, 9, 16]), h=st.sampled_from([3, 4, 5, 6, 7, 9, 12, 13, 25, 31]),
          w=st.sampled_from([3, 4, 5, 6, 8, 11, 17, 38]), pad=st.sampled_from([0, 1, 2]),
          dtype=st.sampled_from((torch.float32, torch.float64)), layout=LAYOUTS, bias=st.booleans())
    def case(n, c, k, h, w, pad, dtype, layout, bias, case_seed):
        gen = torch.Generator().manual_seed(case_seed)
        x = make_input((n, c, h, w), dtype, layout, gen, "cpu")
        wt = torch.randn(k, c, 3, 3, generator=gen, dtype=torch.float64).to(dtype)
        b = torch.randn(k, generator=gen, dtype=torch.float64).to(dtype) if bias else None
        what = f"winograd {(n, c, h, w)} k={k} pad={pad} {dtype} {layout}"
        y = winograd.conv3x3(x, wt, b, pad)
        ry = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), padding=pad)
        # the transform's rounding: ~1e-5 relative in float32 (as cuDNN's Winograd), 1e-13 in float64
        close(y, ry, dtype if dtype == torch.float64 else torch.float16, what + " forward",
              ry.abs().max().item() * 1e-3 if dtype == torch.float32 else 0.0)
        assert y.is_contiguous(memory_format=torch.channels_last)
        oh, ow = h - 2, w - 2
        if oh >= 1 and ow >= 1:
            g = torch.randn(n, k, oh, ow, generator=gen, dtype=torch.float64).to(dtype)
            xi = x.double().requires_grad_()
            wi = wt.double().requires_grad_()
            rgx, rgw = torch.autograd.grad(F.conv2d(xi, wi), (xi, wi), g.double())
            gx = winograd.conv3x3_input_grad(g, wt)
            gw = winograd.conv3x3_weight_grad(x, g)
            tol = dtype if dtype == torch.float64 else torch.float16
            close(gx, rgx, tol, what + " input grad")
            close(gw, rgw, tol, what + " weight grad")
