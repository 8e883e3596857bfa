# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN models: pinned parameter counts, shapes at every resolution, quirks, style mixing, training steps."""
from __future__ import annotations

import warnings

import pytest
import torch

from ganops.models.fastgan import (FastGANDiscriminator, FastGANGenerator, batch_stat_bn, count_parameters,
                                   crop_part, weights_init)
from ganops.models.fastgan_step import FastGANStep, make_recon_loss
from ganops.nn.spectral_norm import spectral_norm_group

PINNED = {256: (29_127_846, 11_526_160), 512: (29_174_392, 11_526_496), 1024: (29_176_512, 11_528_192)}
W = 4  # tiny width for anything that runs


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "using the reference implementation" notices
        yield


@pytest.mark.parametrize("res", [256, 512, 1024])
def test_parameter_counts_pinned(res):
    with torch.device("meta"):  # no memory, no init cost
        g, d = FastGANGenerator(res, 64, 256), FastGANDiscriminator(res, 64)
    assert (count_parameters(g), count_parameters(d)) == PINNED[res]
    # spectral norm on every conv: weight_orig parameters, u/v buffers (not counted)
    convs = [m for m in list(g.modules()) + list(d.modules()) if isinstance(m, (torch.nn.Conv2d,
                                                                                  torch.nn.ConvTranspose2d))]
    assert convs and all(hasattr(m, "weight_orig") and hasattr(m, "weight_u") for m in convs)
    assert not any(m.bias is not None for m in convs)


@pytest.mark.parametrize("res", [256, 512, 1024])
def test_shapes_every_resolution(res):
    torch.manual_seed(0)
    g, d = FastGANGenerator(res, W, 16), FastGANDiscriminator(res, W)
    with torch.no_grad():
        big, small = g(torch.randn(2, 16))
        assert big.shape == (2, 3, res, res) and small.shape == (2, 3, 128, 128)
        assert d([big, small]).shape == (100,)  # 25 big + 25 small logits per image
        logits, recs = d(torch.rand(2, 3, res, res) * 2 - 1, part=3)
    assert logits.shape == (100,)
    assert [tuple(r.shape) for r in recs] == [(2, 3, 128, 128)] * 3
    assert all(r.abs().max() <= 1 for r in recs)  # decoders end in tanh


def test_bad_resolution_is_clear():
    with pytest.raises(ValueError, match="im_size must be one of"):
        FastGANGenerator(128, W)
    with pytest.raises(ValueError, match="im_size must be one of"):
        FastGANDiscriminator(300, W)


def test_tanh_quirk_default_and_flag():
    assert FastGANGenerator(256, W).tanh is False and FastGANGenerator(512, W).tanh is False
    assert FastGANGenerator(1024, W).tanh is True
    torch.manual_seed(0)
    g = weights_init(FastGANGenerator(256, W, 16))
    with torch.no_grad():
        g.to_big.weight_orig.mul_(200)  # push the raw output beyond [-1, 1]
        raw = g(torch.randn(2, 16))[0]
        g.tanh = True
        torch.manual_seed(1)
        sq = g(torch.randn(2, 16))[0]
    assert raw.abs().max() > 1 and sq.abs().max() <= 1


def test_crop_part_quadrants():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert crop_part(x, 0).flatten().tolist() == [0, 1, 4, 5]
    assert crop_part(x, 1).flatten().tolist() == [2, 3, 6, 7]
    assert crop_part(x, 2).flatten().tolist() == [8, 9, 12, 13]
    assert crop_part(x, 3).flatten().tolist() == [10, 11, 14, 15]


def test_weights_init_lands_in_weight_orig():
    torch.manual_seed(0)
    g = weights_init(FastGANGenerator(256, 16, 16))
    w = torch.cat([m.weight_orig.flatten() for m in g.modules() if hasattr(m, "weight_orig")])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1) < 0.01
    assert all(m.weight.item() == 0 for m in g.noise_layers())


