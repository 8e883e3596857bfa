# SPDX-License-Identifier: BSD-3-Clause
"""ConSinGAN recipe (Hinz et al., WACV 2021): a single-image GAN whose stages train concurrently.

`python recipes/consingan.py` (no arguments) trains on scikit-learn's china.jpg (photo by danielbuechele, CC BY 2.0:
the credit is printed and written to the run's ATTRIBUTION.txt) with a CPU preset (max size 96 px, 600 iterations per
stage, 6 stages; 2 threads when the machine is idle, else 1) and writes a sample grid per stage, a 2x-width sample and
the samples' SIFID into the run directory. `python recipes/consingan.py train` uses the reference's generation
settings (250 px, 6 x 2000 iterations); `--preset paper` also those for --mode harmonization / editing.

Commands: train (default), generate (trained size and any scale / aspect ratio), evaluate (SIFID and diversity of
the samples; train prints them at the end too), harmonize and edit (the reference's inference on a naive image and
mask, optional fine-tuning), animate (the reference's z random-walk GIF; --all: its sweep), dataset (train and
evaluate every image of a folder, one table; resumable).

Where this code and the reference differ (methods.md §3; reference behaviour is the default):

\b
  * --step-order ours (default) computes the same maths with less work: the fake is generated once per iteration
    (the reference regenerates it for every D step), frozen stages run without autograd and their
    reconstruction is cached, real and fake go through D in one call, the G backward skips D's weight gradients;
    --step-order reference runs the official order; with ours, the 3x3 convolutions on CPU use ganops'
    Winograd kernels (--conv aten: nn.Conv2d as the reference);
  * --iters is iterations per stage and --resolution the maximum image side (the reference's max_size);
  * --gp-every N (lazy GP, N x weight every N-th D step; default 1 = reference); --cuda-graphs-upto S replays
    each iteration of stages 0..S as a CUDA graph (same maths; default off); --pyramid old|improved for any mode;
  * harmonisation's albumentations strong_aug and the editing shuffle_grid are torch re-implementations
    (docs/consingan.md lists them); mask dilation radii are in pixels of the trained size as in the reference.
"""
from __future__ import annotations

from pathlib import Path

import click
import torch

from ganops.models.consingan import GEN_MODES, MODES, count_params
from ganops.models.step_order import STEP_ORDERS
from ganops.train import RecipeGroup, TrainLoop, check_options, save_grid, train_options
from ganops.train.commands import device_option, given, run_option, seed_option
from ganops.train.consingan import ConSinGANTrainer, trainer_config
from ganops.train.consingan_graphs import cuda_graph_problems
from ganops.train.consingan_infer import load_trainer, paste, write_animations
from ganops.train.consingan_run import (ANIMATION_MIN_SIZE, PYRAMID_RULES, SAMPLE_MODES, SHARED_FLAG_HELP,
                                       build_pyramid, evaluate_samples, finish_run, load_image, preset_threads,
                                       run_dataset, stage0_input, stage_step)

PRESET = ("cpu: builtin:china, --resolution 96 (max side), --iters 600 per stage, 6 stages, --threads {threads} "
          "(paper: 250 px, 2000 per stage)")
#: overrides of `train`'s defaults for the no-argument run; "threads" is filled in by `preset_threads()`.
PRESET_OPTS: dict = {"resolution": 96, "iters": 600, "snap": 300}
PAPER = {"generation": dict(resolution=250, iters=2000),
         "retarget": dict(resolution=250, iters=2000), "animation": dict(resolution=250, iters=2000),
         "harmonization": dict(resolution=250, iters=1000, stages=3, min_size=120, slope=0.3, batch_norm=True),
         "editing": dict(resolution=250, iters=1000, batch_norm=True)}
# Must match on --resume (niter too: it places the stage boundaries and the lr milestone).
ARCH = ["data", "resolution", "stages", "min_size", "nfc", "num_layer", "slope", "batch_norm", "mode", "niter"]


