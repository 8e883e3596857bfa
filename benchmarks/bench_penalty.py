# SPDX-License-Identifier: BSD-3-Clause
"""WGAN-GP in one ConSinGAN-stage D step: ganops' fused penalty vs the textbook plain-autograd penalty.

ConSinGAN's patch D is 5 convs (3 -> 64, 3 x 64 -> 64, 64 -> 1; 3 x 3, no padding, LeakyReLU 0.2); every D step
computes ``-mean D(real) + mean D(fake) + GP`` with GP = 0.1 * mean over pixels of (||g||_2 over channels - 1)^2,
one alpha per batch (batch 1). Two modes:

* ``fwd+bwd`` -- the penalty's own work: draw alpha, interpolate, and the penalty forward and backward from a
  given gradient tensor g = dD/dx_hat (what is left when D's forward/double backward are taken out). Target
  (targets.md / issue 5): >= 1.5x faster than plain autograd. The compiled reference (``torch.compile`` of the
  plain penalty) is reported too.
* ``d_step`` -- the whole D step with the penalty, ours vs plain (D's convolutions dominate; no target).

Runs single-threaded unless GANOPS_BENCH_THREADS is set (see the fixture below); the providers of each case are
timed in interleaved rounds (``compare``). Besides time, the aten-level launches (TorchDispatchMode counter) of
each are printed: the fused path runs the interpolation in 1 op and the penalty in 1 op forward and 1 op backward.
"""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import ganops
from benchmarks.providers import op_providers, provider_fn
from ganops.ops.penalty import interpolate, norm_penalty
from ganops.profiling import count

SIZES = [(188, 250), (25, 34)]
LAUNCHES: list[tuple[str, str, str, int]] = []


def consingan_d() -> nn.Module:
    torch.manual_seed(0)
    layers, ch = [], 3
    for out in (64, 64, 64, 64):
        layers += [nn.Conv2d(ch, out, 3, 1, 0), nn.LeakyReLU(0.2)]
        ch = out
    layers.append(nn.Conv2d(ch, 1, 3, 1, 0))
    return nn.Sequential(*layers)


def plain_gp(D, real, fake, weight=0.1):
    """ConSinGAN's calc_gradient_penalty (x_hat = a real + (1 - a) fake, per-pixel channel norm)."""
    alpha = torch.rand(1, 1, device=real.device).expand(real.size())
    x = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), create_graph=True, retain_graph=True,
                               only_inputs=True)
    return ((g.norm(2, dim=1) - 1) ** 2).mean() * weight


def plain_own(real, fake, g, weight=0.1):
    alpha = torch.rand(1, 1, device=real.device).expand(real.size())
    x = alpha * real + (1 - alpha) * fake
    return x, ((g.norm(2, dim=1) - 1) ** 2).mean() * weight


def fused_own(real, fake, g, weight=0.1, impl="auto"):
    x = interpolate(real, fake, torch.rand(1, device=real.device), impl=impl)
    return x, norm_penalty(g, target=1.0, scale=weight, norm_over="channel", impl=impl)


def _providers():
    return op_providers("gp_norm_penalty", "cpu")


def _fused_own(provider):
    return lambda r, f, g: fused_own(r, f, g, impl=provider)


@pytest.fixture(scope="module", autouse=True)
def _print_launches(request):
    # Single-threaded by default: on the shared 2-core machine every OpenMP fork/join (ours, eager ATen's and the
    # compiled reference's alike) costs 10-20 ms when other jobs hold the cores, which swamps a < 1 ms penalty.
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("GANOPS_BENCH_THREADS", "1")))
    yield
    torch.set_num_threads(threads)
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or not LAUNCHES:
        return
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # fixture teardown output is captured otherwise
        tr.write_line("")
        tr.write_line("gradient_penalty: aten-level launches (TorchDispatchMode count, one call)")
        for case, mode, prov, n in LAUNCHES:
            tr.write_line(f"  {case:10} {mode:8} {prov:12} {n:5d} launches")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_penalty_own_work(compare, size):
    torch.manual_seed(0)
    real, fake = torch.randn(1, 3, *size), torch.randn(1, 3, *size)
    g0 = torch.randn(1, 3, *size) * 0.3  # stands in for dD/dx_hat (same shape and scale)

    def make(f):
        def run():
            g = g0.detach().requires_grad_(True)
            x, pen = f(real, fake, g)
            torch.autograd.grad(pen, g)
            return x
        return run

    fns = {p: make(provider_fn(p, plain_own, _fused_own)) for p in _providers()}
    for p, run in fns.items():
        run()
        if p != "ref+compile":
            LAUNCHES.append((f"{size[0]}x{size[1]}", "own", p, count(run, track_memory=False).launches))
    compare(op="gradient_penalty", case=f"1x3x{size[0]}x{size[1]}", mode="fwd+bwd", fns=fns, rounds=30, warmup=5)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_consingan_d_step(compare, size):
    torch.manual_seed(0)
    real, fake = torch.randn(1, 3, *size), torch.randn(1, 3, *size)

    def make(provider):
        D = consingan_d()  # one D and optimiser per provider: the steps update them
        opt = torch.optim.Adam(D.parameters(), lr=5e-4, betas=(0.5, 0.999))

        def gp():
            if provider == "ref":
                return plain_gp(D, real, fake)
            return ganops.gradient_penalty(D, real, fake, weight=0.1, alpha="per_batch", norm_over="channel",
                                           impl=provider)

        def run():
            opt.zero_grad(set_to_none=True)
            loss = -D(real).mean() + D(fake.detach()).mean() + gp()
            loss.backward()
        return run

    fns = {p: make(p) for p in _providers() if p != "ref+compile"}
    for p, run in fns.items():
        run()
        LAUNCHES.append((f"{size[0]}x{size[1]}", "d_step", p, count(run, track_memory=False).launches))
    compare(op="gradient_penalty", case=f"1x3x{size[0]}x{size[1]}", mode="d_step", fns=fns,
            rounds=3 if size[0] > 100 else 10, warmup=1)


def test_r1_own_work_fastgan_shape(compare):
    """R1's own work at FastGAN 256^2, batch 8: gamma/2 * mean ||g||^2, forward and backward from g."""
    torch.manual_seed(0)
    g0 = torch.randn(8, 3, 256, 256) * 0.3

    def plain(g):
        return 5.0 * g.pow(2).reshape(g.shape[0], -1).sum(1).mean()

    def fused(provider):
        return lambda g: norm_penalty(g, target=0.0, scale=5.0, norm_over="sample", impl=provider)

    def make(provider):
        f = provider_fn(provider, plain, fused)

        def run():
            g = g0.detach().requires_grad_(True)
            torch.autograd.grad(f(g), g)
        return run

    fns = {p: make(p) for p in _providers()}
    for p, run in fns.items():
        run()
        if p != "ref+compile":
            LAUNCHES.append(("8x3x256^2", "r1 own", p, count(run, track_memory=False).launches))
    compare(op="r1_penalty", case="8x3x256x256", mode="fwd+bwd", fns=fns, rounds=10, warmup=2)
