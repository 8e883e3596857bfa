# SPDX-License-Identifier: BSD-3-Clause
"""DiffAugment: parity with the reference semantics under the same RNG state; every backend against the reference;
gradients to second order (and third on the CPU kernel); opcheck; compile; replay; module options; errors."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import ganops
from _diffaug_reference import reference_diff_augment
from conftest import (LAYOUTS, backend_available, backends, make_layout, requires_cuda, requires_ext, requires_triton,
                      skip_unless_available, triton_device)

# Every subset and several orders (repeats too); empty returns x.
POLICIES = ["", "color", "translation", "cutout", "color,translation", "translation,color", "color,cutout",
            "cutout,color", "translation,cutout", "cutout,translation", "color,translation,cutout",
            "cutout,translation,color", "translation,color,cutout,color"]
# H != W, sizes not divisible by 8 (rounding of the ratios), a 1-channel image, odd cut sizes.
SHAPES = [(2, 3, 16, 16), (3, 3, 13, 22), (2, 1, 7, 9), (2, 4, 5, 11)]
# The reference computes step by step in x's dtype, the kernels in float32 (float64 for float64): compare
# against a float64 evaluation of the same parameters with a few ulps of each format at magnitudes up to ~8.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-2, rtol=4e-3),
    torch.bfloat16: dict(atol=8e-2, rtol=2e-2),
}
DTYPES = list(TOL)
ID = dict(ids=lambda s: "x".join(map(str, s)) if isinstance(s, tuple) else str(s))


def _ref64(x, policy, params, **kw):
    return ganops.diff_augment(x.detach().double(), policy, params=params, impl="ref", **kw)


def _grad(x, policy, params, gy, impl, **kw):
    x = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(ganops.diff_augment(x, policy, params=params, impl=impl, **kw), x, gy)
    return g


@pytest.mark.parametrize("impl", ["ref", "cpu"])
@pytest.mark.parametrize("shape", SHAPES, **ID)
@pytest.mark.parametrize("policy", POLICIES)
def test_parity_with_reference_under_same_rng(impl, shape, policy):
    skip_unless_available("diff_augment", impl)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    want = reference_diff_augment(x, policy)
    after_ref = torch.rand(4)
    torch.manual_seed(123)
    got = ganops.diff_augment(x, policy, impl=impl)
    assert torch.equal(torch.rand(4), after_ref), "the sampler consumed a different number of draws"
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    if policy == "":
        assert got is x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_parity_draws_in_input_dtype_and_ratios(dtype):
    x = torch.randn(3, 3, 12, 20).to(dtype)
    for kw in (dict(), dict(translation_ratio=0.3, cutout_ratio=0.3), dict(translation_ratio=0.2, cutout_ratio=0.7)):
        torch.manual_seed(7)
        want = reference_diff_augment(x, "color,translation,cutout", **kw)
        for impl in ["ref"] + (["cpu"] if backend_available("diff_augment", "cpu") else []):
            torch.manual_seed(7)
            got = ganops.diff_augment(x, "color,translation,cutout", impl=impl, **kw)
            assert got.dtype == dtype
            torch.testing.assert_close(got.double(), want.double(), **TOL[dtype])


def test_parity_channels_last_input_nhwc():
    x = torch.randn(2, 10, 14, 3)  # N, H, W, C
    torch.manual_seed(3)
    want = reference_diff_augment(x, "color,translation,cutout", channels_first=False)
    for impl in ["ref"] + (["cpu"] if backend_available("diff_augment", "cpu") else []):
        torch.manual_seed(3)
        got = ganops.diff_augment(x, "color,translation,cutout", channels_first=False, impl=impl)
        assert got.shape == x.shape
        torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES + [(2, 3, 33, 40)], **ID)
def test_cpu_kernel_matches_reference(dtype, layout, shape):
    skip_unless_available("diff_augment", "cpu")
    g = torch.Generator().manual_seed(0)
    x = make_layout(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype), layout)
    gy = torch.randn(shape, generator=g, dtype=torch.float64)
    for policy in ["color,translation,cutout", "cutout,translation", "translation,color,cutout,color"]:
        params = ganops.diff_augment_params(policy, shape, dtype=dtype, generator=g)
        y = ganops.diff_augment(x, policy, params=params, impl="cpu")
        assert y.dtype == dtype
        assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else
                               torch.contiguous_format)
        torch.testing.assert_close(y.double(), _ref64(x, policy, params), **TOL[dtype])
        gx = _grad(x, policy, params, gy.to(dtype), "cpu")
        torch.testing.assert_close(gx.double(), _grad(x.double(), policy, params, gy, "ref"), **TOL[dtype])


@pytest.mark.parametrize("impl", ["ref", "cpu"])
@pytest.mark.parametrize("policy", ["color,translation,cutout", "cutout,translation,color"])
def test_gradcheck_and_gradgradcheck(impl, policy):
    skip_unless_available("diff_augment", impl)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    params = ganops.diff_augment_params(policy, x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))
    f = lambda t: ganops.diff_augment(t, policy, params=params, impl=impl)  # noqa: E731
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))


@requires_ext
def test_r1_through_augmentation_matches_reference():
    """R1-style penalty through the augmented input, then a third derivative: cpu kernel == reference."""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 8, 8, dtype=torch.float64, requires_grad=True)
    params = ganops.diff_augment_params("color,translation,cutout", x.shape, dtype=x.dtype)

    def third(impl):
        d = (ganops.diff_augment(x, params=params, impl=impl).tanh() * w).sum()
        (gx,) = torch.autograd.grad(d, x, create_graph=True)
        r1 = gx.pow(2).sum()
        (gw,) = torch.autograd.grad(r1, w, create_graph=True)
        return torch.autograd.grad(gw.pow(2).sum(), (x, w))

    for a, b in zip(third("cpu"), third("ref")):
        torch.testing.assert_close(a, b)


@requires_ext
def test_opcheck_compiled_op():
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    color = torch.tensor([[0.1, 1.5, 0.7], [-0.3, 0.2, 1.2]])
    spatial = torch.tensor([[1, -2, 3, 0], [-1, 0, 6, 5]])
    for mode in (0, 1, 2):
        for cl in (False, True):
            xi = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_() if cl else x
            torch.library.opcheck(torch.ops.ganops.diffaug_apply.default, (xi, color, spatial, 3, 4, cl, mode))


@requires_triton
def test_triton_matches_reference_and_opcheck():
    from ganops.ops.diffaug import triton_kernels

    triton_kernels()  # the Triton op with its autograd and fake

    dev = triton_device()
    g = torch.Generator().manual_seed(5)
    for shape, layout, policy in [((2, 3, 8, 8), "contiguous", "color,translation,cutout"),
                                  ((2, 3, 7, 9), "channels_last", "cutout,translation,color")]:
        x = make_layout(torch.randn(shape, generator=g).to(dev), layout)
        params = {k: v.to(dev) for k, v in ganops.diff_augment_params(policy, shape, generator=g).items()}
        gy = torch.randn(shape, generator=g).to(dev)
        y = ganops.diff_augment(x, policy, params=params, impl="triton")
        torch.testing.assert_close(y.double(), _ref64(x, policy, params), **TOL[torch.float32])
        torch.testing.assert_close(_grad(x, policy, params, gy, "triton").double(),
                                   _grad(x.double(), policy, params, gy.double(), "ref"), **TOL[torch.float32])
    x = torch.randn(2, 3, 4, 5, device=dev, requires_grad=True)
    color = torch.tensor([[0.1, 1.5, 0.7], [-0.3, 0.2, 1.2]], device=dev)
    spatial = torch.tensor([[1, -2, 3, 0], [-1, 0, 2, 5]], device=dev)
    torch.library.opcheck(torch.ops.ganops.diffaug_apply_triton.default, (x, color, spatial, 2, 3, False, 0))


@pytest.mark.slow
@requires_triton
def test_triton_gradgradcheck_and_canary():
    """The interpreter does not catch out-of-bounds stores: write into the middle of a canary buffer."""
    from ganops.ops.diffaug import triton_kernels
    from ganops.triton.diffaug_kernels import _diffaug_main_kernel

    triton_kernels()  # the Triton op with its autograd and fake

    dev = triton_device()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, device=dev, requires_grad=True)
    params = ganops.diff_augment_params("translation,cutout", x.shape, device=dev, dtype=x.dtype)
    assert gradgradcheck(lambda t: ganops.diff_augment(t, "translation,cutout", params=params, impl="triton"), (x,))
    xs = torch.randn(2, 3, 5, 7, device=dev)
    pad = 4096
    buf = torch.full((xs.numel() + 2 * pad,), 777.0, device=dev)
    out = buf[pad:pad + xs.numel()].view_as(xs)
    color = torch.tensor([[0.1, 1.5, 1.0], [-0.3, 0.2, 1.0]], device=dev)  # contrast 1: the sum is not read
    spatial = torch.tensor([[1, -2, 3, 0], [-1, 0, 2, 5]], device=dev)
    part = torch.zeros(2, device=dev)
    # one program walks both samples (N=2, one pixel block each, PB=1): the grid-stride loop
    _diffaug_main_kernel[(1,)](xs, out, color, spatial, part, 2, 1, 1, 3, 5, 7, 2, 1, 3, 1, MODE=0,
                               CUT_AT_SRC=False, CL=False, BLOCK_C=4, BLOCK_P=64, BLOCK_PB=1, ACC_F64=False)
    want = ganops.diff_augment_ref(xs, "color,translation,cutout", {
        "brightness": color[:, 0], "saturation": color[:, 1], "contrast": color[:, 2],
        "translation": spatial[:, :2], "cutout": spatial[:, 2:]}, cutout_ratio=0.4)  # cut 2 x 3 on 5 x 7
    torch.testing.assert_close(out, want)
    assert (buf[:pad] == 777.0).all() and (buf[pad + xs.numel():] == 777.0).all()


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_torch_compile_fullgraph(impl):
    skip_unless_available("diff_augment", impl)
    torch._dynamo.reset()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    params = ganops.diff_augment_params("color,translation,cutout", x.shape)
    f = lambda t: ganops.diff_augment(t, params=params, impl=impl)  # noqa: E731
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, f(x))
    out.sum().backward()
    assert x.grad is not None


@requires_triton
def test_triton_torch_compile_fullgraph():
    """The Triton custom op traces with fullgraph=True (fake kernel) and its autograd runs (interpreter on CPU)."""
    from ganops.ops.diffaug import triton_kernels

    triton_kernels()  # the Triton op with its autograd and fake

    torch._dynamo.reset()
    dev = triton_device()
    x = torch.randn(2, 3, 8, 8, device=dev, requires_grad=True)
    params = ganops.diff_augment_params("color,translation,cutout", x.shape, device=dev)
    f = lambda t: ganops.diff_augment(t, params=params, impl="triton")  # noqa: E731
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, ganops.diff_augment(x, params=params, impl="ref"), **TOL[torch.float32])
    gy = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, gy)
    torch.testing.assert_close(gx, _grad(x, "color,translation,cutout", params, gy, "ref"), **TOL[torch.float32])


def test_functional_generator_reproducible():
    x = torch.randn(3, 3, 10, 12)
    for impl in ["ref"] + (["cpu"] if backend_available("diff_augment", "cpu") else []):
        a = ganops.diff_augment(x, generator=torch.Generator().manual_seed(3), impl=impl)
        state = torch.get_rng_state()
        b = ganops.diff_augment(x, generator=torch.Generator().manual_seed(3), impl=impl)
        assert torch.equal(state, torch.get_rng_state()), "generator= must not consume the global RNG"
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, ganops.diff_augment(x, generator=torch.Generator().manual_seed(4), impl=impl))


def test_same_on_batch_with_p_decides_for_the_whole_batch():
    """kornia's rule: with same_on_batch, one draw decides whether the batch is augmented, not one per sample."""
    x = torch.randn(1, 3, 8, 8).expand(6, 3, 8, 8).contiguous()
    m = ganops.nn.DiffAugment("color,translation,cutout", p=0.5, same_on_batch=True)
    seen = set()
    for seed in range(20):
        y = m(x, generator=torch.Generator().manual_seed(seed))
        assert all(torch.equal(y[0], y[i]) for i in range(6)), seed
        seen.add(torch.allclose(y, x, atol=1e-5))
    assert seen == {True, False}  # some batches left alone, others augmented
    prm = ganops.diff_augment_params("translation", (6, 3, 8, 8), p=0.5, same_on_batch=True,
                                     generator=torch.Generator().manual_seed(0))
    assert (prm["translation"] == prm["translation"][:1]).all()


