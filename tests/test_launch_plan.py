# SPDX-License-Identifier: BSD-3-Clause
"""Launch plans and grid limits, checked without a GPU.

* The CUDA kernels' plans (csrc/include/ganops/launch_plan.h, exposed as ganops::_cuda_launch_plan): grid.x within
  2^31 - 1, grid.y/z within 65535, never 0 blocks, the SLE backward's pixel chunks covering each row exactly once
  and giving the GPU enough blocks when N * C is small (8 x 16 x 512^2 channels_last: 8 blocks before).
* The Triton kernels' grid-stride loops: every kernel runs with its program count capped at a handful
  (_MAX_PROGRAMS patched), so each program walks several tiles, samples or chunks, and still matches the reference.
* Empty inputs (a 0 in any dimension) on every backend: no launch with 0 blocks, the reference's values.
* Python floats reaching fp64 Triton kernels (the penalty target, SN's eps) keep their float64 value.
"""
from __future__ import annotations

import importlib

import pytest
import torch

import ganops
from conftest import backends, device_for, requires_ext, requires_triton, skip_unless_available, triton_device
from ganops.ops.penalty import interpolate, interpolate_ref, norm_penalty, norm_penalty_ref

MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65535


def _plan(kernel, *sizes):
    return list(torch.ops.ganops._cuda_launch_plan(kernel, list(sizes)))


SLE_SHAPES = [(8, 16, 512 * 512), (8, 32, 256 * 256), (8, 64, 128 * 128), (8, 128, 64 * 64), (8, 256, 32 * 32),
              (1, 1, 1), (3, 7, 33 * 65), (2, 5, 1), (1, 2, 130 * 129), (70000, 3, 16), (1, 1, 4096 * 4096),
              (2, 1000, 9), (0, 3, 16), (2, 3, 0)]