@click.group(cls=RecipeGroup, invoke_without_command=True, help=__doc__)
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        opts = {"threads": preset_threads(), **PRESET_OPTS}
        click.echo(f"consingan: no command given, training the default preset ({PRESET.format(**opts)})")
        ctx.invoke(train, **opts)


@cli.command(help="Train all stages (generation by default; --mode harmonization|editing for those tasks).")
@train_options(data="builtin:china", resolution=250, iters=2000, snap=500, sample_every=0, batch=1)
@click.option("--preset", type=click.Choice(["none", "paper"]), default="none", show_default=True,
              help="paper: the reference's settings for --mode (harmonization: 3 stages, --min-size 120, --slope 0.3, "
                   "--batch-norm, 1000 it; editing: --batch-norm, 1000 it); flags given explicitly still win")
@click.option("--mode", type=click.Choice(MODES), default="generation", show_default=True)
@click.option("--stages", type=click.IntRange(2, 16), default=6, show_default=True, help="train_stages")
@click.option("--train-depth", type=click.IntRange(1), default=3, show_default=True,
              help="stages trained concurrently")
@click.option("--min-size", type=click.IntRange(12), default=25, show_default=True,
              help="coarsest short side (--mode animation: 20 unless given, as the reference)")
@click.option("--pyramid", "pyramid_rule", type=click.Choice(PYRAMID_RULES), default="auto", show_default=True,
              help="rescaling rule: improved (ConSinGAN's, more stages at low resolution) or old (SinGAN's "
                   "geometric one; the paper's supplement compares them for generation); auto: old for "
                   "harmonization, else improved (the reference)")
@click.option("--nfc", type=click.IntRange(1), default=64, show_default=True, help="filters")
@click.option("--num-layer", type=click.IntRange(1), default=3, show_default=True, help="convs per stage")
@click.option("--slope", type=float, default=0.05, show_default=True, help="LeakyReLU slope")
@click.option("--batch-norm", is_flag=True, help="BatchNorm in G (harmonization/editing)")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="lr of G and D (newest stage)")
@click.option("--lr-scale", type=float, default=0.1, show_default=True, help="lr factor per older stage")
@click.option("--gamma", type=float, default=0.1, show_default=True, help="lr decay at 80% of each stage")
@click.option("--d-steps", type=click.IntRange(1), default=3, show_default=True)
@click.option("--g-steps", type=click.IntRange(1), default=3, show_default=True,
              help="Adam steps on the one G gradient (the reference's Gsteps)")
@click.option("--lambda-grad", type=float, default=0.1, show_default=True, help="WGAN-GP weight")
@click.option("--alpha", type=float, default=10.0, show_default=True, help="reconstruction weight")
@click.option("--noise-amp", type=float, default=0.1, show_default=True, help="noise amp = this x rec. RMSE")
@click.option("--gp", type=click.Choice(["fused", "plain"]), default="fused", show_default=True,
              help="ganops.gradient_penalty or a plain-autograd copy of the reference")
@click.option("--gp-every", type=click.IntRange(1), default=1, show_default=True, help="lazy GP (1 = reference)")
@click.option("--step-order", type=click.Choice(STEP_ORDERS), default="ours", show_default=True)
@click.option("--conv", type=click.Choice(["winograd", "aten"]), default="winograd", show_default=True,
              help="3x3 convolutions with --step-order ours on CPU in float32: Winograd F(4x4,3x3) kernels (same "
                   "convolution, ~1e-5 rounding, ~2-3x faster) or nn.Conv2d (oneDNN); GPU and AMP always use aten")
@click.option("--cuda-graphs-upto", type=click.IntRange(-1), default=-1, show_default=True,
              help="replay each iteration of stages 0..S as a CUDA graph (the launch-bound small stages; -1: off). "
                   "Needs CUDA, generation/animation mode, --step-order ours, no AMP. Same maths; not yet run on "
                   "a GPU in ganops' development (bash benchmarks/gpu_check.sh tests it)")
