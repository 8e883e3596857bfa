# SPDX-License-Identifier: BSD-3-Clause
"""Sample grids (``torchvision.utils.save_image``), GIFs, and fixed-seed latents for comparable fakes across a run."""
from __future__ import annotations

import math
import os

import torch

from .._io import atomic_write
from ..data import to_uint8

__all__ = ["save_grid", "save_gif", "save_images", "fixed_noise"]


def save_grid(images: torch.Tensor, path: str | os.PathLike, *, nrow: int | None = None,
              value_range: tuple[float, float] = (-1.0, 1.0)) -> None:
    """Save a batch (N, C, H, W) as one PNG grid, mapping ``value_range`` to [0, 1] (clamped).

    Args:
        images: images in ``value_range`` (default [-1, 1], the generators' output range).
        path: destination (.png/.jpg).
        nrow: images per row (default: about square).
    """
    from torchvision.utils import save_image

    if images.dim() != 4:
        raise ValueError(f"save_grid: images must be (N, C, H, W), got {tuple(images.shape)}")
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp_(0, 1)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(x.shape[0]))))
    atomic_write(path, lambda tmp: save_image(x, tmp, nrow=nrow, padding=2, pad_value=1.0), suffix=".png")


def save_gif(frames: torch.Tensor, path: str | os.PathLike, fps: float) -> None:
    """(N, 3, H, W) in [-1, 1] as a looping GIF (PIL; identical consecutive frames are merged, durations added),
    written to a temporary name and renamed, so an interrupted write leaves no partial file."""
    from PIL import Image

    ims = [Image.fromarray(a) for a in to_uint8(frames).permute(0, 2, 3, 1).numpy()]
    atomic_write(path, lambda tmp: ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:],
                                               duration=1000 / fps, loop=0), suffix=".gif")


def save_images(images: torch.Tensor, directory: str | os.PathLike, *, start: int = 0, digits: int = 6,
                names: list[str] | None = None) -> list[str]:
    """Save a batch (N, 3, H, W) in [-1, 1] as one PNG per image, ``{start + i:0{digits}d}.png`` in ``directory``
    (created), each written atomically: the layout external FID tools (pytorch-fid, clean-fid) read. ``names``:
    one file stem per image instead of the numbers (e.g. FastGAN's ``seed00042``).

    Returns:
        the paths written, in order.
    """
    from PIL import Image

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"save_images: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if names is not None and len(names) != len(images):
        raise ValueError(f"save_images: {len(names)} names for {len(images)} images")
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, a in enumerate(to_uint8(images).permute(0, 2, 3, 1).numpy()):
        stem = names[i] if names is not None else f"{start + i:0{digits}d}"
        path = os.path.join(os.fspath(directory), f"{stem}.png")
        # fsync=False: one file per image, thousands for FID; an image torn by a power loss is simply made again
        atomic_write(path, lambda tmp, a=a: Image.fromarray(a).save(tmp, format="PNG"), suffix=".png", fsync=False)
        paths.append(path)
    return paths


def fixed_noise(*shape: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise from its own generator (the global RNG is untouched): same seed, same fakes."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device)
