# SPDX-License-Identifier: BSD-3-Clause
"""ConSinGAN networks (GrowingGenerator, patch Discriminator), SinGAN-style imresize and the image pyramids."""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops import winograd

__all__ = ["MODES", "GEN_MODES", "imresize", "imresize_to_shape", "pyramid_scales", "pyramid_sizes",
           "adjust_to_max_size", "create_pyramid", "ConvBlock", "LeakyReLUGP", "Discriminator", "GrowingGenerator",
           "weights_init", "sample_noise", "count_params", "bicubic_resize", "UPSAMPLE_IMPLS", "CONV_IMPLS"]

MODES = ("generation", "retarget", "harmonization", "editing", "animation")
GEN_MODES = ("generation", "animation")  # modes with the extra upsample after the head and (H+6) noise


# --------------------------------------------------------------------------------------------------- imresize ---
def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out, taps) and source indices (out, taps) of the MATLAB-style cubic resampler along one axis.

    Reproduces the reference's quirk: taps left of the image (negative indices, wrapped by an unsigned cast in the
    reference) get weight 0 and the remaining weights are renormalised; taps right of it are mirrored.
    """
    width = 4.0 / scale if antialias else 4.0
    out_c = np.arange(1, out_len + 1, dtype=np.float64)
    match = out_c / scale + 0.5 * (1 - 1.0 / scale)
    left = np.floor(match - width / 2)
    taps = int(np.ceil(width) + 2)
    fov = left[:, None] + np.arange(taps)[None, :] - 1  # may be negative
    arg = match[:, None] - fov - 1
    w = scale * _cubic(scale * arg) if antialias else _cubic(arg)
    w = np.where(fov < 0, 0.0, w)  # the unsigned wrap puts negative taps ~1.8e19 away: cubic() is 0 there
    s = w.sum(1, keepdims=True)
    s[s == 0] = 1.0
    w = w / s
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(np.where(fov < 0, 0, fov).astype(np.int64), 2 * in_len)]
    keep = np.any(w != 0, axis=0)
    return w[:, keep], idx[:, keep]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [-1, 1] -> (H, W, C) uint8, truncating like the reference (``(255 * x).astype(uint8)``)."""
    x = ((x.detach()[0].float().cpu() + 1) / 2).clamp(0, 1).permute(1, 2, 0)
    return (255 * x).numpy().astype(np.uint8)


def _from_float(im: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[None] / 255)).float()
    return ((x - 0.5) * 2).clamp(-1, 1).to(device=like.device, dtype=like.dtype)


def _resize_np(im: np.ndarray, out_hw: Sequence[int], scales: Sequence[float]) -> np.ndarray:
    out = im.astype(np.float64)
    antialias = scales[0] < 1  # the reference decides from the height factor for both axes
    for dim in np.argsort(np.asarray(scales), kind="stable").tolist():
        if scales[dim] == 1.0:
            continue
        w, idx = _contributions(im.shape[dim], int(out_hw[dim]), float(scales[dim]), antialias)
        t = np.swapaxes(out, dim, 0)
        t = (t[idx.T] * w.T.reshape(w.shape[1], w.shape[0], *([1] * (t.ndim - 1)))).sum(0)
        out = np.swapaxes(t, dim, 0)
    return out


def imresize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """SinGAN/ConSinGAN ``imresize``: uint8 round trip, MATLAB bicubic with antialiasing, ``ceil`` output size.

    Args:
        x: image (1, 3, H, W) in [-1, 1].
        scale: factor for both axes.

    Returns:
        (1, 3, ceil(H * scale), ceil(W * scale)) in [-1, 1] (quantised to 8 bits before resampling, as the
        reference). Not differentiable.
    """
    im = _to_uint8(x)
    h, w = im.shape[:2]
    out_hw = (int(np.ceil(h * scale)), int(np.ceil(w * scale)))
    return _from_float(_resize_np(im, out_hw, (scale, scale)), x)


