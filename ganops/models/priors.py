# SPDX-License-Identifier: BSD-3-Clause
"""DISP instance priors: frozen ImageNet features per training image (cached on disk) and the vicinal sampler."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_write
from ..metrics._frozen import FrozenNet, shared_net

__all__ = ["EXTRACTORS", "get_extractor", "compute_priors", "cached_priors", "prior_cache_key", "vicinal_sample",
           "VICINAL_LAWS", "ImageIndex", "iter_batches"]

_VERSION = 1  # bump when an extractor's preprocessing changes (invalidates caches)


def _vgg16() -> nn.Module:
    from ..metrics import VGG16Features

    return VGG16Features("[-1,1]")


class _EffNetFeatures(FrozenNet):
    """EfficientNet-Lite0 pooled 1280-d features of images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        from ..metrics.efficientnet import EfficientNetLite0

        self.net = EfficientNetLite0(pretrained=True, preprocess="tflite")  # expects [0, 1]
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features((x + 1) * 0.5)


def _efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 from ``ganops.metrics.efficientnet`` (the metrics area)."""
    from ..metrics._assets import AssetMissingError

    try:
        return _EffNetFeatures()
    except AssetMissingError as e:  # the weights package is not installed: say how, and name the alternative
        raise AssetMissingError(f"{e}\nOr use the other prior extractor: --prior vgg16") from e
    except ImportError as e:
        raise RuntimeError("prior extractor 'efficientnet-lite0' needs ganops.metrics.efficientnet, which is not "
                           f"available in this checkout ({e}); use --prior vgg16") from e


# name -> (feature dimension, factory of a frozen module mapping (N, 3, S, S) in [-1, 1] to (N, dim))
EXTRACTORS: dict[str, tuple[int, Callable[[], nn.Module]]] = {
    "vgg16": (512, _vgg16),  # the paper's DISP-Vgg16: pooled conv5_3 (no fc weights offline)
    "efficientnet-lite0": (1280, _efficientnet_lite0),
}


def get_extractor(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """The frozen prior network ``name`` (one of :data:`EXTRACTORS`) on ``device``, built once per process (the
    metrics' cache of pretrained networks, :func:`ganops.metrics._frozen.shared_net`)."""
    if name not in EXTRACTORS:
        raise ValueError(f"prior extractor must be one of {sorted(EXTRACTORS)}, got {name!r}")
    return shared_net(f"prior:{name}", EXTRACTORS[name][1], device)


def iter_batches(images: Any, batch_size: int, *, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """Batches (B, 3, H, W) of a tensor or of a map-style dataset of (3, H, W) images, in order; a dataset is read
    through a DataLoader (``num_workers`` processes), so only one batch is in memory at a time."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    yield from torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def compute_priors(images: Any, extractor: str = "vgg16", *, size: int = 224, batch_size: int = 16,
                   device: str | torch.device = "cpu", progress: bool = True, num_workers: int = 0) -> torch.Tensor:
    """Instance priors C(x_i) of every image, in one streaming pass.

    Args:
        images: (N, 3, H, W) in [-1, 1], or a map-style dataset of (3, H, W) images in [-1, 1] (read batch by
            batch, never held in memory as a whole: large sets).
        extractor: a key of :data:`EXTRACTORS`.
        size: images are bilinearly resized to size x size first (224: ImageNet statistics).
        batch_size: images per forward pass.
        device: where the extractor runs.
        progress: tqdm bar (images done of N).
        num_workers: DataLoader processes for a dataset.

    Returns:
        (N, dim) float32 priors on the CPU.
    """
    batches = iter_batches(images, batch_size, num_workers=num_workers)
    net = get_extractor(extractor, device)
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc=f"DISP priors ({extractor}, {size}px)", unit="img")
    for xb in batches:
        if bar is not None:
            bar.update(xb.shape[0])
        x = xb.to(device=device, dtype=torch.float32)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(net(x).float().cpu())
    if bar is not None:
        bar.close()
    return torch.cat(out, 0)


def prior_cache_key(images: torch.Tensor, extractor: str, size: int) -> str:
    """Hex key from the images' content (float32 bytes and shape), the extractor and its input size."""
    h = hashlib.sha256()
    x = images.detach().to("cpu", torch.float32).contiguous()
    h.update(json.dumps({"shape": list(x.shape), "extractor": extractor, "size": size, "v": _VERSION}).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:24]


def _cache_entry(images: torch.Tensor | None, extractor: str, size: int, cache_dir: str | os.PathLike | None,
                 key: str | None) -> tuple[str, str]:
    """(path, entry key) of the cache entry: the entry key, also stored in the file, is :func:`prior_cache_key` of
    ``images``, or the content ``key`` hashed with the extractor, its input size and the preprocessing version."""
    if key is None:
        key = prior_cache_key(images, extractor, size)
    else:
        key = hashlib.sha256(json.dumps([key, extractor, size, _VERSION]).encode()).hexdigest()[:24]
    d = os.fspath(cache_dir) if cache_dir is not None else _default_cache_dir()
    return os.path.join(d, f"disp-priors-{extractor}-{size}-{key}.pt"), key


def _default_cache_dir() -> str:
    return os.environ.get("GANOPS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ganops"))


def cached_priors(images: Any, extractor: str = "vgg16", *, size: int = 224,
                  cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  batch_size: int = 16, progress: bool = True, key: str | None = None,
                  num_workers: int = 0, log: Callable[[str], None] | None = None) -> tuple[torch.Tensor, bool]:
    """:func:`compute_priors`, cached on disk keyed by dataset content + extractor + size.

    Args:
        images: a tensor or a dataset (see :func:`compute_priors`).
        cache_dir: directory of the cache (default ``$GANOPS_CACHE`` or ``~/.cache/ganops``).
        key: the content part of the cache key; required for a dataset (:attr:`ImageIndex.digest` of the same
            dataset gives it without a second pass), default :func:`prior_cache_key` of a tensor.
        log: where the note about a damaged entry goes (None: nowhere). An entry that cannot be read, or that holds
            NaN/Inf (priors of real images are finite), is recomputed and rewritten.

    Returns:
        (priors (N, dim) float32 on the CPU, hit) with ``hit`` True when read from the cache.
    """
    d = os.fspath(cache_dir) if cache_dir is not None else _default_cache_dir()
    if key is None and not isinstance(images, torch.Tensor):
        raise ValueError("cached_priors: pass key= (e.g. ImageIndex(dataset).digest) for a dataset")
    path, key = _cache_entry(images if key is None else None, extractor, size, d, key)
    if os.path.isfile(path):
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key and blob["priors"].shape[0] == len(images):
                if bool(torch.isfinite(blob["priors"]).all()):
                    return blob["priors"], True
                if log is not None:
                    log(f"disp: note: the prior cache {path} holds NaN/Inf values (a damaged file); recomputing it")
        except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed
            pass
    pri = compute_priors(images, extractor, size=size, batch_size=batch_size, device=device, progress=progress,
                         num_workers=num_workers)
    try:
        os.makedirs(d, exist_ok=True)
        blob = {"key": key, "extractor": extractor, "size": size, "priors": pri}
        atomic_write(path, lambda tmp: torch.save(blob, tmp))  # concurrent runs never read a half-written file
    except OSError as e:
        import warnings

        warnings.warn(f"DISP prior cache not written to {d}: {e}", stacklevel=2)
    return pri, False


VICINAL_LAWS = ("uniform", "beta", "none")


def vicinal_sample(priors: torch.Tensor, n: int, *, law: str = "uniform", alpha: float = 0.2,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    """Vicinal mix of training priors: ``c = λ·C(x_i) + (1−λ)·C(x_j)``, i, j uniform training indices.

    Args:
        priors: (M, D) training priors.
        n: number of conditions to draw.
        law: law of λ: "uniform" (λ ~ U[0, 1], default), "beta" (λ ~ Beta(alpha, alpha), mixup's law) or
            "none" (λ = 1: the training priors themselves).
        alpha: Beta parameter for ``law="beta"``.
        generator: torch RNG (CPU) for reproducible draws.

    Returns:
        (c (n, D), i (n,), j (n,), λ (n,)), on the priors' device.
    """
    if law not in VICINAL_LAWS:
        raise ValueError(f"vicinal law must be one of {VICINAL_LAWS}, got {law!r}")
    if priors.dim() != 2 or priors.shape[0] == 0:
        raise ValueError(f"priors must be a non-empty (M, D) tensor, got {tuple(priors.shape)}")
    m = priors.shape[0]
    i = torch.randint(m, (n,), generator=generator)
    j = torch.randint(m, (n,), generator=generator)
    if law == "uniform":
        lam = torch.rand(n, generator=generator)
    elif law == "beta":
        if alpha <= 0:
            raise ValueError(f"vicinal alpha must be > 0, got {alpha}")
        # Beta(a, a) from two Gammas drawn with the generator (torch.distributions takes no generator)
        ga = torch._standard_gamma(torch.full((2, n), float(alpha)), generator=generator)
        lam = ga[0] / (ga[0] + ga[1])
    else:
        lam = torch.ones(n)
    dev = priors.device
    i, j, lam = i.to(dev), j.to(dev), lam.to(dev, priors.dtype)
    c = lam[:, None] * priors[i] + (1 - lam[:, None]) * priors[j]
    return c, i, j, lam


class ImageIndex:
    """Maps images back to their dataset indices by content hash (to look up each real's prior in a batch).

    The toolkit's loader yields image tensors only; DISP pairs each real with its own prior C(x_i), so the recipe
    recovers i from the pixels (decoding is deterministic, so the bytes match exactly). ``images`` may be a tensor
    or a dataset, read in one streaming pass (only 16-byte digests are kept: large sets fit). :attr:`digest`
    identifies the whole set's content (a cache key for :func:`cached_priors`).
    """

    def __init__(self, images: Any, *, batch_size: int = 64, num_workers: int = 0, progress: bool = False) -> None:
        self._map: dict[bytes, int] = {}
        whole = hashlib.sha256()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(images), desc="DISP image index", unit="img")
        k = 0
        for xb in iter_batches(images, batch_size, num_workers=num_workers):
            for x in xb:  # each image's shape and pixels: the digest does not depend on batch_size
                h = self._h(x)
                whole.update(str(tuple(x.shape)).encode())
                whole.update(h)
                self._map.setdefault(h, k)
                k += 1
            if bar is not None:
                bar.update(xb.shape[0])
        if bar is not None:
            bar.close()
        self.digest = whole.hexdigest()

    @staticmethod
    def _h(x: torch.Tensor) -> bytes:
        return hashlib.blake2b(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(),
                               digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._map)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Indices (B,) of the images in ``batch`` (B, 3, H, W); raises KeyError for an unknown image."""
        out = []
        rows = batch.detach().to("cpu", torch.float32)  # one device-to-host copy per batch, not one per image
        for k in range(rows.shape[0]):
            h = self._h(rows[k])
            if h not in self._map:
                raise KeyError("DISP: a training image was not found in the prior index (the loader changed the "
                               "pixels?)")
            out.append(self._map[h])
        return torch.tensor(out, dtype=torch.long, device=batch.device)
