# SPDX-License-Identifier: BSD-3-Clause
"""``python -m ganops.metrics --real DIR_OR_BUILTIN --fake DIR``: FID, KID, precision/recall, SWD, memorisation."""
from __future__ import annotations

import json
import sys
import time

import click

__all__ = ["main", "run_metrics", "METRICS"]

METRICS = ("fid", "kid", "pr", "swd", "mem")


def run_metrics(real, fake, metrics=("fid", "kid", "pr", "swd"), *, num: int | None = None, batch_size: int = 32,
                device: str = "cpu", use_cache: bool = True, resolution: int | None = None,
                kid_subset_size: int = 1000, pr_k: int = 3, pr_features: str = "inception", grid: str | None = None,
                progress: bool = True, log=print) -> dict[str, float]:
    """Compute the requested metrics between a real and a generated image set.

    Args:
        real: folder or ``builtin:<name>`` (features cached on disk by content); fake: folder or tensor.
        metrics: any of "fid", "kid", "pr", "swd", "mem".
        num: at most this many images per set (FID with fewer than ~2k samples is biased upwards: report the
            count with the number).
        pr_features: "inception" (shared with FID/KID) or "vgg16" (pooled conv5_3 at 224x224, closer to the
            paper's VGG16 embedding) for precision/recall.

    Returns:
        flat dict of results (``fid``, ``kid_mean``, ``kid_std``, ``precision``, ``recall``, ``swd_*``,
        ``mem_*``) plus ``num_real``/``num_fake``.
    """
    from . import open_images
    from .features import cached_features, inception_features
    from .fid import fid_from_features, kid_from_features
    from .prdc import precision_recall

    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"--metrics: unknown {bad}; choose from {', '.join(METRICS)}")
    if pr_features not in ("inception", "vgg16"):
        raise ValueError(f"--pr-features must be 'inception' or 'vgg16', got {pr_features!r}")
    rs, fs = open_images(real), open_images(fake)
    nr = len(rs) if num is None else min(num, len(rs))
    nf = len(fs) if num is None else min(num, len(fs))
    out: dict[str, float] = {"num_real": nr, "num_fake": nf}
    if "fid" in metrics or "kid" in metrics or ("pr" in metrics and pr_features == "inception"):
        t = time.time()
        fr = cached_features(rs, num=nr, batch_size=batch_size, device=device, progress=progress,
                             use_cache=use_cache)
        ff = inception_features(fs, num=nf, batch_size=batch_size, device=device, progress=progress)
        log(f"[ganops.metrics] Inception features: {nr} real, {nf} fake in {time.time() - t:.1f}s")
        if "fid" in metrics:
            out["fid"] = fid_from_features(fr, ff)
        if "kid" in metrics:
            out["kid_mean"], out["kid_std"] = kid_from_features(fr, ff, subset_size=kid_subset_size)
    if "pr" in metrics:
        if min(nr, nf) <= pr_k:
            log(f"[ganops.metrics] precision/recall skipped: needs more than k={pr_k} images per set")
        else:
            if pr_features == "vgg16":
                fr = cached_features(rs, kind="vgg16", num=nr, batch_size=batch_size, device=device,
                                     use_cache=use_cache)
                ff = cached_features(fs, kind="vgg16", num=nf, batch_size=batch_size, device=device, use_cache=False)
            out["precision"], out["recall"] = precision_recall(fr, ff, k=pr_k)
    if "swd" in metrics:
        from .swd import compute_swd

        out.update(compute_swd(rs, fs, num=min(nr, nf), resolution=resolution))
    if "mem" in metrics:
        from .memorization import memorization_check

        rep = memorization_check(fs, rs, grid_path=grid, num_fakes=nf, resolution=resolution, device=device)
        out["mem_nn_lpips_mean"] = rep["nn_lpips_mean"]
        out["mem_nn_lpips_min"] = rep["nn_lpips_min"]
        if "train_nn_lpips_median" in rep:
            out["mem_train_nn_lpips_median"] = rep["train_nn_lpips_median"]
        if grid:
            log(f"[ganops.metrics] memorisation grid: {grid}")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--real", required=True,
              help="Real images: a folder (flat or nested) or builtin:<name> (e.g. builtin:emoji).")
@click.option("--fake", required=True, help="Generated images: a folder.")
@click.option("--metrics", "metric_list", default="fid,kid,pr,swd", help=f"Comma list from {','.join(METRICS)}.")
@click.option("--num", type=click.IntRange(min=2), default=None, help="Images per set (default: all).")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=32, help="Batch size for the networks.")
@click.option("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
@click.option("--resolution", type=click.IntRange(min=16), default=None,
              help="Common side for SWD and memorisation (default: the generated images' size).")
@click.option("--pr-features", type=click.Choice(["inception", "vgg16"]), default="inception",
              help="Embedding for precision/recall.")
@click.option("--kid-subset", "kid_subset_size", type=click.IntRange(min=2), default=1000, help="KID subset size.")
@click.option("--cache/--no-cache", "use_cache", default=True, help="Cache real-set features on disk.")
@click.option("--grid", default=None, help="PNG path for the memorisation grid (with --metrics ...,mem).")
@click.option("--json", "json_out", default=None, help="Also write the results to this JSON file.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(real, fake, metric_list, num, batch_size, device, resolution, pr_features, kid_subset_size, use_cache, grid,
         json_out, quiet):
    """Offline GAN metrics between a real and a generated image set (nothing is downloaded)."""
    from ._assets import AssetMissingError

    metrics = tuple(m.strip().lower() for m in metric_list.split(",") if m.strip())
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise click.UsageError(f"--metrics: unknown {bad or metric_list!r}; choose from {', '.join(METRICS)}")
    try:
        res = run_metrics(real, fake, metrics, num=num, batch_size=batch_size, device=device, use_cache=use_cache,
                          resolution=resolution, kid_subset_size=kid_subset_size, pr_features=pr_features, grid=grid,
                          progress=not quiet,
                          log=lambda s: click.echo(s, err=True))
    except AssetMissingError as e:
        raise click.ClickException(str(e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    for k, v in res.items():
        click.echo(f"{k:28s} {v:.6g}" if isinstance(v, float) else f"{k:28s} {v}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"real": str(real), "fake": str(fake), **res}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
