# SPDX-License-Identifier: BSD-3-Clause
"""DISP recipe: a GAN conditioned on data-instance priors (Mangla et al., WACV 2022); train/generate/eval/invert.

`python recipes/disp.py` (no arguments) trains on the embedded Twemoji smileys at 32x32 on the CPU in a few
minutes, then writes samples generated from vicinal and GMM priors next to the checkpoints.

Where this code and the paper differ (no official code exists; choices are ours, methods.md §4):

\b
  * priors: pooled VGG16 conv5_3 (512-d; the paper's DISP-Vgg16 uses the classifier's last layer, whose fc
    weights are not available offline) or EfficientNet-Lite0 pooled features (1280-d); SimCLR is not offered;
  * vicinal mix: c = lam*C(x_i) + (1-lam)*C(x_j), lam ~ U[0,1] by default (--vicinal sets the law);
  * priors are scaled to unit L2 norm by default (--prior-norm none keeps the raw features);
  * consistency regularisation (the paper adds it to DiffAugment) is off by default (--cr-weight);
    1 D step per G step by default;
  * the CPU preset (--ch 8, 32x32, 600 iterations) is far smaller than the paper's 128x128 SNGAN/BigGAN.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from ganops.models.disp import DispDiscriminator, DispGenerator
from ganops.models.gmm import GaussianMixture
from ganops.models.priors import (EXTRACTORS, VICINAL_LAWS, ImageIndex, _default_cache_dir, cached_priors,
                                  compute_priors, prior_cache_key, vicinal_sample)
from ganops.ops.diffaug import diff_augment
from ganops.train import (EMA, CheckpointError, RecipeGroup, TrainLoop, UserError, check_options, fixed_noise,
                          load_run_checkpoint, load_torch_file, save_grid, train_options)

ARCH_KEYS = ["resolution", "prior", "prior_norm", "ch", "z_dim", "embed_dim", "hierarchical", "baseline", "g_sn"]
PRESET = ("builtin:emoji (80 Twemoji smileys, CC-BY 4.0) at 32x32, batch 8, --ch 8, 600 iterations, VGG16 priors at "
          "128 px, on the CPU")


def build_models(cfg: dict, n_instances: int) -> tuple[DispGenerator, DispDiscriminator]:
    """G and D from a recipe config (``n_instances`` only matters for the --baseline embedding tables)."""
    dim = EXTRACTORS[cfg["prior"]][0]
    n = n_instances if cfg["baseline"] else None
    g = DispGenerator(cfg["resolution"], dim, z_dim=cfg["z_dim"], ch=cfg["ch"], embed_dim=cfg["embed_dim"],
                      hierarchical=cfg["hierarchical"], n_instances=n, spectral_norm=cfg["g_sn"])
    d = DispDiscriminator(cfg["resolution"], dim, ch=cfg["ch"], n_instances=n)
    return g, d


def _finite_priors(images: torch.Tensor, opts: dict, dev: torch.device, verbose: bool) -> tuple[torch.Tensor, bool]:
    """cached_priors, with a cache file holding NaN/Inf (damaged: priors of real images are finite) replaced by
    freshly computed priors, with a note."""
    kw = dict(size=opts["prior_size"], cache_dir=opts["cache_dir"], device=dev, progress=verbose)
    priors, hit = cached_priors(images, opts["prior"], **kw)
    if hit and not bool(torch.isfinite(priors).all()):
        key = prior_cache_key(images, opts["prior"], opts["prior_size"])  # cached_priors' file name
        name = f"disp-priors-{opts['prior']}-{opts['prior_size']}-{key}.pt"
        f = Path(opts["cache_dir"] or _default_cache_dir()) / name
        if verbose:
            click.echo(f"disp: note: the prior cache {f} holds NaN/Inf values (a damaged file); recomputing it")
        f.unlink(missing_ok=True)
        priors, hit = cached_priors(images, opts["prior"], **kw)
    if not bool(torch.isfinite(priors).all()):
        raise UserError(f"--prior {opts['prior']}: the extractor gave NaN/Inf priors for these images (damaged "
                        "extractor weights?); reinstall its package, or train with --baseline")
    return priors, hit


def _normalise(priors: torch.Tensor, how: str) -> torch.Tensor:
    return F.normalize(priors, dim=1) if how == "l2" else priors


def fit_gmm(priors: torch.Tensor, cfg: dict, seed: int) -> GaussianMixture:
    k = min(cfg["gmm_components"], priors.shape[0])
    return GaussianMixture(k, covariance_type=cfg["gmm_cov"], seed=seed, max_samples=cfg["gmm_max_samples"],
                           progress=True).fit(priors)


def draw_priors(mode: str, priors: torch.Tensor, n: int, cfg: dict, seed: int,
                gmm: GaussianMixture | None = None) -> torch.Tensor:
    """Conditions for generation: 'train' (training priors in order), 'vicinal' or 'gmm'."""
    g = torch.Generator().manual_seed(seed)
    if mode == "train":
        return priors[torch.arange(n) % priors.shape[0]]
    if mode == "vicinal":
        return vicinal_sample(priors, n, law=cfg["vicinal"], alpha=cfg["vicinal_alpha"], generator=g)[0]
    if mode == "gmm":
        return (gmm or fit_gmm(priors, cfg, seed)).sample(n, generator=g)[0].float()
    raise click.UsageError(f"--mode must be train|vicinal|gmm|image, got {mode!r}")


@click.group(cls=RecipeGroup, invoke_without_command=True, help=__doc__)
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:  # no arguments: train with the CPU preset
        click.echo(f"disp: no command given, training the default preset: {PRESET}")
        ctx.invoke(train)


@cli.command(help="Train G and D (hinge loss, Adam, EMA, DiffAugment) conditioned on instance priors.")
@train_options(resolution=32, batch=8, iters=600, snap=200, sample_every=200, workers=0)
@click.option("--prior", type=click.Choice(sorted(EXTRACTORS)), default="vgg16", show_default=True,
              help="prior extractor C: pooled VGG16 conv5_3 (512-d, paper's DISP-Vgg16) or EfficientNet-Lite0")
@click.option("--prior-size", type=click.IntRange(min=16), default=128, show_default=True,
              help="images are resized to this size before the extractor (ImageNet nets: 224; 128 is 3x cheaper)")
@click.option("--prior-norm", type=click.Choice(["l2", "none"]), default="l2", show_default=True,
              help="scale each prior to unit L2 norm (ours: keeps the projection term O(1); the paper is silent)")
@click.option("--cache-dir", default=None, help="prior cache directory [default: $GANOPS_CACHE or ~/.cache/ganops]")
@click.option("--baseline", is_flag=True, help="fair baseline: learnable embedding per image instead of priors")
@click.option("--hierarchical", is_flag=True, help="BigGAN-style hierarchical latent (z chunk per G block)")
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
@click.option("--diffaug", default="translation,cutout,color", show_default=True,
              help="DiffAugment policy ('' disables)")
@click.option("--cr-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="consistency regularisation of D on reals, w*(D(T(x)) - D(x))^2 with T the DiffAugment "
                   "(the paper uses CR with DiffAugment; off by default here)")
@click.option("--vicinal", type=click.Choice(VICINAL_LAWS), default="uniform", show_default=True,
              help="law of lam in the vicinal mix (ours: the paper does not state it)")
@click.option("--vicinal-alpha", type=float, default=0.2, show_default=True, help="Beta(a, a) for --vicinal beta")
@click.option("--gmm-components", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--gmm-cov", type=click.Choice(["diag", "full"]), default="diag", show_default=True)
@click.option("--gmm-max-samples", type=click.IntRange(min=1), default=200000, show_default=True,
              help="fit the GMM on a random subset of this many priors (paper: 200k)")
def train(**opts) -> dict:
    check_options(opts, power_of_two=True)
    if opts["resolution"] not in (32, 64, 128):
        raise click.UsageError(f"--resolution must be 32, 64 or 128 for DISP, got {opts['resolution']}")
    opts["betas"] = list(opts["betas"])
    loop = TrainLoop("disp", opts, arch_keys=ARCH_KEYS, resolutions=(32, 64, 128))
    cfg, dev = loop.config, loop.device
    ds = loop.dataset
    images = torch.stack([ds[i] for i in range(len(ds))])
    index = ImageIndex(images)
    if opts["baseline"]:
        priors = None
    else:
        priors, hit = _finite_priors(images, opts, dev, loop.is_main)
        if loop.is_main:
            click.echo(f"disp: {len(images)} priors {tuple(priors.shape)} from {opts['prior']} "
                       f"({'cache hit' if hit else 'computed and cached'})")
        priors = _normalise(priors, opts["prior_norm"]).to(dev)
    G, D = build_models(cfg, len(images))
    G, D = G.to(dev), D.to(dev)
    G_, D_ = loop.prepare(G), loop.prepare(D)
    n_fixed = min(16, len(images))
    z_fixed = fixed_noise(n_fixed, opts["z_dim"], seed=0, device=dev)
    idx_fixed = torch.arange(n_fixed, device=dev)
    policy = opts["diffaug"]

    def cond(idx: torch.Tensor) -> dict:
        return {"idx": idx} if priors is None else {"c": priors[idx]}

    ema = EMA(G, decay=opts["ema_decay"], warmup=max(1, opts["iters"] // 20))
    # Workaround (ganops.nn.spectral_norm + deepcopy): the first forward of the EMA copy writes the weight tensor
    # deep-copied from G back into weight_orig (its hook's weak reference still points at G's tensor). Run that
    # first forward now, while the copied tensor still equals weight_orig, so later EMA updates are never undone.
    with torch.no_grad():
        ema.module(z_fixed[:1], **cond(idx_fixed[:1]))
    opt_g = torch.optim.Adam(G.parameters(), opts["lr_g"], betas=tuple(opts["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), opts["lr_d"], betas=tuple(opts["betas"]))
    if opts["dry_run"]:
        return {}

    def aug(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policy) if policy else x

    def step(reals: torch.Tensor, it: int) -> dict:
        kw = cond(index(reals))  # fake pairs use the same instance prior as their real (paper)
        for _ in range(opts["d_steps"]):
            z = torch.randn(reals.shape[0], opts["z_dim"], device=dev)
            with loop.amp.autocast():
                fake = G_(z, **kw).detach()
                d_aug = D_(aug(reals), **kw)
                loss_d = F.relu(1 - d_aug).mean() + F.relu(1 + D_(aug(fake), **kw)).mean()
                if opts["cr_weight"] > 0:  # consistency: D's logit on the augmented real vs the clean real
                    loss_d = loss_d + opts["cr_weight"] * (d_aug - D_(reals, **kw)).square().mean()
            loop.check_finite({"loss_d": loss_d})
            opt_d.zero_grad(set_to_none=True)
            loop.amp.scale(loss_d).backward()
            loop.amp.step(opt_d)
        z = torch.randn(reals.shape[0], opts["z_dim"], device=dev)
        with loop.amp.autocast():
            loss_g = -D_(aug(G_(z, **kw)), **kw).mean()
        loop.check_finite({"loss_g": loss_g})
        opt_g.zero_grad(set_to_none=True)
        loop.amp.scale(loss_g).backward()
        loop.amp.step(opt_g)
        loop.amp.update()
        ema.update(G)
        return {"loss_d": loss_d, "loss_g": loss_g}

    def fakes(n: int, seed: int) -> torch.Tensor:  # --metrics: G_ema on vicinal priors, latents fixed by seed
        table = priors if priors is not None else ema.module.condition.instance_embed.weight.detach()
        c = vicinal_sample(table, n, law=opts["vicinal"], alpha=opts["vicinal_alpha"],
                           generator=torch.Generator().manual_seed(1_000_003 + seed))[0]
        return ema.module(fixed_noise(n, opts["z_dim"], seed=seed, device=dev), c.to(dev))

    out = loop.run(step, lambda it: ema.module(z_fixed, **cond(idx_fixed)), models={"G": G, "D": D},
                   optimizers={"G": opt_g, "D": opt_d}, ema={"G_ema": ema}, fakes=fakes)
    if loop.is_main:
        run = Path(out["run_dir"])
        table = priors if priors is not None else ema.module.condition.instance_embed.weight.detach()
        torch.save({"priors": table.cpu(), "extractor": opts["prior"], "size": opts["prior_size"]},
                   run / "priors.pt")
        _generate_after_training(run, ema.module, table, cfg, z_fixed)
    return out


@torch.no_grad()
def _generate_after_training(run: Path, g: DispGenerator, priors: torch.Tensor, cfg: dict, z: torch.Tensor) -> None:
    gmm = fit_gmm(priors, cfg, seed=cfg["seed"])
    torch.save(gmm.state_dict(), run / "gmm.pt")
    for mode in ("vicinal", "gmm"):
        c = draw_priors(mode, priors, z.shape[0], cfg, seed=1, gmm=gmm).to(z.device)
        save_grid(g(z, c), run / f"{mode}.png")
    click.echo(f"disp: GMM K={gmm.n_components} {gmm.covariance_type}: mean log-likelihood {gmm.lower_bound_:.3f} "
               f"after {gmm.n_iter_} EM iterations; samples from vicinal and GMM priors: {run}/vicinal.png, "
               f"{run}/gmm.png")


def _load_run(run: str, device: str) -> tuple[DispGenerator, torch.Tensor, dict, Path]:
    ck, run_dir = load_run_checkpoint(run, recipe="disp")
    cfg = ck["config"]
    pf = run_dir / "priors.pt"
    if not pf.is_file():
        raise CheckpointError(f"--run {run}: no priors.pt in {run_dir} (written at the end of training); finish the "
                              "run with `train --resume auto` and its --outdir")
    blob = load_torch_file(pf, f"--run {run}: {pf}", advice="it is written at the end of training: rerun the end "
                           "with `train --resume auto` and the run's --outdir")
    pri = blob.get("priors") if isinstance(blob, dict) else None
    if not isinstance(pri, torch.Tensor) or pri.ndim != 2 or not bool(torch.isfinite(pri).all()):
        raise CheckpointError(f"--run {run}: {pf} is damaged (no finite (N, dim) 'priors' tensor); it is written at "
                              "the end of training: rerun the end with `train --resume auto` and the run's --outdir")
    g, _ = build_models(cfg, pri.shape[0])
    g.load_state_dict(ck["ema"]["G_ema"]["module"])
    return g.to(device).eval(), pri.to(device), cfg, run_dir


@cli.command(help="Generate images from a trained run: training, vicinal or GMM priors, or the prior of an image "
                  "('semantic diffusion').")
@click.option("--run", "run", required=True, help="run directory (or checkpoint file) of a DISP training run")
@click.option("--mode", type=click.Choice(["train", "vicinal", "gmm", "image"]), default="vicinal",
              show_default=True)
@click.option("--image", default=None, help="--mode image: image file whose prior conditions every sample")
@click.option("--edit", type=click.Choice(["none", "cutout"]), default="none", show_default=True,
              help="--mode image: edit the image before taking its prior (semantic diffusion)")
@click.option("--n", type=click.IntRange(min=1), default=16, show_default=True, help="number of samples")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", default=None, help="output PNG grid [default: RUN/generate-MODE-SEED.png]")
@click.option("--device", default="cpu", show_default=True)
@torch.no_grad()
def generate(run: str, mode: str, image: str | None, edit: str, n: int, seed: int, out: str | None,
             device: str) -> None:
    g, pri, cfg, run_dir = _load_run(run, device)
    z = fixed_noise(n, cfg["z_dim"], seed=seed, device=device)
    if mode == "image":
        if image is None:
            raise click.UsageError("--mode image needs --image PATH")
        if cfg["baseline"]:
            raise click.UsageError("--mode image: a --baseline run has no prior extractor")
        from ganops.train import load_single_image

        x, _ = load_single_image(image, flag="--image")
        if edit == "cutout":  # zero a centred half-size square (the paper's CutOut edit)
            h, w = x.shape[-2:]
            x[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = 0
        c = compute_priors(x, cfg["prior"], size=cfg["prior_size"], progress=False)
        c = _normalise(c, cfg["prior_norm"]).to(device).expand(n, -1)
    else:
        gmm = None
        if mode == "gmm" and (run_dir / "gmm.pt").is_file():
            gmm = GaussianMixture.from_state_dict(load_torch_file(run_dir / "gmm.pt", f"--run {run}: gmm.pt"), device)
        c = draw_priors(mode, pri, n, cfg, seed, gmm).to(device)
    path = out or str(run_dir / f"generate-{mode}-{seed}.png")
    save_grid(g(z, c), path)
    click.echo(f"disp: wrote {n} samples ({mode} priors) to {path}")


@cli.command(help="FID/KID and precision/recall of G_ema samples against the training data (ganops.metrics).")
@click.option("--run", "run", required=True, help="run directory (or checkpoint file)")
@click.option("--mode", type=click.Choice(["train", "vicinal", "gmm"]), default="vicinal", show_default=True)
@click.option("--num", type=click.IntRange(min=2), default=None, help="images per set [default: dataset size]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@torch.no_grad()
def eval(run: str, mode: str, num: int | None, seed: int, device: str) -> dict:  # noqa: A001 - CLI verb
    from ganops.metrics.features import cached_features, inception_features
    from ganops.metrics.fid import fid_from_features, kid_from_features
    from ganops.metrics.prdc import precision_recall
    from ganops.train import open_dataset

    g, pri, cfg, run_dir = _load_run(run, device)
    ds = open_dataset(cfg["data"], cfg["resolution"], verbose=False)
    n = min(num or len(ds), len(ds))
    reals = torch.stack([ds[i] for i in range(n)])
    c = draw_priors(mode, pri, n, cfg, seed).to(device)
    fakes = torch.cat([g(fixed_noise(len(cb), cfg["z_dim"], seed=seed + k, device=device), cb)
                       for k, cb in enumerate(c.split(16))]).cpu()
    fr = cached_features(reals, progress=True, device=device)
    ff = inception_features(fakes, progress=True, device=device)
    kid = kid_from_features(fr, ff, subset_size=min(1000, n))
    prec, rec = precision_recall(fr, ff, k=min(3, n - 1))
    res = {"mode": mode, "num": n, f"fid{n}": fid_from_features(fr, ff), f"kid{n}": kid[0], "kid_std": kid[1],
           "precision": prec, "recall": rec}
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    click.echo(json.dumps(res))
    return res


@cli.command(help="Invert an image: optimise one prior per G block (and optionally z) to reconstruct it "
                  "(the paper: Adam, lr 0.1).")
@click.option("--run", "run", required=True, help="run directory (or checkpoint file)")
@click.option("--image", required=True, help="image to reconstruct (resized to the training resolution)")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--lr", type=float, default=0.1, show_default=True)
@click.option("--optimize-z/--fixed-z", default=False, show_default=True, help="also optimise the latent")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", default=None, help="output PNG (target | reconstruction) [default: RUN/invert-SEED.png]")
@click.option("--device", default="cpu", show_default=True)
def invert(run: str, image: str, steps: int, lr: float, optimize_z: bool, seed: int, out: str | None,
           device: str) -> dict:
    from ganops.train import load_single_image

    g, pri, cfg, run_dir = _load_run(run, device)
    g.requires_grad_(False)
    res = cfg["resolution"]
    x, _ = load_single_image(image, flag="--image")
    target = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True).to(device)
    z = fixed_noise(1, cfg["z_dim"], seed=seed, device=device).requires_grad_(optimize_z)
    # start every block from the training prior whose own sample is closest to the target
    with torch.no_grad():
        errs = torch.cat([(g(z.detach().expand(len(cb), -1), cb) - target).square().mean((1, 2, 3))
                          for cb in pri.split(32)])
    c = pri[errs.argmin()][None, None].repeat(1, len(g.blocks), 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([c, z] if optimize_z else [c], lr=lr)
    first = last = None
    for _ in range(steps):
        loss = (g(z, c) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.item()
        first = last if first is None else first
    with torch.no_grad():
        rec = g(z, c)
    path = out or str(run_dir / f"invert-{seed}.png")
    save_grid(torch.cat([target, rec]), path, nrow=2)
    torch.save({"priors": c.detach().cpu(), "z": z.detach().cpu()}, Path(path).with_suffix(".pt"))
    click.echo(f"disp: inversion MSE {first:.6f} -> {last:.6f} after {steps} steps; wrote {path}")
    return {"first": first, "last": last}


if __name__ == "__main__":
    cli()
