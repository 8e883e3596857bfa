# SPDX-License-Identifier: BSD-3-Clause
"""SIFID and the diversity score against hand-written float64 computations and the TorchScript Inception."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from ganops.metrics.inception import load_torchscript_inception
from ganops.metrics.sifid import diversity, sifid, sifid_features


def _image(h=48, w=64, seed=0):
    """A structured image in [-1, 1]: smooth colour gradients plus texture (not plain noise)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    base = torch.stack([torch.sin(3 * xx + seed), torch.cos(2 * yy), xx * yy])
    return (0.7 * base + 0.3 * torch.rand(3, h, w, generator=g) * 2 - 0.3).clamp(-1, 1)[None]


def _sifid_by_hand(real, fake, layer):
    """TorchScript FID network's own layers, numpy covariance, scipy sqrtm: the textbook SIFID."""
    ts = load_torchscript_inception().net.layers

    def feats(x):
        x = ((x + 1) * 127.5).clamp(0, 255).round() / 128 - 1
        with torch.no_grad():
            y = ts.conv_2(ts.conv_1(ts.conv(x)))
            if layer == "conv_4":
                y = ts.conv_4(ts.conv_3(ts.pool0(y)))
        return y[0].double().reshape(y.shape[1], -1).T.numpy()

    a, b = feats(real), feats(fake)
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("layer", ["conv_4", "conv_2"])
def test_sifid_matches_textbook_computation(layer):
    real = _image(56, 72, 0)
    fakes = [_image(56, 72, 1), _image(40, 88, 2)]  # SIFID compares internal statistics: any size
    for fake in fakes:
        got = sifid(real, fake, layer=layer)
        assert got.shape == (1,)
        want = _sifid_by_hand(real, fake, layer)
        assert want > 0.1
        np.testing.assert_allclose(got[0], want, rtol=2e-4)


@pytest.mark.slow
def test_sifid_zero_for_the_image_itself_and_grows_with_noise():
    real = _image(64, 80, 3)
    g = torch.Generator().manual_seed(0)
    noisy = [(real + s * torch.randn(real.shape, generator=g)).clamp(-1, 1) for s in (0.05, 0.2, 0.6)]
    for layer in ("conv_4", "conv_2"):
        assert sifid(real, real, layer=layer)[0] == pytest.approx(0, abs=1e-6)
        vals = sifid(real, torch.cat(noisy), layer=layer)
        assert vals.shape == (3,) and np.all(np.diff(vals) > 0), (layer, vals)


def test_sifid_input_ranges_agree_and_fakes_may_differ_in_size():
    r8, u8 = (((_image(*hw, seed) + 1) * 127.5).round().to(torch.uint8) for hw, seed in (((48, 64), 4), ((60, 90), 5)))
    # on 8-bit levels, so every range rounds to the same uint8 values
    a = sifid(r8.double() / 127.5 - 1, u8.double() / 127.5 - 1)
    np.testing.assert_allclose(sifid(r8[0].double() / 255, u8.double() / 255, input_range="[0,1]"), a, rtol=1e-9)
    np.testing.assert_allclose(sifid(r8, u8), a, rtol=1e-9)
    assert a[0] > 1
    f = sifid_features(torch.cat([u8, u8]), layer="conv_2")
    assert len(f) == 2 and f[0].shape[1] == 64 and f[0].dtype == np.float64


def test_sifid_errors():
    real = _image()
    with pytest.raises(ValueError, match="layer must be one of"):
        sifid(real, real, layer="pool3")
    with pytest.raises(ValueError, match="one image"):
        sifid(torch.cat([real, real]), real)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        sifid(real[:, :1], real)
    with pytest.raises(ValueError, match="at least 2"):
        sifid(_image(16, 16), _image(16, 16))  # 16 px -> 1x1 at conv_4
    with pytest.raises(ValueError, match="input_range"):
        sifid(real, real, input_range="0-255")
    with pytest.raises(TypeError, match="tensor"):
        sifid(real, np.zeros((1, 3, 48, 64)))


def test_diversity_by_hand():
    real = _image(20, 24, 6)
    assert diversity(real.repeat(4, 1, 1, 1), real) == 0.0
    g = torch.Generator().manual_seed(1)
    fakes = (real + 0.3 * torch.randn(6, 3, 20, 24, generator=g)).clamp(-1, 1)
    q = lambda x: ((x.double() + 1) * 127.5).clamp(0, 255).round().mean(1).numpy()
    want = q(fakes).std(0).mean() / q(real).std()
    assert diversity(fakes, real) == pytest.approx(want, rel=1e-12)
    assert 0 < want


def test_diversity_errors():
    real = _image(20, 24)
    with pytest.raises(ValueError, match="at least 2"):
        diversity(real, real)
    with pytest.raises(ValueError, match="must match"):
        diversity(_image(20, 20).repeat(2, 1, 1, 1), real)
    with pytest.raises(ValueError, match="constant"):
        diversity(real.repeat(2, 1, 1, 1), torch.zeros_like(real))
