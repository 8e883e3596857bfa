# SPDX-License-Identifier: BSD-3-Clause
"""SLE: every backend against the reference; gradients to second order; opcheck; compile; errors."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import ganops
from conftest import (DTYPES, LAYOUTS, TOL, backends, device_for, make_layout, requires_cuda, requires_ext,
                      requires_triton, skip_unless_available, triton_device)

SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 1, 4, 4), (2, 5, 1, 1), (2, 16, 33, 17), (1, 2, 130, 129)]


def sample_inputs(shape, device="cpu", dtype=torch.float32, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, c = shape[:2]
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    gate = (3 * torch.randn(n, c, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)
    return x.requires_grad_(requires_grad), gate.requires_grad_(requires_grad)


def _ref64(x, gate):
    return ganops.sle_ref(x.double(), gate.double())


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_backward_match_reference(backend, dtype, layout, shape):
    skip_unless_available("sle", backend)
    if backend == "triton" and shape[-1] > 100 and dtype != torch.float32:
        pytest.skip("large shapes are slow under the Triton interpreter; covered in float32")
    x, gate = sample_inputs(shape, device=device_for(backend), dtype=dtype)
    x = make_layout(x, layout).requires_grad_()
    gate.requires_grad_()
    y = ganops.sle(x, gate, impl=backend)
    ref = _ref64(x.detach(), gate.detach())
    torch.testing.assert_close(y.double(), ref, **TOL[dtype])
    # Output keeps the input's memory format (a strided input gives a contiguous output).
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    gy = torch.randn_like(y)
    gx, gg = torch.autograd.grad(y, (x, gate), gy)
    xr, gr = x.detach().double().requires_grad_(), gate.detach().double().requires_grad_()
    rx, rg = torch.autograd.grad(ganops.sle_ref(xr, gr), (xr, gr), gy.double())
    torch.testing.assert_close(gx.double(), rx, **TOL[dtype])
    # The gate gradient sums H*W products: scale the tolerance with the reduction length for low precision.
    hw = shape[2] * shape[3]
    tol = TOL[dtype] if dtype in (torch.float64, torch.float32) else {k: v * max(1, hw ** 0.5) for k, v in TOL[dtype].items()}
    torch.testing.assert_close(gg.double(), rg, **tol)


@pytest.mark.slow
@pytest.mark.parametrize("backend", backends("ref", "cpu", "triton"))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_and_gradgradcheck(backend, layout):
    skip_unless_available("sle", backend)
    x, gate = sample_inputs((2, 3, 4, 5), device=device_for(backend), dtype=torch.float64)
    x = make_layout(x, layout).requires_grad_()
    gate.requires_grad_()
    f = lambda a, b: ganops.sle(a, b, impl=backend)  # noqa: E731
    assert gradcheck(f, (x, gate))
    assert gradgradcheck(f, (x, gate))


@requires_ext
def test_third_order_matches_reference():
    x, gate = sample_inputs((2, 3, 3, 3), dtype=torch.float64, requires_grad=True)

    def third(fn):
        y = fn(x, gate)
        (g1,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), gate, create_graph=True)
        return torch.autograd.grad(g2.sum(), (x, gate))

    for a, b in zip(third(lambda a, b: ganops.sle(a, b, impl="cpu")), third(ganops.sle_ref)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
def test_permuted_dense_layout(backend):
    """A dense input in a permutation other than NCHW/NHWC gets a contiguous output (the kernels write one of those
    two layouts; empty_like would have kept the permutation and the kernel written it as NCHW: wrong values)."""
    skip_unless_available("sle", backend)
    dev = device_for(backend)
    x = torch.randn(2, 5, 3, 4, device=dev).permute(0, 2, 1, 3).requires_grad_()  # (2, 3, 5, 4), dense, neither
    gate = torch.randn(2, 3, device=dev, requires_grad=True)
    y = ganops.sle(x, gate, impl=backend)
    torch.testing.assert_close(y, ganops.sle_ref(x, gate))
    assert y.is_contiguous()
    gy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, gate), gy), torch.autograd.grad(ganops.sle_ref(x, gate), (x, gate), gy)):
        torch.testing.assert_close(a, b)
    if backend == "cpu":
        torch.library.opcheck(torch.ops.ganops.sle_forward.default, (x.detach(), gate.detach()))


@requires_ext
def test_cpu_large_outputs():
    """A large output (the huge-page allocation) matches the reference, forward and backward."""
    x, gate = sample_inputs((1, 2, 2049, 2048))  # 32 MiB: the huge-page path
    y = ganops.sle(x, gate, impl="cpu")
    torch.testing.assert_close(y, ganops.sle_ref(x, gate))
    gx, gg = torch.ops.ganops.sle_backward(y, x, gate)
    torch.testing.assert_close(gx, ganops.sle_ref(y, gate))
    rg = (y.double() * x.double()).sum((2, 3)) * torch.sigmoid(gate.double()) * (1 - torch.sigmoid(gate.double()))
    torch.testing.assert_close(gg.double(), rg, rtol=1e-5, atol=1e-5)  # 4M-element reduction, double partials


@requires_ext
def test_opcheck_compiled_ops():
    for layout in LAYOUTS:
        x, gate = sample_inputs((2, 3, 4, 5), dtype=torch.float32)
        x = make_layout(x, layout).requires_grad_()
        gate.requires_grad_()
        torch.library.opcheck(torch.ops.ganops.sle_forward.default, (x, gate))
        gy = make_layout(torch.randn(2, 3, 4, 5), layout).requires_grad_()
        torch.library.opcheck(torch.ops.ganops.sle_backward.default, (gy, x, gate))


@requires_triton
def test_opcheck_triton_ops():
    from ganops.ops.sle import triton_kernels

    triton_kernels()  # the Triton ops with their autograd and fakes

    dev = triton_device()
    x, gate = sample_inputs((2, 3, 4, 5), device=dev, dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.ganops.sle_forward_triton.default, (x, gate))
    torch.library.opcheck(torch.ops.ganops.sle_backward_triton.default, (torch.randn(2, 3, 4, 5, device=dev), x, gate))


@requires_triton
def test_triton_no_out_of_bounds_writes():
    """The interpreter does not catch OOB stores: place the output inside a canary buffer and check it."""
    from ganops.triton.sle_kernels import _sle_fwd_kernel

    dev = triton_device()
    x, gate = sample_inputs((2, 3, 5, 7), device=dev)
    pad = 4096
    buf = torch.full((x.numel() + 2 * pad,), 777.0, device=dev)
    out = buf[pad:pad + x.numel()].view_as(x)
    # one program walks both samples' tiles (the grid-stride loop): C=3, HW=35, NCHW strides, 1 x 1 tiles each
    _sle_fwd_kernel[(1,)](x, gate, out, 3, 35, 35, 1, 1, 1, 2, BLOCK_C=32, BLOCK_P=64, ACC_F64=False)
    torch.testing.assert_close(out, ganops.sle_ref(x, gate))
    assert (buf[:pad] == 777.0).all() and (buf[pad + x.numel():] == 777.0).all()


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_torch_compile_fullgraph(impl):
    skip_unless_available("sle", impl)
    torch._dynamo.reset()
    block = ganops.nn.SLE(8, 4, spectral_norm=False, impl=impl)
    low, high = torch.randn(2, 8, 8, 8), torch.randn(2, 4, 16, 16, requires_grad=True)
    eager = block(low, high)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out = compiled(low, high)
    torch.testing.assert_close(out, eager)
    out.sum().backward()
    assert high.grad is not None


def test_sle_module_matches_fastgan_block():
    torch.manual_seed(0)
    block = ganops.nn.SLE(16, 8, spectral_norm=False)
    low, high = torch.randn(2, 16, 8, 8), torch.randn(2, 8, 32, 32)
    m = block.main
    manual = high * torch.sigmoid(m[3](torch.nn.functional.silu(m[1](torch.nn.functional.adaptive_avg_pool2d(low, 4)))))
    torch.testing.assert_close(block(low, high), manual)
    # Spectral-norm switch wraps both convs.
    sn = ganops.nn.SLE(16, 8, spectral_norm=True)
    assert sum("weight_orig" in n or "original" in n for n, _ in sn.named_parameters()) == 2


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
def test_autocast_and_mixed_dtypes(backend):
    skip_unless_available("sle", backend)
    dev = device_for(backend)
    x, gate = sample_inputs((2, 4, 6, 6), device=dev, dtype=torch.bfloat16)
    y = ganops.sle(x, gate.float(), impl=backend)  # gate cast to x's dtype
    assert y.dtype == torch.bfloat16
    with torch.autocast(dev, dtype=torch.bfloat16):
        y2 = ganops.sle(x, gate, impl=backend)
    torch.testing.assert_close(y2.double(), _ref64(x, gate), **TOL[torch.bfloat16])


def test_errors_are_clear():
    x, gate = sample_inputs((2, 3, 4, 4))
    with pytest.raises(ValueError, match="4-D"):
        ganops.sle(x[0], gate)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        ganops.sle(x, gate[:, :2])
    with pytest.raises(ValueError, match="N x C x 1 x 1"):
        ganops.sle(x, gate.view(2, 3, 1, 1).expand(2, 3, 2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        ganops.sle(x.long(), gate)
    with pytest.raises(ValueError, match="impl must be one of"):
        ganops.sle(x, gate, impl="bogus")
    with pytest.raises(RuntimeError, match="unavailable"):
        ganops.sle(x, gate, impl="cuda")
    if ganops._ext.loaded:  # the C++ checks name the argument too
        with pytest.raises(RuntimeError, match="gate shape"):
            torch.ops.ganops.sle_forward(x, gate[:, :2].contiguous())
        with pytest.raises(RuntimeError, match="same dtype"):
            torch.ops.ganops.sle_forward(x, gate.double())


def test_gate_4d_input_and_env_override(monkeypatch):
    x, gate = sample_inputs((2, 3, 4, 4))
    torch.testing.assert_close(ganops.sle(x, gate.view(2, 3, 1, 1)), ganops.sle_ref(x, gate))
    monkeypatch.setenv("GANOPS_IMPL", "ref")
    torch.testing.assert_close(ganops.sle(x, gate), ganops.sle_ref(x, gate))


@requires_cuda
@pytest.mark.parametrize("backend", backends("cuda", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_backends_match_reference(backend, dtype, layout):
    for shape in SHAPES:
        x, gate = sample_inputs(shape, device="cuda", dtype=dtype)
        x = make_layout(x, layout).requires_grad_()
        gate.requires_grad_()
        y = ganops.sle(x, gate, impl=backend)
        torch.testing.assert_close(y.double(), _ref64(x.detach(), gate.detach()), **TOL[dtype])
        gy = torch.randn_like(y)
        gx, gg = torch.autograd.grad(y, (x, gate), gy)
        xr, gr = x.detach().double().requires_grad_(), gate.detach().double().requires_grad_()
        rx, rg = torch.autograd.grad(ganops.sle_ref(xr, gr), (xr, gr), gy.double())
        torch.testing.assert_close(gx.double(), rx, **TOL[dtype])
        tol = {k: v * max(1, (shape[2] * shape[3]) ** 0.5) for k, v in TOL[dtype].items()}
        torch.testing.assert_close(gg.double(), rg, **tol)


@requires_cuda
def test_cuda_gradgradcheck():
    x, gate = sample_inputs((2, 3, 4, 5), device="cuda", dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(lambda a, b: ganops.sle(a, b, impl="cuda"), (x, gate))