def imresize_to_shape(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``imresize`` to an explicit (H, W) (the reference's ``imresize_to_shape``; per-axis factors out/in)."""
    im = _to_uint8(x)
    h, w = im.shape[:2]
    out_hw = (int(shape[0]), int(shape[1]))
    return _from_float(_resize_np(im, out_hw, (out_hw[0] / h, out_hw[1] / w)), x)


# ---------------------------------------------------------------------------------------------------- pyramid ---
def pyramid_scales(h: int, w: int, *, stages: int = 6, min_size: int = 25, rule: str = "improved") -> list[float]:
    """Scale factors applied to the (max-size-adjusted) real for levels 0..stages-2 (the last level is the real).

    rule "improved" (generation/retarget/animation/editing): r^e_i with e_i = ((S-1)/ln S) ln(S - i) + 1,
    S = stages - 1; "old" (SinGAN, harmonization): e_i = S - i; r = (min_size / min(h, w))^(1/S).
    """
    if stages < 2:
        raise ValueError(f"stages must be >= 2, got {stages}")
    stop = stages - 1
    r = math.pow(min_size / min(h, w), 1 / stop)
    if rule == "improved":
        if stop == 1:
            return [r]
        return [math.pow(r, ((stop - 1) / math.log(stop)) * math.log(stop - i) + 1) for i in range(stop)]
    if rule == "old":
        return [math.pow(r, stop - i) for i in range(stop)]
    raise ValueError(f"rule must be 'improved' or 'old', got {rule!r}")


def adjust_to_max_size(x: torch.Tensor, max_size: int = 250) -> torch.Tensor:
    """The reference's first resize: scale1 = min(max_size / max(H, W), 1), always through imresize (uint8)."""
    scale1 = min(max_size / max(x.shape[2], x.shape[3]), 1.0)
    return imresize(x, scale1)


def create_pyramid(real: torch.Tensor, *, stages: int = 6, min_size: int = 25, rule: str = "improved"
                   ) -> list[torch.Tensor]:
    """Real images per stage, coarsest first; ``real`` (already max-size adjusted) is the last level."""
    scales = pyramid_scales(real.shape[2], real.shape[3], stages=stages, min_size=min_size, rule=rule)
    return [imresize(real, s) for s in scales] + [real]


def pyramid_sizes(h: int, w: int, *, stages: int = 6, min_size: int = 25, max_size: int = 250,
                  rule: str = "improved") -> list[tuple[int, int]]:
    """(H, W) of every stage for an input of h x w, computed through the real resize path (exact rounding)."""
    x = torch.zeros(1, 3, h, w)
    real = adjust_to_max_size(x, max_size)
    scales = pyramid_scales(real.shape[2], real.shape[3], stages=stages, min_size=min_size, rule=rule)
    hh, ww = real.shape[2:]
    return [(int(np.ceil(hh * s)), int(np.ceil(ww * s))) for s in scales] + [(hh, ww)]


# --------------------------------------------------------------------------------------------------- networks ---
class _LeakyGP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        y = F.leaky_relu(x, slope)
        ctx.save_for_backward(y)
        ctx.slope = slope
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (y,) = ctx.saved_tensors
        # The slope mask is piecewise constant: detaching it keeps every gradient order identical while the
        # double backward of a gradient penalty no longer pushes zeros back through the forward graph.
        return torch.ops.aten.leaky_relu_backward(g, y.detach(), ctx.slope, True), None


class LeakyReLUGP(nn.Module):
    """LeakyReLU with the same values and gradients of every order as ``nn.LeakyReLU``, whose second-order graph
    stops at the (constant) slope mask: a WGAN-GP double backward skips D's forward graph entirely."""

    def __init__(self, negative_slope: float = 0.05) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LeakyGP.apply(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ConvBlock(nn.Sequential):
    """Conv2d(k3, stride 1, pad 0, bias) -> [BatchNorm2d] -> LeakyReLU (the reference's ConvBlock)."""

    def __init__(self, cin: int, cout: int, *, slope: float = 0.05, batch_norm: bool = False,
                 gp_act: bool = False) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, 3, 1, 0))
        if batch_norm:
            self.add_module("norm", nn.BatchNorm2d(cout))
        self.add_module("lrelu", LeakyReLUGP(slope) if gp_act else nn.LeakyReLU(slope))


def weights_init(m: nn.Module) -> None:
    """The reference init: Conv weights N(0, 0.02) (bias keeps PyTorch's default), norm weights N(1, 0.02), bias 0."""
    name = type(m).__name__
    if name.find("Conv2d") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif name.find("Norm") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


CONV_IMPLS = ("aten", "winograd")


def _check_conv_impl(conv_impl: str) -> str:
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    return conv_impl


def _use_winograd(conv_impl: str, x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether a network with ``conv_impl`` runs its convolutions of x (weights like w) through the Winograd
    kernels: asked for, and :func:`ganops.ops.winograd.usable` (CPU, float32/float64, autocast off)."""
    return conv_impl == "winograd" and winograd.usable(x, w)


def _conv(conv: nn.Conv2d, x: torch.Tensor, wino: bool) -> torch.Tensor:
    """``conv(x)`` for the networks' unpadded 3x3 stride-1 convolutions, through the Winograd kernels
    (:class:`ganops.ops.winograd.Conv3x3`, first-order gradients also Winograd) if ``wino``."""
    return winograd.Conv3x3.apply(x, conv.weight, conv.bias, "cpu") if wino else conv(x)


def _block(block: nn.Sequential, x: torch.Tensor, wino: bool) -> torch.Tensor:
    """A :class:`ConvBlock` (conv, optional norm, LeakyReLU) with its conv through :func:`_conv`."""
    if not wino:
        return block(x)
    for i, m in enumerate(block):
        x = _conv(m, x, True) if i == 0 else m(x)
    return x


class Discriminator(nn.Module):
    """Patch critic: ConvBlock(3->N), 3 x ConvBlock(N->N), Conv2d(N->1, k3); output (H-10) x (W-10).

    Args:
        nfc: filters (64). num_layer: body blocks (3). slope: LeakyReLU slope (0.05).
        gp_act: use :class:`LeakyReLUGP` (same maths, cheaper WGAN-GP double backward).
        conv_impl: "aten" (``nn.Conv2d``, as the reference) or "winograd" (:mod:`ganops.ops.winograd` on CPU in
            float32/float64 with autocast off, the same convolutions in ~2.25x fewer multiply-adds; elsewhere it
            falls back to "aten"). Both have the same parameters and state dict.

    Shape:
        (N, 3, H, W) -> (N, 1, H - 2(num_layer+2), W - 2(num_layer+2)); 113,153 parameters with the defaults.
    """

    def __init__(self, nfc: int = 64, num_layer: int = 3, slope: float = 0.05, gp_act: bool = True,
                 conv_impl: str = "aten") -> None:
        super().__init__()
        self.conv_impl = _check_conv_impl(conv_impl)
        self.head = ConvBlock(3, nfc, slope=slope, gp_act=gp_act)
        self.body = nn.Sequential(*[ConvBlock(nfc, nfc, slope=slope, gp_act=gp_act) for _ in range(num_layer)])
        self.tail = nn.Conv2d(nfc, 1, 3, 1, 0)
        self.apply(weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _use_winograd(self.conv_impl, x, self.tail.weight):
            return self.tail(self.body(self.head(x)))
        for b in (self.head, *self.body):
            x = _block(b, x, True)
        return _conv(self.tail, x, True)

    def forward_gp(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) for a gradient penalty only: the same values, and a gradient w.r.t. x that is differentiable in the
        weights (the penalty's weight gradients are those of plain autograd), but no first-order weight gradients
        of D(x) itself. Needs the :class:`LeakyReLUGP` activations (the slope mask is a constant of the penalty)."""
        blocks = [self.head, *self.body]
        if any(len(b) != 2 or not isinstance(b.lrelu, LeakyReLUGP) for b in blocks):
            raise ValueError("forward_gp needs Discriminator(gp_act=True) without normalisation")
        # ganops.ops.winograd.Conv3x3GP: the Winograd kernels for all three primitives, else ATen's
        impl = "cpu" if _use_winograd(self.conv_impl, x, self.tail.weight) else "ref"
        for b in blocks:
            x = b.lrelu(winograd.Conv3x3GP.apply(x, b.conv.weight, b.conv.bias, impl))
        return winograd.Conv3x3GP.apply(x, self.tail.weight, self.tail.bias, impl)


UPSAMPLE_IMPLS = ("matmul", "interpolate")


@functools.lru_cache(maxsize=256)
def _cubic_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix of PyTorch's 1-D bicubic resize with ``align_corners=True``: source x = i (n_in - 1) /
    (n_out - 1), Keys' cubic with A = -0.75 on the taps floor(x) - 1 ... floor(x) + 2, taps clamped to the border."""
    a = -0.75
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    x = torch.arange(n_out, dtype=torch.float64) * scale
    i0 = x.floor()
    t = x - i0

    def near(u: torch.Tensor) -> torch.Tensor:  # |u| <= 1
        return ((a + 2) * u - (a + 3)) * u * u + 1

    def far(u: torch.Tensor) -> torch.Tensor:  # 1 < |u| < 2
        return ((a * u - 5 * a) * u + 8 * a) * u - 4 * a

    w = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1)
    taps = (i0.long()[:, None] + torch.arange(-1, 3)[None]).clamp(0, n_in - 1)
    m = torch.zeros(n_out, n_in, dtype=torch.float64).scatter_add_(1, taps, w)
    return m.to(device=device, dtype=dtype)


def bicubic_resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bicubic", align_corners=True)`` as two matrix products, M_h @ x @ M_w^T.

    The same weights and taps (equal to ~1e-14 in float64), computed in x's dtype also under autocast. On one CPU
    thread forward + backward is 4-8x faster at ConSinGAN's sizes (64 x 115 x 171 -> 173 x 256: 26 ms vs 96 ms):
    PyTorch's bicubic backward scatters per output pixel, the product's backward is two more matmuls."""
    (h, w), (oh, ow) = x.shape[-2:], (int(size[0]), int(size[1]))
    dev = x.device.type
    off = dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev)
    with torch.autocast(dev, enabled=False) if off else contextlib.nullcontext():
        mh, mw = _cubic_matrix(h, oh, x.dtype, x.device), _cubic_matrix(w, ow, x.dtype, x.device)
        if oh * h * w + oh * w * ow <= h * w * ow + oh * h * ow:  # the cheaper order
            return torch.matmul(torch.matmul(mh, x), mw.t())
        return torch.matmul(mh, torch.matmul(x, mw.t()))


def _up_interpolate(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bicubic", align_corners=True)


class GrowingGenerator(nn.Module):
    """ConSinGAN's generator: head, a growing list of stages (``body``), tail; stages are trained concurrently.

    Args:
        nfc: filters (64). num_layer: convs per stage (3). slope: LeakyReLU slope (0.05; harmonization uses 0.3).
        batch_norm: BatchNorm2d in every block (harmonization/editing). mode: one of :data:`MODES`; generation and
            animation upsample after the head and feed stages (H+6)x(W+6) noise, the others pad by num_layer.
        upsample: "matmul" (:func:`bicubic_resize`, default) or "interpolate" (``F.interpolate``, as the
            reference): the same bicubic resize, the first 4-8x faster with its backward on CPU.
        conv_impl: "aten" (``nn.Conv2d``, as the reference) or "winograd" (as in :class:`Discriminator`: CPU,
            float32/float64, autocast off, else "aten"; first-order gradients only).

    Shape:
        ``forward(noise, shapes, amps)``: noise[0] (N, 3, H0, W0), noise[d] (N, nfc, H_d(+6), W_d(+6)); shapes the
        (H_d, W_d) per stage; returns (N, 3, H_last, W_last) in [-1, 1]. 668,227 parameters with 6 stages.
    """

    def __init__(self, nfc: int = 64, num_layer: int = 3, slope: float = 0.05, batch_norm: bool = False,
                 mode: str = "generation", upsample: str = "matmul", conv_impl: str = "aten") -> None:
        super().__init__()
        self.conv_impl = _check_conv_impl(conv_impl)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if upsample not in UPSAMPLE_IMPLS:
            raise ValueError(f"upsample must be one of {UPSAMPLE_IMPLS}, got {upsample!r}")
        self._up = bicubic_resize if upsample == "matmul" else _up_interpolate
        self.nfc, self.num_layer, self.mode = nfc, num_layer, mode
        self.slope, self.batch_norm = slope, batch_norm
        self.head = ConvBlock(3, nfc, slope=slope, batch_norm=batch_norm)
        self.body = nn.ModuleList([self._stage()])
        self.tail = nn.Sequential(nn.Conv2d(nfc, 3, 3, 1, 0), nn.Tanh())
        self.apply(weights_init)

    def _stage(self) -> nn.Sequential:
        s = nn.Sequential()
        for i in range(self.num_layer):
            s.add_module(f"block{i}", ConvBlock(self.nfc, self.nfc, slope=self.slope, batch_norm=self.batch_norm))
        return s

    @property
    def num_stages(self) -> int:
        return len(self.body)

    def init_next_stage(self) -> None:
        """Append a deep copy (weights included) of the current last stage."""
        self.body.append(copy.deepcopy(self.body[-1]))

    @property
    def gen_mode(self) -> bool:
        return self.mode in GEN_MODES

    def _wino(self, x: torch.Tensor) -> bool:
        return _use_winograd(self.conv_impl, x, self.tail[0].weight)

    def _stage_fwd(self, d: int, x: torch.Tensor) -> torch.Tensor:
        wino = self._wino(x)
        for b in self.body[d]:
            x = _block(b, x, wino)
        # The Winograd convolutions work channels_last; the upsampling matmuls and the residual sums around the
        # stages are faster on contiguous maps (and mixed layouts in one elementwise op are slow on CPU).
        return x.contiguous() if wino else x

    def run_head(self, z0: torch.Tensor) -> torch.Tensor:
        """Head + stage 0 (block padding after the head's upsample in generation modes)."""
        x = F.pad(z0, (1, 1, 1, 1))
        x = _block(self.head, x, self._wino(x))
        if self.gen_mode:
            x = self._up(x, (x.shape[2] + 2, x.shape[3] + 2))
            p = self.num_layer - 1
        else:
            p = self.num_layer
        return self._stage_fwd(0, F.pad(x, (p, p, p, p)))

    def run_stage(self, d: int, prev: torch.Tensor, z: torch.Tensor | None, amp: float | torch.Tensor,
                  shape: Sequence[int]) -> torch.Tensor:
        """Stage d >= 1: residual block on the upsampled previous features plus scaled feature noise."""
        up1 = self._up(prev, shape)
        if self.gen_mode:
            k = 2 * self.num_layer
            up2 = self._up(prev, (shape[0] + k, shape[1] + k))
            return self._stage_fwd(d, up2 + z * amp if z is not None else up2) + up1
        p = self.num_layer
        x = up1 + z * amp if z is not None else up1
        return self._stage_fwd(d, F.pad(x, (p, p, p, p))) + up1

    def run_tail(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1))
        return torch.tanh(_conv(self.tail[0], x, self._wino(x)))

    def forward(self, noise: Sequence[torch.Tensor], shapes: Sequence[Sequence[int]],
                amps: Sequence[float | torch.Tensor], *, start: int = 0, prev: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Generate with the first ``len(noise)`` stages (optionally resuming at stage ``start`` from ``prev``)."""
        n = len(noise)
        if start == 0:
            prev = self.run_head(noise[0])
            start = 1
        for d in range(start, n):
            prev = self.run_stage(d, prev, noise[d], amps[d], shapes[d])
        return self.run_tail(prev)

    def features(self, noise: Sequence[torch.Tensor], shapes: Sequence[Sequence[int]],
                 amps: Sequence[float | torch.Tensor], upto: int) -> torch.Tensor:
        """Features after stage ``upto`` (before the tail); used to cache frozen stages."""
        prev = self.run_head(noise[0])
        for d in range(1, upto + 1):
            prev = self.run_stage(d, prev, noise[d], amps[d], shapes[d])
        return prev


def sample_noise(shapes: Sequence[Sequence[int]], *, nfc: int = 64, num_layer: int = 3, gen_mode: bool = True,
                 batch: int = 1, device: torch.device | str = "cpu", generator: torch.Generator | None = None
                 ) -> list[torch.Tensor]:
    """The reference's ``sample_random_noise``: 3-channel N(0,1) at stage 0, nfc-channel at stages >= 1
    ((H+2*num_layer) x (W+2*num_layer) in generation/animation mode)."""
    out = []
    for d, (h, w) in enumerate(shapes):
        if d == 0:
            out.append(torch.randn(batch, 3, h, w, device=device, generator=generator))
        else:
            k = 2 * num_layer if gen_mode else 0
            out.append(torch.randn(batch, nfc, h + k, w + k, device=device, generator=generator))
    return out


def count_params(m: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in m.parameters())
