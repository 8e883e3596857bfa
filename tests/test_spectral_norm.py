# SPDX-License-Identifier: BSD-3-Clause
"""Spectral norm: backends vs reference, parity with torch's legacy hook over training, state dicts, groups."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import ganops
from conftest import (TOL, backend_available, backends, device_for, requires_cuda, requires_ext, requires_triton,
                      skip_unless_available, triton_device)
from ganops.nn import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear, remove_spectral_norm, spectral_norm
from ganops.nn import spectral_norm_group
from ganops.nn.spectral_norm import from_parametrizations_state_dict, to_parametrizations_state_dict
from ganops.ops.spectral_norm import spectral_norm_ref, spectral_norm_weights

# (shape, dim): conv, conv-transpose (dim 1), linear, embedding-like, 1-D, an inner dim, odd sizes.
SHAPES = [((8, 3, 3, 3), 0), ((4, 6, 4, 4), 1), ((5, 7), 0), ((7, 5), 0), ((3,), 0), ((2, 3, 4, 5), 2),
          ((1, 1, 1, 1), 0), ((33, 17, 3, 3), 0)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def sample_inputs(device="cpu", dtype=torch.float32, shapes=SHAPES, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    ws, us, vs, dims = [], [], [], []
    for shape, d in shapes:
        w = torch.randn(shape, generator=g, dtype=torch.float64)
        h = shape[d]
        ws.append(w.to(device, dtype).requires_grad_(requires_grad))
        us.append(F.normalize(torch.randn(h, generator=g, dtype=torch.float64), dim=0).to(device, dtype))
        vs.append(F.normalize(torch.randn(w.numel() // h, generator=g, dtype=torch.float64), dim=0).to(device, dtype))
        dims.append(d)
    return ws, us, vs, dims


def _tol(dtype, scale=1.0):
    # fp16/bf16: the reference itself rounds every intermediate (mv, norm, div) to the low precision.
    t = TOL[dtype] if dtype in (torch.float64, torch.float32) else {k: 4 * v for k, v in TOL[dtype].items()}
    return {k: v * scale for k, v in t.items()}


def _check_against_reference(backend, dtype, n_iter, device="cpu"):
    ws, us, vs, dims = sample_inputs(device, dtype, requires_grad=True)
    outs, sig, un, vn = spectral_norm_weights(ws, us, vs, dims, n_power_iterations=n_iter, impl=backend)
    # The reference in float64 from the same rounded inputs.
    w64 = [w.detach().double().cpu().requires_grad_() for w in ws]
    r_outs, r_sig, r_un, r_vn = spectral_norm_ref(w64, [u.double().cpu() for u in us], [v.double().cpu() for v in vs],
                                                  dims, n_iter, 1e-12)
    for a, b in zip(outs, r_outs):
        assert a.shape == b.shape and a.dtype == dtype and a.is_contiguous() and a.device.type == device
        torch.testing.assert_close(a.double().cpu(), b, **_tol(dtype))
    torch.testing.assert_close(sig.double().cpu(), r_sig, **_tol(dtype))
    for a, b in zip(un + vn, r_un + r_vn):
        torch.testing.assert_close(a.double().cpu(), b, **_tol(dtype))
    gen = torch.Generator().manual_seed(1)
    gys = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in ws]
    gsig = torch.randn(len(ws), generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(outs + [sig], ws, [g.to(device, dtype) for g in gys] + [gsig.to(device, dtype)])
    r_grads = torch.autograd.grad(r_outs + [r_sig], w64, gys + [gsig])
    for a, b, w in zip(grads, r_grads, ws):
        torch.testing.assert_close(a.double().cpu(), b.cpu(), **_tol(dtype, max(1.0, w.numel() ** 0.5 / 4)))


@pytest.mark.parametrize("n_iter", [0, 1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", backends("cpu", "triton"))
def test_backends_match_reference(backend, dtype, n_iter):
    dev = device_for(backend)
    skip_unless_available("spectral_norm", backend)
    if backend == "triton" and (dtype in (torch.float16, torch.bfloat16) or n_iter == 3):
        pytest.skip("the Triton interpreter is slow: float32/float64 and 0/1 iterations cover it")
    _check_against_reference(backend, dtype, n_iter, device=dev)


def test_reference_is_torch_legacy_bitwise():
    torch.manual_seed(0)
    a = nn.utils.spectral_norm(nn.Conv2d(3, 5, 3))
    torch.manual_seed(0)
    b = spectral_norm(nn.Conv2d(3, 5, 3), impl="ref")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    x = torch.randn(2, 3, 6, 6)
    for _ in range(3):
        assert torch.equal(a(x), b(x))
    assert torch.equal(a.weight_u, b.weight_u) and torch.equal(a.weight_v, b.weight_v)


@pytest.mark.parametrize("backend", backends("ref", "cpu", "triton"))
def test_gradcheck_and_gradgradcheck(backend):
    dev = device_for(backend)
    skip_unless_available("spectral_norm", backend)
    # Evaluation (n = 0): u, v fixed, so sigma = u^T W v is the whole function of W that the op differentiates.
    # The interpreter runs each Triton launch in Python: one tiny weight and fast mode keep it to seconds.
    shapes = [((2, 3, 1, 2), 1)] if backend == "triton" else [((3, 2, 2, 2), 0), ((2, 3, 2), 1)]
    ws, us, vs, dims = sample_inputs(dev, dtype=torch.float64, shapes=shapes, requires_grad=True)

    def f(*w):
        outs, sig, _, _ = spectral_norm_weights(list(w), us, vs, dims, n_power_iterations=0, impl=backend)
        return (*outs, sig)

    fast = backend == "triton"
    assert gradcheck(f, tuple(ws), fast_mode=fast)
    assert gradgradcheck(f, tuple(ws), fast_mode=fast)


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_sn_conv_double_backward_wrt_input(impl):
    skip_unless_available("spectral_norm", impl)
    torch.manual_seed(0)
    conv = SNConv2d(2, 3, 3, padding=1, impl=impl).double().eval()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(conv, (x,))
    assert gradgradcheck(conv, (x,))


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_r1_penalty_through_sn_matches_torch(impl):
    """Training mode: grad w.r.t. x with create_graph, then the penalty's gradient w.r.t. the SN weights."""
    skip_unless_available("spectral_norm", impl)
    torch.manual_seed(0)
    ta = nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(3, 4, 3)), nn.LeakyReLU(0.2),
                       nn.utils.spectral_norm(nn.Conv2d(4, 1, 3)))
    ga = copy.deepcopy(ta)
    for m in ga:
        if isinstance(m, nn.Conv2d):
            remove_spectral_norm(m)
    torch.manual_seed(0)
    ga = nn.Sequential(spectral_norm(nn.Conv2d(3, 4, 3), impl=impl), nn.LeakyReLU(0.2),
                       spectral_norm(nn.Conv2d(4, 1, 3), impl=impl))
    spectral_norm_group(ga)
    x = torch.randn(2, 3, 8, 8)
    grads = []
    for m in (ta, ga):
        xi = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(m(xi).sum(), xi, create_graph=True)
        penalty = gx.pow(2).sum()
        grads.append(torch.autograd.grad(penalty, [m[0].weight_orig, m[2].weight_orig]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


class _Net(nn.Module):
    """Conv, conv-transpose (dim 1), linear, embedding; a decoder that runs on 'real' passes only."""

    def __init__(self, sn):
        super().__init__()
        self.conv = sn(nn.Conv2d(3, 6, 3, padding=1))
        self.up = sn(nn.ConvTranspose2d(6, 4, 4, 2, 1))
        self.fc = sn(nn.Linear(4 * 8 * 8, 5))
        self.emb = sn(nn.Embedding(7, 5))
        self.dec = sn(nn.Linear(5, 5))

    def forward(self, x, y, real=True):
        h = self.fc(F.leaky_relu(self.up(F.leaky_relu(self.conv(x), 0.2)), 0.2).flatten(1))
        out = (h * self.emb(y)).sum(1)
        if real:
            out = out + self.dec(h).pow(2).sum(1)
        return out


def _train_pair(impl, grouped, steps=20):
    torch.manual_seed(0)
    ta = _Net(nn.utils.spectral_norm)
    torch.manual_seed(0)
    ga = _Net(lambda m: spectral_norm(m, impl=impl))
    if grouped:
        spectral_norm_group(ga, impl=impl)
    for k, v in ta.state_dict().items():
        assert torch.equal(v, ga.state_dict()[k]), k  # same RNG draws at registration, same layout and order
    opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (ta, ga)]
    gen = torch.Generator().manual_seed(1)
    losses = []
    for step in range(steps):
        x, y = torch.randn(4, 3, 4, 4, generator=gen), torch.randint(0, 7, (4,), generator=gen)
        row = []
        for m, o in zip((ta, ga), opts):
            o.zero_grad()
            loss = F.softplus(-m(x, y, True)).mean() + F.softplus(m(x.flip(0), y, step % 3 == 0)).mean()
            loss.backward()
            o.step()
            row.append(loss.item())
        losses.append(row)
    return ta, ga, losses


@pytest.mark.parametrize("grouped", [False, True], ids=["per_layer", "grouped"])
@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_training_parity_with_torch(impl, grouped):
    skip_unless_available("spectral_norm", impl)
    ta, ga, losses = _train_pair(impl, grouped, steps=20)
    exact = impl == "ref"
    for a, b in losses:
        assert a == b if exact else abs(a - b) <= 1e-4 * max(1.0, abs(a)), losses
    sa, sb = ta.state_dict(), ga.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        if exact:
            assert torch.equal(sa[k], sb[k]), k
        else:
            torch.testing.assert_close(sa[k], sb[k], atol=2e-5, rtol=1e-4)
    # Evaluation: no iteration, same outputs, buffers untouched.
    ta.eval(), ga.eval()
    x, y = torch.randn(3, 3, 4, 4), torch.randint(0, 7, (3,))
    u = ga.conv.weight_u.clone()
    torch.testing.assert_close(ga(x, y), ta(x, y), atol=1e-5, rtol=1e-4)
    assert torch.equal(ga.conv.weight_u, u)


def test_grouped_equals_per_layer_with_shared_and_skipped_layers():
    impl = "cpu" if backend_available("spectral_norm", "cpu") else "ref"

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = spectral_norm(nn.Linear(4, 4), impl=impl)
            self.b = spectral_norm(nn.Linear(4, 4), impl=impl)
            self.skip = spectral_norm(nn.Linear(4, 4), impl=impl)

        def forward(self, x):
            return self.a(self.b(self.a(x)))  # a runs twice: torch iterates twice

    torch.manual_seed(0)
    per = Shared()
    grp = copy.deepcopy(per)
    spectral_norm_group(grp, impl=impl)
    x = torch.randn(3, 4)
    for _ in range(4):
        torch.testing.assert_close(grp(x), per(x))
        grp(x).sum().backward()
        per(x).sum().backward()
    for k, v in per.state_dict().items():
        torch.testing.assert_close(grp.state_dict()[k], v)
    for (n, p), q in zip(per.named_parameters(), grp.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=n)
    assert torch.equal(grp.skip.weight_u, per.skip.weight_u)  # never ran: never iterated


def test_state_dict_round_trips_legacy_and_parametrizations():
    torch.manual_seed(0)
    ours = _Net(spectral_norm)
    ours(torch.randn(2, 3, 4, 4), torch.randint(0, 7, (2,)))
    sd = ours.state_dict()
    # legacy torch <- ours, ours <- legacy torch (strict; metadata version 1 on both sides)
    legacy = _Net(nn.utils.spectral_norm)
    legacy.load_state_dict(sd)
    fresh = _Net(spectral_norm)
    fresh.load_state_dict(legacy.state_dict())
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # parametrizations <- ours (keys renamed), ours <- parametrizations (recognised when loading)
    param = _Net(nn.utils.parametrizations.spectral_norm)
    param.load_state_dict(to_parametrizations_state_dict(sd))
    assert torch.equal(param.conv.parametrizations.weight.original, ours.conv.weight_orig)
    assert torch.equal(param.up.parametrizations.weight[0]._u, ours.up.weight_u)
    back = _Net(spectral_norm)
    back.load_state_dict(param.state_dict())
    assert torch.equal(back.emb.weight_v, ours.emb.weight_v)
    assert set(from_parametrizations_state_dict(param.state_dict())) == set(sd)
    for m in (ours, param, back):
        m.eval()
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 7, (2,))
    torch.testing.assert_close(back(x, y), param(x, y))
    torch.testing.assert_close(back(x, y), ours(x, y))


