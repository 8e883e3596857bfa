# SPDX-License-Identifier: BSD-3-Clause
"""The cost counters and the projection model, checked against figures worked out by hand."""
from __future__ import annotations

import torch

import ganops
from ganops.profiling import DEVICES, EFFICIENCY, Counts, OpRecord, count, project


def test_flops_of_a_known_conv():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 16, 16)
    c = count(lambda: conv(x))
    # 2 FLOPs per MAC: N * Cout * H * W * Cin * k * k
    assert c.flops == 2 * 2 * 8 * 16 * 16 * 3 * 9
    assert c.launches == 1


def test_bytes_and_launches_of_elementwise_ops():
    x = torch.randn(4, 1000)
    c = count(lambda: (x * 2).relu())
    # mul reads 16 kB, writes 16 kB; relu the same; the scalar 2 is no tensor.
    assert c.launches == 2
    assert c.bytes == 2 * (2 * 4000 * 4)


def test_views_and_allocations_are_not_launches():
    x = torch.randn(4, 6)
    c = count(lambda: (x.view(6, 4).t().unsqueeze(0), torch.empty(10)))
    assert c.launches == 0 and c.bytes == 0


def test_fused_op_is_one_launch_and_moves_one_read_one_write():
    x, g = torch.randn(2, 8, 16, 16), torch.randn(2, 8)
    c = count(lambda: ganops.sle(x, g))
    n = x.numel() * 4
    if ganops._ext.loaded:
        assert c.launches == 1
        assert c.bytes == 2 * n + g.numel() * 4
    ref = count(lambda: ganops.sle(x, g, impl="ref"))
    assert ref.launches == 2  # sigmoid, mul


def test_peak_of_a_known_training_step_by_hand():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 256, bias=False)
    x = torch.randn(64, 256)
    w_bytes = 256 * 256 * 4
    x_bytes = 64 * 256 * 4

    def step():
        y = lin(x)           # +y (x_bytes); mm saves x and W (already live)
        loss = y.pow(2).sum()  # +pow out (x_bytes), +loss (4); pow saves y
        loss.backward()      # grads: dloss ones, d(pow) (x_bytes), grad W (w_bytes)
    c = count(step, live=[lin.weight, x])
    assert c.start_bytes == w_bytes + x_bytes
    # At the moment grad W is written: W, x, y (saved by pow), d(pow)/dy (x_bytes) and grad W are live, plus
    # scalars; the pow output is freed once the sum is computed... but it is alive until `loss` is built.
    lower = w_bytes + x_bytes + x_bytes + x_bytes + w_bytes
    assert lower <= c.peak_bytes <= lower + x_bytes + 64
    # After the step, only W, x and W.grad remain.
    assert lin.weight.grad is not None


def test_projection_prices_each_op_at_its_roofline():
    dev = DEVICES["rtx2080ti"]
    ops = [OpRecord("convolution", 2e12, 1e9, torch.float32), OpRecord("add", 0.0, 6.16e9, torch.float32)]
    c = Counts(flops=2e12, bytes=7.16e9, launches=2, ops=ops)
    p = project(c, "rtx2080ti")
    e = EFFICIENCY["optimistic"]
    expect = 2e12 / dev.fp32 + 6.16e9 / dev.bandwidth + 2 * e.launch_s
    assert abs(p["optimistic"] - expect) < 1e-9
    assert p["optimistic"] < p["nominal"] < p["pessimistic"]
    # fp16 matrix work uses tensor cores on the 2080 Ti; bf16 does not (no bf16 on Turing).
    half = project(Counts(ops=[OpRecord("mm", 1e12, 0, torch.float16)], launches=1), "rtx2080ti")["optimistic"]
    bf = project(Counts(ops=[OpRecord("mm", 1e12, 0, torch.bfloat16)], launches=1), "rtx2080ti")["optimistic"]
    assert half < bf


def test_counts_on_meta_device_match_cpu():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    x = torch.randn(2, 3, 12, 12)
    cpu = count(lambda: net(x).sum().backward())
    net.zero_grad(set_to_none=True)  # otherwise the second backward adds into existing grads
    meta_net = net.to("meta")
    xm = x.to("meta")
    meta = count(lambda: meta_net(xm).sum().backward())
    assert (cpu.flops, cpu.launches, cpu.bytes) == (meta.flops, meta.launches, meta.bytes)
