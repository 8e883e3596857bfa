# SPDX-License-Identifier: BSD-3-Clause
"""Image sources for the metrics: a folder, ``builtin:<name>``, a tensor or a list of PIL images, hashable."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from ..data import IMAGE_SUFFIXES, is_builtin, list_images, load_builtin, pil_to_uint8, read_rgb, to_uint8

__all__ = ["ImageSource", "open_images", "IMAGE_SUFFIXES", "to_uint8"]


class ImageSource:
    """A sized, indexable set of RGB images returned as uint8 tensors (3, H, W), with a content fingerprint.

    Args:
        items: file paths, RGB/RGBA/greyscale PIL images, or a uint8/float tensor (N, C, H, W) (float in [-1, 1]).
        name: label used in messages and cache file names.
    """

    def __init__(self, items: Sequence | torch.Tensor, name: str = "images") -> None:
        if isinstance(items, torch.Tensor):
            if items.dim() != 4 or items.shape[1] not in (1, 3):
                raise ValueError(f"ganops.metrics: image tensor must be (N, 3, H, W), got {tuple(items.shape)}")
            if items.dtype != torch.uint8:
                items = to_uint8(items)
            items = items.expand(-1, 3, -1, -1).contiguous()
        elif len(items) == 0:
            raise ValueError(f"ganops.metrics: {name} has no images")
        self.items = items
        self.name = name
        self._fp: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def get(self, i: int, size: int | None = None) -> torch.Tensor:
        """Image ``i`` as uint8 (3, H, W); resized (bicubic, antialiased) to ``size`` x ``size`` when given."""
        item = self.items[i]
        if isinstance(item, torch.Tensor):
            x = item
        else:
            x = pil_to_uint8(read_rgb(item, lambda e: ValueError(
                f"ganops.metrics: cannot read image {item}: {type(e).__name__}: {e}")))
        if size is not None and tuple(x.shape[1:]) != (size, size):
            y = torch.nn.functional.interpolate(x[None].float(), size=(size, size), mode="bicubic",
                                                align_corners=False, antialias=True)
            x = y[0].round().clamp(0, 255).to(torch.uint8)
        return x

    def batches(self, batch_size: int, num: int | None = None, size: int | None = None):
        """Yield lists of uint8 images (stacked into (B, 3, H, W) when the sizes agree) for the first ``num``."""
        n = len(self) if num is None else min(num, len(self))
        for s in range(0, n, batch_size):
            imgs = [self.get(i, size) for i in range(s, min(n, s + batch_size))]
            if all(t.shape == imgs[0].shape for t in imgs):
                yield torch.stack(imgs)
            else:
                yield imgs

    def fingerprint(self) -> str:
        """SHA-256 of the image content (file bytes, pixels or tensor bytes), in order."""
        if self._fp is None:
            h = hashlib.sha256()
            if isinstance(self.items, torch.Tensor):
                h.update(str(tuple(self.items.shape)).encode())
                h.update(self.items.numpy().tobytes())
            else:
                for item in self.items:
                    if isinstance(item, Image.Image):
                        h.update(f"{item.mode}{item.size}".encode())
                        h.update(item.tobytes())
                    else:
                        with open(item, "rb") as f:
                            h.update(hashlib.sha256(f.read()).digest())
            self._fp = h.hexdigest()
        return self._fp


def open_images(spec: str | os.PathLike | ImageSource | torch.Tensor | Sequence) -> ImageSource:
    """Open ``--real``/``--fake``: a folder (flat or nested; hidden files and folders skipped, like the training
    data), ``builtin:<name>``, a tensor, or PIL images.

    Raises:
        FileNotFoundError / ValueError: missing or empty folder, unknown builtin (``ganops.data.DataError``),
        naming the argument.
    """
    if isinstance(spec, ImageSource):
        return spec
    if isinstance(spec, (torch.Tensor, list, tuple)):
        return ImageSource(spec)
    s = str(spec)
    if is_builtin(s):
        data = load_builtin(s)
        return ImageSource(data.images, name=s)
    root = Path(s)
    if not root.exists():
        raise FileNotFoundError(f"ganops.metrics: image folder {s!r} does not exist")
    if root.is_file():
        return ImageSource([root], name=s)
    files = list_images(root)
    if not files:
        raise ValueError(f"ganops.metrics: folder {s!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return ImageSource(files, name=s)