def test_init_writes_reach_the_parameter():
    conv = SNConv2d(3, 4, 3)
    conv.weight.data.normal_(0.0, 0.02)  # FastGAN's weights_init, before any forward: alias of weight_orig
    assert torch.equal(conv.weight_orig, conv.weight)
    x = torch.randn(1, 3, 5, 5)
    conv(x)
    conv.weight = nn.Parameter(torch.ones(4, 3, 3, 3))  # assignment after a forward
    conv(x)
    assert torch.equal(conv.weight_orig.detach(), torch.ones(4, 3, 3, 3))
    assert "weight" not in dict(conv.named_parameters())
    with torch.no_grad():
        nn.init.zeros_(conv.weight)  # in place on the normalised weight (version counter bumped)
    conv(x)
    assert conv.weight_orig.abs().sum() == 0
    # A deep copy after an (eval, no-grad) forward keeps its weights: the copied W / sigma is not a user write.
    conv.weight_orig.data.normal_()
    conv(x)  # u, v away from the zero weight's degenerate ones
    with torch.no_grad():
        conv.eval()(x)
    twin = copy.deepcopy(conv)
    twin(x)
    assert torch.equal(twin.weight_orig, conv.weight_orig)


def test_ema_deepcopy_then_update_is_not_clobbered():
    """An EMA copy, updated in place, keeps its update at its first forward (was clobbered with W / sigma)."""
    g = nn.Sequential(SNConv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), SNLinear(4, 2))
    with torch.no_grad():  # e.g. a sample grid before training: module.weight is now W / sigma
        g(torch.randn(1, 3, 3, 3))
    ema = copy.deepcopy(g)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5).add_(1.0)
    want = [p.detach().clone() for p in ema.parameters()]
    ema(torch.randn(1, 3, 3, 3))
    for p, w in zip(ema.parameters(), want):
        assert torch.equal(p, w)


