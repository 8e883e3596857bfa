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
from .checkpoint import load_run_checkpoint, load_state
from .consingan import ConSinGANTrainer, trainer_config
from .samples import save_gif

__all__ = ["load_trainer", "paste", "random_walk_frames", "SWEEP_BETAS", "SWEEP_STARTS", "write_animations"]


def load_trainer(run: str, device: str = "cpu") -> tuple[ConSinGANTrainer, dict, Path]:
    """Rebuild a trained ConSinGAN from a run directory or checkpoint: (trainer, the run's config, run directory).
    A run stopped before its end is cut to the stages it has (the newest one partly trained), with a note: its
    samples, SIFID and composites are then at that stage's size."""
    st, rd = load_run_checkpoint(run, recipe="consingan")
    cfg = st["config"]
    ex = st["extra"]["stage"]
    t = ConSinGANTrainer(ex["reals"], trainer_config(cfg), device)
    load_state(t, ex, f"--run {run}: the trainer's stage state")
    load_state(t.G, st["models"]["G"], f"--run {run}: models['G']")
    load_state(t.D, st["models"]["D"], f"--run {run}: models['D']")
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
          train_depth: int | None = None, seed: int = 0) -> torch.Tensor:
    """Harmonise (``task`` "harmonize") or edit ("edit") ``naive`` (1, 3, H, W) in [-1, 1] through ``mask``
    (1, 1, H, W) in [0, 1], white where the object / edit is, as the reference's inference: G gets the naive image
    at the coarsest size as stage 0's input (plus 0.1 N(0, 1) test-time noise for editing) and the fixed
    reconstruction noise at stages >= 1; its output is composited over the training image through the mask
    dilated by a disk of 7 px (harmonisation) or 20 px (editing) and blurred (sigma 5). ``fine_tune`` > 0 first
    trains the last stage that many iterations on the naive image (:meth:`ConSinGANTrainer.start_fine_tune`, its
    last ``train_depth`` stages). The noise and fine-tuning draws come from ``seed``.

    Returns:
        (3, 3, H_last, W_last): the naive image, G's output and the composite, at the trained size.
    """
    torch.manual_seed(seed)
    big, small = imresize_to_shape(naive, t.shapes[-1]), imresize_to_shape(naive, t.shapes[0])
    m = F.interpolate(mask, size=t.shapes[-1], mode="bilinear", align_corners=False)
    noisy = task == "edit"
    if fine_tune:
        t.start_fine_tune((lambda r: small + 0.1 * torch.randn_like(small)) if noisy else (lambda r: small),
                          fine_tune, train_depth)
        for _ in range(fine_tune):
            losses = t.step()
        click.echo(f"consingan: fine-tuned the last stage for {fine_tune} iterations, its last "
                   f"{t.cfg['train_depth']} stages trained (loss_g {float(losses['loss_g']):.4f})")
    g = torch.Generator(t.device).manual_seed(seed)
    z0 = small + 0.1 * torch.randn(small.shape, generator=g, device=t.device) if noisy else small
    fake = t.reconstruct_from(z0)
    soft = prepare_mask(m, 7 if task == "harmonize" else 20, 5.0)
    return torch.cat([big, fake, composite(t.reals[-1], fake, soft)])


#: the reference's animation sweep (methods.md §3.6): alpha 0.1, these betas x start scales, 100 frames at 10 fps
SWEEP_BETAS, SWEEP_STARTS = (0.80, 0.85, 0.90, 0.95), (0, 1, 2)


def write_animations(t: ConSinGANTrainer, run_dir: Path, *, alpha: float, beta: float, start_scale: int,
                     frames: int, fps: float, seed: int, out: str | None = None, sweep: bool = False) -> list[str]:
    """GIFs of :func:`random_walk_frames`, every one from ``seed``: one (``out`` or
    ``run_dir/animation-a{alpha}-b{beta}-s{start}.gif``), or with ``sweep`` the reference's beta x start-scale sweep
    (the start scales the model has) into the folder ``out`` (default ``run_dir/animation``), a line per GIF (the
    sweep takes minutes at 250 px)."""
    folder = Path(out) if out and sweep else run_dir / "animation"
    jobs = ([(b, s, folder / f"animation-a{alpha:g}-b{b:g}-s{s}.gif") for b in SWEEP_BETAS for s in SWEEP_STARTS
             if s <= t.stage] if sweep else
            [(beta, start_scale, Path(out) if out else run_dir / f"animation-a{alpha:g}-b{beta:g}-s{start_scale}.gif")])
    if sweep:
        folder.mkdir(parents=True, exist_ok=True)
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
    if sweep:
        click.echo(f"consingan: wrote {len(paths)} GIFs ({frames} frames of {h}x{w} at {fps:g} fps, alpha {alpha:g}, "
                   f"beta x start scale) to {folder}")
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
