# SPDX-License-Identifier: BSD-3-Clause
"""Resume checks for architecture options added after runs were written: a key a checkpoint lacks is its default."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import check_config, latest_checkpoint, resolve_checkpoint
from .rundir import find_run_dirs

__all__ = ["resume_target", "check_added_arch_keys"]


def resume_target(resume: Any, outdir: str | os.PathLike, name: str) -> Path | None:
    """The checkpoint ``--resume`` names, found the way :class:`ganops.train.TrainLoop` finds it (``auto``: the
    newest run ``*-{name}`` in ``outdir`` with a checkpoint), or None (no resume, nothing found, a bad path: the
    TrainLoop reports those)."""
    if resume in (None, "", "none", "None"):
        return None
    if resume == "auto":
        for rd in reversed(find_run_dirs(outdir, name)):
            ck = latest_checkpoint(rd)
            if ck is not None:
                return ck
        return None
    try:
        return resolve_checkpoint(resume)
    except Exception:  # noqa: BLE001 - TrainLoop raises the user-facing error for a missing path
        return None


def check_added_arch_keys(name: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Refuse a resume whose checkpoint was trained with other values of architecture keys added later.

    A recipe passes its older architecture keys to ``TrainLoop(arch_keys=...)`` and checks the keys it added since
    here, before constructing the loop (nothing is written yet): a checkpoint whose config lacks key ``k`` was
    trained with ``defaults[k]`` (the architecture before the option existed), so an old run resumes with the
    defaults and is refused with any other value, in the same one-line :class:`ConfigMismatchError` as the loop's.
    Checkpoints that cannot be read, or are another recipe's, are left to the loop's own checks.

    Args:
        name: the recipe's run name (``TrainLoop(name)``).
        config: the options (``resume``, ``outdir`` and the keys of ``defaults``).
        defaults: {added key: the value every run written before it had}.
    """
    path = resume_target(config.get("resume"), config.get("outdir", "runs"), name)
    if path is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            st = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - damaged/foreign: the loop's load reports it
        return
    if not isinstance(st, dict) or not isinstance(st.get("config"), dict) or st.get("name") not in (None, name):
        return
    saved = {k: st["config"].get(k, d) for k, d in defaults.items()}
    check_config(saved, {k: config.get(k) for k in defaults}, list(defaults), source=str(path))
