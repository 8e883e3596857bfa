# SPDX-License-Identifier: BSD-3-Clause
"""Winograd F(4x4, 3x3) CPU kernels against ATen's convolution: forward (padding 0 and 2), input gradient, weight
gradient on random shapes, dtypes and layouts; the BLAS and ATen GEMM paths; opcheck; errors; the ConSinGAN
networks' conv_impl="winograd" against "aten" to second order."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import LAYOUTS, make_layout, requires_ext
from torch.autograd import gradcheck

from ganops.ops import winograd as W

pytestmark = requires_ext

# (N, C, K, H, W): tile edges (H - 2 not a multiple of 4), 1 channel, more tiles than one block of 64, odd C/K
# (the vector lanes' scalar tails)
SHAPES = [(1, 1, 1, 3, 3), (2, 3, 64, 9, 11), (1, 64, 1, 6, 7), (2, 17, 5, 37, 50), (1, 16, 32, 70, 41),
          (3, 8, 8, 5, 19)]
TOL = {torch.float32: {"rtol": 0, "atol": 3e-5}, torch.float64: {"rtol": 0, "atol": 1e-12}}


def _rel_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    scale = want.abs().max().clamp_min(1e-30)
    torch.testing.assert_close(got / scale, want / scale, **TOL[dtype])


def _cb(gy, x, w, mask):
    return torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_primitives_match_aten(shape, dtype, layout):
    n, c, k, h, w_ = shape
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    x = make_layout(torch.randn(n, c, h, w_, dtype=dtype, generator=g), layout)
    w = torch.randn(k, c, 3, 3, dtype=dtype, generator=g)
    b = torch.randn(k, dtype=dtype, generator=g)
    gy = make_layout(torch.randn(n, k, h - 2, w_ - 2, dtype=dtype, generator=g), layout)
    y = W.conv3x3(x, w, b)
    assert y.is_contiguous(memory_format=torch.channels_last)
    _rel_close(y, F.conv2d(x, w, b), dtype)
    _rel_close(W.conv3x3(x, w, None, pad=2), F.conv2d(x, w, None, padding=2), dtype)
    _rel_close(W.conv3x3_input_grad(gy, w), _cb(gy, x, w, [True, False, False])[0], dtype)
    _rel_close(W.conv3x3_weight_grad(x, gy), _cb(gy, x, w, [False, True, False])[1], dtype)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_block_split_over_threads(threads):
    """Small maps are split into equal blocks so every thread gets work (70 tiles on 2 threads: 35 + 35, not 64 + 6);
    every split must give the same convolution. Shapes: 70 tiles, 12 tiles, 5 tiles with batch 3, 1 tile."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, c, k, h, w_ in [(1, 8, 8, 30, 40), (1, 4, 4, 7, 26), (3, 5, 6, 5, 19), (1, 3, 3, 4, 4)]:
            g = torch.Generator().manual_seed(n * h + w_)
            x = torch.randn(n, c, h, w_, dtype=torch.float64, generator=g).to(memory_format=torch.channels_last)
            w = torch.randn(k, c, 3, 3, dtype=torch.float64, generator=g)
            gy = torch.randn(n, k, h - 2, w_ - 2, dtype=torch.float64, generator=g)
            _rel_close(W.conv3x3(x, w), F.conv2d(x, w), torch.float64)
            _rel_close(W.conv3x3_weight_grad(x, gy), _cb(gy, x, w, [False, True, False])[1], torch.float64)
    finally:
        torch.set_num_threads(old)


def test_aten_gemm_path(monkeypatch):
    """The fallback GEMM (used where libtorch has no Fortran BLAS) gives the same results as the BLAS one."""
    x = torch.randn(2, 17, 37, 50, dtype=torch.float64)
    w = torch.randn(5, 17, 3, 3, dtype=torch.float64)
    gy = torch.randn(2, 5, 35, 48, dtype=torch.float64)
    blas = W.conv3x3(x, w), W.conv3x3_weight_grad(x, gy), W.conv3x3_input_grad(gy, w)
    monkeypatch.setenv("GANOPS_WINO_ATEN_GEMM", "1")
    aten = W.conv3x3(x, w), W.conv3x3_weight_grad(x, gy), W.conv3x3_input_grad(gy, w)
    for a, b in zip(aten, blas):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    torch.testing.assert_close(aten[0], F.conv2d(x, w), rtol=0, atol=1e-11)


