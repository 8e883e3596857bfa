# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN paper appendix B: fresh decoders trained on a frozen D's features, to measure what those features hold."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .fastgan import FastGANDiscriminator, SimpleDecoder, batch_stat_bn, crop_part, weights_init

__all__ = ["frozen_features", "make_probe_decoders", "probe_decoders"]


@contextlib.contextmanager
def frozen_features(D: FastGANDiscriminator) -> Iterator[Callable[[torch.Tensor], dict]]:
    """``features(x) -> {"big", "small", "f32"}`` of a frozen D: no gradients, BatchNorm on batch statistics (as D
    runs in training) without touching the running stats, spectral norm without a power iteration. D's parameters
    and buffers are left exactly as they were."""
    was = D.training
    D.eval()
    try:
        with batch_stat_bn(D):
            def features(x: torch.Tensor) -> dict:
                with torch.no_grad():
                    return D.features(x)[1]
            yield features
    finally:
        D.train(was)


def make_probe_decoders(D: FastGANDiscriminator, *, seed: int = 0) -> nn.ModuleDict:
    """Three fresh decoders (big, part, small) of the widths D's own would have, reference-initialised."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decs = nn.ModuleDict({k: SimpleDecoder(cin, D.decoder_base) for k, cin in D.decoder_inputs().items()})
        weights_init(decs)
    return decs


def _recs(decs: nn.ModuleDict, f: dict, x: torch.Tensor, part: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    x128 = F.interpolate(x, size=128)
    return [("big", decs["big"](f["big"]), x128), ("small", decs["small"](f["small"]), x128),
            ("part", decs["part"](crop_part(f["f32"], part)), F.interpolate(crop_part(x, part), size=128))]


def probe_decoders(D: FastGANDiscriminator, batches: Iterator[torch.Tensor], recon: nn.Module, *, iters: int,
                   eval_images: torch.Tensor, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                   seed: int = 0, eval_batch: int = 8, log: Callable[[str], None] | None = None) -> dict:
    """Train fresh decoders on a frozen D's features, then measure their reconstructions.

    The paper's appendix B check of its self-supervised D: freeze a trained D (one trained with the reconstruction
    task, one without: ``--no-decoders``), train the three decoders of the reference architecture on its features
    with D's loss (Σ_batch recon over big, small and a random quadrant), and compare how well each D's features
    reconstruct the images. D is not changed (see :func:`frozen_features`).

    Args:
        D: a trained discriminator (its own decoders, if any, are not used).
        batches: endless reals (B, 3, R, R) in [-1, 1] on D's device.
        recon: per-sample distance module (``make_recon_loss``).
        iters: Adam steps of the decoders.
        eval_images: (N, 3, R, R) reals the trained decoders are measured on (every quadrant for ``part``).
        lr, betas: Adam (the reference's). seed: decoder init and quadrant draws (own generator).

    Returns:
        ``{"iters", "first_loss", "last_loss"`` (training loss of the first and last step, batch sums),
        ``"eval": {"big", "small", "part", "mean"}`` (mean per-image distance on ``eval_images``),
        ``"samples"``: (3 rows x up to 8) images: reals at 128, big and small reconstructions}.
    """
    dev = next(D.parameters()).device
    decs = make_probe_decoders(D, seed=seed).to(dev).train()
    opt = torch.optim.Adam(decs.parameters(), lr, betas=betas)
    gen = torch.Generator().manual_seed(seed)
    first = last = float("nan")
    with frozen_features(D) as feats:
        for it in range(iters):
            x = next(batches)
            part = int(torch.randint(0, 4, (1,), generator=gen))
            loss = sum(recon(a.float(), b.float()).sum() for _, a, b in _recs(decs, feats(x), x, part))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
            first = last if it == 0 else first
            if log is not None and (it + 1) % max(1, iters // 10) == 0:
                log(f"probe: step {it + 1}/{iters}  loss {last:.4g}")
        sums = {"big": 0.0, "small": 0.0, "part": 0.0}
        samples = None
        with torch.no_grad(), batch_stat_bn(decs):
            for s in range(0, len(eval_images), eval_batch):
                x = eval_images[s:s + eval_batch].to(dev)
                f = feats(x)
                x128 = F.interpolate(x, size=128)
                rb, rs = decs["big"](f["big"]), decs["small"](f["small"])
                sums["big"] += float(recon(rb.float(), x128.float()).sum())
                sums["small"] += float(recon(rs.float(), x128.float()).sum())
                for part in range(4):
                    a, b = decs["part"](crop_part(f["f32"], part)), F.interpolate(crop_part(x, part), size=128)
                    sums["part"] += float(recon(a.float(), b.float()).sum()) / 4
                if samples is None:
                    samples = torch.cat([x128[:8], rb[:8], rs[:8]]).cpu()
    n = len(eval_images)
    ev = {k: v / n for k, v in sums.items()}
    ev["mean"] = sum(ev.values()) / 3
    return {"iters": iters, "first_loss": first, "last_loss": last, "eval": ev, "samples": samples}
