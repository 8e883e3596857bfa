# SPDX-License-Identifier: BSD-3-Clause
"""Gradient-penalty ops (interpolate, norm penalty): every backend vs the reference, any-order grads, opcheck."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import ganops
from conftest import (DTYPES, LAYOUTS, TOL, backends, device_for, make_layout, requires_cuda, requires_ext,
                      requires_triton, skip_unless_available, triton_device)
from ganops.ops.penalty import interpolate, interpolate_ref, norm_penalty, norm_penalty_ref

SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 64, 4, 4), (2, 3, 25, 34), (1, 2, 67, 65)]
MODES = [(no, red, t) for no in ("sample", "channel") for red in ("mean", "sum", "none") for t in (1.0, 0.0)]


def _grad_input(shape, dtype=torch.float64, seed=0, layout="contiguous", device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.7).to(device, dtype)
    return make_layout(x, layout)


def _ref_grads(g, go, **kw):
    """Value and gradient of the float64 reference at the (rounded) input g."""
    x = g.detach().double().requires_grad_()
    y = norm_penalty_ref(x, **kw)
    (gx,) = torch.autograd.grad(y, x, go.double())
    return y.detach(), gx


def _low_tol(dtype, n):
    """Tolerance for a reduction of n terms: 16-bit inputs round each term, so errors grow like sqrt(n)."""
    if dtype in (torch.float64, torch.float32):
        return TOL[dtype]
    return {k: v * max(1.0, n ** 0.5) for k, v in TOL[dtype].items()}


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_norm_penalty_matches_reference(backend, dtype, layout, shape):
    skip_unless_available("gp_norm_penalty", backend)
    if backend == "triton" and (shape[-1] > 20 or dtype in (torch.float16, torch.float64) or layout == "strided"):
        pytest.skip("the Triton interpreter is slow: tiny shapes, float32/bfloat16 and dense layouts only")
    dev = device_for(backend)
    g = _grad_input(shape, dtype, layout=layout, device=dev)
    for norm_over, reduce, target in MODES:
        kw = dict(target=target, scale=0.3, norm_over=norm_over, reduce=reduce)
        x = g.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = norm_penalty(x, impl=backend, **kw)
        go = torch.rand(y.shape, dtype=dtype, device=dev) + 0.5
        (gx,) = torch.autograd.grad(y, x, go)
        ry, rgx = _ref_grads(g, go, **kw)
        assert y.dtype == dtype and y.shape == ry.shape and y.device == g.device
        torch.testing.assert_close(y.double(), ry, **_low_tol(dtype, g[0].numel()), msg=lambda m: f"{kw}: {m}")
        torch.testing.assert_close(gx.double(), rgx, **_low_tol(dtype, shape[1]), msg=lambda m: f"{kw}: {m}")
        if layout == "channels_last":  # the gradient keeps the input's memory format
            assert gx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_interpolate_matches_reference(backend, dtype, layout):
    skip_unless_available("gp_interpolate", backend)
    dev = device_for(backend)
    shapes = [(2, 3, 5, 7), (1, 1, 1, 1)] if backend == "triton" else [(2, 3, 5, 7), (1, 1, 1, 1), (3, 8, 33, 17)]
    for shape in shapes:
        real, fake = _grad_input(shape, dtype, 1, layout, dev), _grad_input(shape, dtype, 2, layout, dev)
        alpha = torch.rand(shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dev, dtype)
        y = interpolate(real, fake, alpha, impl=backend)
        ref = interpolate_ref(real.double(), fake.double(), alpha.double())
        torch.testing.assert_close(y.double(), ref, **TOL[dtype])
        assert y.dtype == dtype
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", backends("ref", "cpu", "triton"))
def test_gradcheck_and_gradgradcheck(backend):
    skip_unless_available("gp_norm_penalty", backend)
    dev = device_for(backend)
    g = _grad_input((2, 3, 2, 3), device=dev).requires_grad_()
    # Every mode in NCHW (fast, random-projection gradcheck), two modes in NHWC; one full (slow-mode) check each.
    cases = [("contiguous",) + m for m in MODES] + [("channels_last", "channel", "mean", 1.0),
                                                    ("channels_last", "sample", "none", 0.0)]
    if backend == "triton":
        cases = cases[-2:]
    for i, (layout, norm_over, reduce, target) in enumerate(cases):
        x = make_layout(g.detach(), layout).requires_grad_()
        f = lambda t: norm_penalty(t, target=target, scale=0.7, norm_over=norm_over, reduce=reduce,  # noqa: E731
                                   impl=backend)
        fast = i != len(cases) - 1
        assert gradcheck(f, (x,), fast_mode=fast), (layout, norm_over, reduce, target)
        assert gradgradcheck(f, (x,), fast_mode=fast), (layout, norm_over, reduce, target)
    r, fk = (_grad_input((2, 3, 2, 3), seed=s, device=dev).requires_grad_() for s in (1, 2))
    a = torch.rand(2, dtype=torch.float64, device=dev, requires_grad=True)
    f = lambda x, y, z: interpolate(x, y, z, impl=backend)  # noqa: E731
    assert gradcheck(f, (r, fk, a)) and gradgradcheck(f, (r, fk, a))


@requires_ext
def test_third_order_and_zero_norm():
    """Third order through the backward's composite backward; a zero group (norm 0) gives 0 like torch's norm."""
    g = _grad_input((2, 3, 3, 3)).requires_grad_()

    def third(impl):
        y = norm_penalty(g * g, target=1.0, norm_over="channel", impl=impl)
        (g1,) = torch.autograd.grad(y, g, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), g, create_graph=True)
        return torch.autograd.grad(g2.pow(3).sum(), g)[0]

    torch.testing.assert_close(third("cpu"), third("ref"))
    z = torch.zeros(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    for impl in ("ref", "cpu"):
        for norm_over in ("sample", "channel"):
            y = norm_penalty(z, norm_over=norm_over, impl=impl)
            assert y.item() == pytest.approx(1.0)
            (gz,) = torch.autograd.grad(y, z)
            assert torch.equal(gz, torch.zeros_like(z))


@requires_ext
def test_opcheck_compiled_ops():
    for layout, cases in (("contiguous", [(0, 1), (1, 0), (1, 2)]), ("channels_last", [(1, 1)])):
        g = _grad_input((2, 3, 4, 5), torch.float32, layout=layout).requires_grad_()
        for no, red in cases:
            torch.library.opcheck(torch.ops.ganops.gp_norm_penalty.default, (g, 1.0, 0.5, no, red))
            out, norm = torch.ops.ganops.gp_norm_penalty(g.detach(), 1.0, 0.5, no, red)
            go = torch.ones_like(out).requires_grad_()
            torch.library.opcheck(torch.ops.ganops.gp_norm_penalty_backward.default, (go, g, norm, 1.0, 0.5, no, red))
        r, f = g.detach().clone().requires_grad_(), _grad_input((2, 3, 4, 5), torch.float32, 1, layout)
        torch.library.opcheck(torch.ops.ganops.gp_interpolate.default, (r, f, torch.rand(2, requires_grad=True)))


@requires_triton
def test_opcheck_triton_ops():
    from ganops.ops.penalty import triton_kernels

    triton_kernels()  # the Triton ops with their autograd and fakes

    dev = triton_device()
    g = _grad_input((2, 3, 4, 5), torch.float32, device=dev).requires_grad_()
    torch.library.opcheck(torch.ops.ganops.gp_norm_penalty_triton.default, (g, 1.0, 0.5, 1, 1),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    out, norm = torch.ops.ganops.gp_norm_penalty_triton(g.detach(), 1.0, 0.5, 1, 1)
    torch.library.opcheck(torch.ops.ganops.gp_norm_penalty_backward_triton.default,
                          (torch.ones_like(out), g, norm, 1.0, 0.5, 1, 1),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(torch.ops.ganops.gp_interpolate_triton.default,
                          (g, g.detach() + 1, torch.rand(2, device=dev)),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@requires_triton
def test_triton_no_out_of_bounds_writes():
    """The interpreter does not catch OOB stores: outputs inside canary buffers."""
    from ganops.triton.penalty_kernels import _gp_bwd_kernel, _gp_channel_kernel, _gp_interp_kernel

    pad = 2048
    shape = (2, 3, 5, 7)
    dev = triton_device()
    x = _grad_input(shape, torch.float32, device=dev)
    n = x.numel()

    def canary(size):
        buf = torch.full((size + 2 * pad,), 777.0, device=dev)
        return buf, buf[pad:pad + size]

    buf, out = canary(n)
    alpha = torch.full((2,), 0.5, device=dev)
    _gp_interp_kernel[(1,)](x, x + 1, alpha, out, n, n // 2, 1, BLOCK=1024, ACC_F64=False)
    torch.testing.assert_close(out.view(shape), x + 0.5)
    assert (buf[:pad] == 777).all() and (buf[pad + n:] == 777).all()
    nbuf, norm = canary(2 * 35)
    pbuf, part = canary(2)
    t = torch.ones(1, device=dev)
    # one program walks both samples' pixel blocks (the grid-stride loop): C=3, S=35, one block per sample
    _gp_channel_kernel[(1,)](x, part, norm, t, 3, 35, 1, 35, 1, 2, BLOCK_P=128, ACC_F64=False, T_ZERO=False)
    torch.testing.assert_close(norm.view(2, 5, 7), x.norm(dim=1))
    for b, size in ((nbuf, 70), (pbuf, 2)):
        assert (b[:pad] == 777).all() and (b[pad + size:] == 777).all()
    buf, gx = canary(n)
    _gp_bwd_kernel[(1,)](x, torch.ones(2, device=dev), norm, gx, t * 0, n, n // 2, 3, 35, BLOCK=1024, MODE=1,
                         ACC_F64=False, T_ZERO=True)
    torch.testing.assert_close(gx.view(shape), x)
    assert (buf[:pad] == 777).all() and (buf[pad + n:] == 777).all()


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_torch_compile_fullgraph(impl):
    skip_unless_available("gp_norm_penalty", impl)
    torch._dynamo.reset()

    def f(real, fake, alpha, g):
        x = interpolate(real, fake, alpha, impl=impl)
        return x, norm_penalty(g, norm_over="channel", scale=0.1, impl=impl)

    real, fake, g = (_grad_input((2, 3, 6, 5), torch.float32, s) for s in range(3))
    alpha = torch.rand(2)
    fc = torch.compile(f, fullgraph=True, backend="aot_eager")
    ge, gc = g.clone().requires_grad_(), g.clone().requires_grad_()
    (xe, pe), (xc, pc) = f(real, fake, alpha, ge), fc(real, fake, alpha, gc)
    torch.testing.assert_close(xc, xe)
    torch.testing.assert_close(pc, pe)
    torch.testing.assert_close(torch.autograd.grad(pc, gc)[0], torch.autograd.grad(pe, ge)[0])


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_autocast_computes_in_float32(impl):
    skip_unless_available("gp_norm_penalty", impl)
    g = _grad_input((2, 4, 6, 6), torch.bfloat16)
    ref = norm_penalty_ref(g.double(), 1.0, 1.0, "channel", "mean")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm_penalty(g, norm_over="channel", impl=impl)
    torch.testing.assert_close(y.double(), ref, **_low_tol(torch.bfloat16, 4))
    if impl == "cpu":
        assert y.dtype == torch.float32  # the op's autocast policy: compute and return float32


def test_errors_are_clear():
    g = _grad_input((2, 3, 4, 4), torch.float32)
    with pytest.raises(ValueError, match="norm_over"):
        norm_penalty(g, norm_over="pixel")
    with pytest.raises(ValueError, match="reduce"):
        norm_penalty(g, reduce="avg")
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\)"):
        norm_penalty(g[0, 0, 0])
    with pytest.raises(TypeError, match="floating-point"):
        norm_penalty(g.long())
    with pytest.raises(ValueError, match="same shape"):
        interpolate(g, g[:, :2], torch.rand(2))
    with pytest.raises(ValueError, match="one value per sample"):
        interpolate(g, g, torch.rand(3))
    if ganops._ext.loaded:  # the C++ checks name the argument
        with pytest.raises(RuntimeError, match="alpha must be"):
            torch.ops.ganops.gp_interpolate(g, g, torch.rand(3))
        with pytest.raises(RuntimeError, match="norm_over"):
            torch.ops.ganops.gp_norm_penalty(g, 1.0, 1.0, 5, 1)
        with pytest.raises(RuntimeError, match="grad_out must have"):
            torch.ops.ganops.gp_norm_penalty_backward(torch.ones(3), g, torch.ones(2), 1.0, 1.0, 0, 0)


@requires_cuda
@pytest.mark.parametrize("backend", backends("cuda", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_backends_match_reference(backend, dtype, layout):
    for shape in SHAPES:
        g = _grad_input(shape, dtype, layout=layout, device="cuda")
        for norm_over, reduce, target in MODES:
            kw = dict(target=target, scale=0.3, norm_over=norm_over, reduce=reduce)
            x = g.detach().clone().requires_grad_()
            y = norm_penalty(x, impl=backend, **kw)
            go = torch.rand(y.shape, dtype=dtype, device="cuda") + 0.5
            (gx,) = torch.autograd.grad(y, x, go)
            ry, rgx = _ref_grads(g, go, **kw)
            torch.testing.assert_close(y.double(), ry, **_low_tol(dtype, g[0].numel()))
            torch.testing.assert_close(gx.double(), rgx, **_low_tol(dtype, shape[1]))
        real, fake = g, _grad_input(shape, dtype, 2, layout, "cuda")
        alpha = torch.rand(shape[0], device="cuda").to(dtype)
        torch.testing.assert_close(interpolate(real, fake, alpha, impl=backend).double(),
                                   interpolate_ref(real.double(), fake.double(), alpha.double()), **TOL[dtype])


@requires_cuda
def test_cuda_gradgradcheck():
    g = _grad_input((2, 3, 4, 5)).cuda().requires_grad_()
    for norm_over, reduce, target in MODES:
        f = lambda t: norm_penalty(t, target=target, norm_over=norm_over, reduce=reduce, impl="cuda")  # noqa: E731
        assert gradgradcheck(f, (g,))
