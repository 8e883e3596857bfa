# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN recipe (Liu et al., ICLR 2021): train / generate / eval / mix, on ganops' fused ops and toolkit.

`python recipes/fastgan.py` (no arguments) trains the 256x256 architecture at reduced width on the embedded
Twemoji smileys on the CPU (preset printed at start), writing samples, checkpoints and stats.jsonl.
`python recipes/fastgan.py train` uses the reference's hyper-parameters (256^2 here; the reference defaults to 1024).

Where this code and the reference code (odegeasslbc/FastGAN-pytorch, methods.md §1) differ:

\b
  * the step order: by default D's real pass runs before G's forward (--step-order ours), so G's graph is not
    alive during the largest peak, and D is frozen during the G step; --step-order reference restores the
    reference's order. The losses are the same (all random draws are made up front in a fixed order);
  * the quadrant `part`, the hinge margins and DiffAugment draws use torch's RNG (the reference: Python random
    for `part`), and the data order is seeded (the reference reseeds numpy from OS entropy);
  * the EMA copies BN running stats and SN u/v from G (the reference's checkpoints also pair EMA params with raw
    buffers); samples use batch statistics like the reference's train-mode sampling (--bn batch) or the running
    stats (--bn running);
  * data: folders are read recursively; images are centre-cropped (--resize crop, the default: keeps aspect ratios)
    where the reference stretches them (--resize stretch, PIL bilinear, also offered); --hflip random (default)
    flips each real with p=1/2 every iteration as the reference does, drawn from the checkpointed torch RNG;
  * --tanh auto keeps the reference quirk (tanh only at 1024; raw outputs at 256/512); --tanh on squashes always;
  * --recon-loss l1|mse|lpips-alex are cheaper substitutes for the reference's LPIPS-VGG;
  * --g-checkpoint recomputes G's high-resolution blocks in the G step's backward (same numbers, less memory);
    with --precision fp16 it is the configuration that meets the speed and memory targets (docs/fastgan.md);
  * eval: the paper's protocol (5,000 fakes against the whole training set) with the standard FID Inception, at
    the training resolution (the reference's benchmarking/fid.py resizes to 256 first).

Paper ablations (Table 2): train --no-sle (no skip-layer excitation in G) and/or --no-decoders (D without the
self-supervised decoders); `eval --all-checkpoints` tables every checkpoint and marks the best FID (keep them all
with train --keep 0); `probe-decoders` is appendix B (decoders trained on a frozen D's features).
"""
from __future__ import annotations

import click
import torch

from ganops.models.fastgan import RESOLUTIONS
from ganops.models.fastgan_step import RECON_LOSSES, STEP_ORDERS, FastGANStep, make_recon_loss
from ganops.nn.spectral_norm import spectral_norm_group
from ganops.train import EMA, RecipeGroup, TrainLoop, check_options, fixed_noise, save_grid, train_options
from ganops.train.commands import SEEDS, device_option, replace_option, run_option, seed_latents, seed_option
from ganops.train.distributed import wrap_ddp
from ganops.train.fastgan import (ADDED_ARCH_KEYS, ARCH_KEYS, RESIZES, TANH, build_models, evaluate_run,
                                  load_generator, parameter_report, probe_runs, run_g, style_mix_grid)
from ganops.train.samples import save_images

HFLIPS = ("random", "copy", "off")
#: the no-argument CPU preset: overrides of `train`'s defaults (which are the reference's hyper-parameters).
PRESET_OPTS = dict(ngf=8, ndf=8, iters=800, recon_loss="l1", ema_warmup=10, snap=200, sample_every=100, workers=0)
PRESET = ("builtin:emoji (80 Twemoji smileys, CC-BY 4.0) at 256x256, the reference architecture at width "
          "ngf=ndf=8 (reference 64), batch 8, 800 iterations, --recon-loss l1 (reference: lpips-vgg), "
          "--ema-warmup 10; about 9-11 min on a 2-core CPU")


@click.group(cls=RecipeGroup, invoke_without_command=True, help=__doc__)
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(f"fastgan: no command given, training the default preset: {PRESET}")
        ctx.invoke(train, **PRESET_OPTS)


@cli.command(help="Train FastGAN (hinge with random margins + 3 reconstruction decoders, Adam, EMA, DiffAugment).")
@replace_option("hflip", click.Option(
    ["--hflip", "flip"], type=click.Choice(HFLIPS), default="random", show_default=True,
    help="random: mirror each real with p=1/2 every iteration (the reference's RandomHorizontalFlip; the draws come "
         "from the checkpointed torch RNG, so resume stays exact); copy: add a mirrored copy of every image to the "
         "dataset (StyleGAN's --mirror: the sampler decides the flips); off"))
@train_options(resolution=256, batch=8, iters=50000, snap=5000, sample_every=1000)
@click.option("--resize", type=click.Choice(list(RESIZES)), default="crop", show_default=True,
              help="crop: centre-crop to square, then Lanczos (keeps aspect ratios; the default, so a non-square "
                   "photo is not distorted); stretch: the reference's Resize((R, R)), PIL bilinear, aspect not kept. "
                   "Square images give the same geometry either way")
@click.option("--sle/--no-sle", default=True, show_default=True,
              help="G's skip-layer excitation links (--no-sle: the paper's ablation without them; D keeps its own)")
@click.option("--decoders/--no-decoders", default=True, show_default=True,
              help="D's three self-supervised decoders and their reconstruction loss (--no-decoders: the paper's "
                   "ablation; --recon-loss is then unused)")
@click.option("--keep", type=click.IntRange(min=0), default=3, show_default=True,
              help="checkpoints kept on disk (0: all, for `eval --all-checkpoints`, the paper's pick of the best)")
@click.option("--ngf", type=click.IntRange(min=2), default=64, show_default=True, help="G width")
@click.option("--ndf", type=click.IntRange(min=2), default=64, show_default=True, help="D width")
@click.option("--nz", type=click.IntRange(min=1), default=256, show_default=True, help="latent size")
@click.option("--tanh", type=click.Choice(list(TANH)), default="auto", show_default=True,
              help="output tanh: auto = reference quirk (only at 1024), on, off")
@click.option("--recon-loss", type=click.Choice(RECON_LOSSES), default="lpips-vgg", show_default=True,
              help="decoders' reconstruction loss, summed over the batch (lpips-vgg: the reference)")
@click.option("--policy", default="color,translation", show_default=True, help="DiffAugment policy ('' disables)")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Adam lr for G and D")
@click.option("--betas", type=(float, float), default=(0.5, 0.999), show_default=True, help="Adam betas")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True)
@click.option("--ema-warmup", type=click.IntRange(min=0), default=0, show_default=True,
              help="EMA decay min(decay, (1+n)/(W+n)) at update n (0: constant, the reference; short runs want ~10)")
@click.option("--step-order", type=click.Choice(STEP_ORDERS), default="ours", show_default=True,
              help="ours: D real pass before G's forward, D frozen in the G step (less memory, same losses)")
@click.option("--sn-group/--no-sn-group", default=True, show_default=True,
              help="update all spectral norms of G / D in one grouped call per forward")
@click.option("--g-checkpoint/--no-g-checkpoint", default=False, show_default=True,
              help="recompute G's blocks at 256^2 and above in the G step's backward instead of keeping them "
                   "(activation checkpointing: same losses and gradients, less memory, ~5-10% more G compute)")
@click.option("--n-sample", type=click.IntRange(min=1), default=16, show_default=True, help="images per fakes grid")
def train(**opts) -> dict:
    check_options(opts, power_of_two=True)
    if opts["resolution"] not in RESOLUTIONS:
        raise click.UsageError(f"--resolution must be one of {RESOLUTIONS} for FastGAN, got {opts['resolution']}")
    opts["betas"] = list(opts["betas"])
    opts["hflip"] = opts["flip"] == "copy"  # the toolkit's key: the dataset holds mirrored copies
    loop = TrainLoop("fastgan", opts, arch_keys=ARCH_KEYS, arch_defaults=ADDED_ARCH_KEYS, resolutions=RESOLUTIONS,
                     keep=opts["keep"] or (1 << 62))
    cfg, dev = loop.config, loop.device
    loop.dataset.set_resize(RESIZES[opts["resize"]])
    G, D = build_models(cfg)
    G.checkpoint = opts["g_checkpoint"]
    G, D = G.to(dev), D.to(dev)
    if loop.is_main:
        n = len(loop.dataset.items)
        click.echo(f"fastgan: {parameter_report(G, D)}, ngf={cfg['ngf']} ndf={cfg['ndf']}")
        click.echo(f"fastgan: data {n} images -> {len(loop.dataset)} items; --hflip {opts['flip']}, --resize "
                   f"{opts['resize']}")
    if opts["sn_group"]:
        spectral_norm_group(G)
        spectral_norm_group(D)
    G_ = loop.prepare(G)
    D_ = loop.prepare(D, ddp_wrap=False)
    if loop.dist.distributed:  # decoders only run on reals: DDP must tolerate unused parameters
        D_ = wrap_ddp(D_, loop.dist, find_unused_parameters=True)
    ema = EMA(G, decay=opts["ema_decay"], warmup=opts["ema_warmup"])
    opt_g = torch.optim.Adam(G.parameters(), opts["lr"], betas=tuple(opts["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), opts["lr"], betas=tuple(opts["betas"]))
    recon = make_recon_loss(opts["recon_loss"], dev) if opts["decoders"] else None
    if opts["dry_run"]:
        return {}
    stepper = FastGANStep(G, D, opt_g, opt_d, recon, policy=opts["policy"], order=opts["step_order"], amp=loop.amp,
                          ema=ema, G_=G_, D_=D_, check_finite=loop.check_finite, hflip=opts["flip"] == "random",
                          freeze_d=(opts["step_order"] == "ours" and not loop.dist.distributed))
    z_fixed = fixed_noise(opts["n_sample"], cfg["nz"], seed=0, device=dev)

    def sample(it: int) -> torch.Tensor:  # G_ema on BatchNorm batch statistics, like the reference's samples
        return run_g(ema.module, "batch", z_fixed)[0].clamp(-1, 1)

    def fakes(n: int, seed: int) -> torch.Tensor:  # --metrics: G_ema on latents fixed by seed
        return run_g(ema.module, "batch", fixed_noise(n, cfg["nz"], seed=seed, device=dev))[0].clamp(-1, 1)

    return loop.run(lambda reals, it: stepper(reals), sample, models={"G": G, "D": D},
                    optimizers={"G": opt_g, "D": opt_d}, ema={"G_ema": ema}, fakes=fakes)


_run_opt = run_option()
_bn_opt = click.option("--bn", type=click.Choice(["batch", "running"]), default="batch", show_default=True,
                       help="BatchNorm statistics when sampling: batch (the reference samples in train mode) or "
                            "running")
_dev_opt = device_option()


@cli.command(help="Images from seeds with the EMA generator (one PNG grid, or one file per seed with --per-image).")
@_run_opt
@click.option("--seeds", type=SEEDS, default="0-15", show_default=True,
              help="comma list of seeds and ranges, e.g. 0-7,42")
@click.option("--out", default=None, help="output PNG grid (or folder with --per-image) [default: RUN/generate.png]")
@click.option("--per-image", is_flag=True, help="write one PNG per seed into --out (a folder)")
@_bn_opt
@_dev_opt
@torch.no_grad()
def generate(run: str, seeds: list[int], out: str | None, per_image: bool, bn: str, device: str) -> str:
    g, cfg, run_dir = load_generator(run, device)
    z = seed_latents(seeds, cfg["nz"], device)
    imgs = torch.cat([run_g(g, bn, zb)[0] for zb in z.split(16)]).clamp(-1, 1)
    path = out or str(run_dir / ("generate" if per_image else "generate.png"))
    if per_image:
        save_images(imgs, path, names=[f"seed{s:05d}" for s in seeds])
    else:
        save_grid(imgs, path)
    click.echo(f"fastgan: wrote {len(seeds)} images to {path}")
    return path


@cli.command(help="Style mixing (paper appendix C): content latents' main path, style latents' SLE inputs at the "
                  "chosen resolutions. Grid: row 0 = styles, column 0 = contents.")
@_run_opt
@click.option("--content-seeds", type=SEEDS, default="0-3", show_default=True)
@click.option("--style-seeds", type=SEEDS, default="10-13", show_default=True)
@click.option("--resolutions", default="64,128,256", show_default=True,
              help="SLE links (high resolution) whose low-res input comes from the style: 64,128,256[,512]")
@click.option("--out", default=None, help="output PNG [default: RUN/mix.png]")
@_bn_opt
@_dev_opt
@torch.no_grad()
def mix(run: str, content_seeds: list[int], style_seeds: list[int], resolutions: str, out: str | None, bn: str,
        device: str) -> str:
    g, cfg, run_dir = load_generator(run, device)
    res = [int(r) for r in resolutions.split(",") if r.strip()]
    links = g.sle_links()
    if not links:
        raise click.UsageError("this run's G has no SLE links (trained with --no-sle): style mixing swaps their inputs")
    bad = [r for r in res if r not in links]
    if bad:
        raise click.UsageError(f"--resolutions: {bad} are not SLE links of this {g.im_size}^2 G (use {links})")
    zc, zs = (seed_latents(ss, cfg["nz"], device) for ss in (content_seeds, style_seeds))
    nc, ns = len(zc), len(zs)
    path = out or str(run_dir / "mix.png")
    save_grid(style_mix_grid(g, zc, zs, res, bn), path, nrow=ns + 1)
    click.echo(f"fastgan: style mixing at {res} ({nc} contents x {ns} styles) -> {path}")
    return path


@cli.command(help="FID, KID and precision/recall (k=3) of --num EMA-generator fakes against the whole training set "
                  "(or --real), with the standard FID Inception: the paper's protocol is --num 5000. One checkpoint "
                  "(the run's latest, or the file given), or with --all-checkpoints every checkpoint of the run in "
                  "one table (RUN/eval_checkpoints.json, the best FID marked; resumable).")
@_run_opt
@click.option("--real", default=None, help="real images: folder or builtin:NAME [default: the run's --data]")
@click.option("--num", type=click.IntRange(min=2), default=5000, show_default=True,
              help="generated images (as many as asked, whatever the number of reals; paper: 5000)")
@click.option("--all-checkpoints", is_flag=True, help="every checkpoint-*.pt of the run (train --keep 0 keeps all)")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="fakes per G forward (BatchNorm batch statistics with --bn batch; the reference's eval: 16)")
@seed_option("seed of the latents")
@_bn_opt
@_dev_opt
@torch.no_grad()
def eval(run: str, real: str | None, num: int, all_checkpoints: bool, batch: int, seed: int, bn: str,  # noqa: A001
         device: str) -> dict:
    return evaluate_run(run, real=real, num=num, all_checkpoints=all_checkpoints, batch=batch, seed=seed, bn=bn,
                        device=device, log=click.echo)


@cli.command("probe-decoders", help="Paper appendix B: freeze each run's D, train three fresh decoders (the "
                                    "reference's) on its features, and report their reconstruction error on the "
                                    "training images. Compare a run with a run trained --no-decoders: the "
                                    "self-supervised D's features should reconstruct better (lower).")
@click.option("--run", "runs", required=True, multiple=True, help="run directory or checkpoint (repeatable)")
@click.option("--iters", type=click.IntRange(min=1), default=2000, show_default=True, help="decoder Adam steps")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--recon-loss", type=click.Choice(RECON_LOSSES), default=None,
              help="distance to train and report with [default: the first run's --recon-loss]")
@click.option("--eval-images", type=click.IntRange(min=1), default=256, show_default=True,
              help="training images the trained decoders are measured on (the first N)")
@seed_option()
@click.option("--out", default=None, help="JSON of the results [default: FIRST_RUN/probe_decoders.json]")
@_dev_opt
def probe_decoders(runs: tuple[str, ...], iters: int, batch: int, recon_loss: str | None, eval_images: int,
                   seed: int, out: str | None, device: str) -> dict:
    return probe_runs(runs, iters=iters, batch=batch, recon_loss=recon_loss, eval_images=eval_images, seed=seed,
                      out=out, device=device, log=click.echo)


if __name__ == "__main__":
    cli()
