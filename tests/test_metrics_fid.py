# SPDX-License-Identifier: BSD-3-Clause
"""FID/KID maths against float64 numpy/scipy, the FID Inception against its TorchScript, and the feature cache."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from conftest import requires_cuda
from ganops.metrics import _frozen, features as feat_mod
from ganops.metrics.fid import (fid_from_features, frechet_distance, kid_from_features, sqrtm_psd,
                                trace_sqrt_product)
from ganops.metrics.inception import (FIDInceptionV3, load_torchscript_inception, resize_tf_bilinear,
                                      to_inception_input)


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, like real embeddings
    return rng.normal(size=(n, d)) @ mix * scale + shift


def _fid_scipy(x, y):
    """The textbook computation (pytorch-fid / StyleGAN), written out in float64 numpy + scipy."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_sqrtm_psd_matches_scipy():
    a = _gauss(80, 24, 0)
    s = np.cov(a, rowvar=False)
    r = sqrtm_psd(s)
    np.testing.assert_allclose(r, scipy.linalg.sqrtm(s).real, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(r @ r, s, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r, r.T, atol=1e-14)
    # rank-deficient PSD (fewer samples than dimensions): still a symmetric square root
    s_low = np.cov(_gauss(5, 24, 1), rowvar=False)
    r_low = sqrtm_psd(torch.from_numpy(s_low))
    np.testing.assert_allclose(r_low @ r_low, s_low, atol=1e-9)


@pytest.mark.parametrize("method", ["auto", "svd", "eigen", "scipy"])
def test_fid_equals_numpy_scipy_float64(method):
    x, y = _gauss(300, 32, 2), _gauss(250, 32, 3, shift=0.3, scale=1.2)
    ref = _fid_scipy(x, y)
    assert ref > 1.0
    assert fid_from_features(x, y, method) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert fid_from_features(torch.from_numpy(x), torch.from_numpy(y), method) == pytest.approx(ref, rel=1e-9)


def test_fid_fewer_samples_than_dims_svd_equals_eigen():
    x, y = _gauss(20, 64, 4), _gauss(25, 64, 5, shift=0.1)
    e = fid_from_features(x, y, "eigen")  # sqrt of a rank-19 64x64 matrix: ~1e-8 relative rounding
    assert fid_from_features(x, y, "svd") == pytest.approx(e, rel=1e-6)
    assert fid_from_features(x, y) == pytest.approx(e, rel=1e-6)


def test_fid_self_zero_shift_positive_and_monotonic():
    x = _gauss(400, 16, 6)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    vals = [fid_from_features(x, x + s) for s in (0.1, 0.3, 1.0)]
    # a pure mean shift s in every one of 16 dims adds exactly 16 s^2
    np.testing.assert_allclose(vals, [16 * 0.01, 16 * 0.09, 16 * 1.0], rtol=1e-7)
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    assert trace_sqrt_product(s, s) == pytest.approx(np.trace(s), rel=1e-10)
    with pytest.raises(ValueError, match="method"):
        trace_sqrt_product(s, s, "magic")
    with pytest.raises(ValueError, match="differ"):
        fid_from_features(x, x[:, :8])


def _kid_by_hand(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_hand_computation_and_sanity():
    x, y = _gauss(7, 3, 7), _gauss(7, 3, 8, shift=0.5)
    mean, std = kid_from_features(x, y, subset_size=7, num_subsets=5)
    assert mean == pytest.approx(_kid_by_hand(x, y), rel=1e-10)
    assert std == 0.0  # the whole set in every subset: one evaluation
    ab = _gauss(1200, 16, 9)  # one distribution, two halves
    a, b = ab[:600], ab[600:]
    same, _ = kid_from_features(a, b, subset_size=200, num_subsets=20)
    shifted = [kid_from_features(a, b + s, subset_size=200, num_subsets=20)[0] for s in (0.5, 1.0)]
    assert abs(same) < 0.2 * shifted[0]
    assert 0 < shifted[0] < shifted[1]
    # deterministic from the seed
    assert kid_from_features(a, b, subset_size=50, num_subsets=3, seed=1) == \
        kid_from_features(a, b, subset_size=50, num_subsets=3, seed=1)


def test_resize_tf_bilinear_matches_sampling_formula():
    """TF1 legacy bilinear: output pixel j samples input j * in / out (clamped at the border)."""
    x = torch.rand(2, 3, 13, 21, dtype=torch.float64)
    out = resize_tf_bilinear(x, (29, 17))
    n, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0, 1 / w - 1 / 17], [0, 1.0, 1 / h - 1 / 29]], dtype=torch.float64)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, 29, 17], align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    u8 = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 3, 299, 3)
    y = to_inception_input(u8.repeat(1, 1, 1, 100)[..., :299])
    assert y.shape == (1, 3, 299, 299) and y.min() == -1 and y.max() == pytest.approx(255 / 128 - 1)


@pytest.fixture(scope="module")
def inception():
    return FIDInceptionV3()


@pytest.mark.slow
def test_inception_equals_torchscript(inception):
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ts = load_torchscript_inception()
    with torch.no_grad():
        ours, ref = inception(x), ts(x)
    assert ours.shape == (2, 2048)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours.abs().sum() > 0 and not torch.equal(ours[0], ours[1])
    with pytest.raises(ValueError, match="299"):
        inception(torch.zeros(1, 3, 64, 64))


def _smooth_images(n, seed, hw=32):
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, size=(hw, hw), mode="bilinear")


def test_fid_on_images_self_zero_shift_positive_and_cache(tmp_path, monkeypatch, inception):
    monkeypatch.setitem(_frozen.NETS, ("inception", "cpu", None), inception)
    x = _smooth_images(4, 1)
    real = feat_mod.cached_features(x, directory=str(tmp_path), batch_size=4)
    assert real.shape == (4, 2048) and real.dtype == np.float64
    assert len(list(tmp_path.glob("inception-*.npz"))) == 1
    shifted = (x * 0.5 + 0.4).clamp(-1, 1)
    fake = feat_mod.inception_features(torch.cat([x, shifted]), batch_size=8)
    np.testing.assert_allclose(fake[:4], real, rtol=1e-4, atol=1e-4)
    assert fid_from_features(real, fake[:4]) < 1e-2
    assert fid_from_features(real, fake[4:]) > 10.0
    # the second call is served from the cache (the extractor must not run)
    monkeypatch.setitem(feat_mod._EXTRACTORS, "inception", lambda *a, **k: pytest.fail("cache miss"))
    np.testing.assert_array_equal(feat_mod.cached_features(x, directory=str(tmp_path)), real)
    # ... and other content, or another sample count, is a different key
    with pytest.raises(pytest.fail.Exception, match="cache miss"):
        feat_mod.cached_features(shifted, directory=str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="cache miss"):
        feat_mod.cached_features(x, num=3, directory=str(tmp_path))


@requires_cuda
def test_inception_cuda_matches_cpu(inception):
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        ref = inception(x)
        got = FIDInceptionV3().cuda()(x.cuda()).cpu()
    # cuDNN may use TF32 for convolutions: ~1e-3 relative
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2)
    feats = feat_mod.inception_features(x, device="cuda")  # quantised to 8 bits, like the CPU path
    np.testing.assert_allclose(feats, feat_mod.inception_features(x), rtol=1e-2, atol=1e-2)
