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


def test_autocast_policy_covers_every_cuda_autocast_op():
    """Every aten op with an AutocastCUDA kernel in the installed torch has a policy in the emulation."""
    from ganops.profiling import AUTOCAST_CUDA_POLICY

    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("aten::")
             and torch._C._dispatch_has_kernel_for_dispatch_key(n, "AutocastCUDA")]
    assert names
    missing = sorted({n[6:].split(".")[0] for n in names} - set(AUTOCAST_CUDA_POLICY))
    assert not missing, missing


def test_meta_autocast_casts_like_cuda_autocast():
    from ganops.profiling import MetaAutocast

    with torch.device("meta"):
        conv, bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
        x = torch.empty(2, 3, 8, 8)
    with MetaAutocast(torch.float16) as m:
        y = conv(x)
        assert y.dtype == torch.float16  # lower-precision list
        assert torch.nn.functional.interpolate(y, scale_factor=2).dtype == torch.float32  # fp32 list
        b = bn(y)
        assert b.dtype == torch.float16  # no policy: input dtype
        assert b.sum().dtype == torch.float32 and (b ** 2).dtype == torch.float32 and (2 ** b).dtype == torch.float32
        assert torch.nn.functional.mse_loss(b, b).dtype == torch.float32
        assert torch.addcmul(b, b, b.float()).dtype == torch.float32  # promote
        assert b.mean().dtype == torch.float16 and torch.nn.functional.glu(b, 1).dtype == torch.float16
        assert conv(x).dtype == torch.float16
        assert len(m._cache) == 2  # weight and bias cast once (leaf tensors requiring grad), then reused
    assert not m._cache  # cleared on exit
    assert conv(x).dtype == torch.float32  # off outside the context
    loss = b.float().sum()
    loss.backward()
    assert conv.weight.grad.dtype == torch.float32  # fp32 master weights get fp32 gradients


def test_meta_autocast_counts_match_cpu_autocast_on_shared_ops():
    """Where CPU and CUDA autocast agree (conv, linear: fp16; relu, flatten: no policy) the emulated counts on meta
    equal those of a real CPU autocast run: launches, bytes, FLOPs, peak, output dtypes."""
    from ganops.profiling import MetaAutocast

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3),
                              torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 5))
    x = torch.randn(2, 3, 12, 12)

    def run(model, inp, ctx):
        def f():
            with ctx:
                out = model(inp)
            out.float().mean().backward()
            return out
        return f
    cpu = count(run(net, x, torch.autocast("cpu", dtype=torch.float16)), live=list(net.parameters()) + [x])
    net.zero_grad(set_to_none=True)
    meta_net, xm = net.to("meta"), x.to("meta")
    meta = count(run(meta_net, xm, MetaAutocast(torch.float16)), live=list(meta_net.parameters()) + [xm])
    assert (cpu.flops, cpu.launches, cpu.bytes, cpu.peak_bytes) == (meta.flops, meta.launches, meta.bytes,
                                                                   meta.peak_bytes)
    assert [(o.name, o.dtype) for o in cpu.ops] == [(o.name, o.dtype) for o in meta.ops]
