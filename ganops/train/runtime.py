# SPDX-License-Identifier: BSD-3-Clause
"""Process-level helpers of the training loop: seeding, deterministic mode, run metadata, cross-rank flags."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

__all__ = ["seed_everything", "set_deterministic", "git_sha", "ganops_version", "any_rank_bad"]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic algorithms and cuDNN settings (on) or cuDNN autotuning (off)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def git_sha() -> str:
    """Commit of the ganops checkout, or "" (not a git checkout / git missing)."""
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:
        return ""


def any_rank_bad(bad: tuple[str, float] | None, device: torch.device) -> tuple[str, float] | None:
    """``bad`` if this or any other rank found a non-finite loss (one all-reduce when distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return bad
    flag = torch.tensor([1.0 if bad else 0.0], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0 and bad is None:
        return ("<loss on another rank>", float("nan"))
    return bad


def ganops_version() -> str:
    """``ganops.__version__``, or "" if unavailable."""
    try:
        from .. import __version__

        return __version__
    except Exception:
        return ""