@requires_ext
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SLE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_sle_backward_plan(shape, channels_last):
    N, C, HW = shape
    rows, tiles, chunks, chunk, items, grid, tx, ty, ws, fin = _plan("sle_backward", N, C, HW, int(channels_last))
    assert 1 <= grid <= MAX_GRID_X and 1 <= fin <= MAX_GRID_X
    assert tx * ty == 256 if channels_last else (ty == 1 and tx in (64, 128, 256))
    if channels_last:
        assert tx & (tx - 1) == 0 and tx <= 32 and tiles == -(-C // tx) and rows == N * tiles
    else:
        assert tiles == 1 and rows == N * C
    assert items == rows * chunks and grid == min(max(items, 1), MAX_GRID_X)
    # the chunks cover [0, HW) exactly once, none empty, and a row of one chunk writes gg directly (no workspace)
    assert chunks >= 1
    if HW:
        assert (chunks - 1) * chunk < HW <= chunks * chunk
    assert ws == (N * C * chunks if chunks > 1 else 0)
    if chunks > 1:  # split only with enough work per block
        assert chunk * (tx if channels_last else 1) >= 8192 // 2


@requires_ext
def test_cuda_sle_backward_plan_fills_the_gpu():
    """The issue's case: 8 x 16 x 512^2 in channels_last ran 8 blocks on a 132-SM GPU; the split gives ~1024."""
    for cl in (0, 1):
        for N, C, HW in [(8, 16, 512 * 512), (8, 32, 256 * 256), (8, 3, 1024 * 1024)]:
            grid = _plan("sle_backward", N, C, HW, cl)[5]
            assert grid >= 512, (N, C, HW, cl, grid)


@requires_ext
@pytest.mark.parametrize("N", [0, 1, 8, 65535, 65536, 70000, 10**6])
@pytest.mark.parametrize("norm_over", [0, 1])
def test_cuda_penalty_plan(N, norm_over):
    for C, S in [(3, 1024 * 1024), (3, 16), (64, 1), (0, 5), (3, 0)]:
        nb, grid_y, grid_x2, ws = _plan("penalty", N, C, S, norm_over)
        assert 1 <= nb <= MAX_GRID_X and 1 <= grid_y <= MAX_GRID_YZ and 1 <= grid_x2 <= MAX_GRID_X
        assert grid_y == min(max(N, 1), MAX_GRID_YZ)
        assert ws == N * (nb + 1)
        if norm_over == 0:
            assert nb <= 1024
        else:
            assert nb * 256 >= S  # one thread per pixel


@requires_ext
def test_cuda_diffaug_plan():
    assert _plan("diffaug", 4, 0) == [1]
    assert _plan("diffaug", 4096, 70000) == [4096 * 70000]
    assert _plan("diffaug", 4096 * 4096, 70000) == [MAX_GRID_X]
    with pytest.raises(RuntimeError, match="unknown kernel"):
        _plan("nope", 1)
    with pytest.raises(RuntimeError, match="takes"):
        _plan("sle_backward", 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# Triton: the grid-stride loops with the program count capped


@pytest.fixture
def few_programs(monkeypatch):
    """Cap every Triton launcher at 3 programs, so each program walks several tiles, samples and chunks."""
    for mod in ("sle_kernels", "diffaug_kernels", "penalty_kernels"):
        monkeypatch.setattr(importlib.import_module(f"ganops.triton.{mod}"), "_MAX_PROGRAMS", 3)


@requires_triton
def test_triton_sle_bwd_plan():
    from ganops.triton.sle_kernels import bwd_plan

    for N, C, HW in [(8, 16, 512 * 512), (8, 32, 256 * 256), (1, 2, 128 * 128), (2, 3, 35), (1, 1, 1)]:
        p = bwd_plan(N, C, HW)
        assert p["items"] == N * p["n_ct"] * p["chunks"] and 1 <= p["programs"] <= p["items"]
        assert (p["chunks"] - 1) * p["chunk"] < HW <= p["chunks"] * p["chunk"] and p["chunk"] % p["BLOCK_P"] == 0
    assert bwd_plan(8, 16, 512 * 512)["programs"] >= 512  # was 8 x 1 programs


@requires_triton
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_triton_sle_grid_stride(few_programs, layout):
    from ganops.triton.sle_kernels import bwd_plan

    dev = triton_device()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for shape in [(3, 5, 6, 7), (1, 2, 128, 128)]:
        assert shape != (1, 2, 128, 128) or bwd_plan(1, 2, 128 * 128)["chunks"] > 1  # the two-pass reduction
        g = torch.Generator().manual_seed(1)
        x = torch.randn(shape, generator=g).to(dev).contiguous(memory_format=fmt).requires_grad_()
        gate = torch.randn(shape[:2], generator=g).to(dev).requires_grad_()
        gy = torch.randn(shape, generator=g).to(dev)
        y = ganops.sle(x, gate, impl="triton")
        gx, gg = torch.autograd.grad(y, (x, gate), gy)
        ry = ganops.sle_ref(x.double(), gate.double())
        rgx, rgg = torch.autograd.grad(ry, (x, gate), gy.double())
        torch.testing.assert_close(y.double(), ry, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gx.double(), rgx.double(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gg.double(), rgg.double(), rtol=1e-4, atol=1e-4)


@requires_triton
def test_triton_diffaug_grid_stride(few_programs):
    dev = triton_device()
    for layout in ("contiguous", "channels_last"):
        for policy in ("color,translation,cutout", "cutout,translation,color"):
            x = torch.randn(5, 3, 6, 9, device=dev)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            params = ganops.diff_augment_params(policy, x.shape, device=dev, generator=None)
            y = ganops.diff_augment(x, policy, params=params, impl="triton")
            torch.testing.assert_close(y.double(), ganops.diff_augment_ref(x.double(), policy,
                                                                           {k: (v.double() if v.is_floating_point()
                                                                                else v) for k, v in params.items()}),
                                       rtol=1e-5, atol=1e-5)


@requires_triton
def test_triton_penalty_grid_stride(few_programs):
    dev = triton_device()
    g = torch.randn(7, 3, 5, 6, device=dev)
    for no in ("sample", "channel"):
        for red in ("none", "mean"):
            for t in (0.0, 1.0):
                x = g.clone().requires_grad_()
                y = norm_penalty(x, target=t, scale=0.5, norm_over=no, reduce=red, impl="triton")
                (gx,) = torch.autograd.grad(y.sum(), x)
                x64 = g.double().requires_grad_()
                ry = norm_penalty_ref(x64, t, 0.5, no, red)
                (rgx,) = torch.autograd.grad(ry.sum(), x64)
                torch.testing.assert_close(y.double(), ry.detach(), rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(gx.double(), rgx, rtol=1e-5, atol=1e-6)


@requires_triton
def test_triton_fp64_scalars_keep_double_precision():
    """A Python float passed to a Triton kernel arrives as fp32: target = 0.1 would be 0.1 + 1.5e-9, wrong at
    float64's 1e-12. The launchers pass it as a float64 tensor."""
    dev = triton_device()
    g = torch.rand(3, 2, 4, 5, dtype=torch.float64, device=dev) * 0.2
    for no in ("sample", "channel"):
        x = g.clone().requires_grad_()
        y = norm_penalty(x, target=0.1, scale=1.0, norm_over=no, reduce="mean", impl="triton")
        (gx,) = torch.autograd.grad(y, x)
        x64 = g.clone().requires_grad_()
        ry = norm_penalty_ref(x64, 0.1, 1.0, no, "mean")
        (rgx,) = torch.autograd.grad(ry, x64)
        torch.testing.assert_close(y, ry.detach(), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(gx, rgx, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------------------------
# empty inputs on every backend

EMPTY_SHAPES = [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)]


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_empty_sle(backend, shape):
    skip_unless_available("sle", backend)
    dev = device_for(backend)
    x = torch.randn(shape, device=dev, requires_grad=True)
    gate = torch.randn(shape[:2], device=dev, requires_grad=True)
    y = ganops.sle(x, gate, impl=backend)
    assert y.shape == x.shape
    gx, gg = torch.autograd.grad(y, (x, gate), torch.ones_like(y))
    assert gx.shape == x.shape and gg.shape == gate.shape
    torch.testing.assert_close(gg, torch.zeros_like(gate))  # a sum over no pixels


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0), (2, 0, 4, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_empty_diff_augment(backend, shape):
    skip_unless_available("diff_augment", backend)
    dev = device_for(backend)
    x = torch.randn(shape, device=dev, requires_grad=True)
    policy = "translation,cutout" if shape[1] == 0 else "color,translation,cutout"
    params = ganops.diff_augment_params(policy, shape, device=dev)
    y = ganops.diff_augment(x, policy, params=params, impl=backend)
    assert y.shape == x.shape
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert gx.shape == x.shape


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("shape", [(2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)], ids=lambda s: "x".join(map(str, s)))
def test_empty_penalty(backend, shape):
    skip_unless_available("gp_norm_penalty", backend)
    dev = device_for(backend)
    e = torch.randn(0, 3, 4, 5, device=dev)  # an empty batch has no per-sample penalty: a clear error
    with pytest.raises(ValueError, match="non-empty batch"):
        interpolate(e, e, torch.rand(0, device=dev), impl=backend)
    r, f = torch.randn(shape, device=dev), torch.randn(shape, device=dev)
    a = torch.rand(shape[0], device=dev)
    torch.testing.assert_close(interpolate(r, f, a, impl=backend), interpolate_ref(r, f, a))
    for no in ("sample", "channel"):
        for red in ("none", "sum"):
            g = torch.randn(shape, device=dev, requires_grad=True)
            y = norm_penalty(g, target=1.0, norm_over=no, reduce=red, impl=backend)
            want = norm_penalty_ref(g.detach(), 1.0, 1.0, no, red)
            assert y.shape == want.shape
            if no == "sample" or 0 not in shape[2:]:
                torch.testing.assert_close(y, want.to(y.dtype), equal_nan=True)
            else:  # the mean over no pixel groups: NaN in both
                assert torch.isnan(y).all() and torch.isnan(want).all()
            if y.numel():
                (gx,) = torch.autograd.grad(y.sum(), g)
                assert gx.shape == g.shape


# ---------------------------------------------------------------------------------------------------------------
# the Triton spectral-norm launcher's table upload


@requires_triton
def test_sn_tables_uploaded_in_one_copy(monkeypatch):
    """The int64 tables go to the device as views of one buffer; on CUDA from pinned memory (a non_blocking copy
    from pageable memory is synchronous in disguise), elsewhere by a plain copy."""
    from ganops.triton import spectral_norm_kernels as K

    tables = [[[1, 2, 3], [4, 5, 6]], [[7, 8]], [[9, 10], [11, 12], [13, 14]]]
    out = K._upload(tables, torch.device("cpu"))
    assert [t.tolist() for t in out] == [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 13, 14]]
    assert len({t.untyped_storage().data_ptr() for t in out}) == 1  # one buffer, one transfer
    seen = {}
    real_pin = torch.Tensor.pin_memory

    def fake_pin(self, *a, **k):  # record the pinning; no CUDA here to pin with
        seen["pinned"] = True
        return self

    def fake_to(self, *a, **k):
        seen["to"] = (a, k)
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    K._upload(tables, torch.device("cuda"))
    monkeypatch.setattr(torch.Tensor, "pin_memory", real_pin)
    assert seen.get("pinned") and seen["to"][1].get("non_blocking") is True