def test_modules_and_remove():
    torch.manual_seed(0)
    mods = [SNConv2d(3, 4, 3, bias=False), SNConvTranspose2d(4, 3, 4, 2, 1), SNLinear(5, 6), SNEmbedding(9, 4)]
    assert [m._forward_pre_hooks[next(iter(m._forward_pre_hooks))].dim for m in mods] == [0, 1, 0, 0]
    assert isinstance(mods[0], nn.Conv2d) and mods[0].weight_u.shape == (4,) and mods[1].weight_u.shape == (3,)
    lin = mods[2]
    out = lin(torch.randn(2, 5))
    remove_spectral_norm(lin)
    assert set(dict(lin.named_parameters())) == {"weight", "bias"} and not hasattr(lin, "weight_u")
    torch.testing.assert_close(F.linear(torch.zeros(1, 5), lin.weight, lin.bias), lin(torch.zeros(1, 5)))
    assert out.shape == (2, 6)
    nn.utils.remove_spectral_norm(mods[3])  # torch's remove recognises ours (subclass of its hook)
    with pytest.raises(RuntimeError, match="two spectral_norm hooks"):
        spectral_norm(mods[0])
    with pytest.raises(ValueError, match="n_power_iterations"):
        SNLinear(3, 3, n_power_iterations=0)