@click.option("--eval-num", type=click.IntRange(0), default=20, show_default=True,
              help="samples for the SIFID and diversity printed at the end (generation/retarget/animation; 0: none)")
@click.option("--threads", type=click.IntRange(0), default=0, show_default=True,
              help="torch CPU threads (0: leave torch's default)")
@click.option("--reseed", type=click.IntRange(0), default=0, show_default=True,
              help="with --resume: draw the random numbers from this seed instead of the checkpoint's saved state, "
                   "so the run takes another random path from there (e.g. past a stage that diverged: train warns "
                   "and names the checkpoint before it); 0: the exact continuation")
@click.pass_context
def train(ctx: click.Context, **o) -> dict:
    if o["preset"] == "paper":
        for k, v in PAPER[o["mode"]].items():
            if not given(ctx, k):
                o[k] = v
    if o["mode"] == "animation" and not given(ctx, "min_size"):
        o["min_size"] = ANIMATION_MIN_SIZE
        click.echo(f"consingan: --mode animation: --min-size {ANIMATION_MIN_SIZE} (the reference's animation setting)")
    check_options(o)
    if o["cuda_graphs_upto"] >= 0:
        why = cuda_graph_problems(step_order=o["step_order"], amp=o.get("precision", "fp32") != "fp32",
                                  stage0_aug=o["mode"] not in GEN_MODES,
                                  cuda=torch.cuda.is_available() and o.get("device", "auto") != "cpu")
        if why:
            raise click.UsageError(f"--cuda-graphs-upto {o['cuda_graphs_upto']} needs {', '.join(why)}")
    if o["reseed"] and not o["resume"]:
        raise click.UsageError("--reseed applies to --resume (a new run draws from --seed)")
    if o["threads"]:
        torch.set_num_threads(o["threads"])
    o["niter"] = niter = o["iters"]
    img, credit = load_image(o["data"], with_attribution=True)
    reals = build_pyramid(img, o)
    loop = TrainLoop("consingan", dict(o, iters=o["stages"] * niter), arch_keys=ARCH, dataset=None,
                     attribution=credit, arch_defaults={"pyramid_rule": "auto"})
    t = ConSinGANTrainer(reals, trainer_config(o), loop.device, amp=loop.amp, stage0=stage0_input(o["mode"]))
    if loop.is_main:
        click.echo(f"consingan: {o['mode']}, {o['stages']} stages x {niter} iterations, pyramid "
                   + ", ".join(f"{h}x{w}" for h, w in t.shapes) + f"; D {count_params(t.D):,} params")
    res = loop.run(stage_step(t, loop, niter, o["reseed"]),
                   lambda _it: t.generate(4, generator=torch.Generator(device=loop.device).manual_seed(0)),
                   models={"G": t.G, "D": t.D}, optimizers={"opt": t.optim_state()}, extra={"stage": t},
                   eta=lambda done: t.run_eta(done - t.stage * niter))
    if loop.is_main and not o["dry_run"]:
        finish_run(t, Path(res["run_dir"]), mode=o["mode"], eval_num=o["eval_num"], device=loop.device)
    return res


for _p in train.params:  # the shared flags' help text, as it applies to a single-image GAN
    _p.help = SHARED_FLAG_HELP.get(_p.name, _p.help)


