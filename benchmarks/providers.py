# SPDX-License-Identifier: BSD-3-Clause
"""What the op benchmarks share: the devices, the providers timed against each other (the eager and the compiled
reference, then every ganops backend that runs the op), the callable each provider times, and the bytes counted on
CPU."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ganops._dispatch import backend_status

_compiled: dict[Callable, Callable] = {}


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def case_id(v) -> str:
    """pytest id of a shape tuple (8x3x256x256) or of any other parameter."""
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)


def op_providers(op: str, device: str) -> list[str]:
    """"ref", "ref+compile", then the ganops backends that run ``op`` on ``device`` (not Triton's interpreter)."""
    provs = ["ref", "ref+compile"]
    for b in ("cpu", "cuda", "triton"):
        if backend_status(op, b, torch.device(device))[0] and not (b == "triton" and device == "cpu"):
            provs.append(b)
    return provs


def provider_fn(provider: str, ref: Callable, fused: Callable[[str], Callable]) -> Callable:
    """What ``provider`` times: ``ref`` eager, ``ref`` under torch.compile (compiled once), else ``fused(provider)``."""
    if provider == "ref":
        return ref
    if provider == "ref+compile":
        if ref not in _compiled:
            _compiled[ref] = torch.compile(ref, dynamic=False)
        return _compiled[ref]
    return fused(provider)


def cpu_bytes(fns: dict[str, Callable], device: str) -> dict[str, int]:
    """Bytes one call of each eager provider moves (ganops.profiling.count, after a warm-up call); CPU only."""
    nbytes = {}
    if device == "cpu":
        from ganops.profiling import count

        for p, run in fns.items():
            if p != "ref+compile":
                run()  # warm (compiles nothing for eager providers)
                nbytes[p] = count(run, track_memory=False).bytes
    return nbytes
