# SPDX-License-Identifier: BSD-3-Clause
"""DiffAugment ``color,translation,cutout`` at FastGAN shapes: every backend vs the reference semantics.

Providers: "ref" is the reference method's math as the official code writes it (index grids built with meshgrid,
a padded copy, advanced indexing, a scattered mask; 44 launches forward), eager; "ref+compile" is the same under
``torch.compile``; then cpu / cuda / triton. (ganops' own "ref" backend uses separable gathers and is not
benchmarked here: it is a correctness reference.)

Bytes a one-pass implementation must move (fp32, E = N*C*H*W elements): forward read x + write y = 8E; backward
read g + write gx = 8E; fwd+bwd 16E. The fused op adds a light pass that reads its input once more to form the
per-sample sum that contrast needs (4E per direction, skipped when no sample has contrast != 1): the counter
below counts op inputs and outputs, i.e. 8E per direction; the extra read is described in docs/diffaug.md.
Run: ``pytest benchmarks/bench_diffaug.py --benchmark-only`` (prints ratios vs the targets).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ganops
from benchmarks.providers import case_id, cpu_bytes, devices, op_providers, provider_fn

POLICY = "color,translation,cutout"
SHAPES = [(16, 3, 128, 128), (8, 3, 256, 256), (8, 3, 1024, 1024)]


def official_math(x, params):
    """The official code's operations (grids of int64 indices, pad, gather, mask scatter), given the params."""
    n, c, h, w = x.shape
    x = x + params["brightness"].view(n, 1, 1, 1)
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * params["saturation"].view(n, 1, 1, 1) + m
    m = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - m) * params["contrast"].view(n, 1, 1, 1) + m
    t = params["translation"]
    b, gx, gy = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(h, device=x.device),
                               torch.arange(w, device=x.device), indexing="ij")
    gx = torch.clamp(gx + t[:, 0].view(n, 1, 1) + 1, 0, h + 1)
    gy = torch.clamp(gy + t[:, 1].view(n, 1, 1) + 1, 0, w + 1)
    x = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1).contiguous()[b, gx, gy].permute(0, 3, 1, 2).contiguous()
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    o = params["cutout"]
    b, gx, gy = torch.meshgrid(torch.arange(n, device=x.device), torch.arange(ch, device=x.device),
                               torch.arange(cw, device=x.device), indexing="ij")
    gx = torch.clamp(gx + o[:, 0].view(n, 1, 1) - ch // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + o[:, 1].view(n, 1, 1) - cw // 2, min=0, max=w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[b, gx, gy] = 0
    return x * mask.unsqueeze(1)


def _fused(provider):
    return lambda x, p: ganops.diff_augment(x, POLICY, params=p, impl=provider)


CASES = [(d, s) for d in devices() for s in SHAPES]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("device,shape", CASES, ids=case_id)
def test_diff_augment(compare, device, shape, mode):
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    params = ganops.diff_augment_params(POLICY, shape, device=device)
    E = x.numel()
    min_bytes = 8 * E if mode == "fwd" else 16 * E
    xr = x.clone().requires_grad_()
    gy = torch.randn_like(x)

    def make(f):
        if mode == "fwd":
            def run():
                with torch.no_grad():
                    f(x, params)
        else:
            def run():
                torch.autograd.grad(f(xr, params), xr, gy)
        return run

    fns = {p: make(provider_fn(p, official_math, _fused)) for p in op_providers("diff_augment", device)}
    big = shape[-1] >= 1024
    compare(op="diff_augment", case=case_id(shape), mode=mode, fns=fns, device=device,
            rounds=3 if big else 5, warmup=1 if big else 2, bytes=cpu_bytes(fns, device), min_bytes=min_bytes)