@requires_ext
def test_opcheck_compiled_ops():
    ws, us, vs, dims = sample_inputs(shapes=SHAPES[:4], requires_grad=True)
    torch.library.opcheck(torch.ops.ganops.spectral_norm_forward.default, (ws, us, vs, dims, 1, 1e-12))
    gs = [torch.randn(w.shape) for w in ws]
    sig = torch.rand(len(ws)) + 0.5
    torch.library.opcheck(torch.ops.ganops.spectral_norm_backward.default,
                          (gs, torch.randn(len(ws)), ws, us, vs, dims, sig))


@pytest.mark.parametrize("impl", ["ref", "cpu"])
def test_torch_compile_fullgraph(impl):
    skip_unless_available("spectral_norm", impl)
    torch._dynamo.reset()
    ws, us, vs, dims = sample_inputs(shapes=SHAPES[:3], requires_grad=True)

    def f(ws):
        outs, sig, un, vn = spectral_norm_weights(ws, us, vs, dims, impl=impl)
        return sum(o.sum() for o in outs) + sig.sum(), un

    eager = f(ws)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(ws)
    torch.testing.assert_close(out, eager)
    out[0].backward()
    assert all(w.grad is not None for w in ws)


def test_torch_compile_grouped_module_matches_eager():
    impl = "cpu" if backend_available("spectral_norm", "cpu") else "ref"
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = nn.Sequential(SNConv2d(3, 4, 3, impl=impl), nn.ReLU(), SNConv2d(4, 2, 3, impl=impl))
    ref = copy.deepcopy(m)
    spectral_norm_group(m, impl=impl)
    cm = torch.compile(m, backend="aot_eager")
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        a, b = cm(x), ref(x)
        a.sum().backward()
        b.sum().backward()
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(m[0].weight_u, ref[0].weight_u)
    torch.testing.assert_close(m[2].weight_orig.grad, ref[2].weight_orig.grad)