@cli.command(help="Random samples at the trained size, or scaled per axis (arbitrary sizes/aspect ratios).")
@run_option()
@click.option("--num", type=click.IntRange(1), default=4, show_default=True)
@click.option("--scale-h", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@click.option("--scale-w", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
@seed_option()
@click.option("--out", default=None, help="output PNG [default: RUN/generate-{h}x{w}-{seed}.png]")
@device_option()
def generate(run: str, num: int, scale_h: float, scale_w: float, seed: int, out: str | None, device: str) -> str:
    t, cfg, rd = load_trainer(run, device)
    if cfg["mode"] in ("generation", "animation") and (scale_h != 1 or scale_w != 1):
        click.echo("consingan: note: generation-mode models extrapolate at other sizes; --mode retarget trains "
                   "the path made for it")
    x = t.generate(num, scale_h=scale_h, scale_w=scale_w, generator=torch.Generator(device).manual_seed(seed))
    path = out or str(rd / f"generate-{scale_h:g}x{scale_w:g}-{seed}.png")
    save_grid(x, path)
    click.echo(f"consingan: wrote {num} samples of {x.shape[2]}x{x.shape[3]} to {path}")
    return path


@cli.command(help="SIFID (SinGAN's single-image FID; FID Inception, both early layers) and the diversity score "
                  "of random samples at the trained size against the training image; writes RUN/eval.json.")
@run_option()
@click.option("--num", type=click.IntRange(2), default=50, show_default=True, help="samples")
@seed_option()
@device_option()
def evaluate(run: str, num: int, seed: int, device: str) -> dict | None:
    t, cfg, rd = load_trainer(run, device)
    if cfg["mode"] not in SAMPLE_MODES:
        click.echo(f"consingan: note: a --mode {cfg['mode']} model is not trained to sample the image; "
                   "its SIFID says little")
    return evaluate_samples(t, rd, num=num, seed=seed, device=device)


def _paste(task: str, run: str, naive: str, mask: str, fine_tune: int, train_depth: int | None, seed: int,
           out: str | None, device: str) -> str:
    for flag, v in (("--naive", naive), ("--mask", mask)):
        if not v:
            raise click.UsageError(f"{task} needs {flag} (the {'naive composite' if flag == '--naive' else 'mask'}"
                                   " image)")
    t, cfg, rd = load_trainer(run, device)
    if cfg["mode"] != {"harmonize": "harmonization", "edit": "editing"}[task]:
        click.echo(f"consingan: note: the model was trained with --mode {cfg['mode']}")
    img = load_image(naive, "--naive").to(device)
    m = load_image(mask, "--mask").to(device).mean(1, keepdim=True).add(1).div(2)
    panels = paste(t, task, img, m, fine_tune=fine_tune, train_depth=train_depth, seed=seed)
    path = out or str(rd / f"{task}-{Path(naive).stem}.png")
    save_grid(panels, path, nrow=3)
    click.echo(f"consingan: wrote naive | G output | composite to {path}")
    return path


def _paste_command(task: str, mode: str, what: str, extra: str) -> click.Command:
    @cli.command(task, help=f"{what} as the reference: G gets the naive image as stage 0's input{extra} and the "
                            "fixed reconstruction noise at the later stages; its output is composited over the "
                            "training image through the dilated, blurred mask. Writes naive | G output | composite.")
    @run_option(f"run trained with --mode {mode}")
    @click.option("--naive", default=None, help="naive image: the training image with the object pasted in / the "
                                                "region edited (required)")
    @click.option("--mask", default=None, help="mask image, white where the object / edit is (required)")
    @click.option("--fine-tune", type=click.IntRange(0), default=0, show_default=True,
                  help="first train the last stage this many iterations on the naive image (the reference's "
                       "--fine_tune; fresh Adam, lr decay at 80%; the tuned model is not saved)")
    @click.option("--train-depth", type=click.IntRange(1), default=None,
                  help="stages trained by --fine-tune, at the lr scaling [default: the run's --train-depth]")
    @seed_option()
    @click.option("--out", default=None, help="output PNG [default: RUN/TASK-NAIVE.png]")
    @device_option()
    def command(**o) -> str:
        return _paste(task, **o)
    return command


harmonize = _paste_command("harmonize", "harmonization", "Harmonise a pasted object", "")
edit = _paste_command("edit", "editing", "Edit a region", " plus 0.1 N(0, 1) test-time noise")


@cli.command(context_settings={"ignore_unknown_options": True},
             help="Train and evaluate on every image of the folder DIR (recursive), one run each, and write one table "
                  "of SIFID and diversity per image with their means (OUTDIR/dataset.json and dataset.md; the "
                  "paper's user studies used 50 LSUN + 50 Places images). Resumable: run the same command again and "
                  "it continues with the images not yet done (an interrupted image from its checkpoint). "
                  "TRAIN_OPTIONS after DIR are `train`'s, e.g. --iters 600 --resolution 96 (not --data, --outdir, "
                  "--resume, --eval-num, --dry-run: set per image).")
@click.argument("folder", metavar="DIR")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED, metavar="[TRAIN_OPTIONS]...")
@click.option("--outdir", default=None, help="table and per-image runs [default: runs/dataset-NAME, NAME = DIR's name]")
@click.option("--num", type=click.IntRange(2), default=50, show_default=True,
              help="samples per image for SIFID and diversity")
def dataset(folder: str, train_args: tuple[str, ...], outdir: str | None, num: int) -> dict:
    for flag in ("--data", "--outdir", "--resume", "--eval-num", "--dry-run"):
        if any(a == flag or a.startswith(flag + "=") for a in train_args):
            raise click.UsageError(f"dataset: {flag} is set per image by `dataset`, not a TRAIN_OPTION here")

    def one(image: str, out: Path, resume: bool) -> str:
        args = ["--data", image, "--outdir", str(out), "--eval-num", str(num), *train_args]
        return train.main(args + (["--resume", "auto"] if resume else []), standalone_mode=False)["run_dir"]

    return run_dataset(folder, outdir or f"runs/dataset-{Path(folder).resolve().name}", one,
                       settings={"train_args": list(train_args), "num": num})


@cli.command(help="The reference's z random walk as a GIF: per moving stage z_t = a Z + (1-a)(z_{t-1} + "
                  "b (z_{t-1} - z_{t-2}) + (1-b) e_t), Z the stage's fixed reconstruction noise; stages below "
                  "--start-scale stay at Z. Best with a model trained with --mode animation.")
@run_option()
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="pull back to Z")
@click.option("--beta", type=float, default=0.9, show_default=True, help="momentum, 0 <= beta < 1")
@click.option("--start-scale", type=int, default=2, show_default=True,
              help="first moving stage (0 .. the last trained stage)")
