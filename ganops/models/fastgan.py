# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN (Liu et al., ICLR 2021) generator and discriminator built on ganops' SLE and spectral norm.

Written from the architecture facts in the project spec (methods.md §1), not from the GPL reference code. The
default configuration (ngf = ndf = 64, nz = 256) reproduces the reference's layers and parameter counts exactly;
``ngf``/``ndf`` scale every width for reduced CPU presets.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.sle import SLE
from ..nn.spectral_norm import spectral_norm

__all__ = ["RESOLUTIONS", "FastGANGenerator", "FastGANDiscriminator", "SimpleDecoder", "DownBlock", "DownBlockComp",
           "UpBlock", "UpBlockComp", "NoiseInjection", "GLU", "crop_part", "weights_init", "batch_stat_bn",
           "count_parameters"]

RESOLUTIONS = (256, 512, 1024)
_G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
_D_MULT = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}


def _nfc(mult: dict, width: int) -> dict[int, int]:
    return {k: max(1, int(v * width)) for k, v in mult.items()}


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0, *, sn: bool = True, impl: str = "auto") -> nn.Module:
    m = nn.Conv2d(cin, cout, k, s, p, bias=False)
    return spectral_norm(m, impl=impl) if sn else m


class GLU(nn.Module):
    """Gated linear unit over channels: first half x sigmoid(second half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)  # one op saving only its input (a * sigmoid(b) would also keep sigmoid(b))


class NoiseInjection(nn.Module):
    """``feat + w * n`` with n ~ N(0, 1) of shape (B, 1, H, W) drawn each forward; w a scalar initialised to 0.

    ``self.fixed`` (set by the activation-checkpoint replay, :class:`_Replay`) replays stored noise instead of drawing;
    ``self.record`` (a list, when set) collects the noise drawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.record: list | None = None
        self.fixed: torch.Tensor | None = None

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        b, _, h, w = feat.shape
        noise = self.fixed if self.fixed is not None else torch.randn(b, 1, h, w, device=feat.device,
                                                                     dtype=feat.dtype)
        if self.record is not None:
            self.record.append(noise)
        return feat + self.weight * noise


