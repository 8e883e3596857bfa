# SPDX-License-Identifier: BSD-3-Clause
"""ganops.train.data: folder validation, RGB conversion, datasets, builtins (offline), sampler sharding/resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganops.train import (BUILTINS, DatasetError, ImageDataset, InfiniteLoader, InfiniteSampler,
                          check_image_folder, list_images, load_builtin, load_single_image, open_dataset)
from ganops.data import to_rgb


def _img(path, mode="RGB", size=(40, 32), color=(200, 100, 50)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        im = Image.new("L", size, 128)
    elif mode == "RGBA":
        im = Image.new("RGBA", size, (255, 0, 0, 0))  # fully transparent red -> white after compositing
    elif mode == "P":
        im = Image.new("RGB", size, color).convert("P")
    else:
        im = Image.new("RGB", size, color)
    im.save(path)
    return path


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "data"
    _img(root / "a.png")
    _img(root / "sub" / "B.JPG")
    _img(root / "sub" / "deeper" / "c.jpeg", "L")
    _img(root / "d.PNG", "RGBA")
    _img(root / "e.webp")
    _img(root / "f.bmp", "P")
    _img(root / "tiny.png", size=(8, 8))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = root / "a.png"
    (root / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "notes.txt").write_text("hello")
    (root / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata: skipped, not "corrupt"
    _img(root / ".ipynb_checkpoints" / "a-checkpoint.png")
    return root


def test_list_images_recursive_case_insensitive(messy):
    names = sorted(p.name for p in list_images(messy))
    assert names == sorted(["a.png", "B.JPG", "c.jpeg", "d.PNG", "e.webp", "f.bmp", "tiny.png", "corrupt.jpg",
                            "truncated.png"])


def test_check_reports_unreadable_small_and_conversions(messy):
    rep = check_image_folder(messy, 16)
    assert not rep.ok
    bad = sorted(p.name for p, _ in rep.unreadable)
    assert bad == ["corrupt.jpg", "truncated.png"]
    assert [p.name for p, _ in rep.too_small] == ["tiny.png"]
    text = "\n".join(rep.errors)
    assert "corrupt.jpg" in text and "truncated.png" in text and "--skip-bad" in text
    assert "tiny.png" in text and "--allow-upscale" in text and "--resolution 8" in text
    assert rep.converted == {"L": 1, "RGBA": 1, "P": 1}
    notes = "\n".join(rep.notes)
    assert "converted to RGB" in notes and "white" in notes and "notes.txt" in notes
    with pytest.raises(DatasetError, match="corrupt.jpg"):
        rep.raise_if_errors()
    ok = check_image_folder(messy, 16, skip_bad=True, allow_upscale=True)
    assert ok.ok and len(ok.files) == 7 and any("skipped" in n for n in ok.notes)


def test_check_missing_empty_and_file(tmp_path):
    rep = check_image_folder(tmp_path / "nope", 64)
    assert not rep.ok and "does not exist" in rep.errors[0] and "--data" in rep.errors[0]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    rep = check_image_folder(tmp_path / "empty", 64)
    assert "no images found" in rep.errors[0] and "1 other files ignored" in rep.errors[0]
    f = _img(tmp_path / "one.png")
    assert "not a directory" in check_image_folder(f, 16).errors[0]
    with pytest.raises(DatasetError, match="no images found"):
        open_dataset(tmp_path / "empty", 64)
    assert check_image_folder("builtin:emoji", 64).ok
    with pytest.raises(ValueError, match="builtin:emoji"):
        check_image_folder("builtin:nope", 64)


def test_rgb_conversion_values():
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    im, mode = to_rgb(rgba)
    assert mode == "RGBA" and im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    assert abs(to_rgb(half)[0].getpixel((0, 0))[0] - 127) <= 1
    g, mode = to_rgb(Image.new("L", (2, 2), 77))
    assert mode == "L" and g.getpixel((1, 1)) == (77, 77, 77)
    same, mode = to_rgb(Image.new("RGB", (2, 2)))
    assert mode is None


def test_dataset_items_resize_and_hflip(messy):
    ds = open_dataset(messy, 16, hflip=True, skip_bad=True, allow_upscale=True, verbose=False)
    assert len(ds) == 14
    x = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    # a.png is uniform (200, 100, 50): -> (200/127.5 - 1, ...)
    assert torch.allclose(x[:, 5, 5], torch.tensor([200, 100, 50]) / 127.5 - 1, atol=1e-6)
    rgba_idx = [i for i, p in enumerate(ds.items) if p.name == "d.PNG"][0]
    assert torch.allclose(ds[rgba_idx], torch.ones(3, 16, 16))  # transparent -> white
    # the mirrored half: image i flipped
    grad = torch.arange(16.0).repeat(3, 16, 1) / 8 - 1
    ds2 = ImageDataset([Image.fromarray(((grad.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())], 16,
                       hflip=True)
    assert torch.equal(ds2[1], ds2[0].flip(-1)) and not torch.equal(ds2[0], ds2[1])


def test_unreadable_file_in_getitem_names_the_path(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="x.png"):
        ImageDataset([bad], 8)[0]


def test_builtins_load_offline():
    emoji = load_builtin("builtin:emoji")
    assert len(emoji.images) == 80 and emoji.images[0].size == (72, 72) and emoji.images[0].mode == "RGB"
    assert "CC-BY 4.0" in emoji.attribution and "Twemoji" in emoji.attribution
    # composited on white: the corners of a smiley are background
    assert emoji.images[0].getpixel((0, 0)) == (255, 255, 255)
    assert len(load_builtin("animals").images) >= 100
    lfw = load_builtin("lfw")
    assert len(lfw.images) == 100 and lfw.images[0].size == (25, 25)
    for name in ("china", "flower", "rocket"):
        d = load_builtin(name)
        assert len(d.images) == 1 and d.images[0].size == (640, 427) and d.attribution
    assert set(BUILTINS) == {"emoji", "animals", "lfw", "china", "flower", "rocket"}
    ds = open_dataset("builtin:lfw", 32, verbose=False)
    assert ds[3].shape == (3, 32, 32)


def test_load_single_image(tmp_path):
    x, attr = load_single_image("builtin:china", max_size=64)
    assert x.shape == (1, 3, 43, 64) and "CC-BY 2.0" in attr
    # the full credit (author, source, licence link) is the data layer's, so every recipe's run carries it
    for fact in ("danielbuechele", "https://www.flickr.com/photos/danielbuechele/6061409035/",
                 "https://creativecommons.org/licenses/by/2.0/"):
        assert fact in attr and fact in open_dataset("builtin:china", 32, verbose=False).attribution, fact
    assert x.min() >= -1 and x.max() <= 1
    f = _img(tmp_path / "one.jpg", size=(50, 100))
    y, attr = load_single_image(f, max_size=20)
    assert y.shape == (1, 3, 20, 10) and attr is None
    with pytest.raises(DatasetError, match="no such file"):
        load_single_image(tmp_path / "missing.png")
    _img(tmp_path / "two.jpg")
    with pytest.raises(DatasetError, match="found 2"):
        load_single_image(tmp_path)


def test_sampler_reproducible_sharded_and_resumable():
    def take(s, k):
        it = iter(s)
        return [next(it) for _ in range(k)]

    a = take(InfiniteSampler(10, seed=3), 25)
    assert a == take(InfiniteSampler(10, seed=3), 25)
    assert a != take(InfiniteSampler(10, seed=4), 25)
    assert sorted(a[:10]) == list(range(10)) and sorted(a[10:20]) == list(range(10))  # epochs are permutations
    r0 = take(InfiniteSampler(10, seed=3, rank=0, world_size=2), 12)
    r1 = take(InfiniteSampler(10, seed=3, rank=1, world_size=2), 12)
    assert r0 == a[0:24:2] and r1 == a[1:24:2]
    s = InfiniteSampler(10, seed=3)
    take(s, 7)
    st = s.state_dict()
    s2 = InfiniteSampler(10, seed=3)
    s2.load_state_dict(st)
    assert take(s2, 9) == a[7:16]
    with pytest.raises(ValueError, match="rank"):
        InfiniteSampler(10, rank=2, world_size=2)


def test_loader_resume_is_exact():
    ds = ImageDataset([Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)) for i in range(7)], 4)
    ld = InfiniteLoader(ds, 3, seed=1)
    ref = [next(ld) for _ in range(5)]
    ld2 = InfiniteLoader(ds, 3, seed=1)
    [next(ld2) for _ in range(2)]
    st = ld2.state_dict()
    assert st["consumed"] == 6
    ld3 = InfiniteLoader(ds, 3, seed=1)
    ld3.load_state_dict(st)
    g = torch.get_rng_state()
    assert all(torch.equal(next(ld3), r) for r in ref[2:])
    assert torch.equal(g, torch.get_rng_state())  # loading never draws from the global RNG


def test_preload_is_bitwise_identical(messy):
    ds = open_dataset(messy, 16, hflip=True, skip_bad=True, allow_upscale=True, verbose=False)
    lazy = [ds[i] for i in range(len(ds))]
    assert ds.preload() and ds._cache.dtype == torch.uint8 and ds._cache.shape == (7, 3, 16, 16)
    assert all(torch.equal(ds[i], x) for i, x in enumerate(lazy))
    assert not open_dataset(messy, 16, skip_bad=True, allow_upscale=True, verbose=False).preload(max_bytes=10)


def test_check_data_command(messy):
    from click.testing import CliRunner

    from ganops.train.__main__ import main

    r = CliRunner().invoke(main, ["check-data", str(messy), "--resolution", "16"])
    assert r.exit_code == 1 and "corrupt.jpg" in r.output and "--allow-upscale" in r.output
    r = CliRunner().invoke(main, ["check-data", str(messy), "--resolution", "16", "--skip-bad", "--allow-upscale"])
    assert r.exit_code == 0 and "7 usable" in r.output
    r = CliRunner().invoke(main, ["check-data", "builtin:nope"])
    assert r.exit_code == 2 and "Error: --data builtin:nope: unknown builtin dataset" in r.output
    r = CliRunner().invoke(main, ["builtins"])
    assert "builtin:emoji" in r.output and "CC-BY 4.0" in r.output
