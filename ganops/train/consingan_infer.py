# SPDX-License-Identifier: BSD-3-Clause
"""What a trained ConSinGAN run is used for: rebuilding it from its checkpoint, harmonising / editing a naive image
(with optional fine-tuning), and the z random-walk animation."""
from __future__ import annotations

from pathlib import Path

import click
import torch
import torch.nn.functional as F

from ..models.consingan import imresize_to_shape
from ..models.consingan_aug import composite, prepare_mask
from .checkpoint import load_run_checkpoint
from .consingan import ConSinGANTrainer, trainer_config
from .samples import save_gif

__all__ = ["load_trainer", "paste", "random_walk_frames", "write_animations"]


def load_trainer(run: str, device: str = "cpu") -> tuple[ConSinGANTrainer, dict, Path]:
    """Rebuild a trained ConSinGAN from a run directory or checkpoint: (trainer, the run's config, run directory).
    A run stopped before its end is cut to the stages it has (the newest one partly trained), with a note: its
    samples, SIFID and composites are then at that stage's size."""
    st, rd = load_run_checkpoint(run, recipe="consingan")
    cfg = st["config"]
    ex = st["extra"]["stage"]
    t = ConSinGANTrainer(ex["reals"], trainer_config(cfg), device)
    t.load_state_dict(ex)
    t.G.load_state_dict(st["models"]["G"])
    t.D.load_state_dict(st["models"]["D"])
    if st["step"] < cfg["iters"]:
        if t.stage < 0:
            raise click.UsageError(f"--run {run}: the run has no trained stage yet (step {st['step']})")
        part = st["step"] - t.stage * cfg["niter"]
        planned = t.keep_trained_stages()
        h, w = t.shapes[-1]
        click.echo(f"consingan: note: this run stopped at step {st['step']} of {cfg['iters']}; using its "
                   f"{t.stage + 1} of {planned} stages"
                   + (f" (stage {t.stage} after {part} of {cfg['niter']} iterations)" if part < cfg["niter"] else "")
                   + f", so outputs are {h}x{w}; `train --resume auto` with the run's --outdir continues it")
    return t, cfg, rd


def paste(t: ConSinGANTrainer, task: str, naive: torch.Tensor, mask: torch.Tensor, *, fine_tune: int = 0,
          seed: int = 0) -> torch.Tensor:
    """Harmonise (``task`` "harmonize") or edit ("edit") ``naive`` (1, 3, H, W) in [-1, 1] through ``mask``
    (1, 1, H, W) in [0, 1], white where the object / edit is: G's output on the naive image (after ``fine_tune``
    iterations of the last stage on it), composited through the dilated (7 px / 20 px) and blurred mask.

    Returns:
        (3, 3, H_last, W_last): the naive image, G's output and the composite, at the trained size.
    """
    device = t.device
    torch.manual_seed(seed)
    big, small = imresize_to_shape(naive, t.shapes[-1]), imresize_to_shape(naive, t.shapes[0])
    m = F.interpolate(mask, size=t.shapes[-1], mode="bilinear", align_corners=False)
    if fine_tune:
        t.start_fine_tune((lambda r: small + 0.1 * torch.randn_like(small)) if task == "edit" else (lambda r: small))
        for _ in range(fine_tune):
            losses = t.step()
        click.echo(f"consingan: fine-tuned the last stage for {fine_tune} iterations "
                   f"(loss_g {float(losses['loss_g']):.4f})")
    fake = t.generate(1, stage0=small, generator=torch.Generator(device).manual_seed(seed))
    soft = prepare_mask(m, 7 if task == "harmonize" else 20, 5.0)
    return torch.cat([big, fake, composite(big, fake, soft)])


def write_animations(t: ConSinGANTrainer, jobs: list[tuple[float, int, Path]], *, frames: int, alpha: float,
                     fps: float, seed: int, sweep: bool) -> list[str]:
    """One GIF of :func:`random_walk_frames` per ``(beta, start_scale, path)`` job, every one from ``seed``; a line
    per GIF (the sweep takes minutes at 250 px)."""
    h, w = t.shapes[t.stage]
    paths = []
    for b, s, path in jobs:
        x = random_walk_frames(t, frames, alpha=alpha, beta=b, start_scale=s,
                               generator=torch.Generator(t.device).manual_seed(seed))
        save_gif(x, path, fps)
        paths.append(str(path))
        if not sweep:
            click.echo(f"consingan: wrote {frames} frames of {h}x{w} at {fps:g} fps (alpha {alpha:g}, beta {b:g}, "
                       f"start scale {s}) to {path}")
        else:
            click.echo(f"consingan: [{len(paths)}/{len(jobs)}] {path.name}")
    return paths


