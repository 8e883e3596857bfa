# SPDX-License-Identifier: BSD-3-Clause
"""DISP recipe: a GAN conditioned on data-instance priors (Mangla et al., WACV 2022); train/generate/eval/invert.

`python recipes/disp.py` (no arguments) trains on the embedded Twemoji smileys at 32x32 on the CPU in a few
minutes, then writes samples generated from vicinal and GMM priors next to the checkpoints. `train --preset
sngan128|biggan128|biggan32` sets the paper's settings (resolution, widths, lr, betas, D steps, batch, iterations,
DiffAugment color,translation,cutout + balanced consistency regularisation); options given explicitly win.

Where this code and the paper differ (no official code exists; choices are ours, methods.md §4):

\b
  * priors: pooled VGG16 conv5_3 (512-d) or EfficientNet-Lite0 pooled features (1280-d) stand in for the paper's
    prior (the VGG16 classifier's last layer, or SimCLR ResNet-50), whose weights are not available offline;
    the effect of this substitution on FID is not measured (the paper's prior cannot be computed here);
  * vicinal mix: c = lam*C(x_i) + (1-lam)*C(x_j), lam ~ U[0,1] by default (--vicinal sets the law);
  * priors are scaled to unit L2 norm by default (--prior-norm none keeps the raw features);
  * the CPU preset (the default: --ch 8, 32x32, 600 iterations, 1 D step, no consistency regularisation) is far
    smaller than the paper's 128x128 SNGAN/BigGAN (--preset);
  * the presets' iteration counts are ours (the paper's schedules are not stated where we could read them).
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from ganops.models.disp import DispGenerator
from ganops.train.disp import (ARCH_DEFAULTS, ARCH_KEYS, PRESETS, apply_preset, build_models, d_loss,
                                      after_training_samples, draw_priors, eval_dataset, evaluate, image_prior,
                                      invert_image, load_gmm, load_prior_table, normalise, save_prior_table,
                                      split_dataset, training_priors, with_arch_defaults)
from ganops.models.priors import EXTRACTORS, VICINAL_LAWS, ImageIndex, vicinal_sample
from ganops.ops.diffaug import diff_augment
from ganops.train import (EMA, RecipeGroup, TrainLoop, check_options, fixed_noise, load_run_checkpoint, load_state,
                          save_grid, train_options)
from ganops.train.commands import device_option, given, run_option, seed_option
from ganops.train.progress import append_jsonl
from ganops.train.samples import save_images

__all__ = ["cli", "build_models", "draw_priors", "ARCH_KEYS"]
PRESET = ("builtin:emoji (80 Twemoji smileys, CC-BY 4.0) at 32x32, batch 8, --ch 8, 600 iterations, VGG16 priors at "
          "128 px, on the CPU")
MODE_HELP = ("priors: train (the training priors), vicinal (their vicinal mix), gmm (samples of the run's GMM, gmm.pt: "
             "the mixture behind gmm.png; a run stopped before its end has none, so one is fitted, with a note)")


@click.group(cls=RecipeGroup, invoke_without_command=True, help=__doc__)
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:  # no arguments: train with the CPU preset
        click.echo(f"disp: no command given, training the default preset: {PRESET}")
        ctx.invoke(train)


@cli.command(help="Train G and D (hinge loss, Adam, EMA, DiffAugment) conditioned on instance priors. With "
                  "--metrics fid<N> the step with the lowest FID so far is kept as best.pt (+ best.json). --dry-run "
                  "reports without the image index pass or the prior extraction.")
@train_options(resolution=32, batch=8, iters=600, snap=200, sample_every=200, workers=0)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="cpu", show_default=True,
              help="the paper's settings: " + "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items())
                                                      for k, v in PRESETS.items() if k != "cpu")
              + " (explicit options win)")
@click.option("--prior", type=click.Choice(sorted(EXTRACTORS)), default="vgg16", show_default=True,
              help="prior extractor C: pooled VGG16 conv5_3 (512-d) or EfficientNet-Lite0 (1280-d). The paper's "
                   "DISP-Vgg16 takes the classifier's last layer, DISP-SimCLR a SimCLR ResNet-50: neither is "
                   "available offline; the effect of the substitute on FID is not measured")
@click.option("--prior-size", type=click.IntRange(min=16), default=128, show_default=True,
              help="images are resized to this size before the extractor (ImageNet nets: 224; 128 is 3x cheaper)")
@click.option("--prior-norm", type=click.Choice(["l2", "none"]), default="l2", show_default=True,
              help="scale each prior to unit L2 norm (ours: keeps the projection term O(1); the paper is silent)")
@click.option("--cache-dir", default=None, help="prior cache directory [default: $GANOPS_CACHE or ~/.cache/ganops]")
@click.option("--baseline", is_flag=True, help="fair baseline: learnable embedding per image instead of priors")
@click.option("--hierarchical", is_flag=True, help="BigGAN-style hierarchical latent (CBN input cat(W_G c, z chunk))")
@click.option("--cbn-z/--no-cbn-z", default=False, show_default=True,
              help="CBN input cat(W_G c, z) instead of the paper's W_G c (SNGAN); runs written before this option "
                   "resume with it on")
@click.option("--ch", type=click.IntRange(min=1), default=8, show_default=True,
              help="width multiplier (paper/BigGAN: 64; 8 keeps the default run to minutes on 2 CPU cores)")
@click.option("--z-dim", type=click.IntRange(min=1), default=120, show_default=True, help="latent size")
@click.option("--embed-dim", type=click.IntRange(min=1), default=128, show_default=True, help="size of W_G c")
@click.option("--g-sn/--no-g-sn", default=True, show_default=True, help="spectral norm in G (paper: yes)")
@click.option("--lr-g", type=float, default=2e-4, show_default=True)
@click.option("--lr-d", type=float, default=2e-4, show_default=True)
@click.option("--betas", type=(float, float), default=(0.0, 0.999), show_default=True, help="Adam betas")
@click.option("--d-steps", type=click.IntRange(min=1), default=1, show_default=True, help="D steps per G step")
@click.option("--ema-decay", type=click.FloatRange(0, 1, max_open=True), default=0.999, show_default=True)
@click.option("--diffaug", default="color,translation,cutout", show_default=True,
              help="DiffAugment policy, applied in this order (the official order; '' disables)")
@click.option("--cr-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="consistency regularisation of D, w*(D(T(x)) - D(x))^2 on reals, T the DiffAugment (the paper "
                   "uses CR with DiffAugment: the presets set 10)")
@click.option("--cr-fakes/--no-cr-fakes", default=False, show_default=True,
              help="the same CR term on fakes too (balanced CR, Zhao et al. 2020; on in the presets)")
@click.option("--eval-split", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="hold out this fraction of the images (seeded by --seed) for `eval`; 0 trains on all")
@click.option("--vicinal", type=click.Choice(VICINAL_LAWS), default="uniform", show_default=True,
              help="law of lam in the vicinal mix (ours: the paper does not state it)")
@click.option("--vicinal-alpha", type=float, default=0.2, show_default=True, help="Beta(a, a) for --vicinal beta")
@click.option("--gmm-components", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--gmm-cov", type=click.Choice(["diag", "full"]), default="diag", show_default=True)
@click.option("--gmm-max-samples", type=click.IntRange(min=1), default=200000, show_default=True,
              help="fit the GMM on a random subset of this many priors (paper: 200k)")
@click.pass_context
def train(ctx: click.Context, **opts) -> dict:
    apply_preset(opts, opts["preset"], lambda k: given(ctx, k))
    check_options(opts, power_of_two=True)
    if opts["resolution"] not in (32, 64, 128):
        raise click.UsageError(f"--resolution must be 32, 64 or 128 for DISP, got {opts['resolution']}")
    opts["betas"] = list(opts["betas"])
    opts.update(with_arch_defaults(opts))  # --hierarchical implies cbn_z (in config.json and on resume)
    data, attribution = ("auto", None) if not opts["eval_split"] else split_dataset(opts)
    loop = TrainLoop("disp", opts, arch_keys=ARCH_KEYS, arch_defaults=ARCH_DEFAULTS, resolutions=(32, 64, 128),
                     dataset=data, attribution=attribution)
    cfg, dev, ds = loop.config, loop.device, loop.dataset
    if opts["dry_run"]:  # seconds: neither the image index pass nor the prior extractor
        index, priors = None, None
        if loop.is_main and not opts["baseline"]:
            click.echo(f"disp: --dry-run: training would take the --prior {opts['prior']} priors of the {len(ds)} "
                       f"images at --prior-size {opts['prior_size']} from the prior cache, or compute them (whether "
                       "the cache holds them is known after the image index pass, skipped here)")
    elif opts["baseline"]:
        index, priors = ImageIndex(ds, progress=loop.is_main), None
    else:
        index, priors, hit = training_priors(ds, opts, dev, loop.is_main, log=click.echo)
        if loop.is_main:
            click.echo(f"disp: {len(ds)} priors {tuple(priors.shape)} from {opts['prior']} "
                       f"({'cache hit' if hit else 'computed and cached'})")
        priors = normalise(priors, opts["prior_norm"]).to(dev)
    G, D = build_models(cfg, len(ds))
    G, D = G.to(dev), D.to(dev)
    G_, D_ = loop.prepare(G), loop.prepare(D)
    n_fixed = min(16, len(ds))
    z_fixed = fixed_noise(n_fixed, opts["z_dim"], seed=0, device=dev)
    idx_fixed = torch.arange(n_fixed, device=dev)
    policy = opts["diffaug"]

    def cond(idx: torch.Tensor) -> dict:
        return {"idx": idx} if priors is None else {"c": priors[idx]}

    ema = EMA(G, decay=opts["ema_decay"], warmup=max(1, opts["iters"] // 20))
    opt_g = torch.optim.Adam(G.parameters(), opts["lr_g"], betas=tuple(opts["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), opts["lr_d"], betas=tuple(opts["betas"]))
    if opts["dry_run"]:  # the loop's report: run directory, sizes, parameter counts, the config after --preset
        return loop.run(lambda b, it: {}, models={"G": G, "D": D}, optimizers={}, fakes=lambda n, s: None)

    def aug(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policy) if policy else x

    def step(reals: torch.Tensor, it: int) -> dict:
        kw = cond(index(reals))  # fake pairs use the same instance prior as their real (paper)
        for _ in range(opts["d_steps"]):
            z = torch.randn(reals.shape[0], opts["z_dim"], device=dev)
            with loop.amp.autocast():
                loss_d = d_loss(D_, reals, G_(z, **kw).detach(), kw, aug, opts["cr_weight"], opts["cr_fakes"])
            loop.check_finite({"loss_d": loss_d})
            loop.amp.backward_step(loss_d, opt_d)
        z = torch.randn(reals.shape[0], opts["z_dim"], device=dev)
        with loop.amp.autocast():
            loss_g = -D_(aug(G_(z, **kw)), **kw).mean()
        loop.check_finite({"loss_g": loss_g})
        loop.amp.backward_step(loss_g, opt_g)
        loop.amp.update()
        ema.update(G)
        return {"loss_d": loss_d, "loss_g": loss_g}

    def fakes(n: int, seed: int) -> torch.Tensor:  # --metrics: G_ema on vicinal priors, latents fixed by seed
        table = priors if priors is not None else ema.module.condition.instance_embed.weight.detach()
        c = vicinal_sample(table, n, law=opts["vicinal"], alpha=opts["vicinal_alpha"],
                           generator=torch.Generator().manual_seed(1_000_003 + seed))[0]
        return ema.module(fixed_noise(n, opts["z_dim"], seed=seed, device=dev), c.to(dev))

    best = next((s.name for s in loop.metric_specs if s.kind == "fid"), None)
    out = loop.run(step, lambda it: ema.module(z_fixed, **cond(idx_fixed)), models={"G": G, "D": D},
                   optimizers={"G": opt_g, "D": opt_d}, ema={"G_ema": ema}, fakes=fakes, best=best)
    if loop.is_main:
        run = Path(out["run_dir"])
        table = priors if priors is not None else ema.module.condition.instance_embed.weight.detach()
        save_prior_table(run, table, opts)
        click.echo(after_training_samples(run, ema.module, table, cfg, z_fixed))
    return out


def _load_run(run: str, device: str) -> tuple[DispGenerator, torch.Tensor, dict, Path]:
    """(G_ema, prior table, config with ARCH_DEFAULTS filled in, run dir) of a finished run (``best.pt`` or any
    checkpoint file may be given)."""
    ck, run_dir = load_run_checkpoint(run, recipe="disp")
    cfg = with_arch_defaults(ck["config"])
    pri = load_prior_table(run_dir, run)
    g, _ = build_models(cfg, pri.shape[0])
    load_state(g, ck["ema"]["G_ema"]["module"], f"--run {run}: the EMA generator")
    return g.to(device).eval(), pri.to(device), cfg, run_dir


@cli.command(help="Generate images from a trained run: training, vicinal or GMM priors, or the prior of an image "
                  "('semantic diffusion'). --out DIR (no image suffix) writes one PNG per image, for external FID "
                  "tools.")
@run_option("run directory, checkpoint file or best.pt of a DISP training run")
@click.option("--mode", type=click.Choice(["train", "vicinal", "gmm", "image"]), default="vicinal",
              show_default=True, help=MODE_HELP + ", image (the prior of --image)")
@click.option("--image", default=None, help="--mode image: image file whose prior conditions every sample")
@click.option("--edit", type=click.Choice(["none", "cutout"]), default="none", show_default=True,
              help="--mode image: edit the image before taking its prior (semantic diffusion)")
@click.option("--num", "--n", "n", type=click.IntRange(min=1), default=16, show_default=True,
              help="number of samples")
@seed_option()
@click.option("--out", default=None, help="a .png/.jpg file: one grid; a directory: 000000.png, 000001.png, ... "
                                          "[default: RUN/generate-MODE-SEED.png]")
@device_option()
@torch.no_grad()
def generate(run: str, mode: str, image: str | None, edit: str, n: int, seed: int, out: str | None,
             device: str) -> None:
    g, pri, cfg, run_dir = _load_run(run, device)
    if mode == "image":
        if image is None:
            raise click.UsageError("--mode image needs --image PATH")
        if cfg["baseline"]:
            raise click.UsageError("--mode image: a --baseline run has no prior extractor")
        c = image_prior(image, cfg, edit=edit).to(device).expand(n, -1)
    else:
        gmm = load_gmm(run_dir, run, device, log=click.echo) if mode == "gmm" else None
        c = draw_priors(mode, pri, n, cfg, seed, gmm).to(device)
    path = out or str(run_dir / f"generate-{mode}-{seed}.png")
    if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg"):
        save_grid(g(fixed_noise(n, cfg["z_dim"], seed=seed, device=device), c), path)
    else:  # one file per image, in chunks (large N)
        for s, cb in zip(range(0, n, 64), c.split(64)):
            save_images(g(fixed_noise(len(cb), cfg["z_dim"], seed=seed + s, device=device), cb), path, start=s)
    click.echo(f"disp: wrote {n} samples ({mode} priors) to {path}")


@cli.command(help="The paper's protocol: FID/KID and precision/recall of G_ema samples against held-out images "
                  "(the run's --eval-split, or --eval-data DIR), the same number of generated and real images.")
@run_option("run directory, checkpoint file or best.pt")
@click.option("--mode", type=click.Choice(["train", "vicinal", "gmm"]), default="vicinal", show_default=True,
              help=MODE_HELP)
@click.option("--eval-data", default="auto", show_default=True,
              help="real images: 'auto' (the run's held-out --eval-split, else its training data, with a note), "
                   "'train' (the training data), or a folder of held-out images (resized like the training data)")
@click.option("--num", type=click.IntRange(min=2), default=None,
              help="images per set, generated = real [default: all real images]")
@click.option("--k-precision", type=click.IntRange(min=1), default=3, show_default=True,
              help="neighbours of the real manifold's balls (precision; Kynkäänniemi et al.: 3)")
@click.option("--k-recall", type=click.IntRange(min=1), default=3, show_default=True,
              help="neighbours of the generated manifold's balls (recall)")
@seed_option()
@device_option()
def eval(run: str, mode: str, eval_data: str, num: int | None, k_precision: int, k_recall: int, seed: int,
         device: str) -> dict:  # noqa: A001 - CLI verb
    g, pri, cfg, run_dir = _load_run(run, device)
    reals, label = eval_dataset(cfg, eval_data)
    if label == "train" and eval_data == "auto":
        click.echo("disp: note: the run holds no images out (--eval-split 0), so `eval` compares with the training "
                   "images; pass --eval-data DIR for held-out ones")
    gmm = load_gmm(run_dir, run, device, log=click.echo) if mode == "gmm" else None
    res = {"eval_data": label, **evaluate(g, pri, reals, cfg, mode=mode, num=num, seed=seed, gmm=gmm,
                                          k_precision=k_precision, k_recall=k_recall, device=device)}
    append_jsonl(run_dir / "metrics.jsonl", res)
    click.echo(json.dumps(res))
    return res


@cli.command(help="Invert an image: optimise one prior per G block (and optionally z) to reconstruct it "
                  "(the paper: Adam, lr 0.1).")
@run_option()
@click.option("--image", required=True, help="image to reconstruct (resized to the training resolution)")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--lr", type=float, default=0.1, show_default=True)
@click.option("--optimize-z/--fixed-z", default=False, show_default=True, help="also optimise the latent")
@seed_option()
@click.option("--out", default=None, help="output PNG (target | reconstruction) [default: RUN/invert-SEED.png]")
@device_option()
def invert(run: str, image: str, steps: int, lr: float, optimize_z: bool, seed: int, out: str | None,
           device: str) -> dict:
    from ganops.train import load_single_image

    g, pri, cfg, run_dir = _load_run(run, device)
    res = cfg["resolution"]
    x, _ = load_single_image(image, flag="--image")
    target = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True).to(device)
    z = fixed_noise(1, cfg["z_dim"], seed=seed, device=device)
    c, z, first, last = invert_image(g, pri, target, z, steps=steps, lr=lr, optimize_z=optimize_z)
    with torch.no_grad():
        rec = g(z, c)
    path = out or str(run_dir / f"invert-{seed}.png")
    save_grid(torch.cat([target, rec]), path, nrow=2)
    torch.save({"priors": c.detach().cpu(), "z": z.detach().cpu()}, Path(path).with_suffix(".pt"))
    click.echo(f"disp: inversion MSE {first:.6f} -> {last:.6f} after {steps} steps; wrote {path}")
    return {"first": first, "last": last}


if __name__ == "__main__":
    cli()
