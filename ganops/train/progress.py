# SPDX-License-Identifier: BSD-3-Clause
"""Progress line (tqdm: it/s, ETA, losses, GPU memory), ``stats.jsonl`` writer, and NaN/Inf detection."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from .._io import write_text
from .errors import NonFiniteLossError

__all__ = ["NonFiniteLossError", "to_floats", "find_non_finite", "append_jsonl", "StatsWriter", "Progress"]


def to_floats(values: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """Scalars of a loss dict as Python floats (one device sync for all tensors)."""
    keys = list(values)
    tens = [values[k] for k in keys if isinstance(values[k], torch.Tensor)]
    if tens:
        stacked = torch.stack([t.detach().float().reshape(()) for t in tens]).cpu().tolist()
        it = iter(stacked)
        return {k: (next(it) if isinstance(values[k], torch.Tensor) else float(values[k])) for k in keys}
    return {k: float(v) for k, v in values.items()}


def find_non_finite(values: Mapping[str, float]) -> tuple[str, float] | None:
    """First (name, value) that is NaN or Inf, else None."""
    for k, v in values.items():
        if not math.isfinite(v):
            return k, v
    return None


def append_jsonl(path: str | os.PathLike, record: Mapping) -> None:
    """Append ``record`` as one JSON line to ``path`` (created if missing): a recipe's eval row in metrics.jsonl."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(record)) + "\n")


class StatsWriter:
    """Append one JSON object per line to ``stats.jsonl`` (flushed each line, so a SIGKILL loses nothing written).

    Args:
        path: the jsonl file.
        truncate_after: on resume, drop lines with ``step`` greater than this (written by the killed run after its
            last checkpoint), so the file reads as one uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike, truncate_after: int | None = None) -> None:
        self.path = Path(path)
        if truncate_after is not None and self.path.exists():
            keep = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", -1) <= truncate_after:
                        keep.append(line)
                except json.JSONDecodeError:  # a line torn by the kill
                    pass
            write_text(self.path, "".join(x + "\n" for x in keep))  # atomic: a kill now keeps the old file
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: Mapping) -> None:
        self._f.write(json.dumps(dict(record), sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _gpu_mem(device: torch.device) -> str | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}G"


def _hms(s: int) -> str:
    return "?" if s < 0 else f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """tqdm bar over iterations with losses and GPU memory in the postfix (rank 0 only). When stderr is not a
    terminal (logs, batch jobs) it prints a plain tick line every ``print_every`` steps and at the end instead.

    Args:
        total: final step.
        start: first step (resume).
        enabled: False on ranks > 0.
        device: GPU memory is shown for CUDA devices.
        print_every: tick interval for the plain (non-terminal) output.
        eta: ``eta(step) -> seconds left`` replacing the uniform-rate ETA (remaining steps / it/s) for runs whose
            iterations do not all cost the same (ConSinGAN's stages grow); a non-finite value falls back to the
            uniform one. With it, the terminal bar shows this ETA in its postfix instead of tqdm's own remaining.
    """

    def __init__(self, total: int, start: int = 0, *, enabled: bool = True, device: torch.device | str = "cpu",
                 print_every: int = 100, eta: Callable[[int], float] | None = None) -> None:
        from tqdm import tqdm

        self.device = torch.device(device)
        self.enabled = enabled
        self.start_time, self.start, self.total = time.time(), start, total
        self.print_every = max(1, print_every)
        self.eta_fn = eta
        self.plain = enabled and not sys.stderr.isatty()
        fmt = None if eta is None else "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="it", file=sys.stderr,
                        mininterval=0.5, bar_format=fmt) if enabled and not self.plain else None

    def update(self, step: int, losses: Mapping[str, float]) -> dict[str, float]:
        """Advance to ``step`` (completed iterations); returns timing figures for the stats line."""
        elapsed = time.time() - self.start_time
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        if self.eta_fn is not None:
            own = float(self.eta_fn(step))
            eta = own if math.isfinite(own) else eta
        if self.bar is not None:
            post = {k: f"{v:.4g}" for k, v in losses.items()}
            if self.eta_fn is not None:
                post = {"ETA": _hms(int(eta) if math.isfinite(eta) else -1), **post}
            mem = _gpu_mem(self.device)
            if mem:
                post["mem"] = mem
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(step - self.bar.n)
        elif self.plain and (step % self.print_every == 0 or step == self.total):
            mem = _gpu_mem(self.device)
            eta_s = int(eta) if math.isfinite(eta) else -1
            line = (f"step {step}/{self.total}  {rate:.2f} it/s  ETA {_hms(eta_s)}  "
                    + "  ".join(f"{k}={v:.4g}" for k, v in losses.items()) + (f"  mem={mem}" if mem else ""))
            print(line, file=sys.stderr, flush=True)
        out = {"it_per_s": rate, "eta_s": eta if math.isfinite(eta) else -1.0}
        if self.device.type == "cuda" and torch.cuda.is_available():
            out["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return out

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (e.g. a metrics evaluation) out of it/s and the ETA."""
        self.start_time += seconds

    def write(self, msg: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