def test_replay_generator_and_module_options():
    x, x2 = torch.randn(4, 3, 12, 12), torch.randn(4, 3, 12, 12)
    m = ganops.nn.DiffAugment("color,translation,cutout")
    y = m(x, generator=torch.Generator().manual_seed(9))
    # replay on another tensor with the kept parameters == the reference applied with the same parameters
    torch.testing.assert_close(m(x2, params=m.last_params), ganops.diff_augment_ref(x2, m.policy, m.last_params))
    torch.testing.assert_close(m(x, generator=torch.Generator().manual_seed(9)), y)
    assert not torch.allclose(m(x, generator=torch.Generator().manual_seed(10)), y)
    prm = m.forward_parameters(x.shape, x.device, torch.Generator().manual_seed(9))
    assert set(prm) == {"brightness", "saturation", "contrast", "translation", "cutout"}
    assert prm["brightness"].dtype == torch.float32 and prm["translation"].dtype == torch.int64
    # same_on_batch: every sample gets the same parameters
    s = ganops.nn.DiffAugment("color,translation,cutout", same_on_batch=True)
    ys = s(x[:1].expand(4, 3, 12, 12).contiguous())
    assert all(torch.equal(ys[0], ys[i]) for i in range(4))
    # p: p=0 is the identity; p=0.5 leaves some samples unchanged (to rounding) and changes others
    torch.testing.assert_close(ganops.nn.DiffAugment(p=0.0)(x), x)
    half = ganops.nn.DiffAugment(p=0.5)
    z = torch.randn(64, 3, 8, 8)
    yh = half(z, generator=torch.Generator().manual_seed(0))
    same = sum(torch.allclose(yh[i], z[i], atol=1e-5) for i in range(64))
    assert 10 < same < 54
    # NHWC module
    nhwc = ganops.nn.DiffAugment("translation", channels_first=False)
    assert nhwc(torch.randn(2, 8, 8, 3)).shape == (2, 8, 8, 3)


