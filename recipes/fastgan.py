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

import json
from pathlib import Path

import click
import torch

from ganops.models.fastgan import (RESOLUTIONS, FastGANDiscriminator, FastGANGenerator, batch_stat_bn,
                                   count_parameters, weights_init)
from ganops.models.fastgan_step import RECON_LOSSES, STEP_ORDERS, FastGANStep, make_recon_loss
from ganops.nn.spectral_norm import spectral_norm_group
from ganops.train import (EMA, RecipeGroup, TrainLoop, check_options, fixed_noise, load_run_checkpoint, save_grid,
                          train_options)
from ganops.train.distributed import wrap_ddp

ARCH_KEYS = ["resolution", "ngf", "ndf", "nz", "tanh"]
#: architecture keys added later: a checkpoint without them was trained with these values (TrainLoop arch_defaults)
ADDED_ARCH_KEYS = {"sle": True, "decoders": True}
HFLIPS = ("random", "copy", "off")
RESIZES = {"crop": "square", "stretch": "stretch"}
#: the no-argument CPU preset: overrides of `train`'s defaults (which are the reference's hyper-parameters).
PRESET_OPTS = dict(ngf=8, ndf=8, iters=800, recon_loss="l1", ema_warmup=10, snap=200, sample_every=100, workers=0)
PRESET = ("builtin:emoji (80 Twemoji smileys, CC-BY 4.0) at 256x256, the reference architecture at width "
          "ngf=ndf=8 (reference 64), batch 8, 800 iterations, --recon-loss l1 (reference: lpips-vgg), "
          "--ema-warmup 10; about 9-11 min on a 2-core CPU")
_TANH = {"auto": None, "on": True, "off": False}


def build_generator(cfg: dict) -> FastGANGenerator:
    return FastGANGenerator(cfg["resolution"], cfg["ngf"], cfg["nz"], tanh=_TANH[cfg["tanh"]],
                            sle=cfg.get("sle", True))


def build_discriminator(cfg: dict) -> FastGANDiscriminator:
    return FastGANDiscriminator(cfg["resolution"], cfg["ndf"], decoders=cfg.get("decoders", True))


def build_models(cfg: dict) -> tuple[FastGANGenerator, FastGANDiscriminator]:
    return weights_init(build_generator(cfg)), weights_init(build_discriminator(cfg))


def parameter_report(G: FastGANGenerator, D: FastGANDiscriminator) -> str:
    """Parameter counts of G and D with the parts the ablations drop (paper Table 2)."""
    sle = sum(count_parameters(m) for m in G.sle_modules().values())
    dec = sum(count_parameters(m) for m in D.decoder_modules().values())
    g = f"G {count_parameters(G):,} params " + (f"(SLE links {sle:,})" if G.sle else "(no SLE links: --no-sle)")
    d = f"D {count_parameters(D):,} params " + (f"(decoders {dec:,})" if D.has_decoders
                                                 else "(no decoders: --no-decoders)")
    return f"{g}, {d} at {G.im_size}^2"


def _replace_shared_option(name: str, option: click.Option):
    """Put ``option`` in place of the shared train option ``name`` (FastGAN's --hflip is a choice, not a flag)."""
    def deco(fn):
        params = fn.__click_params__
        i = next(i for i, p in enumerate(params) if p.name == name)
        params[i] = option
        return fn
    return deco


@click.group(cls=RecipeGroup, invoke_without_command=True, help=__doc__)
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(f"fastgan: no command given, training the default preset: {PRESET}")
        ctx.invoke(train, **PRESET_OPTS)


