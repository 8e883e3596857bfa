# SPDX-License-Identifier: BSD-3-Clause
"""The one timing harness of the op benchmarks and the device check: providers timed in interleaved rounds.

Each round calls every provider once, in turn (A B C A B C ...), so the sides of a ratio share the machine's state
(other jobs, clocks, caches, the allocator's heap) round by round; a ratio is then taken per round and summarised
by its median and quartiles (:func:`ratio_stats`). On a CUDA device each call is bracketed by CUDA events and
synchronised; on the CPU it is timed with ``time.perf_counter``. Process CPU time (all threads) is recorded per call
too: the spectral-norm target is stated in it, and it is less disturbed by other processes on shared cores.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["Interleaved", "time_rounds", "ratio_stats", "noisy"]


def _is_cuda(device) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def _timer(device=None):
    """(start, stop) closures; ``stop()`` returns the seconds since ``start()``, the device's work included."""
    if _is_cuda(device):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        return (lambda: s.record()), (lambda: (e.record(), e.synchronize(), s.elapsed_time(e) / 1e3)[2])
    st = [0.0]
    return (lambda: st.__setitem__(0, time.perf_counter())), (lambda: time.perf_counter() - st[0])


class Interleaved:
    """Per-call wall and process CPU seconds of several callables, called in turn: one :meth:`round` is A B C.

    Args:
        fns: provider name -> callable taking no arguments; called in this order in every round.
        device: where the callables run (``"cuda..."``: CUDA events and synchronisation); None: CUDA if available.

    ``wall[name]`` and ``cpu[name]`` hold one figure per round (warm-up rounds included; :meth:`last` drops them).
    """

    def __init__(self, fns: dict[str, Callable[[], object]], device=None):
        self.fns = dict(fns)
        self.device = device
        self.wall: dict[str, list[float]] = {k: [] for k in self.fns}
        self.cpu: dict[str, list[float]] = {k: [] for k in self.fns}
        self._start, self._stop = _timer(device)

    def sync(self) -> None:
        if _is_cuda(self.device):
            torch.cuda.synchronize()

    def round(self) -> None:
        """Call every provider once, in order, each call timed on its own."""
        for k, f in self.fns.items():
            c = time.process_time()
            self._start()
            f()
            w = self._stop()
            self.cpu[k].append(time.process_time() - c)
            self.wall[k].append(w)

    def warmup(self, rounds: int) -> None:
        """``rounds`` untimed interleaved rounds (compilation, caches, allocator), then a synchronisation."""
        for _ in range(rounds):
            for f in self.fns.values():
                f()
        self.sync()

    def last(self, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """(wall, cpu) of the last ``rounds`` rounds of each provider."""
        return ({k: v[-rounds:] for k, v in self.wall.items()}, {k: v[-rounds:] for k, v in self.cpu.items()})


def time_rounds(fns: dict, rounds: int, warmup: int, device=None,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Seconds of each callable in interleaved rounds (A B C A B C ...), after ``warmup`` interleaved rounds.

    Each call is bracketed by CUDA events and synchronised on a CUDA device (so the sides share the GPU's state --
    clocks, caches -- equally), timed with ``perf_counter`` on the CPU. Returns provider -> wall seconds per round;
    when ``cpu`` is a dict it receives provider -> process CPU seconds per round.
    """
    t = Interleaved(fns, device)
    t.warmup(warmup)
    for _ in range(rounds):
        t.round()
    if cpu is not None:
        cpu.update(t.cpu)
    return t.wall


def ratio_stats(num: list[float], den: list[float]) -> dict:
    """Per-round ratio num/den (the speed-up of den over num): median and spread (lo, hi = first and third quartile,
    inclusive method, i.e. linear interpolation between order statistics; lo = hi = the ratio for one round).

    ``num`` and ``den`` are per-round times of the same interleaved rounds, paired by index.
    """
    if len(num) != len(den):
        raise ValueError(f"ratio_stats: {len(num)} rounds against {len(den)}; the sides must share their rounds")
    if not num:
        raise ValueError("ratio_stats: no rounds")
    r = sorted(a / b for a, b in zip(num, den))
    if len(r) == 1:
        return {"median": r[0], "lo": r[0], "hi": r[0], "rounds": 1}
    lo, med, hi = statistics.quantiles(r, n=4, method="inclusive")
    return {"median": med, "lo": lo, "hi": hi, "rounds": len(r)}


def noisy(stats: dict, target: float | None) -> bool:
    """True when half the spread, (hi - lo) / 2, is wider than the margin |median - target|: the rounds do not
    settle which side of the target the ratio is on. False when there is no target."""
    if target is None:
        return False
    return (stats["hi"] - stats["lo"]) / 2 > abs(stats["median"] - target)