def test_batch_stat_bn_keeps_running_stats():
    g = FastGANGenerator(256, W, 16).eval()
    before = [b.clone() for b in g.buffers()]
    with torch.no_grad(), batch_stat_bn(g):
        a = g(torch.randn(4, 16))[0]
    assert all(torch.equal(x, y) for x, y in zip(before, g.buffers()))
    assert not any(m.training for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.isfinite(a).all()


def _noise_free(g):
    for m in g.noise_layers():
        m.fixed = torch.zeros(1)
    return g


def test_style_mixing_changes_style_keeps_content():
    torch.manual_seed(0)
    g = _noise_free(weights_init(FastGANGenerator(256, 8, 16))).eval()
    zc, zs = torch.randn(3, 16), torch.randn(3, 16)
    with torch.no_grad():
        content = g(zc)[0]
        assert torch.allclose(g.style_mix(zc, zs, resolutions=()), content)  # nothing swapped
        assert torch.allclose(g.style_mix(zc, zc), content, atol=1e-6)  # own style
        mixed = g.style_mix(zc, zs, resolutions=(64, 128, 256))
        assert (mixed - content).abs().mean() > 1e-3  # the style changed the image
        # the content (main path before each gate) is untouched: capture feat_64's input and output
        seen = []
        h = g.feat_64.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
        g(zc)
        g.style_mix(zc, zs)
        h.remove()
    assert torch.allclose(seen[0], seen[-1])  # pre-gate 64x64 map identical (style pass runs in between)
    with pytest.raises(ValueError, match="SLE links"):
        g.style_mix(zc, zs, resolutions=(512,))


def _setup(seed=0, impl="auto", order="ours", recon="l1", w=W):
    torch.manual_seed(seed)
    g = weights_init(FastGANGenerator(256, w, 16, impl=impl))
    d = weights_init(FastGANDiscriminator(256, w, impl=impl))
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    return FastGANStep(g, d, og, od, make_recon_loss(recon), order=order, impl=impl)


def _losses(step, n=2, seed=1):
    torch.manual_seed(seed)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    return [{k: float(v) for k, v in step(x).items()} for _ in range(n)]


def test_train_step_finite_and_updates():
    st = _setup()
    p0 = [p.clone() for p in st.G.parameters()]
    d0 = [p.clone() for p in st.D.parameters()]
    out = _losses(st, 1)[0]
    assert set(out) == {"d_real", "d_rec", "real_logit", "d_fake", "g"}
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(p0, st.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, st.D.parameters()))
    assert all(p.requires_grad for p in st.D.parameters())  # unfrozen after the G step


@pytest.mark.slow
def test_step_orders_give_the_same_losses():
    a, b = _losses(_setup(order="ours")), _losses(_setup(order="reference"))
    for la, lb in zip(a, b):
        for k in la:
            assert la[k] == pytest.approx(lb[k], rel=1e-4, abs=1e-5), k


def test_fused_and_reference_backends_agree(monkeypatch):
    monkeypatch.setenv("GANOPS_IMPL", "ref")
    ref = _losses(_setup(impl="ref"))
    monkeypatch.delenv("GANOPS_IMPL")
    fused = _losses(_setup(impl="auto"))
    for la, lb in zip(ref, fused):
        for k in la:
            assert la[k] == pytest.approx(lb[k], rel=1e-3, abs=1e-4), k


@pytest.mark.slow
def test_lpips_vgg_reconstruction_step():
    st = _setup(recon="lpips-vgg")
    out = _losses(st, 1)[0]
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert out["d_rec"] > 0


def test_recon_loss_names():
    with pytest.raises(ValueError, match="--recon-loss"):
        make_recon_loss("l3")
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert make_recon_loss("l1")(a, b).tolist() == [1.0, 1.0]
    assert make_recon_loss("mse")(a, 2 * b).tolist() == [4.0, 4.0]