def test_errors_are_clear():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"unknown policy name.*\['color', 'cutout', 'translation'\]"):
        ganops.diff_augment(x, "color,flip")
    with pytest.raises(ValueError, match="4-D"):
        ganops.diff_augment(x[0])
    with pytest.raises(TypeError, match="floating-point"):
        ganops.diff_augment(x.long())
    with pytest.raises(KeyError, match="translation"):
        ganops.diff_augment(x, "translation", params={"cutout": torch.zeros(2, 2, dtype=torch.long)})
    with pytest.raises(ValueError, match="p must lie"):
        ganops.nn.DiffAugment(p=1.5)
    with pytest.raises(RuntimeError, match="unavailable"):
        ganops.diff_augment(x, impl="cuda")
    if ganops._ext.loaded:
        with pytest.raises(RuntimeError, match="spatial must be"):
            torch.ops.ganops.diffaug_apply(x, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 0, 0, False, 0)
        with pytest.raises(RuntimeError, match="mode must be"):
            torch.ops.ganops.diffaug_apply(x, torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), 0, 0, False, 5)


@requires_cuda
@pytest.mark.parametrize("backend", backends("cuda", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_backends_match_reference(backend, dtype, layout):
    g = torch.Generator(device="cuda").manual_seed(0)
    for shape in SHAPES + [(3, 3, 130, 67), (2, 3, 256, 256)]:
        x = make_layout(torch.randn(shape, device="cuda", generator=g).to(dtype), layout)
        gy = torch.randn(shape, device="cuda", dtype=torch.float64, generator=g)
        for policy in ["color,translation,cutout", "cutout,translation", "translation,color,cutout,color"]:
            params = ganops.diff_augment_params(policy, shape, device="cuda", dtype=dtype, generator=g)
            y = ganops.diff_augment(x, policy, params=params, impl=backend)
            torch.testing.assert_close(y.double(), _ref64(x, policy, params), **TOL[dtype])
            gx = _grad(x, policy, params, gy.to(dtype), backend)
            torch.testing.assert_close(gx.double(), _grad(x.double(), policy, params, gy, "ref"), **TOL[dtype])


@requires_cuda
@pytest.mark.triton  # the gradgradcheck runs the Triton kernels too
def test_cuda_parity_and_gradgradcheck():
    x = torch.randn(3, 3, 13, 22, device="cuda")
    torch.manual_seed(11)
    want = reference_diff_augment(x, "color,translation,cutout")
    torch.manual_seed(11)
    torch.testing.assert_close(ganops.diff_augment(x, impl="cuda"), want, **TOL[torch.float32])
    xd = torch.randn(2, 3, 5, 6, device="cuda", dtype=torch.float64, requires_grad=True)
    params = ganops.diff_augment_params("color,translation,cutout", xd.shape, device="cuda", dtype=xd.dtype)
    for impl in ("cuda", "triton"):
        assert gradgradcheck(lambda t: ganops.diff_augment(t, params=params, impl=impl), (xd,))
