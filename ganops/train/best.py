# SPDX-License-Identifier: BSD-3-Clause
"""``best.pt``: a full checkpoint of the step with the lowest value of one ``--metrics`` entry (e.g. the best FID),
written atomically beside the rolling checkpoints and never pruned."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from .._io import write_text
from .checkpoint import save_checkpoint

__all__ = ["BestSnapshot", "BEST_NAME"]

BEST_NAME = "best.pt"


class BestSnapshot:
    """Keeps ``run_dir/best.pt`` at the lowest ``metric`` seen (lower is better: FID, KID, SWD).

    The checkpoint is the loop's usual state (resumable, loadable like any checkpoint) plus
    ``{"best": {"metric", "value", "step"}}``; ``best.json`` repeats that entry for people and scripts. Both are
    written to a temporary name and renamed, ``best.pt`` first, so a crash leaves the previous best intact. On
    resume the best value so far is read back from ``best.pt`` itself (the file that is actually kept).

    Args:
        run_dir: the run directory.
        metric: the logged name of the metric (``fid1k``); evaluations without it leave ``best.pt`` alone.
    """

    def __init__(self, run_dir: str | Path, metric: str) -> None:
        self.path, self.metric = Path(run_dir) / BEST_NAME, metric
        self.value: float | None = None
        self.step: int | None = None
        if self.path.is_file():
            try:
                best = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True).get("best") or {}
            except Exception:  # noqa: BLE001 - an unreadable best.pt is replaced by the next evaluation
                best = {}
            if best.get("metric") == metric and isinstance(best.get("value"), (int, float)):
                self.value, self.step = float(best["value"]), int(best.get("step", 0))

    def improved(self, values: Mapping[str, Any]) -> bool:
        """True when ``values`` holds a finite ``metric`` below the best so far."""
        v = values.get(self.metric)
        return isinstance(v, (int, float)) and math.isfinite(v) and (self.value is None or v < self.value)

    def save(self, state: dict, step: int, values: Mapping[str, Any]) -> Path:
        """Write ``state`` (a loop checkpoint of ``step``) as the new best with ``values[metric]``."""
        entry = {"metric": self.metric, "value": float(values[self.metric]), "step": int(step)}
        save_checkpoint({**state, "best": entry}, self.path, update_latest=False)
        write_text(self.path.with_name("best.json"), json.dumps(entry) + "\n")
        self.value, self.step = entry["value"], entry["step"]
        return self.path
