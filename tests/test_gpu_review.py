# SPDX-License-Identifier: BSD-3-Clause
"""Regression tests for defects found by reading the GPU code before its first device run (the findings are in the
GPU session notes). Each test runs on the backend it is about and skips where that backend is absent."""
from __future__ import annotations

import torch

import ganops
from conftest import requires_cuda, skip_unless_available


@requires_cuda
def test_cuda_diff_augment_takes_batches_over_65535():
    """The CUDA glue refused N > 65535 (a leftover of the grid.y launch); the kernels fold the sample into grid.x,
    so a 70,000-sample batch must run, forward and adjoint, and match the reference like any other."""
    skip_unless_available("diff_augment", "cuda")
    policy = "color,translation,cutout"
    shape = (70000, 3, 4, 4)
    gen = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(shape, device="cuda", generator=gen, requires_grad=True)
    params = ganops.diff_augment_params(policy, shape, device="cuda", generator=gen)
    y = ganops.diff_augment(x, policy, params=params, impl="cuda")
    gy = torch.randn(shape, device="cuda", generator=gen)
    (gx,) = torch.autograd.grad(y, x, gy)
    x64 = x.detach().double().requires_grad_()
    want = ganops.diff_augment(x64, policy, params=params, impl="ref")
    (want_gx,) = torch.autograd.grad(want, x64, gy.double())
    torch.testing.assert_close(y.double(), want, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(gx.double(), want_gx, atol=2e-5, rtol=1e-5)
