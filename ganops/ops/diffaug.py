# SPDX-License-Identifier: BSD-3-Clause
"""DiffAugment (Zhao et al. 2020): differentiable color/translation/cutout, fused into one kernel per direction.

Semantics follow mit-han-lab's ``DiffAugment_pytorch.py`` (BSD-2; see docs/diffaug.md): the default sampler makes
the same torch RNG draws in the same order and dtypes, so with the same RNG state the output equals the reference's
to float rounding.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import _ext
from .._dispatch import OpInfo, register_op, resolve_impl, triton_loader
from .._layout import dense_output_like

__all__ = ["POLICIES", "diff_augment", "diff_augment_params", "diff_augment_ref", "parse_policy", "triton_kernels"]


# Loaded when the triton backend is first picked; it registers the kernels' autograd and fakes (register_* below).
triton_kernels = triton_loader("diffaug_kernels", lambda: register_diffaug_autograd("diffaug_apply_triton"))


register_op(OpInfo("diff_augment", compiled="diffaug_apply", triton=True, load_triton=triton_kernels))

#: policy name -> the functions it applies, in order (the reference's AUGMENT_FNS).
POLICIES: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
}
Params = dict  # dict[str, torch.Tensor]


def parse_policy(policy: str | Sequence[str]) -> list[str]:
    """Split a policy ("color,translation,cutout", or a list of names) into names; unknown names raise."""
    if isinstance(policy, str):
        names = [p.strip() for p in policy.split(",") if p.strip()]
    else:
        names = [str(p).strip() for p in policy]
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"ganops.diff_augment: unknown policy name(s) {bad}; valid names are "
                         f"{sorted(POLICIES)} (comma-separated, applied in the given order)")
    return names


def _keys(names: list[str]) -> list[tuple[str, str]]:
    """[(name, key suffix)]: the k-th repeat of a name (k >= 1) stores its parameters under '<fn>.<k>'."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append((n, "" if k == 0 else f".{k}"))
    return out


def _sizes(h: int, w: int, translation_ratio: float, cutout_ratio: float) -> tuple[int, int, int, int]:
    """(shift_x, shift_y, cut_h, cut_w) with the reference's current rounding: int(size * ratio + 0.5)."""
    return (int(h * translation_ratio + 0.5), int(w * translation_ratio + 0.5),
            int(h * cutout_ratio + 0.5), int(w * cutout_ratio + 0.5))


def diff_augment_params(policy: str | Sequence[str], shape: Sequence[int], *, device=None,
                        dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None,
                        translation_ratio: float = 0.125, cutout_ratio: float = 0.5, p: float = 1.0,
                        same_on_batch: bool = False) -> Params:
    """Draw per-sample parameters exactly as the reference does (same calls, order and dtypes).

    Args:
        policy: comma-separated names from :data:`POLICIES`, applied in order.
        shape: (N, C, H, W) of the (channels-first) tensor to augment.
        device, dtype: where and in which float dtype to draw (the reference draws in x's dtype on x's device).
        generator: optional ``torch.Generator`` (on ``device``); the global RNG otherwise.
        translation_ratio, cutout_ratio: fractions of H/W (reference: 1/8 and 1/2, rounded ``int(s*r + 0.5)``).
        p: probability that a sample is augmented at all; drawn after the reference draws (p=1 draws nothing
            extra, keeping parity). Skipped samples get identity parameters.
        same_on_batch: draw one sample's parameters and share them across the batch; with ``p < 1`` one draw
            decides for the whole batch (as kornia does).

    Returns:
        dict: ``brightness`` (shift r-0.5), ``saturation`` (factor 2r), ``contrast`` (factor r+0.5), each (N,) in
        ``dtype``; ``translation`` (N, 2) int64 (tx, ty); ``cutout`` (N, 2) int64 (ox, oy) — the cutout square's
        centre. A repeated policy name's k-th repeat uses keys suffixed ``.k``.
    """
    n, _, h, w = (int(s) for s in shape)
    sx, sy, ch, cw = _sizes(h, w, translation_ratio, cutout_ratio)
    m = 1 if same_on_batch else n
    kw = dict(device=device, generator=generator)
    out: Params = {}
    for name, suf in _keys(parse_policy(policy)):
        if name == "color":
            out["brightness" + suf] = (torch.rand(m, 1, 1, 1, dtype=dtype, **kw) - 0.5).view(m)
            out["saturation" + suf] = (torch.rand(m, 1, 1, 1, dtype=dtype, **kw) * 2).view(m)
            out["contrast" + suf] = (torch.rand(m, 1, 1, 1, dtype=dtype, **kw) + 0.5).view(m)
        elif name == "translation":
            tx = torch.randint(-sx, sx + 1, size=[m, 1, 1], **kw)
            ty = torch.randint(-sy, sy + 1, size=[m, 1, 1], **kw)
            out["translation" + suf] = torch.cat([tx.view(m, 1), ty.view(m, 1)], 1)
        else:
            ox = torch.randint(0, h + (1 - ch % 2), size=[m, 1, 1], **kw)
            oy = torch.randint(0, w + (1 - cw % 2), size=[m, 1, 1], **kw)
            out["cutout" + suf] = torch.cat([ox.view(m, 1), oy.view(m, 1)], 1)
    if same_on_batch and n != 1:
        out = {k: v.expand(n, *v.shape[1:]).contiguous() for k, v in out.items()}
    if p < 1.0:
        # True: augment this sample. With same_on_batch the whole batch is augmented or not (kornia's rule).
        keep = torch.rand(m, device=device, generator=generator) < p
        if m != n:
            keep = keep.expand(n)
        ident = {"brightness": 0.0, "saturation": 1.0, "contrast": 1.0, "translation": 0}
        for k, v in out.items():
            base = k.split(".")[0]
            if base == "cutout":  # a square entirely above the image cuts nothing
                v = torch.where(keep[:, None], v, torch.full_like(v, -(h + w + ch + cw + 2)))
            else:
                v = torch.where(keep.view(-1, *([1] * (v.dim() - 1))), v, torch.full_like(v, ident[base]))
            out[k] = v
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reference: the method's math step by step in x's dtype (plain PyTorch, differentiable to any order).


