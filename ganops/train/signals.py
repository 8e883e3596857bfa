# SPDX-License-Identifier: BSD-3-Clause
"""Graceful stop on SIGTERM (cluster preemption) and a first Ctrl-C: checkpoint at the next step boundary."""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import torch

__all__ = ["StopRequest"]


class StopRequest:
    """Context manager catching SIGTERM and SIGINT while training.

    The first signal only sets :attr:`requested`; the loop then finishes the current iteration, writes a
    checkpoint and exits with status 128 + signal. A second Ctrl-C aborts at once (default handler restored).
    Handlers are installed only from the main thread; previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n[ganops.train] {signal.Signals(signum).name} received: saving a checkpoint after this step, "
              "then stopping (Ctrl-C again to abort now)", file=sys.stderr, flush=True)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self._handler)

    def agreed(self, device: torch.device) -> bool:
        """True if any rank was asked to stop (one all-reduce when distributed, so all ranks stop together)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = torch.tensor([1.0 if self.requested else 0.0], device=dev)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and self.signum is None:
            self.signum = int(signal.SIGTERM)
        return flag.item() > 0

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
