# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN runs on disk: models from a run's config, its EMA generator, sampling, style mixing, eval, appendix B."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..models.fastgan import FastGANDiscriminator, FastGANGenerator, batch_stat_bn, count_parameters, weights_init
from .checkpoint import load_run_checkpoint, load_state
from .progress import append_jsonl
from .rundir import write_text
from .samples import fixed_noise, save_grid

__all__ = ["ARCH_KEYS", "ADDED_ARCH_KEYS", "RESIZES", "TANH", "build_generator", "build_discriminator",
           "build_models", "parameter_report", "load_generator", "run_g", "real_set", "style_mix_grid",
           "evaluate_run", "probe_runs"]

ARCH_KEYS = ["resolution", "ngf", "ndf", "nz", "tanh"]
#: architecture keys added later: a checkpoint without them was trained with these values (TrainLoop arch_defaults)
ADDED_ARCH_KEYS = {"sle": True, "decoders": True}
#: --resize choice -> the dataset's resize mode
RESIZES = {"crop": "square", "stretch": "stretch"}
#: --tanh choice -> FastGANGenerator(tanh=)
TANH = {"auto": None, "on": True, "off": False}


def build_generator(cfg: dict) -> FastGANGenerator:
    """G of a run's config (``sle`` absent: on, as runs written before the key were trained)."""
    return FastGANGenerator(cfg["resolution"], cfg["ngf"], cfg["nz"], tanh=TANH[cfg["tanh"]],
                            sle=cfg.get("sle", True))


def build_discriminator(cfg: dict) -> FastGANDiscriminator:
    """D of a run's config (``decoders`` absent: on)."""
    return FastGANDiscriminator(cfg["resolution"], cfg["ndf"], decoders=cfg.get("decoders", True))


def build_models(cfg: dict) -> tuple[FastGANGenerator, FastGANDiscriminator]:
    """G and D of a run's config with the reference's initialisation."""
    return weights_init(build_generator(cfg)), weights_init(build_discriminator(cfg))


def parameter_report(G: FastGANGenerator, D: FastGANDiscriminator) -> str:
    """Parameter counts of G and D with the parts the ablations drop (paper Table 2)."""
    sle = sum(count_parameters(m) for m in G.sle_modules().values())
    dec = sum(count_parameters(m) for m in D.decoder_modules().values())
    g = f"G {count_parameters(G):,} params " + (f"(SLE links {sle:,})" if G.sle else "(no SLE links: --no-sle)")
    d = f"D {count_parameters(D):,} params " + (f"(decoders {dec:,})" if D.has_decoders
                                                 else "(no decoders: --no-decoders)")
    return f"{g}, {d} at {G.im_size}^2"


def load_generator(run: str, device: str = "cpu") -> tuple[FastGANGenerator, dict, Path]:
    """The EMA generator of a run directory or checkpoint (in eval mode, ``.step`` = the checkpoint's training
    step), its config and run dir."""
    ck, run_dir = load_run_checkpoint(run, recipe="fastgan")
    cfg = ck["config"]
    g = build_generator(cfg)
    load_state(g, ck["ema"]["G_ema"]["module"], f"--run {run}: the EMA generator")
    g.step = int(ck["step"])
    return g.to(device).eval(), cfg, run_dir


def run_g(g: FastGANGenerator, bn: str, *args, **kw):
    """``g(*args, **kw)`` with BatchNorm on batch statistics (``bn="batch"``: the reference samples in train mode)
    or on its running statistics (``"running"``)."""
    if bn == "batch":
        with batch_stat_bn(g):
            return g(*args, **kw)
    return g(*args, **kw)


def real_set(cfg: dict, real: str | None = None):
    """The whole real set of a run (or ``real``) at its resolution and --resize, without mirrored copies."""
    from .data import open_dataset

    return open_dataset(real or cfg["data"], cfg["resolution"], verbose=False, flag="--real",
                        resize=RESIZES[cfg.get("resize", "crop")], allow_upscale=bool(cfg.get("allow_upscale")),
                        skip_bad=bool(cfg.get("skip_bad")))


def style_mix_grid(g: FastGANGenerator, zc: torch.Tensor, zs: torch.Tensor, resolutions: Sequence[int],
                   bn: str = "batch") -> torch.Tensor:
    """Style mixing (paper appendix C): the grid's cells, row-major with ``len(zs) + 1`` per row: a blank corner,
    the styles' images in row 0, each content's image in column 0, and in cell (i, j) content i's main path with
    style j's low-resolution SLE inputs at ``resolutions`` (SLE links of ``g``, see ``g.sle_links()``).

    Every mixed image is computed with the whole content batch, so BatchNorm batch statistics stay the contents'
    (``FastGANGenerator.style_mix`` pairs content i with style i instead).
    """
    (content, _), (style, lows) = run_g(g, bn, zc, return_lows=True), run_g(g, bn, zs, return_lows=True)
    content, style = content[0], style[0]
    nc, ns = len(zc), len(zs)
    cells = [torch.full_like(content[:1], 1.0)] + list(style.split(1))
    for i in range(nc):
        cells.append(content[i:i + 1])
        for j in range(ns):
            mixed = run_g(g, bn, zc, lows={r: lows[g.SLE_LINKS[r]][j:j + 1].expand(nc, -1, -1, -1)
                                           for r in resolutions})
            cells.append(mixed[0][i:i + 1])
    return torch.cat(cells).clamp(-1, 1)


