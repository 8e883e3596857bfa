# SPDX-License-Identifier: BSD-3-Clause
"""Feature extraction for the metrics (FID Inception pool3), with a content-keyed on-disk cache for real sets."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import numpy as np
import torch

from .._io import atomic_write, write_text
from ._frozen import shared_net
from ._images import open_images
from .inception import FIDInceptionV3, to_inception_input
from .lpips import VGG16Features, vgg16_features

__all__ = ["inception_features", "cached_features", "cache_dir", "get_inception", "vgg16_features"]

# Bump when preprocessing or the network changes: old cache entries then stop matching.
_FEATURE_VERSION = {"inception": "fid-inception-v3/tf-bilinear/uint8/v1", "vgg16": "vgg16-conv5_3-gap/224/v1"}


def cache_dir() -> str:
    """Directory of cached real-set features: ``$GANOPS_CACHE_DIR`` or ``~/.cache/ganops/metrics``."""
    d = os.environ.get("GANOPS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ganops", "metrics")
    return d


def get_inception(device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The FID Inception network on ``device``, built once per process."""
    return shared_net("inception", FIDInceptionV3, device)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a progress bar is never worth failing for
        return None
    return tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)


@torch.no_grad()
def inception_features(images, *, num: int | None = None, batch_size: int = 32,
                       device: str | torch.device = "cpu", progress: bool = False,
                       input_range: str = "[-1,1]") -> np.ndarray:
    """2048-d pool3 features of the standard FID Inception-v3, in float64.

    Args:
        images: a folder, ``builtin:<name>``, an :class:`ImageSource`, a uint8 tensor (N, 3, H, W) or a float
            tensor in [-1, 1] (``input_range="[0,1]"`` for [0, 1]); float images are quantised to 8 bits first.
        num: use the first ``num`` images (all by default).
        batch_size: images per forward pass.
        device: where the network runs.
        progress: show a tqdm bar.

    Returns:
        (N, 2048) float64 array.
    """
    if isinstance(images, torch.Tensor) and images.dtype != torch.uint8 and input_range == "[0,1]":
        images = images * 2 - 1
    src = open_images(images)
    net = get_inception(device)
    n = len(src) if num is None else min(num, len(src))
    bar = _progress(n, f"inception {src.name}", progress)
    out = []
    for b in src.batches(batch_size, n):
        if isinstance(b, list):
            x = torch.cat([to_inception_input(t[None]) for t in b])
        else:
            x = to_inception_input(b)
        with torch.autocast(torch.device(device).type, enabled=False):  # FID is defined in float32
            out.append(net(x.to(device)).double().cpu().numpy())
        if bar is not None:
            bar.update(len(b))
    if bar is not None:
        bar.close()
    return np.concatenate(out, 0)


@torch.no_grad()
def _vgg_features(images, *, num=None, batch_size=32, device="cpu", progress=False) -> np.ndarray:
    src = open_images(images)
    net = shared_net("vgg16:[0,1]", lambda: VGG16Features("[0,1]"), device, torch.float32)
    n = len(src) if num is None else min(num, len(src))
    out = [net(b.to(device).float() / 255).double().cpu().numpy() for b in src.batches(batch_size, n, size=224)]
    return np.concatenate(out, 0)


_EXTRACTORS: dict[str, Callable[..., np.ndarray]] = {"inception": inception_features, "vgg16": _vgg_features}


def cached_features(images, *, kind: str = "inception", num: int | None = None, batch_size: int = 32,
                    device: str | torch.device = "cpu", progress: bool = False, use_cache: bool = True,
                    directory: str | None = None) -> np.ndarray:
    """Features of a (real) image set, cached on disk by content + resolution + sample count + network.

    The key is the SHA-256 of the images' content (file bytes / pixels), the image size, ``num`` and the
    feature-network version, so editing, adding or re-encoding a file gives a fresh computation. The cache is a
    ``.npz`` (no pickle) next to a small ``.json`` describing it.

    Args:
        kind: "inception" (2048-d, FID/KID/PR) or "vgg16" (512-d pooled conv5_3 at 224x224).
        directory: cache location (default :func:`cache_dir`).

    Returns:
        (N, D) float64 array.
    """
    if kind not in _EXTRACTORS:
        raise ValueError(f"cached_features: kind must be one of {sorted(_EXTRACTORS)}, got {kind!r}")
    src = open_images(images)
    n = len(src) if num is None else min(num, len(src))
    if not use_cache:
        return _EXTRACTORS[kind](src, num=n, batch_size=batch_size, device=device, progress=progress)
    first = src.get(0)
    meta = {"source": src.name, "content_sha256": src.fingerprint(), "resolution": list(first.shape[1:]),
            "num": n, "of": len(src), "features": _FEATURE_VERSION[kind]}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
    d = directory or cache_dir()
    path = os.path.join(d, f"{kind}-{key}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["features"].astype(np.float64)
        except Exception:  # a corrupt cache entry is recomputed and replaced
            pass
    feats = _EXTRACTORS[kind](src, num=n, batch_size=batch_size, device=device, progress=progress)
    try:
        os.makedirs(d, exist_ok=True)
        atomic_write(path, lambda tmp: np.savez(tmp, features=feats.astype(np.float64)), suffix=".npz")
        write_text(path[:-4] + ".json", json.dumps(meta, indent=1))
    except OSError:  # read-only home: fine, just no cache
        pass
    return feats
