# SPDX-License-Identifier: BSD-3-Clause
"""DISP training pieces used by ``recipes/disp.py``: presets, model building from a run config, the D loss with
consistency regularisation, the held-out split, prior drawing and the evaluation protocol."""
from __future__ import annotations

import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .._io import atomic_write
from ..metrics.sweep import dataset_source
from ..models.disp import DispDiscriminator, DispGenerator
from ..models.gmm import GaussianMixture
from ..models.priors import EXTRACTORS, ImageIndex, cached_priors, compute_priors, vicinal_sample
from .checkpoint import CheckpointError, load_torch_file
from .data import load_single_image, open_dataset
from .errors import UserError
from .samples import fixed_noise, save_grid

__all__ = ["ARCH_KEYS", "ARCH_DEFAULTS", "PRESETS", "apply_preset", "build_models", "with_arch_defaults",
           "d_loss", "split_indices", "fit_gmm", "draw_priors", "evaluate", "training_priors",
           "split_dataset", "eval_dataset", "load_prior_table", "save_prior_table", "load_gmm",
           "after_training_samples", "invert_image", "normalise", "image_prior"]

ARCH_KEYS = ["resolution", "prior", "prior_norm", "ch", "z_dim", "embed_dim", "hierarchical", "baseline", "g_sn",
             "cbn_z", "eval_split"]
#: values of architecture keys added after runs were written: a config without the key was trained with this
#: (cbn_z: the CBN read cat(W_G c, z) before the paper's W_G c became the default; eval_split: no held-out images).
ARCH_DEFAULTS = {"cbn_z": True, "eval_split": 0.0}

# The paper's settings (methods.md §4: SNGAN 128² few-shot, BigGAN 128² limited data, BigGAN on CIFAR at 32²) with
# DiffAugment color,translation,cutout and balanced consistency regularisation (weight 10 on reals and fakes, as the
# DiffAugment BigGAN-CIFAR CR scripts). Optimiser, D steps and batch follow the SNGAN (Miyato & Koyama 2018) and
# BigGAN (Brock et al. 2019; DiffAugment-biggan-cifar) reference settings; the DISP paper's own schedules are not
# stated in the spec, so the iteration counts are ours.
_PAPER = dict(diffaug="color,translation,cutout", cr_weight=10.0, cr_fakes=True, hflip=True, prior_size=224,
              ema_decay=0.9999)
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(resolution=32, batch=8, iters=600, ch=8, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.999), d_steps=1),
    "sngan128": dict(_PAPER, resolution=128, batch=64, iters=100000, ch=64, z_dim=128, lr_g=2e-4, lr_d=2e-4,
                     betas=(0.0, 0.9), d_steps=5, hierarchical=False),
    "biggan128": dict(_PAPER, resolution=128, batch=256, iters=100000, ch=96, z_dim=120, lr_g=1e-4, lr_d=4e-4,
                      betas=(0.0, 0.999), d_steps=1, hierarchical=True),
    "biggan32": dict(_PAPER, resolution=32, batch=50, iters=100000, ch=64, z_dim=128, lr_g=2e-4, lr_d=2e-4,
                     betas=(0.0, 0.999), d_steps=4, hierarchical=False),
}