def _g_state(g):
    return ([p.detach().clone() for p in g.parameters()], [b.clone() for b in g.buffers()],
            [p.grad.clone() for p in g.parameters()])


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["per-layer-sn", "grouped-sn"])
def test_checkpointed_g_step_is_exact(group):
    """G.checkpoint (recompute the 256² stage in the G step's backward) gives the same losses, gradients, weights,
    BN running stats and SN u/v as the plain step, float64 on CPU, over two iterations (noise replayed, SN not
    re-iterated, BN running stats not updated twice)."""
    runs = []
    with torch.autocast("cpu", enabled=False):
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            for ck in (False, True):
                st = _setup()
                if group:
                    spectral_norm_group(st.G)
                    spectral_norm_group(st.D)
                for m in st.G.noise_layers():  # non-zero noise weights, so a wrong replay would show
                    m.weight.data.fill_(0.1)
                st.G.checkpoint = ck
                runs.append((_losses(st), *_g_state(st.G)))
        finally:
            torch.set_default_dtype(old)
    (la, pa, ba, ga), (lb, pb, bb, gb) = runs
    assert la == lb
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))
    assert all(torch.equal(a, b) for a, b in zip(ba, bb))  # BN running stats, num_batches_tracked, SN u/v
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))


@pytest.mark.slow
def test_checkpointed_g_1024_same_gradients():
    """Every checkpointed stage at 1024² (256, 512 with SLE, 1024 + output conv and tanh): same outputs,
    gradients and buffers as the plain forward/backward."""
    out = []
    for ck in (False, True):
        torch.manual_seed(0)
        g = weights_init(FastGANGenerator(1024, W, 16, checkpoint=ck)).double()
        for m in g.noise_layers():
            m.weight.data.fill_(0.1)
        torch.manual_seed(1)
        big, small = g(torch.randn(2, 16, dtype=torch.float64))
        (big.square().mean() + small.mean()).backward()
        out.append((big.detach(), *_g_state(g)))
    (ya, pa, ba, ga), (yb, pb, bb, gb) = out
    assert torch.equal(ya, yb)
    assert all(torch.equal(a, b) for a, b in zip(ba, bb))
    assert all(torch.equal(a, b) for a, b in zip(ga, gb))


def test_checkpoint_off_without_grad_or_in_eval():
    g = FastGANGenerator(256, W, 16, checkpoint=True)
    with torch.no_grad():
        g(torch.randn(2, 16))  # plain path under no_grad (sampling)
    g.eval()
    g(torch.randn(2, 16))[0].sum().backward()  # eval: plain path too


# -- paper Table 2 ablations: no SLE in G, no decoders in D ---------------------------------------------------------
# SLE link (low -> high channels at width 64): conv4x4 low->high + conv1x1 high->high, no bias (methods.md §1.2):
# se_64 1024->128, se_128 512->64, se_256 256->32 (+ se_512 128->16 above 256^2).
_SLE = {r: sum(lo * hi * 16 + hi * hi for lo, hi in links) for r, links in
        {256: [(1024, 128), (512, 64), (256, 32)], 512: [(1024, 128), (512, 64), (256, 32), (128, 16)]}.items()}
_SLE[1024] = _SLE[512]
# SimpleDecoder(cin): four UpBlocks cin->128->64->64->32 (conv3x3 to 2c + BN(2c)) and conv3x3 32->3; big cin 512,
# part and small cin 256 (methods.md §1.3: 1.44 M + 2 x 0.85 M).
_DEC = sum(c * 256 * 9 + 512 + 147_712 + 73_984 + 36_992 + 864 for c in (512, 256, 256))


@pytest.mark.parametrize("res", [256, 512, 1024])
def test_ablation_parameter_counts(res):
    """--no-sle drops exactly the SLE blocks' parameters from G, --no-decoders exactly the decoders' from D."""
    assert (_SLE[256], _DEC) == (2_774_016, 3_139_488)
    with torch.device("meta"):
        g, d = FastGANGenerator(res, 64, 256, sle=False), FastGANDiscriminator(res, 64, decoders=False)
        g_full, d_full = FastGANGenerator(res, 64, 256), FastGANDiscriminator(res, 64)
    assert count_parameters(g) == PINNED[res][0] - _SLE[res]
    assert count_parameters(d) == PINNED[res][1] - _DEC
    assert sum(count_parameters(m) for m in g_full.sle_modules().values()) == _SLE[res]
    assert sum(count_parameters(m) for m in d_full.decoder_modules().values()) == _DEC
    assert not g.sle_modules() and not d.decoder_modules() and g.sle_links() == []
    assert not any(k.startswith("se_") for k in g.state_dict()) and not any("decoder" in k for k in d.state_dict())
    assert any(k.startswith("se_2_16") for k in d.state_dict())  # D keeps its own SLE blocks


