# SPDX-License-Identifier: BSD-3-Clause
"""SLE gate-multiply at FastGAN's shapes: every available backend vs the eager and the compiled reference.

Bytes a one-pass implementation must move (fp32, E = N*C*H*W elements):
  forward   read x, write y                        = 8E bytes
  backward  read gy and x, write gx                = 12E bytes  (gate terms are N*C, negligible)
The eager reference moves 8E forward (sigmoid of the small gate, then one broadcast multiply) but 24E backward
(gy*s -> gx: 12E; gy*x -> tmp: 12E... then the sum over H*W reads tmp: 4E; = 28E), and allocates a full-size
temporary: fwd+bwd 36E vs our 20E, so the memory-bound prediction is ~1.8x; more where the reference's
allocations of fresh pages dominate (first touch), less where its kernels vectorise better.
"""
from __future__ import annotations

import pytest
import torch

import ganops
from ganops._dispatch import backend_status

SHAPES = [(8, 128, 64, 64), (8, 64, 128, 128), (8, 32, 256, 256), (8, 16, 512, 512)]
_compiled = {}


def _providers(device):
    provs = ["ref", "ref+compile"]
    for b in ("cpu", "cuda", "triton"):
        if backend_status("sle", b, torch.device(device))[0] and not (b == "triton" and device == "cpu"):
            provs.append(b)
    return provs


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _fn(provider):
    if provider == "ref":
        return ganops.sle_ref
    if provider == "ref+compile":
        if "f" not in _compiled:
            _compiled["f"] = torch.compile(ganops.sle_ref, dynamic=False)
        return _compiled["f"]
    return lambda x, g: ganops.sle(x, g, impl=provider)


CASES = [(d, s, p) for d in _devices() for s in SHAPES for p in _providers(d)]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,shape,provider", CASES, ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_sle(measure, device, shape, provider, mode):
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    g = torch.randn(shape[:2], device=device)
    f = _fn(provider)
    E = x.numel()
    if mode == "fwd":
        def run():
            with torch.no_grad():
                f(x, g)
        min_bytes = 8 * E
    else:
        xr, gr = x.clone().requires_grad_(), g.clone().requires_grad_()
        gy = torch.randn_like(x)

        def run():
            y = f(xr, gr)
            torch.autograd.grad(y, (xr, gr), gy)
        min_bytes = 20 * E
    nbytes = None
    if device == "cpu":
        from ganops.profiling import count

        if provider != "ref+compile":
            run()  # warm (compiles nothing for eager providers)
            nbytes = count(run, track_memory=False).bytes
    measure(op="sle", case="x".join(map(str, shape)), mode=mode, provider=provider, fn=run, device=device,
            rounds=5, warmup=2, bytes=nbytes, min_bytes=min_bytes)
