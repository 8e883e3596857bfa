# SPDX-License-Identifier: BSD-3-Clause
"""Training toolkit for the recipes: data, run dirs, checkpoints, EMA, AMP, DDP, progress, samples, metrics, CLI."""
from __future__ import annotations

from ..data import BUILTINS, TWEMOJI_ATTRIBUTION, load_builtin
from .amp import PRECISIONS, Amp
from .checkpoint import (CheckpointError, ConfigMismatchError, check_config, config_diff, get_rng_state,
                         latest_checkpoint, load_checkpoint, load_run_checkpoint, load_state, load_torch_file,
                         save_checkpoint, set_rng_state)
from .cli import check_options, train_options
from .data import (DatasetError, ImageDataset, InfiniteLoader, InfiniteSampler, check_image_folder,
                   list_images, load_single_image, open_dataset)
from .distributed import DistInfo, init_distributed, is_main, per_rank_batch, wrap_ddp
from .ema import EMA
from .errors import MetricsError, RecipeGroup, RunStopped, UserError
from .loop import TrainLoop, seed_everything, set_deterministic
from .metrics import MetricSpec, TrainMetrics, parse_metrics
from .progress import NonFiniteLossError, Progress, StatsWriter
from .rundir import RunDirError, check_outdir, make_run_dir
from .samples import fixed_noise, save_gif, save_grid

__all__ = [
    "Amp", "PRECISIONS", "BUILTINS", "TWEMOJI_ATTRIBUTION", "load_builtin", "ConfigMismatchError", "check_config",
    "config_diff", "get_rng_state", "set_rng_state", "latest_checkpoint", "load_checkpoint",
    "load_run_checkpoint", "load_state", "save_checkpoint",
    "check_options", "train_options", "DatasetError", "ImageDataset", "InfiniteLoader",
    "InfiniteSampler", "check_image_folder", "list_images", "load_single_image", "open_dataset", "DistInfo",
    "init_distributed", "is_main", "per_rank_batch", "wrap_ddp", "EMA", "TrainLoop", "seed_everything",
    "set_deterministic", "NonFiniteLossError", "Progress", "StatsWriter", "RunDirError", "make_run_dir",
    "fixed_noise", "save_gif", "save_grid", "MetricsError", "MetricSpec", "TrainMetrics", "parse_metrics",
    "UserError", "RunStopped", "RecipeGroup", "CheckpointError", "load_torch_file", "check_outdir",
]