def test_no_sle_generator_skips_the_gates():
    """Without SLE, each stage's output is the up-block's output (no gate multiply): checked against a full G with
    the same weights whose gates are forced to 1."""
    torch.manual_seed(0)
    full = _noise_free(weights_init(FastGANGenerator(256, W, 16)))
    bare = _noise_free(FastGANGenerator(256, W, 16, sle=False))
    missing = bare.load_state_dict(full.state_dict(), strict=False)
    assert not missing.missing_keys and all(k.startswith("se_") for k in missing.unexpected_keys)
    z = torch.randn(3, 16)
    with torch.no_grad():
        a, a128 = bare(z)
        ones = {r: m.register_forward_hook(lambda m, i, o: i[1]) for r, m in full.sle_modules().items()}
        b, b128 = full(z)
        for h in ones.values():
            h.remove()
        c = full(z)[0]
    assert torch.equal(a, b) and torch.equal(a128, b128)
    assert not torch.allclose(a, c)  # the real gates change the image
    with pytest.raises(ValueError, match="sle=False"):
        bare.style_mix(z, z, resolutions=(64,))


def test_no_decoders_step_is_the_hinge_alone():
    torch.manual_seed(0)
    g, d = weights_init(FastGANGenerator(256, W, 16)), weights_init(FastGANDiscriminator(256, W, decoders=False))
    og, od = (torch.optim.Adam(m.parameters(), 2e-4, betas=(0.5, 0.999)) for m in (g, d))
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    logits, recs = d(x, part=1)
    assert logits.shape == (100,) and recs == ()
    with pytest.raises(ValueError, match="reconstruction loss"):
        FastGANStep(g, weights_init(FastGANDiscriminator(256, W)), og, od, None)
    st = FastGANStep(g, d, og, od, None)
    d0 = [p.clone() for p in d.parameters()]
    torch.manual_seed(1)
    r = st.draw(x)
    twin = FastGANDiscriminator(256, W, decoders=False)  # a copy: a forward advances SN's power iteration
    twin.load_state_dict(d.state_dict())
    with torch.no_grad():
        logits = twin(st._aug(x, r["aug_real"]))
        expect = torch.nn.functional.relu(0.8 + 0.2 * r["u_real"] - logits).mean()
    torch.manual_seed(1)
    out = st(x)
    assert set(out) == {"d_real", "real_logit", "d_fake", "g"}
    assert float(out["d_real"]) == pytest.approx(float(expect), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))


def test_hflip_mirrors_the_drawn_samples_only():
    """hflip=True: each real is mirrored where the drawn mask says so, before DiffAugment; the mask is drawn last,
    so every other draw equals the draws without hflip."""
    st = _setup()
    st.policy = ""  # no DiffAugment: D sees the (flipped) reals themselves
    x = torch.rand(8, 3, 256, 256) * 2 - 1
    torch.manual_seed(3)
    plain = st.draw(x)
    st.hflip = True
    torch.manual_seed(3)
    r = st.draw(x)
    assert "flip" not in plain and set(r) == set(plain) | {"flip"}
    assert all(torch.equal(torch.as_tensor(plain[k]), torch.as_tensor(r[k])) for k in plain)
    mask = r["flip"]
    assert mask.dtype == torch.bool and 0 < int(mask.sum()) < 8  # seed 3: a mix of flipped and kept
    seen = []
    st.D_ = lambda inp, **kw: (seen.append(inp.detach().clone()), st.D(inp, **kw))[1]
    st.d_real(x, r)
    want = torch.stack([xi.flip(-1) if m else xi for xi, m in zip(x, mask)])
    assert torch.equal(seen[0], want)