class _Replay:
    """Context managers that make a checkpointed G segment's recomputation redo exactly its first forward.

    ``forward``: records the noise each :class:`NoiseInjection` of the segment draws, and the spectral-norm state.
    ``recompute`` (run by ``torch.utils.checkpoint`` during backward): replays that noise; spectral norm gives the
    same weights without a second update: a layer whose weight came from a :class:`SpectralNormGroup` (computed
    in the root's pre-hook, outside the segment) keeps that weight (its hook is lifted), a per-layer hook iterates
    again from the u, v it started from, and u, v are put back afterwards; BatchNorm running statistics are put back
    as they were (batch statistics, hence the outputs, are the same; the running stats are updated once); the
    function modes that ask for it are re-entered (ganops' meta-device autocast emulation; torch's own autocast
    state is restored by checkpoint itself).
    """

    class _Ctx:
        def __init__(self, enter, exit_) -> None:
            self.enter, self.exit = enter, exit_

        def __enter__(self):
            self.enter()

        def __exit__(self, *exc):
            self.exit()
            return False

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        from torch.nn.utils.spectral_norm import SpectralNorm as _TorchSN

        mods = [m for mod in modules for m in mod.modules()]
        self.noise = [m for m in mods if isinstance(m, NoiseInjection)]
        self.bns = [m for m in mods if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.sn = [(m, k, fn) for m in mods for k, fn in m._forward_pre_hooks.items() if isinstance(fn, _TorchSN)]
        self.modes = [m for m in torch.overrides._get_current_function_mode_stack()
                      if getattr(m, "replay_in_recompute", False)]
        self.drawn: list = []
        self._saved: list = []
        self._lift: list = []  # (module, hook key): grouped layers, weight reused
        self._uv: list = []  # (buffer, value at the segment's first forward): per-layer hooks
        self._stack: contextlib.ExitStack | None = None

    def forward(self) -> "_Replay._Ctx":
        return self._Ctx(self._fwd_enter, self._fwd_exit)

    def recompute(self) -> "_Replay._Ctx":
        return self._Ctx(self._re_enter, self._re_exit)

    def _fwd_enter(self) -> None:
        self._saved = [m.record for m in self.noise]
        for m in self.noise:
            m.record = []
        self._lift, self._uv = [], []
        for m, k, fn in self.sn:
            group = getattr(fn, "group", None)
            if group is not None and group.active:
                self._lift.append((m, k))
            else:
                self._uv += [(b, b.clone()) for b in (getattr(m, fn.name + "_u"), getattr(m, fn.name + "_v"))]

    def _fwd_exit(self) -> None:
        self.drawn = [m.record[-1] for m in self.noise]
        for m, r, n in zip(self.noise, self._saved, self.drawn):
            m.record = r
            if r is not None:
                r.append(n)

    def _re_enter(self) -> None:
        st = self._stack = contextlib.ExitStack()
        fixed = [m.fixed for m in self.noise]
        for m, n in zip(self.noise, self.drawn):
            m.fixed = n
        st.callback(lambda: [setattr(m, "fixed", f) for m, f in zip(self.noise, fixed)])
        hooks = {id(m): (m, dict(m._forward_pre_hooks)) for m, _ in self._lift}
        for m, k in self._lift:
            del m._forward_pre_hooks[k]

        def _restore_hooks():
            for m, h in hooks.values():
                m._forward_pre_hooks.clear()
                m._forward_pre_hooks.update(h)
        st.callback(_restore_hooks)
        now = [(b, b.clone()) for m in self.bns for b in m.buffers()] + [(b, b.clone()) for b, _ in self._uv]

        def _restore_buffers():
            with torch.no_grad():
                for b, c in now:
                    b.copy_(c)
        st.callback(_restore_buffers)
        with torch.no_grad():
            for b, c in self._uv:
                b.copy_(c)
        for mode in self.modes:
            st.enter_context(mode)

    def _re_exit(self) -> None:
        stack, self._stack = self._stack, None
        stack.close()


class UpBlock(nn.Sequential):
    """Nearest x2; SN-conv3x3 (in -> 2 out); BN; GLU."""

    def __init__(self, cin: int, cout: int, *, sn: bool = True) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout * 2, 3, 1, 1, sn=sn),
                         nn.BatchNorm2d(cout * 2), GLU())


class UpBlockComp(nn.Sequential):
    """Nearest x2; conv3x3; noise; BN; GLU; conv3x3; noise; BN; GLU (the reference's ``UpBlockComp``)."""

    def __init__(self, cin: int, cout: int, *, sn: bool = True) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout * 2, 3, 1, 1, sn=sn),
                         NoiseInjection(), nn.BatchNorm2d(cout * 2), GLU(),
                         _conv(cout, cout * 2, 3, 1, 1, sn=sn), NoiseInjection(), nn.BatchNorm2d(cout * 2), GLU())