def test_weight_transform_round_trip_is_the_adjoint():
    """<U(w), dU> = <w, U^T(dU)>: weight_untransform is the adjoint of weight_transform (what the chain rule
    needs), and both are differentiable."""
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    du = torch.randn(36, 3, 4, dtype=torch.float64, requires_grad=True)
    lhs = (W.weight_transform(w) * du).sum()
    rhs = (w * W.weight_untransform(du)).sum()
    torch.testing.assert_close(lhs, rhs)
    assert gradcheck(lambda a, b: (W.weight_transform(a) * b).sum(), (w, du))


def test_opcheck():
    x = torch.randn(2, 5, 9, 10).contiguous(memory_format=torch.channels_last)
    u = W.weight_transform(torch.randn(3, 5, 3, 3))
    b = torch.randn(3)
    torch.library.opcheck(torch.ops.ganops.wino3x3_forward.default, (x, u, b, 0))
    torch.library.opcheck(torch.ops.ganops.wino3x3_forward.default, (x, u, None, 2))
    gy = torch.randn(2, 3, 7, 8).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.ganops.wino3x3_wgrad.default, (x, gy))


def test_errors():
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    u = W.weight_transform(torch.randn(2, 4, 3, 3))
    with pytest.raises(RuntimeError, match="channels_last"):
        torch.ops.ganops.wino3x3_forward(x.contiguous(), u, None, 0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.ganops.wino3x3_forward(x.half(), u.half(), None, 0)
    with pytest.raises(RuntimeError, match=r"\(36, C, K\)"):
        torch.ops.ganops.wino3x3_forward(x, u[:, :3], None, 0)
    with pytest.raises(RuntimeError, match="too small"):
        torch.ops.ganops.wino3x3_forward(x[:, :, :2], u, None, 0)
    with pytest.raises(RuntimeError, match="grad_out must be"):
        torch.ops.ganops.wino3x3_wgrad(x, torch.randn(1, 2, 5, 6).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_impl_ref_is_aten_and_cpu_matches(dtype):
    """The registered op "conv3x3": impl="ref" gives ATen's primitives exactly, impl="cpu" the kernels; both
    autograd Functions give the same first- and second-order gradients on either backend."""
    import ganops
    assert "conv3x3" in ganops.registry() and ganops.backend_status("conv3x3", "cpu", torch.device("cpu"))[0]
    assert not ganops.backend_status("conv3x3", "cuda")[0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 11, 9, dtype=dtype, generator=g)
    w = torch.randn(4, 5, 3, 3, dtype=dtype, generator=g)
    b = torch.randn(4, dtype=dtype, generator=g)
    gy = torch.randn(2, 4, 9, 7, dtype=dtype, generator=g)
    torch.testing.assert_close(W.conv3x3(x, w, b, 1, impl="ref"), F.conv2d(x, w, b, padding=1), rtol=0, atol=0)
    torch.testing.assert_close(W.conv3x3_input_grad(gy, w, impl="ref"), _cb(gy, x, w, [True, False, False])[0],
                               rtol=0, atol=0)
    torch.testing.assert_close(W.conv3x3_weight_grad(x, gy, impl="ref"), _cb(gy, x, w, [False, True, False])[1],
                               rtol=0, atol=0)
    _rel_close(W.conv3x3(x, w, b, impl="cpu"), W.conv3x3(x, w, b, impl="ref"), dtype)
    grads = {}
    for impl in ("ref", "cpu"):
        xi, wi, bi = (t.clone().requires_grad_() for t in (x, w, b))
        first = torch.autograd.grad((W.Conv3x3.apply(xi, wi, bi, impl) * gy).sum(), (xi, wi, bi))
        (gx,) = torch.autograd.grad((W.Conv3x3GP.apply(xi, wi, bi, impl) * gy).sum(), xi, create_graph=True)
        grads[impl] = first + torch.autograd.grad(gx.square().sum(), wi)
    for a, r in zip(grads["cpu"], grads["ref"]):
        _rel_close(a, r, dtype)
    with pytest.raises(RuntimeError, match="unavailable"):
        W.conv3x3(x, w, impl="cuda")


@pytest.mark.parametrize("impl", ["auto", "cpu", "ref"])
def test_each_primitive_resolves_its_backend_once(impl, monkeypatch):
    calls = []

    def counted(op, impl, x):
        calls.append(impl)
        return resolve(op, impl, x)

    resolve = W.resolve_impl_cached
    monkeypatch.setattr(W, "resolve_impl_cached", counted)
    g, w = torch.randn(2, 4, 5, 6), torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(W.conv3x3_input_grad(g, w, impl=impl), F.conv_transpose2d(g, w), rtol=0, atol=1e-4)
    x = torch.randn(2, 3, 7, 8)
    torch.testing.assert_close(W.conv3x3(x, w, impl=impl), F.conv2d(x, w), rtol=0, atol=1e-4)
    W.conv3x3_weight_grad(x, g, impl=impl)
    assert calls == [impl] * 3


def test_usable():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(2, 4, 3, 3)
    assert W.usable(x, w)
    assert not W.usable(x.half(), w.half())
    assert not W.usable(x, torch.randn(2, 4, 5, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not W.usable(x, w)


# ---- the ConSinGAN networks ---------------------------------------------------------------------------------
def _pair(cls, **kw):
    from ganops.models import consingan as M
    torch.manual_seed(0)
    a = getattr(M, cls)(**kw, conv_impl="aten").double()
    b = getattr(M, cls)(**kw, conv_impl="winograd").double()
    b.load_state_dict(a.state_dict())
    return a, b


def test_discriminator_winograd_penalty_and_first_order_grads_match_aten():
    """D(real, fake) first-order gradients plus the WGAN-GP double backward through forward_gp: the weight
    gradients of conv_impl="winograd" equal those of "aten" in float64."""
    from ganops.train.consingan import gp_plain
    da, dw = _pair("Discriminator", nfc=8)
    x = torch.randn(2, 3, 21, 26, dtype=torch.float64)
    for d in (da, dw):
        loss = d(x).square().mean() + gp_plain(d.forward_gp, x[:1], x[1:], 0.1, torch.tensor([0.3], dtype=x.dtype))
        loss.backward()
    for pa, pw in zip(da.parameters(), dw.parameters()):
        torch.testing.assert_close(pw.grad, pa.grad, rtol=1e-10, atol=1e-12)


def test_discriminator_winograd_gradcheck():
    """gradcheck of the Winograd D w.r.t. its input, and of the penalty's input gradient (twice differentiable
    through forward_gp) w.r.t. the input."""
    _, d = _pair("Discriminator", nfc=4, num_layer=1)
    x = torch.randn(1, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    assert gradcheck(d, (x,))

    def gx(inp):
        out = d.forward_gp(inp)
        return torch.autograd.grad(out.sum(), inp, create_graph=True)[0]

    assert gradcheck(gx, (x,))


def test_generator_winograd_matches_aten():
    from ganops.models.consingan import sample_noise
    ga, gw = _pair("GrowingGenerator", nfc=8)
    for g in (ga, gw):
        g.init_next_stage()
    shapes = [(12, 15), (17, 21)]
    noise = [z.double() for z in sample_noise(shapes, nfc=8, generator=torch.Generator().manual_seed(1))]
    outs = []
    for g in (ga, gw):
        y = g(noise, shapes, [1.0, 0.1])
        y.square().mean().backward()
        outs.append(y)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-12)
    for pa, pw in zip(ga.parameters(), gw.parameters()):
        torch.testing.assert_close(pw.grad, pa.grad, rtol=1e-10, atol=1e-12)


def test_conv_impl_is_checked():
    from ganops.models.consingan import Discriminator, GrowingGenerator
    with pytest.raises(ValueError, match="conv_impl"):
        Discriminator(conv_impl="fft")
    with pytest.raises(ValueError, match="conv_impl"):
        GrowingGenerator(conv_impl="fft")