@click.option("--frames", type=click.IntRange(1), default=100, show_default=True)
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@seed_option()
@click.option("--out", default=None,
              help="output GIF [default: RUN/animation-a{alpha}-b{beta}-s{start}.gif]; with --all the folder "
                   "[default: RUN/animation]")
@click.option("--all", "sweep", is_flag=True,
              help="the reference's sweep: beta 0.80/0.85/0.90/0.95 x start scale 0/1/2 (up to the last stage)")
@device_option()
@click.pass_context
def animate(ctx: click.Context, run: str, alpha: float, beta: float, start_scale: int, frames: int, fps: float,
            seed: int, out: str | None, sweep: bool, device: str) -> list[str]:
    if sweep:
        flags = [f for f, k in (("--beta", "beta"), ("--start-scale", "start_scale")) if given(ctx, k)]
        if flags:
            raise click.UsageError(f"--all sweeps beta and the start scale itself; drop {' and '.join(flags)}")
    elif not 0 <= beta < 1:
        raise click.UsageError(f"--beta {beta:g}: must be in [0, 1) (the walk's momentum; the reference uses "
                               "0.80-0.95)")
    t, cfg, rd = load_trainer(run, device)
    last = t.stage
    if not sweep and not 0 <= start_scale <= last:
        raise click.UsageError(f"--start-scale {start_scale}: the model has stages 0..{last}, so it must be in "
                               f"0..{last}")
    if cfg["mode"] != "animation":
        click.echo(f"consingan: note: the model was trained with --mode {cfg['mode']}, not animation: stage 0's "
                   "fixed noise is built from the coarsest real image, so the walk starts at (and is pulled back "
                   "to) the reconstruction")
    return write_animations(t, rd, alpha=alpha, beta=beta, start_scale=start_scale, frames=frames, fps=fps,
                            seed=seed, out=out, sweep=sweep)


if __name__ == "__main__":
    cli()
