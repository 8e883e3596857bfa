# SPDX-License-Identifier: BSD-3-Clause
"""One FastGAN training iteration (reference losses) in the reference's or ganops' memory-saving step order."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.diffaug import diff_augment, diff_augment_params
from .fastgan import crop_part
from .step_order import STEP_ORDERS, check_step_order  # one definition for FastGAN and ConSinGAN

__all__ = ["RECON_LOSSES", "STEP_ORDERS", "make_recon_loss", "FastGANStep"]

RECON_LOSSES = ("lpips-vgg", "lpips-alex", "l1", "mse")


class _PixelRecon(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a - b).abs() if self.kind == "l1" else (a - b) ** 2
        return d.flatten(1).mean(1)


def make_recon_loss(kind: str, device: torch.device | str | None = None) -> nn.Module:
    """Per-sample reconstruction distance module ``(rec, target) -> (N, ...)`` for ``--recon-loss``.

    "lpips-vgg" is the reference's (LPIPS v0.1 on VGG16, offline weights); "lpips-alex" is cheaper; "l1"/"mse" are
    per-sample pixel means (not the reference: use them only where LPIPS is too slow).
    """
    if kind not in RECON_LOSSES:
        raise ValueError(f"--recon-loss must be one of {RECON_LOSSES}, got {kind!r}")
    if kind.startswith("lpips"):
        from ..metrics.lpips import LPIPS

        net = LPIPS(kind.split("-")[1])
        return net if device is None else net.to(device)
    return _PixelRecon(kind)


class FastGANStep:
    """The reference's iteration: hinge with a random [0.8, 1) margin per logit, three reconstruction terms summed
    over the batch (real pass only), one D step, then G loss ``-mean D(aug(fake))`` on the same fakes.

    All randomness of an iteration except G's noise injection (z, DiffAugment parameters of the real and of both
    fake heads, the quadrant ``part``, the margins, then the reals' flips) is drawn up front in a fixed order, and the
    D real pass uses no randomness, so ``order="ours"`` and ``order="reference"`` compute the same losses from the
    same RNG state.

    * ``order="reference"``: G forward; D real fwd/bwd; D fake fwd/bwd; D step; G step (G's graph is alive
      through both D passes, the real pass's LPIPS included).
    * ``order="ours"``: D real fwd/bwd first (no G graph alive at the largest peak), then G forward, D fake
      fwd/bwd on detached fakes, D step, G step with D's parameters frozen (their gradients are discarded by the
      reference anyway: it zeroes D's grads before the next D step), so no weight-gradient work for D.

    Args:
        G, D: the unwrapped modules (their parameters are optimised); G_, D_: callables to run (DDP / compiled
            wrappers), default G, D.
        opt_g, opt_d: optimisers. recon: distance module from :func:`make_recon_loss`.
        policy: DiffAugment policy (reference "color,translation"). order: "ours" | "reference".
        amp: ``ganops.train.Amp`` (autocast / scaler) or None. ema: ``ganops.train.EMA`` or None.
        check_finite: callback ``(dict) -> None`` run before each optimizer step (``TrainLoop.check_finite``).
        freeze_d: freeze D in the G step (default: ``order == "ours"``; keep False under DDP).
        impl: DiffAugment backend.
        hflip: mirror each real horizontally with probability 1/2 every iteration, before DiffAugment (the
            reference loader's ``RandomHorizontalFlip``); the flips are drawn last in :meth:`draw`, from the torch
            RNG (checkpointed: a resumed run draws the same flips), so without it every other draw is unchanged.

    A D built with ``decoders=False`` (the ablation) has no reconstruction terms: pass ``recon=None``; the real term
    is the hinge alone and ``d_rec`` is not reported.
    """

    def __init__(self, G: nn.Module, D: nn.Module, opt_g, opt_d, recon: nn.Module | None, *,
                 policy: str = "color,translation", order: str = "ours", amp=None, ema=None, G_: Callable | None = None,
                 D_: Callable | None = None, check_finite: Callable | None = None, freeze_d: bool | None = None,
                 impl: str = "auto", hflip: bool = False) -> None:
        check_step_order(order)
        self.decoders = bool(getattr(D, "has_decoders", True))
        if self.decoders and recon is None:
            raise ValueError("FastGANStep: D has decoders, so a reconstruction loss is needed (recon=None is for a D "
                             "built with decoders=False)")
        self.hflip = bool(hflip)
        self.G, self.D, self.G_, self.D_ = G, D, G_ or G, D_ or D
        self.opt_g, self.opt_d, self.recon, self.policy = opt_g, opt_d, recon, policy
        self.order, self.amp, self.ema, self.impl = order, amp, ema, impl
        self.check = check_finite or (lambda losses: None)
        self.freeze_d = (order == "ours") if freeze_d is None else freeze_d
        self.last: dict = {}

    # -- pieces --------------------------------------------------------------------------------------------------
    def draw(self, reals: torch.Tensor) -> dict:
        """All per-iteration random draws (torch RNG) in a fixed order."""
        b, dev = reals.shape[0], reals.device
        res_big, res_small = self.G.im_size, 128
        r = {"z": torch.randn(b, self.G.nz, device=dev)}
        if self.policy:
            r["aug_real"] = diff_augment_params(self.policy, reals.shape, device=dev, dtype=reals.dtype)
            r["aug_big"] = diff_augment_params(self.policy, (b, 3, res_big, res_big), device=dev, dtype=reals.dtype)
            r["aug_small"] = diff_augment_params(self.policy, (b, 3, res_small, res_small), device=dev,
                                                 dtype=reals.dtype)
        r["part"] = int(torch.randint(0, 4, (1,)).item())
        r["u_real"] = torch.rand(50 * b, device=dev)
        r["u_fake"] = torch.rand(50 * b, device=dev)
        if self.hflip:
            r["flip"] = torch.rand(b, device=dev) < 0.5
        return r

    @staticmethod
    def flip(reals: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``reals`` with the samples where ``mask`` is True mirrored left-right (no-op for ``mask=None``)."""
        return reals if mask is None else torch.where(mask.view(-1, 1, 1, 1), reals.flip(-1), reals)

    def _aug(self, x: torch.Tensor, params: dict | None) -> torch.Tensor:
        return x if params is None else diff_augment(x, self.policy, params=params, impl=self.impl)

    def _autocast(self):
        import contextlib

        return self.amp.autocast() if self.amp is not None else contextlib.nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.amp.scale(loss) if self.amp is not None else loss).backward()

    def _opt_step(self, opt) -> None:
        if self.amp is not None:
            self.amp.step(opt)
        else:
            opt.step()

    def d_real(self, reals: torch.Tensor, r: dict) -> dict:
        """Forward + backward of the real term: hinge + the three reconstruction losses (batch sums)."""
        if not self.decoders:
            return self._d_real_hinge(reals, r)
        with self._autocast():
            x = self._aug(self.flip(reals, r.get("flip")), r.get("aug_real"))
            logits, (rec_big, rec_small, rec_part) = self.D_(x, part=r["part"])
            x128 = F.interpolate(x, size=128)
            xp = F.interpolate(crop_part(x, r["part"]), size=128)
            hinge = F.relu(0.8 + 0.2 * r["u_real"] - logits.float()).mean()
            pairs = ((rec_big, x128), (rec_small, x128), (rec_part, xp))
            if self.order == "reference":
                rec = sum(self.recon(a.float(), b.float()).sum() for a, b in pairs)
                loss = hinge + rec
        if self.order == "reference":
            self._backward(loss)
        else:  # chain rule in two stages: each LPIPS graph is freed before the next one is built (same gradient)
            rec, surrogate = 0.0, (self.amp.scale(hinge) if self.amp is not None else hinge)
            for a, b in pairs:
                leaf = a.detach().float().requires_grad_(True)
                with self._autocast():
                    la = self.recon(leaf, b.detach().float()).sum()
                (ga,) = torch.autograd.grad(self.amp.scale(la) if self.amp is not None else la, leaf)
                rec = rec + la.detach()
                surrogate = surrogate + (a.float() * ga).sum()
                del leaf, la, ga
            surrogate.backward()
        return {"d_real": hinge.detach(), "d_rec": rec.detach(), "real_logit": logits.detach().float().mean()}

    def _d_real_hinge(self, reals: torch.Tensor, r: dict) -> dict:
        """The real term of a D without decoders: the hinge alone."""
        with self._autocast():
            logits = self.D_(self._aug(self.flip(reals, r.get("flip")), r.get("aug_real")))
            hinge = F.relu(0.8 + 0.2 * r["u_real"] - logits.float()).mean()
        self._backward(hinge)
        return {"d_real": hinge.detach(), "real_logit": logits.detach().float().mean()}

    def g_forward(self, r: dict) -> list[torch.Tensor]:
        with self._autocast():
            big, small = self.G_(r["z"])
            return [self._aug(big, r.get("aug_big")), self._aug(small, r.get("aug_small"))]

    def d_fake(self, fakes: list[torch.Tensor], r: dict) -> dict:
        with self._autocast():
            logits = self.D_([f.detach() for f in fakes])
            loss = F.relu(0.8 + 0.2 * r["u_fake"] + logits.float()).mean()
        self._backward(loss)
        return {"d_fake": loss.detach()}

    def g_step(self, fakes: list[torch.Tensor], losses: dict) -> dict:
        frozen = []
        if self.freeze_d:
            frozen = [p for p in self.D.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
        try:
            with self._autocast():
                loss_g = -self.D_(fakes).float().mean()
            self.check({**losses, "g": loss_g.detach()})
            self.opt_g.zero_grad(set_to_none=True)
            self._backward(loss_g)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        self._opt_step(self.opt_g)
        return {"g": loss_g.detach()}

    # -- the iteration -------------------------------------------------------------------------------------------
    def __call__(self, reals: torch.Tensor, rand: dict | None = None) -> dict:
        """One iteration on a batch of reals in [-1, 1]; returns the losses (tensors)."""
        r = rand if rand is not None else self.draw(reals)
        self.opt_d.zero_grad(set_to_none=True)
        if self.order == "reference":
            fakes = self.g_forward(r)
            losses = self.d_real(reals, r)
            losses.update(self.d_fake(fakes, r))
        else:
            losses = self.d_real(reals, r)
            fakes = self.g_forward(r)
            losses.update(self.d_fake(fakes, r))
        self.check({k: v for k, v in losses.items()})
        self._opt_step(self.opt_d)
        losses.update(self.g_step(fakes, losses))
        del fakes
        if self.amp is not None:
            self.amp.update()
        if self.ema is not None:
            self.ema.update(self.G)
        self.last = losses
        return losses
