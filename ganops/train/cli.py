# SPDX-License-Identifier: BSD-3-Clause
"""Shared training flags for every recipe: a click decorator and the cross-flag checks."""
from __future__ import annotations

from typing import Any, Callable

import click
import torch

from .._dispatch import BACKENDS
from .amp import PRECISIONS
from .metrics import MetricsType, check_metrics, parse_metrics

__all__ = ["TRAIN_OPTION_DEFAULTS", "train_options", "check_options"]

# name -> (default, help). Recipes override defaults per recipe: train_options(resolution=256, batch=8).
TRAIN_OPTION_DEFAULTS: dict[str, tuple[Any, str]] = {
    "data": ("builtin:emoji", "image folder (recursive; jpg/jpeg/png/webp/bmp) or builtin:emoji|animals|lfw|"
                              "china|flower|rocket"),
    "outdir": ("runs", "parent of the run directory {outdir}/{id:05d}-{name}"),
    "resolution": (64, "training resolution in pixels"),
    "batch": (8, "GLOBAL batch size, split evenly over DDP processes"),
    "iters": (1000, "total training iterations (a resumed run continues to this count)"),
    "seed": (0, "random seed (data order, init, noise)"),
    "resume": (None, "'auto' (latest run with the same name in --outdir, continued in place) or a checkpoint "
                     "file / run directory"),
    "precision": ("fp32", "fp32 | fp16 (autocast + GradScaler) | bf16 (autocast)"),
    "channels_last": (False, "use channels_last memory format for models and batches"),
    "compile": (False, "torch.compile the models' forward (penalty branches stay eager)"),
    "impl": ("auto", "ganops kernel backend: auto | ref | cpu | cuda | triton"),
    "snap": (500, "checkpoint every N iterations (0: only at the end)"),
    "sample_every": (500, "save a fakes grid every N iterations (0: only at the end)"),
    "metrics": ("none", "metrics during training, written to metrics.jsonl: none, or a comma list of fid<N>, kid<N>, "
                        "pr<N>, swd<N> with N generated images (500, 1k, 50k), e.g. fid1k,kid1k,swd1k,pr1k"),
    "metrics_every": (0, "evaluate --metrics every N iterations (0: at every --snap checkpoint); always at the end"),
    "dry_run": (False, "validate data and options, print the resolved config, and exit"),
    "device": ("auto", "auto | cpu | cuda | cuda:N"),
    "workers": (2, "DataLoader worker processes per rank"),
    "hflip": (False, "add horizontally mirrored images to the dataset"),
    "deterministic": (False, "deterministic algorithms (bitwise reproducible resume on CPU; slower)"),
    "allow_upscale": (False, "accept images smaller than --resolution (upscaled)"),
    "skip_bad": (False, "skip unreadable image files instead of stopping"),
}
_CHOICES = {"precision": PRECISIONS, "impl": ("auto",) + BACKENDS}
_MIN = {"resolution": 4, "batch": 1, "iters": 0, "snap": 0, "sample_every": 0, "metrics_every": 0, "workers": 0}


def train_options(**defaults: Any) -> Callable:
    """click decorator adding every shared flag (``--data``, ``--outdir``, ...) with shown defaults.

    Args:
        **defaults: per-recipe default overrides by option name, e.g. ``resolution=256, batch=8``.

    Returns:
        A decorator; the command receives the options as keyword arguments (``dry_run``, ``sample_every``...).
    """
    unknown = set(defaults) - set(TRAIN_OPTION_DEFAULTS)
    if unknown:
        raise TypeError(f"train_options: unknown option(s) {sorted(unknown)}")

    def deco(fn: Callable) -> Callable:
        for name in reversed(list(TRAIN_OPTION_DEFAULTS)):
            default, help_ = TRAIN_OPTION_DEFAULTS[name]
            default = defaults.get(name, default)
            flag = "--" + name.replace("_", "-")
            if isinstance(default, bool):
                fn = click.option(flag, name, is_flag=True, default=default, show_default=True, help=help_)(fn)
                continue
            if name in _CHOICES:
                typ = click.Choice(_CHOICES[name])
            elif name in _MIN:
                typ = click.IntRange(min=_MIN[name])
            elif name == "metrics":
                typ = MetricsType()
            elif name == "seed":
                typ = click.IntRange(min=0)
            else:
                typ = str
            fn = click.option(flag, name, type=typ, default=default, show_default=True, help=help_)(fn)
        return fn

    return deco


def check_options(opts: dict[str, Any], *, power_of_two: bool = False) -> dict[str, Any]:
    """Cross-flag checks shared by recipes; raises ``click.UsageError`` naming the flag.

    Args:
        opts: the options dict.
        power_of_two: require ``--resolution`` to be a power of two (FastGAN/DISP).
    """
    for k, lo in _MIN.items():
        if k in opts and int(opts[k]) < lo:
            raise click.UsageError(f"--{k.replace('_', '-')} must be >= {lo}, got {opts[k]}")
    r = int(opts.get("resolution", 0))
    if power_of_two and (r <= 0 or r & (r - 1)):
        raise click.UsageError(f"--resolution must be a power of two, got {r}")
    for k, choices in _CHOICES.items():
        if k in opts and opts[k] not in choices:
            raise click.UsageError(f"--{k} must be one of {', '.join(choices)}, got {opts[k]!r}")
    if "metrics" in opts:  # canonical names (fid1000 -> fid1k), then TrainLoop's startup checks (swd size, assets)
        specs = parse_metrics(opts["metrics"])
        opts["metrics"] = ",".join(s.name for s in specs) or "none"
        check_metrics(specs, resolution=r or None)
    dev = str(opts.get("device", "auto"))
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise click.UsageError(f"--device {dev}: CUDA is not available on this machine (use --device cpu or auto)")
    if dev not in ("auto", "cpu") and not dev.startswith("cuda"):
        raise click.UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    if opts.get("precision") == "fp16" and dev.startswith("cpu"):
        click.echo("[ganops.train] note: --precision fp16 on CPU is slow; bf16 is the CPU choice", err=True)
    return opts
