# SPDX-License-Identifier: BSD-3-Clause
"""SLE gate-multiply at FastGAN's shapes: every available backend vs the eager and the compiled reference.

Bytes a one-pass implementation must move (fp32, E = N*C*H*W elements; gate terms are N*C, negligible):
  forward   read x, write y                                    =  8E
  backward  read gy and x, write gx                            = 12E      ours fwd+bwd: 20E, 2 fresh E-sized outputs
The eager reference: forward 8E (sigmoid of the small gate, one broadcast multiply); backward gy*s -> gx (8E),
gy*x -> tmp (12E), sum of tmp over H*W (4E) = 24E: fwd+bwd 32E and 3 fresh E-sized tensors (y, gx, tmp).
Inductor (ref+compile) fuses the product with its reduction: 20E and 2 fresh tensors, like ours.

Prediction from bytes alone: 32E / 20E = 1.6x the eager reference and 1.0x the compiled one. That is the whole
story below 32 MiB per tensor (8x128x64x64: glibc reuses heap pages, no faults). From 32 MiB on, glibc mmaps every
tensor and frees it back to the kernel, so each fresh tensor costs one 4 KiB page fault per 4 KiB (~1 us each
here, about 3x the cost of streaming the same bytes); ours allocates its outputs >= 32 MiB as 2 MiB huge pages
(MADV_HUGEPAGE: 16 faults per 32 MiB instead of 8192), which the references do not. Then the prediction is
(32E streamed + 12E of 4 KiB first touch) / (20E streamed + 8E of huge-page zeroing) ~ 2.5-3x the eager reference
and ~1.8-2x the compiled one. The 3x target is reached only at the largest shapes and only in some runs; see
docs/sle.md for the measurements and why 3x is not attainable at 8x128x64x64 (L3-resident, no faults: the byte
ratio 1.6x is the ceiling for any implementation).
"""
from __future__ import annotations

import pytest
import torch

import ganops
from benchmarks.providers import case_id, cpu_bytes, devices, op_providers, provider_fn

SHAPES = [(8, 128, 64, 64), (8, 64, 128, 128), (8, 32, 256, 256), (8, 16, 512, 512)]


def _fused(provider):
    return lambda x, g: ganops.sle(x, g, impl=provider)


CASES = [(d, s) for d in devices() for s in SHAPES]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,shape", CASES, ids=case_id)
def test_sle(compare, device, shape, mode):
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    g = torch.randn(shape[:2], device=device)
    E = x.numel()
    min_bytes = 8 * E if mode == "fwd" else 20 * E
    xr, gr = x.clone().requires_grad_(), g.clone().requires_grad_()
    gy = torch.randn_like(x)

    def make(f):
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    f(x, g)
        else:
            def run():
                y = f(xr, gr)
                torch.autograd.grad(y, (xr, gr), gy)
        return run

    fns = {p: make(provider_fn(p, ganops.sle_ref, _fused)) for p in op_providers("sle", device)}
    compare(op="sle", case=case_id(shape), mode=mode, fns=fns, device=device, rounds=5, warmup=2,
            bytes=cpu_bytes(fns, device), min_bytes=min_bytes)
