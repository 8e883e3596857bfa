# SPDX-License-Identifier: BSD-3-Clause
"""ganops.data, the ground floor for image data: imports nothing above it; train and metrics read images alike."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ganops.data import (IMAGE_SUFFIXES, DataError, builtin_name, list_images, pil_to_uint8, read_image, read_rgb,
                         to_rgb)


def test_ground_floor_imports_no_higher_layer():
    code = ("import sys, ganops.data; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['ganops', 'train'], ['ganops', 'metrics'], ['ganops', 'models'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_list_images_suffixes_order_and_hidden(tmp_path):
    for rel in ["z.JPEG", "a/b.webp", "a-c.bmp", "x.txt", ".h.png", ".cache/y.png", "a/._z.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/b.webp", "a-c.bmp", "z.JPEG"]
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def test_read_image_closes_the_file_and_rejects_nan(tmp_path):
    Image.new("L", (3, 2), 9).save(tmp_path / "a.png")
    im = read_image(tmp_path / "a.png")
    assert im.size == (3, 2) and im.mode == "L" and im.getpixel((0, 0)) == 9
    Image.fromarray(np.full((2, 2), np.nan, np.float32), "F").save(tmp_path / "nan.tiff")
    with pytest.raises(ValueError, match="NaN"):
        read_image(tmp_path / "nan.tiff")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_read_rgb_takes_a_pil_image_or_a_path_and_raises_the_callers_error(tmp_path):
    Image.new("LA", (2, 2), (0, 0)).save(tmp_path / "la.png")
    from_path = read_rgb(tmp_path / "la.png", ValueError)
    assert from_path.mode == "RGB" and from_path.getpixel((0, 0)) == (255, 255, 255)  # transparent: on white
    assert read_rgb(Image.new("L", (2, 2), 7), ValueError).getpixel((1, 1)) == (7, 7, 7)
    with pytest.raises(KeyError, match="missing.png") as info:
        read_rgb(tmp_path / "missing.png", lambda e: KeyError(f"{tmp_path / 'missing.png'}: {type(e).__name__}"))
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_metrics_and_loader_decode_16bit_alike(tmp_path):
    """A 16-bit greyscale PNG is scaled to 8 bits by both readers (the metrics used to clip it to white)."""
    from ganops.metrics import open_images
    from ganops.train import open_dataset

    Image.fromarray(np.full((4, 4), 257 * 100, np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    x = open_images(tmp_path).get(0)
    assert x.dtype == torch.uint8 and x.unique().tolist() == [100]
    y = open_dataset(tmp_path, 4, verbose=False)[0]
    assert torch.equal(x, ((y + 1) * 127.5).round().to(torch.uint8))
    assert torch.equal(pil_to_uint8(to_rgb(read_image(tmp_path / "g16.png"))[0]), x)


def test_unknown_builtin_is_a_data_error_naming_the_flag():
    assert builtin_name("builtin:china") == "china"
    with pytest.raises(DataError, match="--real builtin:nope: unknown builtin dataset; available: builtin:emoji"):
        builtin_name("builtin:nope", "--real")