@cli.command(help="Train FastGAN (hinge with random margins + 3 reconstruction decoders, Adam, EMA, DiffAugment).")
@_replace_shared_option("hflip", click.Option(
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
@click.option("--tanh", type=click.Choice(list(_TANH)), default="auto", show_default=True,
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

    def sample(it: int) -> torch.Tensor:
        with batch_stat_bn(ema.module):
            return ema.module(z_fixed)[0].clamp(-1, 1)

    def fakes(n: int, seed: int) -> torch.Tensor:  # --metrics: G_ema on latents fixed by seed
        with batch_stat_bn(ema.module):
            return ema.module(fixed_noise(n, cfg["nz"], seed=seed, device=dev))[0].clamp(-1, 1)

    return loop.run(lambda reals, it: stepper(reals), sample, models={"G": G, "D": D},
                    optimizers={"G": opt_g, "D": opt_d}, ema={"G_ema": ema}, fakes=fakes)


def load_generator(run: str, device: str = "cpu") -> tuple[FastGANGenerator, dict, Path]:
    """The EMA generator of a run directory or checkpoint, its config and run dir."""
    ck, run_dir = load_run_checkpoint(run, recipe="fastgan")
    cfg = ck["config"]
    g = build_generator(cfg)
    g.load_state_dict(ck["ema"]["G_ema"]["module"])
    g.step = int(ck["step"])  # the checkpoint's training step
    return g.to(device).eval(), cfg, run_dir


def _run_g(g: FastGANGenerator, bn: str, *args, **kw):
    if bn == "batch":
        with batch_stat_bn(g):
            return g(*args, **kw)
    return g(*args, **kw)


def _seeds(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


_run_opt = click.option("--run", "run", required=True, help="run directory (or checkpoint file) of a training run")
_bn_opt = click.option("--bn", type=click.Choice(["batch", "running"]), default="batch", show_default=True,
                       help="BatchNorm statistics when sampling: batch (the reference samples in train mode) or "
                            "running")
_dev_opt = click.option("--device", default="cpu", show_default=True)


@cli.command(help="Images from seeds with the EMA generator (one PNG grid, or one file per seed with --per-image).")
@_run_opt
@click.option("--seeds", default="0-15", show_default=True, help="comma list of seeds and ranges, e.g. 0-7,42")
@click.option("--out", default=None, help="output PNG grid (or folder with --per-image) [default: RUN/generate.png]")
@click.option("--per-image", is_flag=True, help="write one PNG per seed into --out (a folder)")
@_bn_opt
@_dev_opt
@torch.no_grad()
def generate(run: str, seeds: str, out: str | None, per_image: bool, bn: str, device: str) -> str:
    g, cfg, run_dir = load_generator(run, device)
    ss = _seeds(seeds)
    z = torch.cat([fixed_noise(1, cfg["nz"], seed=s, device=device) for s in ss])
    imgs = torch.cat([_run_g(g, bn, zb)[0] for zb in z.split(16)]).clamp(-1, 1)
    path = out or str(run_dir / ("generate" if per_image else "generate.png"))
    if per_image:
        Path(path).mkdir(parents=True, exist_ok=True)
        for s, im in zip(ss, imgs):
            save_grid(im[None], Path(path) / f"seed{s:05d}.png", nrow=1)
    else:
        save_grid(imgs, path)
    click.echo(f"fastgan: wrote {len(ss)} images to {path}")
    return path


@cli.command(help="Style mixing (paper appendix C): content latents' main path, style latents' SLE inputs at the "
                  "chosen resolutions. Grid: row 0 = styles, column 0 = contents.")
@_run_opt
@click.option("--content-seeds", default="0-3", show_default=True)
@click.option("--style-seeds", default="10-13", show_default=True)
@click.option("--resolutions", default="64,128,256", show_default=True,
              help="SLE links (high resolution) whose low-res input comes from the style: 64,128,256[,512]")
@click.option("--out", default=None, help="output PNG [default: RUN/mix.png]")
@_bn_opt
@_dev_opt
@torch.no_grad()
def mix(run: str, content_seeds: str, style_seeds: str, resolutions: str, out: str | None, bn: str,
        device: str) -> str:
    g, cfg, run_dir = load_generator(run, device)
    res = [int(r) for r in resolutions.split(",") if r.strip()]
    links = g.sle_links()
    if not links:
        raise click.UsageError("this run's G has no SLE links (trained with --no-sle): style mixing swaps their inputs")
    bad = [r for r in res if r not in links]
    if bad:
        raise click.UsageError(f"--resolutions: {bad} are not SLE links of this {g.im_size}^2 G (use {links})")
    zc = torch.cat([fixed_noise(1, cfg["nz"], seed=s, device=device) for s in _seeds(content_seeds)])
    zs = torch.cat([fixed_noise(1, cfg["nz"], seed=s, device=device) for s in _seeds(style_seeds)])
    (content, _), (style, lows) = _run_g(g, bn, zc, return_lows=True), _run_g(g, bn, zs, return_lows=True)
    content, style = content[0], style[0]
    nc, ns = len(zc), len(zs)
    cells = [torch.full_like(content[:1], 1.0)] + list(style.split(1))
    for i in range(nc):
        cells.append(content[i:i + 1])
        for j in range(ns):  # the whole content batch per style keeps BN batch statistics those of the contents
            mixed = _run_g(g, bn, zc, lows={r: lows[g.SLE_LINKS[r]][j:j + 1].expand(nc, -1, -1, -1) for r in res})
            cells.append(mixed[0][i:i + 1])
    path = out or str(run_dir / "mix.png")
    save_grid(torch.cat(cells).clamp(-1, 1), path, nrow=ns + 1)
    click.echo(f"fastgan: style mixing at {res} ({nc} contents x {ns} styles) -> {path}")
    return path


def _real_set(cfg: dict, real: str | None):
    """The whole real set of a run (or --real) at its resolution and --resize, without mirrored copies."""
    from ganops.train import open_dataset

    return open_dataset(real or cfg["data"], cfg["resolution"], verbose=False, flag="--real",
                        resize=RESIZES[cfg.get("resize", "crop")], allow_upscale=bool(cfg.get("allow_upscale")),
                        skip_bad=bool(cfg.get("skip_bad")))


def _fakes_fn(g: FastGANGenerator, bn: str, z: torch.Tensor):
    return lambda n, s: _run_g(g, bn, z[s:s + n])[0].clamp(-1, 1)


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
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="seed of the latents")
@_bn_opt
@_dev_opt
@torch.no_grad()
def eval(run: str, real: str | None, num: int, all_checkpoints: bool, batch: int, seed: int, bn: str,  # noqa: A001
         device: str) -> dict:
    from ganops.metrics.features import cached_features
    from ganops.metrics.sweep import dataset_source, evaluate_generator, format_table, sweep_checkpoints

    g, cfg, run_dir = load_generator(run, device)
    src = dataset_source(_real_set(cfg, real), name=str(real or cfg["data"]))
    fr = cached_features(src, device=device)
    z = fixed_noise(num, cfg["nz"], seed=seed, device=device)
    settings = {"real": str(real or cfg["data"]), "real_sha256": src.fingerprint(), "seed": seed, "bn": bn,
                "batch": batch}
    if all_checkpoints:
        def load(path: Path):
            gk = load_generator(str(path), device)[0]
            return gk.step, _fakes_fn(gk, bn, z)

        cks = sorted(run_dir.glob("checkpoint-*.pt"))
        click.echo(f"fastgan: {len(cks)} checkpoint(s), {num} fakes each vs {len(fr)} reals")
        res = sweep_checkpoints(cks, load, fr, num, table=run_dir / "eval_checkpoints.json", settings=settings,
                                batch=batch, device=device, log=click.echo)
        click.echo(format_table(res["rows"], best=res["best"]))
        click.echo(f"fastgan: table written to {run_dir / 'eval_checkpoints.json'}")
        return res
    row = evaluate_generator(fr, _fakes_fn(g, bn, z), num, batch=batch, device=device)
    res = {"step": g.step, "num": num, **row, **settings}
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"source": "eval", **res}) + "\n")
    click.echo(json.dumps(res))
    return res


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
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", default=None, help="JSON of the results [default: FIRST_RUN/probe_decoders.json]")
@_dev_opt
def probe_decoders(runs: tuple[str, ...], iters: int, batch: int, recon_loss: str | None, eval_images: int,
                   seed: int, out: str | None, device: str) -> dict:
    from ganops.models.fastgan_probe import probe_decoders as probe
    from ganops.train import InfiniteLoader

    rows, recon, first_dir = [], None, None
    for run in runs:
        ck, run_dir = load_run_checkpoint(run, recipe="fastgan")
        cfg = ck["config"]
        first_dir = first_dir or run_dir
        recon_loss = recon_loss or cfg.get("recon_loss", "lpips-vgg")
        recon = recon or make_recon_loss(recon_loss, device)
        D = build_discriminator(cfg)
        D.load_state_dict(ck["models"]["D"])
        D = D.to(device)
        ds = _real_set(cfg, None)
        ev = torch.stack([ds[i] for i in range(min(eval_images, len(ds)))])
        res = probe(D, InfiniteLoader(ds, batch, seed=seed, device=device), recon, iters=iters, eval_images=ev,
                    seed=seed, log=click.echo)
        save_grid(res.pop("samples"), run_dir / "probe_decoders.png", nrow=min(8, len(ev)))
        rows.append({"run": str(run), "step": int(ck["step"]), "decoders_in_training": cfg.get("decoders", True),
                     "recon_loss": recon_loss, **res})
        click.echo(f"fastgan: {run}: D trained {'with' if rows[-1]['decoders_in_training'] else 'WITHOUT'} decoders, "
                   f"probe {recon_loss} after {iters} steps: " + "  ".join(f"{k}={v:.4g}"
                                                                          for k, v in res["eval"].items()))
    path = Path(out) if out else first_dir / "probe_decoders.json"
    path.write_text(json.dumps({"iters": iters, "batch": batch, "seed": seed, "rows": rows}, indent=1) + "\n")
    click.echo(f"fastgan: probe results written to {path}")
    return {"rows": rows, "path": str(path)}


if __name__ == "__main__":
    cli()
