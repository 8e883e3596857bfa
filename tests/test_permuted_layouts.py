# SPDX-License-Identifier: BSD-3-Clause
"""Every dense permutation of a 4-D input, on every backend of the ops that write an image-shaped output.

The kernels write NCHW or NHWC. An output allocated with ``empty_like(x)`` keeps any other permutation's strides,
and the kernels then wrote NCHW order into it: diff_augment returned values off by up to 10 on a transposed input
(cpu and Triton), gp_interpolate's and the penalty backward's fakes disagreed with their kernels' strides. The
outputs of such inputs are contiguous now (``dense_output_like``, C++ and Python alike); these tests hold every
backend and the fake kernels to it.
"""
from __future__ import annotations

import importlib
import itertools

import pytest
import torch

import ganops
from conftest import backends, device_for, skip_unless_available
from ganops.ops.penalty import interpolate, interpolate_ref, norm_penalty, norm_penalty_ref

# the 24 orders in which a (2, 3, 5, 4) tensor's dims can lie in memory (outermost first)
PERMS = list(itertools.permutations(range(4)))
SHAPE = (2, 3, 5, 4)


def _permuted(perm, device, seed=0):
    """A dense tensor of SHAPE whose memory holds dims in the order ``perm``."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn([SHAPE[d] for d in perm], generator=g).to(device)
    x = base.permute([perm.index(d) for d in range(4)])
    assert x.shape == SHAPE and sorted(x.stride()) == sorted(base.stride())  # dense: a permutation of strides
    return x


def _layout_ok(out, x):
    """Outputs are NCHW, or NHWC for a channels_last input."""
    cl = (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)
    return out.is_contiguous(memory_format=torch.channels_last) if cl else out.is_contiguous()


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
def test_diff_augment_every_permutation(backend):
    skip_unless_available("diff_augment", backend)
    dev = device_for(backend)
    policy = "color,translation,cutout"
    params = ganops.diff_augment_params(policy, SHAPE, device=dev, generator=torch.Generator().manual_seed(3))
    p64 = {k: (v.double() if v.is_floating_point() else v) for k, v in params.items()}
    for perm in PERMS:
        x = _permuted(perm, dev).requires_grad_()
        y = ganops.diff_augment(x, policy, params=params, impl=backend)
        want = ganops.diff_augment_ref(x.detach().double(), policy, p64)
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5, msg=lambda m: f"perm {perm}: {m}")
        assert _layout_ok(y, x), perm
        gy = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4)).to(dev)
        (gx,) = torch.autograd.grad(y, x, gy)
        x64 = x.detach().double().requires_grad_()
        (rgx,) = torch.autograd.grad(ganops.diff_augment_ref(x64, policy, p64), x64, gy.double())
        torch.testing.assert_close(gx.double(), rgx, rtol=1e-5, atol=1e-5, msg=lambda m: f"perm {perm}: {m}")


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
def test_penalty_every_permutation(backend):
    skip_unless_available("gp_norm_penalty", backend)
    dev = device_for(backend)
    for perm in PERMS:
        r, f = _permuted(perm, dev, 1), _permuted(perm, dev, 2)
        a = torch.rand(2, generator=torch.Generator().manual_seed(5)).to(dev)
        out = interpolate(r, f, a, impl=backend)
        torch.testing.assert_close(out, interpolate_ref(r, f, a), msg=lambda m: f"perm {perm}: {m}")
        assert _layout_ok(out, r), perm
        for no in ("sample", "channel"):
            g = _permuted(perm, dev, 6).requires_grad_()
            y = norm_penalty(g, target=1.0, scale=2.0, norm_over=no, reduce="none", impl=backend)
            g64 = g.detach().double().requires_grad_()
            ry = norm_penalty_ref(g64, 1.0, 2.0, no, "none")
            torch.testing.assert_close(y.double(), ry.detach(), rtol=1e-5, atol=1e-6)
            go = torch.rand(2).to(dev) + 0.5
            (gx,) = torch.autograd.grad(y, g, go)
            (rgx,) = torch.autograd.grad(ry, g64, go.double())
            torch.testing.assert_close(gx.double(), rgx, rtol=1e-5, atol=1e-6, msg=lambda m: f"perm {perm}: {m}")
            assert _layout_ok(gx, g), perm


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
def test_sle_every_permutation(backend):
    skip_unless_available("sle", backend)
    dev = device_for(backend)
    for perm in PERMS:
        x = _permuted(perm, dev).requires_grad_()
        gate = torch.randn(2, 3, device=dev, requires_grad=True)
        y = ganops.sle(x, gate, impl=backend)
        torch.testing.assert_close(y, ganops.sle_ref(x, gate), msg=lambda m: f"perm {perm}: {m}")
        assert _layout_ok(y, x), perm
        gy = torch.randn(SHAPE, device=dev)
        for a, b in zip(torch.autograd.grad(y, (x, gate), gy),
                        torch.autograd.grad(ganops.sle_ref(x, gate), (x, gate), gy)):
            torch.testing.assert_close(a, b, msg=lambda m: f"perm {perm}: {m}")
            if a.dim() == 4:
                assert _layout_ok(a, x), perm


def _ops(backend):
    """(op overload, args builder) of every image-shaped op of `backend`, for opcheck (fake strides = real ones)."""
    sfx = "" if backend == "cpu" else "_triton"
    if backend == "triton":
        for mod in ("diffaug", "penalty", "sle"):
            importlib.import_module(f"ganops.ops.{mod}").triton_kernels()  # autograd and fakes of the Triton ops
    o = torch.ops.ganops
    color = lambda dev: torch.tensor([[0.1, 1.5, 0.7], [-0.3, 0.2, 1.2]], device=dev)  # noqa: E731
    spatial = lambda dev: torch.tensor([[1, -2, 3, 0], [-1, 0, 2, 2]], device=dev)  # noqa: E731
    return [
        (getattr(o, "diffaug_apply" + sfx).default, lambda x: (x, color(x.device), spatial(x.device), 2, 2, False, 0)),
        (getattr(o, "gp_interpolate" + sfx).default, lambda x: (x, x * 2, torch.rand(2, device=x.device))),
        (getattr(o, "gp_norm_penalty_backward" + sfx).default,
         lambda x: (torch.ones(2, device=x.device), x, x.detach().flatten(1).norm(dim=1), 1.0, 1.0, 0, 0)),
        (getattr(o, ("sle_forward" if backend == "cpu" else "sle_forward_triton")).default,
         lambda x: (x, torch.randn(2, 3, device=x.device))),
    ]


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("perm", [(0, 2, 1, 3), (0, 1, 3, 2), (1, 0, 2, 3), (3, 2, 1, 0)], ids=str)
def test_opcheck_on_permuted_inputs(backend, perm):
    """The fake kernels give the real kernels' strides (torch.library.opcheck compares them) on permuted inputs."""
    for op_name in ("diff_augment", "gp_norm_penalty", "sle"):
        skip_unless_available(op_name, backend)
    dev = device_for(backend)
    for op, args in _ops(backend):
        x = _permuted(perm, dev)
        torch.library.opcheck(op, args(x), test_utils=("test_schema", "test_faketensor"))