@torch.no_grad()
def random_walk_frames(trainer: ConSinGANTrainer, frames: int = 100, *, alpha: float = 0.1, beta: float = 0.9,
                       start_scale: int = 2, generator: torch.Generator | None = None, chunk: int = 16
                       ) -> torch.Tensor:
    """SinGAN's ``generate_gif`` z random walk on ConSinGAN's single generator: (frames, 3, H, W) in [-1, 1].

    Per stage d >= ``start_scale``, with Z = ``trainer.z_opt[d]`` and fresh N(0, 1) draws e of Z's shape:
    z_{-2} = Z, z_{-1} = 0.95 Z + 0.05 e_0, then per frame t
    diff = beta (z_{t-1} - z_{t-2}) + (1 - beta) e_t and z_t = alpha Z + (1 - alpha) (z_{t-1} + diff).
    Stages below ``start_scale`` get Z in every frame (their features are computed once); frame t is
    ``G([z_0(t), ..., z_S(t)], shapes, amps)`` (G scales stages >= 1 by their noise amplitude, stage 0 unscaled).
    Differences from SinGAN: the stage-0 draws are 3-channel N(0, 1), as ConSinGAN's ``sample_random_noise`` (SinGAN
    expands one channel to three), and no noise is drawn for the fixed stages. The draws go frame by frame (e_0 of
    every moving stage first, then per frame one e_t per moving stage, coarsest first), so a generator gives the
    same frames whatever ``chunk`` is (up to the batched convolutions' rounding).

    Args:
        trainer: a trained (or training) ConSinGANTrainer; its stages 0..``trainer.stage`` are used.
        frames: number of frames.
        alpha: pull back to Z (1: every frame is the reconstruction G(z_opt); the reference uses 0.1).
        beta: momentum of the walk, 0 <= beta < 1 (the reference sweeps 0.80, 0.85, 0.90, 0.95).
        start_scale: first moving stage, 0..number of stages (= number of stages: nothing moves).
        generator: torch.Generator on the trainer's device for the draws (None: the global RNG).
        chunk: frames per G forward (1 with BatchNorm, whose batch statistics would mix frames).
    """
    n_st = trainer.stage + 1
    if n_st < 1:
        raise ValueError("random_walk_frames: the trainer has no trained stage")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if not 0 <= start_scale <= n_st:
        raise ValueError(f"start_scale must be in 0..{n_st} (the model has stages 0..{n_st - 1}), got {start_scale}")
    G, shapes, amps = trainer.G, trainer.shapes[:n_st], trainer.amps[:n_st]
    zs = trainer.z_opt[:n_st]
    if start_scale == n_st:  # nothing moves: every frame is the reconstruction
        rec = G(zs, shapes, amps)
        return rec.expand(frames, *rec.shape[1:]).clone()
    chunk = 1 if trainer.cfg.get("batch_norm") else max(1, int(chunk))

    def draw(z: torch.Tensor) -> torch.Tensor:
        return torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)

    moving = range(start_scale, n_st)
    prev2 = {d: zs[d] for d in moving}
    prev1 = {d: 0.95 * zs[d] + 0.05 * draw(zs[d]) for d in moving}
    pre = G.features(zs, shapes, amps, start_scale - 1) if start_scale > 0 else None
    out = []
    for t0 in range(0, frames, chunk):
        n = min(chunk, frames - t0)
        walk: dict[int, list[torch.Tensor]] = {d: [] for d in moving}
        for _ in range(n):
            for d in moving:
                diff = beta * (prev1[d] - prev2[d]) + (1 - beta) * draw(zs[d])
                z = alpha * zs[d] + (1 - alpha) * (prev1[d] + diff)
                prev2[d], prev1[d] = prev1[d], z
                walk[d].append(z)
        noise = [torch.cat(walk[d]) if d >= start_scale else zs[d].expand(n, *zs[d].shape[1:]) for d in range(n_st)]
        prev = pre.expand(n, *pre.shape[1:]) if pre is not None else None
        out.append(G(noise, shapes, amps, start=start_scale, prev=prev))
    return torch.cat(out)