class DownBlock(nn.Sequential):
    """SN-conv4x4 s2 p1; BN; LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, *, sn: bool = True) -> None:
        super().__init__(_conv(cin, cout, 4, 2, 1, sn=sn), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


class DownBlockComp(nn.Module):
    """(main + direct) / 2: main = conv4x4 s2, BN, LReLU, conv3x3, BN, LReLU; direct = avgpool2, conv1x1, BN, LReLU."""

    def __init__(self, cin: int, cout: int, *, sn: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(_conv(cin, cout, 4, 2, 1, sn=sn), nn.BatchNorm2d(cout),
                                  nn.LeakyReLU(0.2, inplace=True), _conv(cout, cout, 3, 1, 1, sn=sn),
                                  nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))
        self.direct = nn.Sequential(nn.AvgPool2d(2, 2), _conv(cin, cout, 1, 1, 0, sn=sn), nn.BatchNorm2d(cout),
                                    nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class SimpleDecoder(nn.Module):
    """D's reconstruction decoder: adaptive-pool to 8x8, four (nearest x2, conv3x3, BN, GLU), conv3x3 -> 3, tanh.

    Args:
        cin: input channels. base: width base (32 in the reference, i.e. ``ndf // 2``).

    Shape:
        (B, cin, h, w) -> (B, 3, 128, 128).
    """

    def __init__(self, cin: int, base: int = 32, *, sn: bool = True) -> None:
        super().__init__()
        nfc = _nfc(_G_MULT, base)
        chans = [cin, nfc[16], nfc[32], nfc[64], nfc[128]]
        self.main = nn.Sequential(nn.AdaptiveAvgPool2d(8),
                                  *[UpBlock(a, b, sn=sn) for a, b in zip(chans[:-1], chans[1:])],
                                  _conv(nfc[128], 3, 3, 1, 1, sn=sn), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def crop_part(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quadrant ``part`` of a (B, C, H, W) map: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    h, w = x.shape[2] // 2, x.shape[3] // 2
    r, c = divmod(int(part), 2)
    return x[:, :, r * h:(r + 1) * h, c * w:(c + 1) * w]


class FastGANGenerator(nn.Module):
    """FastGAN generator: InitLayer, up-blocks to ``im_size`` with SLE links 4->64, 8->128, 16->256 (32->512).

    Args:
        im_size: 256, 512 or 1024.
        ngf: width (reference 64). nz: latent size (reference 256).
        tanh: squash both outputs with tanh. ``None`` (default) reproduces the reference quirk: tanh only at 1024,
            raw conv outputs at 256 and 512 (methods.md §7.1).
        sn: spectral norm on every conv (reference: yes). impl: SLE backend.
        sle: build the skip-layer excitation links (reference: yes). ``sle=False`` is the paper's ablation without
            them (Table 2's rows without "skip"): no ``se_*`` modules, each up-block's output goes on ungated.
        checkpoint: recompute the blocks at 256^2 and above (up-block, SLE, and the output conv) in backward instead
            of keeping their activations (activation checkpointing; training forwards with grad only). Exact: the
            recomputation replays the same noise, reuses the spectral-normed weights of the first forward and
            leaves BN running stats updated once (:class:`_Replay`). Settable later: ``G.checkpoint = True``.

    Shape:
        z (B, nz) -> [image (B, 3, im_size, im_size), image_128 (B, 3, 128, 128)].
    """

    SLE_LINKS = {64: 4, 128: 8, 256: 16, 512: 32}  # high resolution -> low resolution

    def __init__(self, im_size: int = 256, ngf: int = 64, nz: int = 256, *, tanh: bool | None = None,
                 sn: bool = True, impl: str = "auto", checkpoint: bool = False, sle: bool = True) -> None:
        super().__init__()
        self.checkpoint, self.sle = bool(checkpoint), bool(sle)
        if im_size not in RESOLUTIONS:
            raise ValueError(f"FastGANGenerator: im_size must be one of {RESOLUTIONS}, got {im_size}")
        self.im_size, self.nz = im_size, nz
        self.tanh = (im_size == 1024) if tanh is None else bool(tanh)
        nfc = self.nfc = _nfc(_G_MULT, ngf)
        convt = nn.ConvTranspose2d(nz, nfc[4] * 2, 4, 1, 0, bias=False)
        self.init = nn.Sequential(spectral_norm(convt, impl=impl) if sn else convt, nn.BatchNorm2d(nfc[4] * 2), GLU())
        self.feat_8 = UpBlockComp(nfc[4], nfc[8], sn=sn)
        self.feat_16 = UpBlock(nfc[8], nfc[16], sn=sn)
        self.feat_32 = UpBlockComp(nfc[16], nfc[32], sn=sn)
        self.feat_64 = UpBlock(nfc[32], nfc[64], sn=sn)
        self.feat_128 = UpBlockComp(nfc[64], nfc[128], sn=sn)
        self.feat_256 = UpBlock(nfc[128], nfc[256], sn=sn)
        if self.sle:
            self.se_64 = SLE(nfc[4], nfc[64], spectral_norm=sn, impl=impl)
            self.se_128 = SLE(nfc[8], nfc[128], spectral_norm=sn, impl=impl)
            self.se_256 = SLE(nfc[16], nfc[256], spectral_norm=sn, impl=impl)
        self.to_128 = _conv(nfc[128], 3, 1, 1, 0, sn=sn)
        self.to_big = _conv(nfc[im_size], 3, 3, 1, 1, sn=sn)
        if im_size > 256:
            self.feat_512 = UpBlockComp(nfc[256], nfc[512], sn=sn)
            if self.sle:
                self.se_512 = SLE(nfc[32], nfc[512], spectral_norm=sn, impl=impl)
        if im_size > 512:
            self.feat_1024 = UpBlock(nfc[512], nfc[1024], sn=sn)

    def forward(self, z: torch.Tensor, *, lows: dict[int, torch.Tensor] | None = None,
                return_lows: bool = False):
        """Generate ``[image, image_128]``.

        Args:
            z: (B, nz) or (B, nz, 1, 1) latents.
            lows: style mixing: {high resolution (64/128/256/512): low-resolution feature} replacing the SLE input
                ``x_low`` of that link (e.g. taken from another latent's ``return_lows``).
            return_lows: also return the dict {4, 8, 16, 32: feature} of this pass's SLE inputs.
        """
        lows = lows or {}
        f = {4: self.init(z.reshape(z.shape[0], -1, 1, 1))}
        f[8] = self.feat_8(f[4])
        f[16] = self.feat_16(f[8])
        f[32] = self.feat_32(f[16])
        own = {4: f[4], 8: f[8], 16: f[16], 32: f[32]}
        x = self.feat_64(f[32])
        x = self.se_64(lows.get(64, f[4]), x) if self.sle else x
        f128 = self.feat_128(x)
        f128 = self.se_128(lows.get(128, f[8]), f128) if self.sle else f128
        x = f128
        for r in (256, 512, 1024):
            if r <= self.im_size:
                low = lows.get(r, f[self.SLE_LINKS[r]]) if r in self.SLE_LINKS and self.sle else None
                x = self._stage(r, x, low)
        big, small = x, self.to_128(f128)
        if self.tanh:
            small = torch.tanh(small)
        return ([big, small], own) if return_lows else [big, small]

    def _stage_fn(self, r: int, x: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        x = getattr(self, f"feat_{r}")(x)
        if low is not None:
            x = getattr(self, f"se_{r}")(low, x)
        if r == self.im_size:
            x = self.to_big(x)
            if self.tanh:
                x = torch.tanh(x)
        return x

    def _stage(self, r: int, x: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        """Up-block at resolution r (256/512/1024) with its SLE gate (and the output conv at im_size)."""
        if not (self.checkpoint and self.training and torch.is_grad_enabled()):
            return self._stage_fn(r, x, low)
        from torch.utils.checkpoint import checkpoint

        mods = [getattr(self, f"feat_{r}")] + ([getattr(self, f"se_{r}")] if low is not None else []) + \
            ([self.to_big] if r == self.im_size else [])
        rep = _Replay(mods)
        return checkpoint(self._stage_fn, r, x, low, use_reentrant=False, preserve_rng_state=False,
                          context_fn=lambda: (rep.forward(), rep.recompute()))

    def sle_links(self) -> list[int]:
        """High resolutions of this G's SLE links: 64, 128, 256 (and 512 above 256^2); none with ``sle=False``."""
        return [r for r in self.SLE_LINKS if self.sle and (r <= 256 or self.im_size > 256)]

    def sle_modules(self) -> dict[str, nn.Module]:
        """{name: SLE block} of this G (empty with ``sle=False``)."""
        return {f"se_{r}": getattr(self, f"se_{r}") for r in self.sle_links()}

    def noise_layers(self) -> list[NoiseInjection]:
        return [m for m in self.modules() if isinstance(m, NoiseInjection)]

    @torch.no_grad()
    def style_mix(self, z_content: torch.Tensor, z_style: torch.Tensor,
                  resolutions: Sequence[int] | None = None) -> torch.Tensor:
        """Images with ``z_content``'s main path and ``z_style``'s SLE inputs at ``resolutions`` (paper app. C;
        default: every link).

        Returns:
            (B, 3, im_size, im_size) mixed images; B = len(z_content) = len(z_style).
        """
        resolutions = self.sle_links() if resolutions is None else list(resolutions)
        bad = [r for r in resolutions if r not in self.sle_links()]
        if bad:
            raise ValueError(f"style_mix: resolutions must be SLE links of this G ({self.sle_links()}), got {bad}"
                             + ("" if self.sle else " (built with sle=False: no links to mix)"))
        _, own = self(z_style, return_lows=True)
        lows = {r: own[self.SLE_LINKS[r]] for r in resolutions}
        return self(z_content, lows=lows)[0]


class FastGANDiscriminator(nn.Module):
    """FastGAN discriminator: a big branch (DownBlockComp x5 with SLE), a 128 branch, three decoders.

    Args:
        im_size: 256, 512 or 1024. ndf: width (reference 64). sn: spectral norm. impl: SLE backend.
        decoders: build the three self-supervision decoders (reference: yes). ``decoders=False`` is the paper's
            ablation without the reconstruction task (Table 2's rows without "decode"): D is only a classifier.

    Shape:
        ``forward(x)`` with x a tensor (B, 3, H, W) (reals: nearest-resized to im_size and 128) or a list
        ``[image, image_128]`` (fakes) -> logits (50 B,): big branch's 5x5 per image, then the small branch's.
        ``forward(x, part=p)`` (real pass) -> (logits, (rec_big, rec_small, rec_part)), each (B, 3, 128, 128);
        ``(logits, ())`` without decoders. ``features(x)`` -> (logits, {"big": the 8x8 last big-branch feature,
        "small": the 8x8 small-branch feature, "f32": the 16x16 big-branch feature}): the decoders' inputs.
    """

    def __init__(self, im_size: int = 256, ndf: int = 64, *, sn: bool = True, impl: str = "auto",
                 decoders: bool = True) -> None:
        super().__init__()
        self.has_decoders = bool(decoders)
        if im_size not in RESOLUTIONS:
            raise ValueError(f"FastGANDiscriminator: im_size must be one of {RESOLUTIONS}, got {im_size}")
        self.im_size = im_size
        nfc = self.nfc = _nfc(_D_MULT, ndf)
        lrelu = nn.LeakyReLU(0.2, inplace=True)
        if im_size == 1024:
            self.down_from_big = nn.Sequential(_conv(3, nfc[1024], 4, 2, 1, sn=sn), nn.LeakyReLU(0.2, inplace=True),
                                               _conv(nfc[1024], nfc[512], 4, 2, 1, sn=sn), nn.BatchNorm2d(nfc[512]),
                                               lrelu)
        elif im_size == 512:
            self.down_from_big = nn.Sequential(_conv(3, nfc[512], 4, 2, 1, sn=sn), lrelu)
        else:
            self.down_from_big = nn.Sequential(_conv(3, nfc[512], 3, 1, 1, sn=sn), lrelu)
        self.down_4 = DownBlockComp(nfc[512], nfc[256], sn=sn)
        self.down_8 = DownBlockComp(nfc[256], nfc[128], sn=sn)
        self.down_16 = DownBlockComp(nfc[128], nfc[64], sn=sn)
        self.down_32 = DownBlockComp(nfc[64], nfc[32], sn=sn)
        self.down_64 = DownBlockComp(nfc[32], nfc[16], sn=sn)
        self.rf_big = nn.Sequential(_conv(nfc[16], nfc[8], 1, 1, 0, sn=sn), nn.BatchNorm2d(nfc[8]),
                                    nn.LeakyReLU(0.2, inplace=True), _conv(nfc[8], 1, 4, 1, 0, sn=sn))
        self.se_2_16 = SLE(nfc[512], nfc[64], spectral_norm=sn, impl=impl)
        self.se_4_32 = SLE(nfc[256], nfc[32], spectral_norm=sn, impl=impl)
        self.se_8_64 = SLE(nfc[128], nfc[16], spectral_norm=sn, impl=impl)
        self.down_from_small = nn.Sequential(_conv(3, nfc[256], 4, 2, 1, sn=sn), nn.LeakyReLU(0.2, inplace=True),
                                             DownBlock(nfc[256], nfc[128], sn=sn), DownBlock(nfc[128], nfc[64], sn=sn),
                                             DownBlock(nfc[64], nfc[32], sn=sn))
        self.rf_small = _conv(nfc[32], 1, 4, 1, 0, sn=sn)
        self.decoder_base = max(1, ndf // 2)
        if self.has_decoders:
            for name, cin in self.decoder_inputs().items():
                setattr(self, f"decoder_{name}", SimpleDecoder(cin, self.decoder_base, sn=sn))

    def decoder_inputs(self) -> dict[str, int]:
        """{decoder name: input channels}: big (8x8 last big-branch feature), part (a quadrant of the 16x16 one),
        small (8x8 small-branch feature); module order of the reference."""
        return {"big": self.nfc[16], "part": self.nfc[32], "small": self.nfc[32]}

    def decoder_modules(self) -> dict[str, nn.Module]:
        """{name: SimpleDecoder} (empty with ``decoders=False``)."""
        return {f"decoder_{k}": getattr(self, f"decoder_{k}") for k in self.decoder_inputs() if self.has_decoders}

    def features(self, x) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the decoders' inputs ``{"big", "small", "f32"}`` (see the class docstring)."""
        if isinstance(x, torch.Tensor):
            big = x if x.shape[-1] == self.im_size else F.interpolate(x, size=self.im_size)
            small = x if x.shape[-1] == 128 else F.interpolate(x, size=128)
        else:
            big, small = x
        f2 = self.down_from_big(big)
        f4 = self.down_4(f2)
        f8 = self.down_8(f4)
        f16 = self.se_2_16(f2, self.down_16(f8))
        f32 = self.se_4_32(f4, self.down_32(f16))
        f_last = self.se_8_64(f8, self.down_64(f32))
        rf0 = self.rf_big(f_last).reshape(-1)
        f_small = self.down_from_small(small)
        rf1 = self.rf_small(f_small).reshape(-1)
        return torch.cat([rf0, rf1]), {"big": f_last, "small": f_small, "f32": f32}

    def forward(self, x, *, part: int | None = None):
        logits, f = self.features(x)
        if part is None:
            return logits
        if not self.has_decoders:
            return logits, ()
        recs = (self.decoder_big(f["big"]), self.decoder_small(f["small"]),
                self.decoder_part(crop_part(f["f32"], part)))
        return logits, recs


def weights_init(model: nn.Module) -> nn.Module:
    """Reference init: conv weights ~ N(0, 0.02) (into ``weight_orig`` under SN); BN weight ~ N(1, 0.02), bias 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = getattr(m, "weight_orig", None)
                (w if w is not None else m.weight).normal_(0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.02)
                m.bias.zero_()
    return model


@contextlib.contextmanager
def batch_stat_bn(model: nn.Module) -> Iterator[nn.Module]:
    """Run BatchNorm layers on batch statistics without touching their running stats (the reference samples G in
    train mode); everything else keeps its mode (spectral norm in eval: no power iteration)."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.training, m.track_running_stats))
            m.training, m.track_running_stats = True, False
    try:
        yield model
    finally:
        for m, tr, track in saved:
            m.training, m.track_running_stats = tr, track


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (SN's u/v are buffers, so they do not count)."""
    return sum(p.numel() for p in model.parameters())
