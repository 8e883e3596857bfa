# SPDX-License-Identifier: BSD-3-Clause
"""Image files: the suffix list, the folder listing, decoding and the conversion to RGB / uint8 tensors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "DataError", "visible_files", "list_images", "read_image", "to_rgb", "read_rgb",
           "pil_to_uint8", "to_uint8"]

#: the image files every folder reader takes (case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class DataError(ValueError):
    """Bad input data (an unknown builtin name, ...); the message names the spec and the flag that gave it."""


def visible_files(root: str | os.PathLike) -> list[Path]:
    """Files under ``root`` (recursive), skipping hidden files and folders (macOS ``._x.jpg``,
    ``.ipynb_checkpoints``), sorted by path."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root`` (recursive, case-insensitive :data:`IMAGE_SUFFIXES`, hidden files
    skipped), sorted by path: the one listing the training data and the metrics both use."""
    return [p for p in visible_files(root) if p.suffix.lower() in IMAGE_SUFFIXES]


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file completely (the file is closed on return), in its own mode.

    Raises:
        whatever PIL raises for a missing, unreadable or corrupt file, and ValueError for a float image
        holding NaN/Inf values; callers add the path and the advice.
    """
    with Image.open(path) as f:
        f.load()
        if f.mode == "F" and not np.isfinite(np.asarray(f)).all():
            raise ValueError("float image with NaN/Inf values")
        return f.copy()


def _to_8bit(im: Image.Image) -> Image.Image:
    """High-bit-depth greyscale (16-bit PNG: ``I;16``/``I``; float ``F``) as 8-bit ``L``, scaled to 0..255.
    ``Image.convert`` would clip 16-bit values at 255 (a 16-bit photo turns white)."""
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
    elif im.mode.startswith("I;16") or (a.size and a.max() > 255):  # 16-bit range (PNG "I" in older Pillow)
        a = a / 257.0
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert to RGB; RGBA/LA/PA/palette-with-transparency are composited on white, 16-bit and float greyscale
    scaled to 8 bits, CMYK converted by PIL. Returns (image, original mode if a conversion happened else None)."""
    if im.mode == "RGB":
        return im, None
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB"), mode
    if mode.startswith("I") or mode == "F":
        return _to_8bit(im).convert("RGB"), mode
    return im.convert("RGB"), mode


def read_rgb(item: Image.Image | str | os.PathLike, error: Callable[[Exception], Exception]) -> Image.Image:
    """An image item (a PIL image, or the path of a file, :func:`read_image`) in RGB (:func:`to_rgb`).

    Args:
        error: the caller's exception for a file that cannot be read, made from PIL's (raised ``from`` it).
    """
    if isinstance(item, Image.Image):
        im = item
    else:
        try:
            im = read_image(item)
        except Exception as e:
            raise error(e) from e
    return to_rgb(im)[0]


def pil_to_uint8(im: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 tensor (3, H, W) (its own memory, not a view of the image)."""
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (clamped) -> uint8 in [0, 255], rounded, on the CPU; same shape."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