def _sn_launches(n, impl):
    """aten-level launches of one fwd+bwd of n SN linears minus those of the same net without SN."""
    from ganops.profiling import count

    res = []
    for sn in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(*[spectral_norm(nn.Linear(8, 8, bias=False), impl=impl) if sn else
                              nn.Linear(8, 8, bias=False) for _ in range(n)])
        if sn:
            spectral_norm_group(net, impl=impl)
        x = torch.randn(2, 8)

        def step():
            for p in net.parameters():
                p.grad = None
            net(x).sum().backward()

        step()
        res.append(count(step, track_memory=False).launches)
    return res[1] - res[0]


@requires_ext
def test_grouped_launches_constant_in_layer_count():
    assert _sn_launches(3, "cpu") == _sn_launches(11, "cpu") <= 4
    assert _sn_launches(3, "ref") < _sn_launches(11, "ref")  # the reference is per layer, like torch's hook


def test_errors_are_clear():
    ws, us, vs, dims = sample_inputs(shapes=SHAPES[:2])
    with pytest.raises(ValueError, match="same length"):
        spectral_norm_weights(ws, us[:1], vs, dims)
    with pytest.raises(ValueError, match="u of shape"):
        spectral_norm_weights(ws, [us[1], us[0]], vs, dims)
    with pytest.raises(TypeError, match="must all be"):
        spectral_norm_weights(ws, [us[0].double(), us[1]], vs, dims)
    with pytest.raises(ValueError, match="out of range"):
        spectral_norm_weights(ws, us, vs, [0, 7])
    with pytest.raises(ValueError, match="impl must be one of"):
        spectral_norm_weights(ws, us, vs, dims, impl="bogus")
    with pytest.raises(RuntimeError, match="unavailable"):
        spectral_norm_weights(ws, us, vs, dims, impl="cuda")
    if ganops._ext.loaded:
        with pytest.raises(RuntimeError, match=r"us\[0\] must have shape"):
            torch.ops.ganops.spectral_norm_forward(ws, [us[1], us[0]], vs, dims, 1, 1e-12)