def apply_preset(opts: dict, name: str, explicit: Callable[[str], bool]) -> dict:
    """``opts`` with the preset's values for every option not given explicitly (``explicit(key)``). 'cpu' is the
    options' own defaults, so it changes nothing (also when the command is invoked without a command line)."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {name!r}")
    if name == "cpu":
        return opts
    for k, v in PRESETS[name].items():
        if not explicit(k):
            opts[k] = list(v) if isinstance(v, tuple) else v
    return opts


def with_arch_defaults(cfg: dict) -> dict:
    """A run config with :data:`ARCH_DEFAULTS` filled in for keys it lacks (runs written before they existed), and
    ``cbn_z`` on for a ``hierarchical`` run (each CBN then reads its own latent chunk, so its input holds z). The one
    place of that rule: ``train`` applies it before the config is written or compared on resume, and
    :func:`build_models` to every config it builds from, so new runs and old configs agree."""
    cfg = {**ARCH_DEFAULTS, **cfg}
    if cfg.get("hierarchical"):
        cfg["cbn_z"] = True
    return cfg


def build_models(cfg: dict, n_instances: int) -> tuple[DispGenerator, DispDiscriminator]:
    """G and D from a recipe config (``n_instances`` only matters for the --baseline embedding tables)."""
    cfg = with_arch_defaults(cfg)
    dim = EXTRACTORS[cfg["prior"]][0]
    n = n_instances if cfg["baseline"] else None
    g = DispGenerator(cfg["resolution"], dim, z_dim=cfg["z_dim"], ch=cfg["ch"], embed_dim=cfg["embed_dim"],
                      hierarchical=cfg["hierarchical"], n_instances=n, spectral_norm=cfg["g_sn"],
                      cbn_z=bool(cfg["cbn_z"]) and not cfg["hierarchical"])  # the model's cbn_z: the whole latent
    d = DispDiscriminator(cfg["resolution"], dim, ch=cfg["ch"], n_instances=n)
    return g, d


def d_loss(D: Callable[..., torch.Tensor], reals: torch.Tensor, fakes: torch.Tensor, kw: dict,
           aug: Callable[[torch.Tensor], torch.Tensor], cr_weight: float = 0.0, cr_fakes: bool = False
           ) -> torch.Tensor:
    """Hinge loss of D on augmented reals/fakes paired with the same priors ``kw``, plus consistency
    regularisation ``w·(D(T(x)) − D(x))²`` on reals (CR) and, with ``cr_fakes``, the same on fakes (balanced CR,
    Zhao et al. 2020), T the DiffAugment."""
    d_real, d_fake = D(aug(reals), **kw), D(aug(fakes), **kw)
    loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    if cr_weight > 0:
        loss = loss + cr_weight * (d_real - D(reals, **kw)).square().mean()
        if cr_fakes:
            loss = loss + cr_weight * (d_fake - D(fakes, **kw)).square().mean()
    return loss


def split_indices(n_images: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train, held-out) image indices: a seeded random ``fraction`` of ``n_images`` held out (at least one image
    each side when ``fraction`` > 0); ``fraction`` 0 holds out nothing."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--eval-split must be in [0, 1), got {fraction}")
    if fraction == 0:
        return list(range(n_images)), []
    k = min(max(1, round(fraction * n_images)), n_images - 1)
    if k < 1:
        raise ValueError(f"--eval-split {fraction}: {n_images} image(s) cannot be split into train and held-out")
    perm = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[k:]), sorted(perm[:k])


def training_priors(dataset: Any, opts: dict, device: torch.device, verbose: bool, log: Callable[[str], None] = print
                    ) -> tuple[ImageIndex, torch.Tensor, bool]:
    """One streaming pass over ``dataset`` for the image index, then the priors (cached on disk, computed batch by
    batch on a miss; a damaged cache entry, e.g. one holding NaN/Inf, is recomputed with a note through ``log``).
    Returns (index, priors (N, dim) on the CPU, cache hit)."""

    index = ImageIndex(dataset, num_workers=opts.get("workers", 0), progress=verbose)
    priors, hit = cached_priors(dataset, opts["prior"], size=opts["prior_size"], cache_dir=opts["cache_dir"],
                                device=device, progress=verbose, key=index.digest,
                                num_workers=opts.get("workers", 0), log=log if verbose else None)
    if not bool(torch.isfinite(priors).all()):
        raise UserError(f"--prior {opts['prior']}: the extractor gave NaN/Inf priors for these images (damaged "
                        "extractor weights?); reinstall its package, or train with --baseline")
    return index, priors, hit


def _open(spec: str, cfg: dict, *, hflip: bool = False, verbose: bool = False, flag: str = "--data") -> Any:

    return open_dataset(spec, cfg["resolution"], hflip=hflip, allow_upscale=bool(cfg.get("allow_upscale")),
                        skip_bad=bool(cfg.get("skip_bad")), verbose=verbose, flag=flag, resolutions=(32, 64, 128))


def split_dataset(opts: dict) -> tuple[Any, str | None]:
    """``--eval-split``: (the training images without the held-out ones, and their mirrors with --hflip; the data
    set's attribution). Rank 0 reports the split."""
    verbose = os.environ.get("RANK", "0") == "0"
    ds = _open(opts["data"], opts, hflip=bool(opts.get("hflip")), verbose=verbose)
    n = len(ds.items)
    train_idx, held = split_indices(n, opts["eval_split"], seed=opts["seed"])
    if verbose:
        print(f"disp: --eval-split {opts['eval_split']}: {len(held)} of {n} images held out for `eval`")
    if not opts.get("dry_run"):
        ds.preload()
    keep = train_idx + ([i + n for i in train_idx] if ds.hflip else [])
    return Subset(ds, keep), ds.attribution


def eval_dataset(cfg: dict, spec: str) -> tuple[Any, str]:
    """Real images for ``eval --eval-data spec``: 'auto' (the run's held-out split, else its training images),
    'train', or a folder; returns (dataset, label for metrics.jsonl)."""
    if spec not in ("auto", "train"):
        return _open(spec, cfg, flag="--eval-data"), spec
    ds = _open(cfg["data"], cfg)
    if spec == "auto" and cfg.get("eval_split"):
        held = split_indices(len(ds.items), cfg["eval_split"], seed=cfg["seed"])[1]
        return Subset(ds, held), "held-out"
    return ds, "train"


def save_prior_table(run_dir: Any, table: torch.Tensor, opts: dict) -> None:
    """Write ``priors.pt`` (the table G was trained with, for ``generate`` / ``eval`` / ``invert``), atomically."""
    blob = {"priors": table.detach().cpu(), "extractor": opts["prior"], "size": opts["prior_size"]}
    atomic_write(run_dir / "priors.pt", lambda tmp: torch.save(blob, tmp))


def load_prior_table(run_dir: Any, run: str) -> torch.Tensor:
    """The prior table a run's generator was trained with (``priors.pt``, written at the end of training)."""

    pf = run_dir / "priors.pt"
    advice = "it is written at the end of training: rerun the end with `train --resume auto` and the run's --outdir"
    if not pf.is_file():
        raise CheckpointError(f"--run {run}: no priors.pt in {run_dir} ({advice})")
    blob = load_torch_file(pf, f"--run {run}: {pf}", advice=advice)
    pri = blob.get("priors") if isinstance(blob, dict) else None
    if not isinstance(pri, torch.Tensor) or pri.ndim != 2 or not bool(torch.isfinite(pri).all()):
        raise CheckpointError(f"--run {run}: {pf} is damaged (no finite (N, dim) 'priors' tensor); {advice}")
    return pri


def load_gmm(run_dir: Any, run: str, device: str | torch.device, log: Callable[[str], None] = print
             ) -> GaussianMixture | None:
    """The GMM a run fitted at the end of training (``gmm.pt``, the mixture behind ``gmm.png``), for ``generate``
    and ``eval --mode gmm``. A run stopped before its end has none: returns None (the caller's
    :func:`draw_priors` then fits one on the prior table) after a one-line note through ``log``."""
    path = run_dir / "gmm.pt"
    if not path.is_file():
        log(f"disp: note: no gmm.pt in {run_dir} (it is written at the end of training); fitting a GMM on the prior "
            "table for this command instead")
        return None
    return GaussianMixture.from_state_dict(load_torch_file(path, f"--run {run}: gmm.pt"), device)


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
    raise ValueError(f"mode must be train|vicinal|gmm, got {mode!r}")


@torch.no_grad()
def after_training_samples(run: Any, g: DispGenerator, priors: torch.Tensor, cfg: dict, z: torch.Tensor) -> str:
    """Fit the GMM on the prior table (``gmm.pt``) and write ``vicinal.png`` and ``gmm.png`` grids; returns a
    summary line."""

    gmm = fit_gmm(priors, cfg, seed=cfg["seed"])
    atomic_write(run / "gmm.pt", lambda tmp: torch.save(gmm.state_dict(), tmp))
    for mode in ("vicinal", "gmm"):
        c = draw_priors(mode, priors, z.shape[0], cfg, seed=1, gmm=gmm).to(z.device)
        save_grid(g(z, c), run / f"{mode}.png")
    return (f"disp: GMM K={gmm.n_components} {gmm.covariance_type}: mean log-likelihood {gmm.lower_bound_:.3f} "
            f"after {gmm.n_iter_} EM iterations; samples from vicinal and GMM priors: {run}/vicinal.png, "
            f"{run}/gmm.png")


def normalise(priors: torch.Tensor, how: str) -> torch.Tensor:
    """``--prior-norm``: 'l2' scales each prior to unit L2 norm, 'none' keeps it."""
    return F.normalize(priors, dim=1) if how == "l2" else priors


def image_prior(image: str, cfg: dict, *, edit: str = "none") -> torch.Tensor:
    """The (1, dim) prior of an image file as a run's training computed them ('semantic diffusion'); ``edit``
    'cutout' zeroes a centred half-size square first (the paper's CutOut edit)."""

    x, _ = load_single_image(image, flag="--image")
    if edit == "cutout":
        h, w = x.shape[-2:]
        x[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = 0
    c = compute_priors(x, cfg["prior"], size=cfg["prior_size"], progress=False)
    return normalise(c, cfg["prior_norm"])


def invert_image(g: DispGenerator, priors: torch.Tensor, target: torch.Tensor, z: torch.Tensor, *, steps: int,
                 lr: float, optimize_z: bool) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The paper's inversion: one prior per G block (and optionally ``z``), started from the training prior whose
    sample is closest to ``target``, optimised with Adam on the pixel MSE. Returns (priors (1, blocks, dim), z,
    first loss, last loss); ``g`` is frozen."""
    g.requires_grad_(False)
    z = z.clone().requires_grad_(optimize_z)
    with torch.no_grad():
        errs = torch.cat([(g(z.detach().expand(len(cb), -1), cb) - target).square().mean((1, 2, 3))
                          for cb in priors.split(32)])
    c = priors[errs.argmin()][None, None].repeat(1, len(g.blocks), 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([c, z] if optimize_z else [c], lr=lr)
    first = last = float("nan")
    for k in range(steps):
        loss = (g(z, c) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.item()
        first = last if k == 0 else first
    return c, z, first, last


@torch.no_grad()
def evaluate(g: DispGenerator, priors: torch.Tensor, reals: Any, cfg: dict, *, mode: str, num: int | None,
             seed: int, k_precision: int, k_recall: int, device: str, batch: int = 32,
             gmm: GaussianMixture | None = None) -> dict:
    """FID/KID and precision/recall of ``g``'s samples against the dataset ``reals``: the same number of generated
    and real images (``num``, at most the real set's size), conditions drawn by ``mode`` with ``seed`` (mode 'gmm'
    from ``gmm``, the run's mixture: :func:`load_gmm`; None fits one), generated and embedded in chunks (neither set
    is held in RAM as images). Precision uses ``k_precision`` neighbours, recall ``k_recall``. Too few images for
    the k asked raise :class:`UserError`."""
    from ..metrics.features import cached_features, inception_features
    from ..metrics.fid import fid_from_features, kid_from_features
    from ..metrics.prdc import precision_recall

    import numpy as np

    n = min(num or len(reals), len(reals))
    if n < 2:
        raise UserError(f"evaluation needs at least 2 real images, the evaluation set has {len(reals)}")
    k_max = max(k_precision, k_recall)
    if k_max >= n:
        raise UserError(f"--k-precision/--k-recall ({k_precision}/{k_recall}) must be below the number of images "
                         f"({n})")

    real_source = dataset_source(Subset(reals, range(n)), name="ganops.train")
    fr = cached_features(real_source, num=n, batch_size=batch, device=device, progress=True)
    c = draw_priors(mode, priors, n, cfg, seed, gmm).to(device)
    ff = np.concatenate([inception_features(g(_latents(cfg, len(cb), seed + s, device), cb), batch_size=batch,
                                            device=device)
                         for s, cb in zip(range(0, n, batch), c.split(batch))])
    kid = kid_from_features(fr, ff, subset_size=min(1000, n))
    prec, rec = precision_recall(fr, ff, k=k_precision, k_recall=k_recall)
    return {"mode": mode, "num": n, "num_real": n, "num_fake": int(ff.shape[0]), f"fid{n}": fid_from_features(fr, ff),
            f"kid{n}": kid[0], "kid_std": kid[1], "precision": prec, "recall": rec, "k_precision": k_precision,
            "k_recall": k_recall}


def _latents(cfg: dict, n: int, seed: int, device: str) -> torch.Tensor:

    return fixed_noise(n, cfg["z_dim"], seed=seed, device=device)
