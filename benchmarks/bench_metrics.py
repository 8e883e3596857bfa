# SPDX-License-Identifier: BSD-3-Clause
"""Metrics: LPIPS-VGG at FastGAN's reconstruction shape, FID Inception (ours vs TorchScript), FID's matrix square
root (svd / eigen vs scipy), and all-pairs LPIPS for the memorisation check (Gram form vs one call per pair).

Providers: "ref" is the baseline each row is compared with (TorchScript network, scipy sqrtm, LPIPS called per
pair); "ganops" is ours. Default shapes are CPU-sized (whole file < ~3 min on 2 cores); on a GPU the LPIPS case
uses FastGAN's real batch (8 x 3 x 128 x 128).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ganops.metrics import LPIPS
from ganops.metrics.fid import fid_from_features
from ganops.metrics.inception import FIDInceptionV3, load_torchscript_inception
from ganops.metrics.memorization import pairwise_lpips

DEV = "cuda" if torch.cuda.is_available() else "cpu"
_NETS: dict = {}


def _lpips():
    if "lpips" not in _NETS:
        _NETS["lpips"] = LPIPS("vgg").to(DEV)
    return _NETS["lpips"]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_lpips_vgg(measure, mode):
    n = 8 if DEV == "cuda" else 2
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(n, 3, 128, 128, generator=g) * 2 - 1).to(DEV)
    b = (torch.rand(n, 3, 128, 128, generator=g) * 2 - 1).to(DEV)
    net = _lpips()
    if mode == "fwd":
        def run():
            with torch.no_grad():
                net(a, b)
    else:
        ar = a.clone().requires_grad_()

        def run():
            net(ar, b).sum().backward()
    measure(op="lpips_vgg", case=f"{n}x3x128x128", mode=mode, provider="ganops", fn=run, device=DEV, rounds=3,
            warmup=1)


@pytest.mark.parametrize("provider", ["ref", "ganops"])
def test_fid_inception(measure, provider):
    n = 32 if DEV == "cuda" else 2
    x = (torch.rand(n, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(DEV)
    net = load_torchscript_inception().to(DEV) if provider == "ref" else FIDInceptionV3().to(DEV)

    def run():
        with torch.no_grad():
            net(x)
    measure(op="fid_inception", case=f"{n}x3x299x299", mode="fwd", provider=provider, fn=run, device=DEV, rounds=3,
            warmup=1)


@pytest.mark.parametrize("provider", ["ref", "ganops", "ganops-eigen"])
def test_fid_sqrtm(measure, provider):
    """1000 samples of 256-d features (scipy's sqrtm of the product vs our svd and eigen paths)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1000, 256)), rng.normal(size=(1000, 256)) + 0.1
    method = {"ref": "scipy", "ganops": "svd", "ganops-eigen": "eigen"}[provider]
    want = fid_from_features(x, y, "scipy")
    assert fid_from_features(x, y, method) == pytest.approx(want, rel=1e-8)
    measure(op="fid_sqrtm", case="1000x256", mode="fwd", provider=provider,
            fn=lambda: fid_from_features(x, y, method), rounds=3, warmup=1)


@pytest.mark.parametrize("provider", ["ref", "ganops"])
def test_memorization_pairs(measure, provider):
    """All-pairs LPIPS of 4 generated vs 6 training images at 32x32."""
    g = torch.Generator().manual_seed(1)
    f = (torch.rand(4, 3, 32, 32, generator=g) * 2 - 1).to(DEV)
    r = (torch.rand(6, 3, 32, 32, generator=g) * 2 - 1).to(DEV)
    net = _lpips()
    if provider == "ref":
        def run():
            with torch.no_grad():
                return torch.stack([torch.cat([net(a[None], b[None]).flatten() for b in r]) for a in f])
    else:
        def run():
            return pairwise_lpips(f, r, net)
    measure(op="lpips_pairs", case="4x6x32x32", mode="fwd", provider=provider, fn=run, device=DEV, rounds=2,
            warmup=1)