@requires_triton
def test_triton_no_out_of_bounds_writes():
    """Outputs inside canary buffers, on triton_device() (the interpreter does not catch out-of-bounds writes)."""
    sn = pytest.importorskip("ganops.triton.spectral_norm_kernels")
    dev = triton_device()
    g = torch.Generator().manual_seed(0)
    shapes = [((5, 3, 3, 3), 0), ((3, 4, 2, 2), 1), ((7, 3), 0)]
    ws = [torch.randn(s, generator=g).to(dev) for s, _ in shapes]
    dims = [d for _, d in shapes]
    us = [F.normalize(torch.randn(w.shape[d], generator=g), dim=0).to(dev) for w, d in zip(ws, dims)]
    vs = [F.normalize(torch.randn(w.numel() // w.shape[d], generator=g), dim=0).to(dev) for w, d in zip(ws, dims)]
    pad = 2048
    bufs, outs, un, vn = [], [], [], []
    for w, u, v in zip(ws, us, vs):
        for t, lst in ((w, outs), (u, un), (v, vn)):
            b = torch.full((t.numel() + 2 * pad,), 777.0, device=dev)
            bufs.append((b, t.numel()))
            lst.append(b[pad:pad + t.numel()].view(t.shape))
    sb = torch.full((len(ws) + 2 * pad,), 777.0, device=dev)
    sigmas = sb[pad:pad + len(ws)]
    sn._forward_into(ws, us, vs, dims, 1, 1e-12, outs, un, vn, sigmas)
    r_outs, r_sig, r_un, r_vn = spectral_norm_ref(ws, us, vs, dims, 1, 1e-12)
    for a, b in zip(outs + un + vn + [sigmas], r_outs + r_un + r_vn + [r_sig]):
        torch.testing.assert_close(a, b)
    for b, n in bufs + [(sb, len(ws))]:
        assert (b[:pad] == 777.0).all() and (b[pad + n:] == 777.0).all(), "out-of-bounds write"


@requires_cuda
@pytest.mark.parametrize("backend", backends("cuda", "triton"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n_iter", [0, 1, 2])
def test_cuda_backends_match_reference(backend, dtype, n_iter):
    skip_unless_available("spectral_norm", backend)
    _check_against_reference(backend, dtype, n_iter, device="cuda")


@requires_cuda
def test_cuda_training_parity_and_gradgradcheck():
    skip_unless_available("spectral_norm", "cuda")
    torch.manual_seed(0)
    ta = _Net(nn.utils.spectral_norm).cuda()
    torch.manual_seed(0)
    ga = _Net(lambda m: spectral_norm(m, impl="cuda")).cuda()
    spectral_norm_group(ga, impl="cuda")
    ga.load_state_dict(ta.state_dict())
    opts = [torch.optim.SGD(m.parameters(), 1e-2) for m in (ta, ga)]
    for step in range(20):
        x, y = torch.randn(4, 3, 4, 4, device="cuda"), torch.randint(0, 7, (4,), device="cuda")
        for m, o in zip((ta, ga), opts):
            o.zero_grad()
            (F.softplus(-m(x, y, True)).mean() + F.softplus(m(x, y, step % 2 == 0)).mean()).backward()
            o.step()
    for k, v in ta.state_dict().items():
        torch.testing.assert_close(ga.state_dict()[k], v, atol=1e-4, rtol=1e-3)
    ws, us, vs, dims = sample_inputs("cuda", torch.float64, shapes=[((3, 2, 2, 2), 0), ((2, 3, 2), 1)],
                                     requires_grad=True)
    f = lambda *w: tuple(spectral_norm_weights(list(w), us, vs, dims, n_power_iterations=0, impl="cuda")[0])  # noqa: E731
    assert gradcheck(f, tuple(ws)) and gradgradcheck(f, tuple(ws))


@pytest.mark.parametrize("backend", backends("ref", "cpu", "triton"))
def test_fp32_sigma_of_cancelling_terms_rounds_by_the_terms(backend):
    """With u, v far from W's singular pair (0 power iterations), sigma = u^T W v is a sum of terms of both signs that
    cancels: in fp32 it is off by about eps * sum |u_j W_jk v_k|, not eps * |sigma|, on every backend and in torch's
    own fp32 computation (the "ref" backend) alike, and W / sigma with it. The long fuzz run of 2026-12-07 met one
    (2 x 32 x 1 x 1, dim 1: sum |terms| = 7,165 |sigma|); tests/test_fuzz.py allows for it; docs/fuzzing.md."""
    skip_unless_available("spectral_norm", backend)
    dev = device_for(backend)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g, dtype=torch.float64)
    u = F.normalize(torch.randn(64, generator=g, dtype=torch.float64), dim=0)
    v = F.normalize(torch.randn(32, generator=g, dtype=torch.float64), dim=0)
    w = w - (torch.dot(u, w @ v) - 1e-3) * torch.outer(u, v)  # u^T w v = 1e-3, its terms ~1e-2 each
    w32, u32, v32 = w.float(), u.float(), v.float()
    _, sig, _, _ = spectral_norm_weights([w32.to(dev)], [u32.to(dev)], [v32.to(dev)], [0], n_power_iterations=0,
                                         impl=backend)
    _, want, _, _ = spectral_norm_ref([w32.double()], [u32.double()], [v32.double()], [0], 0, 1e-12)
    terms = (u32.double()[:, None] * w32.double() * v32.double()[None, :]).abs().sum()
    assert terms / want.abs() > 1e4  # ill-conditioned: 1 ulp of the terms is many ulps of sigma
    err = (sig.double().cpu() - want).abs()
    assert err <= 4 * torch.finfo(torch.float32).eps * terms  # within a few ulps of the terms (seen: 0.004-0.03)