def _translate_ref(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, i + tx, j + ty] inside the image, else 0 (separable: rows, then columns)."""
    n, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, [1, 1, 1, 1])
    gi = (torch.arange(h, device=x.device).view(1, h) + t[:, :1] + 1).clamp(0, h + 1)
    gj = (torch.arange(w, device=x.device).view(1, w) + t[:, 1:] + 1).clamp(0, w + 1)
    rows = xp.gather(2, gi.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return rows.gather(3, gj.view(n, 1, 1, w).expand(n, c, h, w))


def _cutout_mask(o: torch.Tensor, h: int, w: int, ch: int, cw: int, dtype) -> torch.Tensor:
    """(N, 1, H, W) mask: 0 on rows [ox - ch//2, +ch) x cols [oy - cw//2, +cw) (clipped to the image), else 1."""
    ri = torch.arange(h, device=o.device).view(1, h)
    cj = torch.arange(w, device=o.device).view(1, w)
    r0, c0 = o[:, :1] - ch // 2, o[:, 1:] - cw // 2
    rc = (ri >= r0) & (ri < r0 + ch)
    cc = (cj >= c0) & (cj < c0 + cw)
    return (~(rc[:, :, None] & cc[:, None, :])).to(dtype).unsqueeze(1)


def diff_augment_ref(x: torch.Tensor, policy: str | Sequence[str], params: Params, *,
                     translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> torch.Tensor:
    """Apply ``params`` to a channels-first ``x`` with the reference's math, in x's dtype."""
    n, _, h, w = x.shape
    _, _, ch, cw = _sizes(h, w, translation_ratio, cutout_ratio)
    for name, suf in _keys(parse_policy(policy)):
        if name == "color":
            b, s, k = (params[f + suf].to(x.dtype).view(n, 1, 1, 1) for f in POLICIES["color"])
            x = x + b
            m = x.mean(dim=1, keepdim=True)
            x = (x - m) * s + m
            m = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - m) * k + m
        elif name == "translation":
            x = _translate_ref(x, params["translation" + suf])
        else:
            x = x * _cutout_mask(params["cutout" + suf], h, w, ch, cw, x.dtype)
    return x


# ----------------------------------------------------------------------------------------------------------------
# Fused path: the policy is split into segments "[color] then [translation and/or cutout]", each one op call.


def _segments(names: list[str]) -> list[dict]:
    segs: list[dict] = []
    cur: dict = {}
    for name, suf in _keys(names):
        if name in cur or (name == "color" and cur):
            segs.append(cur)
            cur = {}
        if name == "translation" and "cutout" in cur:
            cur["cutout_first"] = True
        cur[name] = suf
    if cur:
        segs.append(cur)
    return segs


def _segment_args(seg: dict, params: Params, x: torch.Tensor, ch: int, cw: int):
    n = x.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if "color" in seg:
        suf = seg["color"]
        color = torch.stack([params[f + suf].to(device=x.device, dtype=acc).view(n) for f in POLICIES["color"]], 1)
    else:
        color = torch.ones(n, 3, dtype=acc, device=x.device)  # identity: shift 0, factors 1 (no host copy)
        color[:, 0] = 0
    zero = torch.zeros(n, 2, dtype=torch.int64, device=x.device)
    t = params["translation" + seg["translation"]].to(x.device).view(n, 2) if "translation" in seg else zero
    o = params["cutout" + seg["cutout"]].to(x.device).view(n, 2) if "cutout" in seg else zero
    spatial = torch.cat([t, o], 1).to(torch.int64)
    cut = (ch, cw) if "cutout" in seg else (0, 0)
    return color.contiguous(), spatial.contiguous(), cut[0], cut[1], bool(seg.get("cutout_first", False))


def _check_params(params: Params, names: list[str], n: int) -> None:
    for name, suf in _keys(names):
        for f in POLICIES[name]:
            v = params.get(f + suf)
            if v is None:
                raise KeyError(f"ganops.diff_augment: params has no {f + suf!r} (policy needs {POLICIES[name]})")
            want = (n,) if name == "color" else (n, 2)
            if v.numel() != n * (1 if name == "color" else 2):
                raise ValueError(f"ganops.diff_augment: params[{f + suf!r}] must have shape {want}, got "
                                 f"{tuple(v.shape)}")
            if name != "color" and v.is_floating_point():
                raise TypeError(f"ganops.diff_augment: params[{f + suf!r}] must be an integer tensor")


def diff_augment(x: torch.Tensor, policy: str | Sequence[str] = "color,translation,cutout", *,
                 params: Params | None = None, generator: torch.Generator | None = None,
                 channels_first: bool = True, translation_ratio: float = 0.125, cutout_ratio: float = 0.5,
                 impl: str = "auto") -> torch.Tensor:
    """DiffAugment, fused: ``color`` (brightness, saturation, contrast), ``translation``, ``cutout``.

    Args:
        x: images (N, C, H, W), or (N, H, W, C) with ``channels_first=False``; float32/16/bf16/64, any layout.
        policy: comma-separated names applied in order; "" returns x unchanged (as the reference does).
        params: per-sample parameters from :func:`diff_augment_params` (replay); drawn when None.
        generator: torch.Generator for drawing (the global RNG of x's device when None).
        channels_first: False for NHWC input (the output is NHWC too).
        translation_ratio, cutout_ratio: reference defaults 1/8 and 1/2.
        impl: "auto" | "ref" | "cpu" | "cuda" | "triton" (``GANOPS_IMPL`` overrides "auto").

    Returns:
        The augmented tensor, same shape and dtype; compiled backends keep x's memory format.

    Shape:
        (N, C, H, W) -> (N, C, H, W)  (or NHWC -> NHWC).

    Gradients of every order flow to ``x`` (the augmentation is affine in x given the parameters; its backward
    is the adjoint map, whose own backward is the linear forward map). Parameters get no gradient.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError("ganops.diff_augment: x must be a tensor")
    if x.dim() != 4:
        raise ValueError(f"ganops.diff_augment: x must be 4-D ({'N, C, H, W' if channels_first else 'N, H, W, C'})"
                         f", got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"ganops.diff_augment: x must be a floating-point tensor, got {x.dtype}")
    names = parse_policy(policy)
    if not names:
        return x
    xc = x if channels_first else x.permute(0, 3, 1, 2)
    n, _, h, w = xc.shape
    if params is None:
        params = diff_augment_params(names, xc.shape, device=x.device, dtype=x.dtype, generator=generator,
                                     translation_ratio=translation_ratio, cutout_ratio=cutout_ratio)
    _check_params(params, names, n)
    backend = resolve_impl("diff_augment", impl, x)
    if backend == "ref":
        y = diff_augment_ref(xc, names, params, translation_ratio=translation_ratio, cutout_ratio=cutout_ratio)
    else:
        if backend == "triton":  # the kernel was loaded when the backend was picked
            op = torch.ops.ganops.diffaug_apply_triton
        else:
            op = torch.ops.ganops.diffaug_apply
        _, _, ch, cw = _sizes(h, w, translation_ratio, cutout_ratio)
        y = xc
        for seg in _segments(names):
            y = op(y, *_segment_args(seg, params, xc, ch, cw), 0)
    return y if channels_first else y.permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------------------------------------------
# Autograd for an apply op (x, color, spatial, cut_h, cut_w, cutout_first, mode):
#   mode 0: y = A x + c (forward, with the brightness shift c);  1: y = A x (linear part);  2: y = A^T x (adjoint).
# d(mode 0|1)/dx applied to g is mode 2; d(mode 2)/dx applied to g is mode 1. Hence gradients of every order.


def register_diffaug_autograd(name: str) -> None:
    """Register the fake kernel and the self-referential autograd of ``ganops::<name>``."""
    op = getattr(torch.ops.ganops, name)

    @torch.library.register_fake(f"ganops::{name}")
    def _fake(x, color, spatial, cut_h, cut_w, cutout_first, mode):
        return dense_output_like(x)  # the layout rule of the kernels (csrc/include/ganops/cpu_utils.h)

    def setup(ctx, inputs, output):
        _, color, spatial, cut_h, cut_w, cutout_first, mode = inputs
        ctx.save_for_backward(color, spatial)
        ctx.args = (cut_h, cut_w, cutout_first, 1 if mode == 2 else 2)

    def backward(ctx, grad):
        color, spatial = ctx.saved_tensors
        cut_h, cut_w, cutout_first, mode = ctx.args
        return op(grad, color, spatial, cut_h, cut_w, cutout_first, mode), None, None, None, None, None, None

    torch.library.register_autograd(f"ganops::{name}", backward, setup_context=setup)


if _ext.loaded and _ext.has_kernel("diffaug_apply", "CPU"):
    register_diffaug_autograd("diffaug_apply")