def _fakes_fn(g: FastGANGenerator, bn: str, z: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    return lambda n, s: run_g(g, bn, z[s:s + n])[0].clamp(-1, 1)


@torch.no_grad()
def evaluate_run(run: str, *, real: str | None, num: int, all_checkpoints: bool = False, batch: int = 16,
                 seed: int = 0, bn: str = "batch", device: str = "cpu",
                 log: Callable[[str], None] = print) -> dict:
    """FID, KID and precision/recall of ``num`` EMA-generator fakes against the whole real set (the paper's protocol).

    One checkpoint (the run's latest, or the file given): the row is appended to RUN/metrics.jsonl (``"source":
    "eval"``) and logged as one JSON line. ``all_checkpoints``: every ``checkpoint-*.pt`` of the run in one table
    (RUN/eval_checkpoints.json, best FID marked, rows reused under the same settings: ``ganops.metrics.sweep``).

    Returns:
        The row (step, num, metrics, settings), or the sweep's ``{"rows", "best"}``.
    """
    from ..metrics.features import cached_features
    from ..metrics.sweep import dataset_source, evaluate_generator, format_table, sweep_checkpoints

    g, cfg, run_dir = load_generator(run, device)
    src = dataset_source(real_set(cfg, real), name=str(real or cfg["data"]))
    fr = cached_features(src, device=device)
    z = fixed_noise(num, cfg["nz"], seed=seed, device=device)
    settings = {"real": str(real or cfg["data"]), "real_sha256": src.fingerprint(), "seed": seed, "bn": bn,
                "batch": batch}
    if all_checkpoints:
        def load(path: Path):
            gk = load_generator(str(path), device)[0]
            return gk.step, _fakes_fn(gk, bn, z)

        cks = sorted(run_dir.glob("checkpoint-*.pt"))
        log(f"fastgan: {len(cks)} checkpoint(s), {num} fakes each vs {len(fr)} reals")
        res = sweep_checkpoints(cks, load, fr, num, table=run_dir / "eval_checkpoints.json", settings=settings,
                                batch=batch, device=device, log=log)
        log(format_table(res["rows"], best=res["best"]))
        log(f"fastgan: table written to {run_dir / 'eval_checkpoints.json'}")
        return res
    row = evaluate_generator(fr, _fakes_fn(g, bn, z), num, batch=batch, device=device)
    res = {"step": g.step, "num": num, **row, **settings}
    append_jsonl(run_dir / "metrics.jsonl", {"source": "eval", **res})
    log(json.dumps(res))
    return res


def probe_runs(runs: Sequence[str], *, iters: int, batch: int, recon_loss: str | None, eval_images: int,
               seed: int = 0, out: str | None = None, device: str = "cpu",
               log: Callable[[str], None] = print) -> dict:
    """Paper appendix B on each run's D (``ganops.models.fastgan_probe.probe_decoders``): fresh decoders trained on
    its frozen features, measured on the first ``eval_images`` training images; RUN/probe_decoders.png per run.

    Args:
        recon_loss: distance to train and report with (None: the first run's --recon-loss).
        out: JSON of the results (None: FIRST_RUN/probe_decoders.json).

    Returns:
        ``{"rows": [one per run], "path": the JSON written}``.
    """
    from ..models.fastgan_probe import probe_decoders
    from ..models.fastgan_step import make_recon_loss
    from .data import InfiniteLoader

    rows, recon, first_dir = [], None, None
    for run in runs:
        ck, run_dir = load_run_checkpoint(run, recipe="fastgan")
        cfg = ck["config"]
        first_dir = first_dir or run_dir
        recon_loss = recon_loss or cfg.get("recon_loss", "lpips-vgg")
        recon = recon or make_recon_loss(recon_loss, device)
        D = build_discriminator(cfg)
        load_state(D, ck["models"]["D"], f"{run}: models['D']")
        D = D.to(device)
        ds = real_set(cfg)
        ev = torch.stack([ds[i] for i in range(min(eval_images, len(ds)))])
        res = probe_decoders(D, InfiniteLoader(ds, batch, seed=seed, device=device), recon, iters=iters,
                             eval_images=ev, seed=seed, log=log)
        save_grid(res.pop("samples"), run_dir / "probe_decoders.png", nrow=min(8, len(ev)))
        rows.append({"run": str(run), "step": int(ck["step"]), "decoders_in_training": cfg.get("decoders", True),
                     "recon_loss": recon_loss, **res})
        log(f"fastgan: {run}: D trained {'with' if rows[-1]['decoders_in_training'] else 'WITHOUT'} decoders, probe "
            f"{recon_loss} after {iters} steps: " + "  ".join(f"{k}={v:.4g}" for k, v in res["eval"].items()))
    path = Path(out) if out else first_dir / "probe_decoders.json"
    write_text(path, json.dumps({"iters": iters, "batch": batch, "seed": seed, "rows": rows}, indent=1) + "\n")
    log(f"fastgan: probe results written to {path}")
    return {"rows": rows, "path": str(path)}
