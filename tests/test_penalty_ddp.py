# SPDX-License-Identifier: BSD-3-Clause
"""Gradient penalties under DistributedDataParallel: 2 gloo processes on CPU vs the single-process average."""
from __future__ import annotations

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import ganops

WORLD = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(8, 1, 3, 1, 1)).double()


def _data(rank: int):
    g = torch.Generator().manual_seed(100 + rank)
    real, fake = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64), torch.randn(2, 3, 8, 8, generator=g,
                                                                                        dtype=torch.float64)
    return real, fake, torch.rand(2, generator=g, dtype=torch.float64)


def _d_loss(D, rank: int, impl: str) -> torch.Tensor:
    """One D step's loss: WGAN terms + WGAN-GP (per-pixel norm) + R1 reusing D(real) from the penalty."""
    real, fake, alpha = _data(rank)
    r1, out_real = ganops.r1_penalty(D, real, 1.0, return_output=True, impl=impl)
    gp = ganops.gradient_penalty(D, real, fake, weight=0.1, alpha=alpha, norm_over="channel", impl=impl)
    return D(fake).mean() - out_real.mean() + gp + r1


def _worker(rank: int, port: int, out_path: str, impl: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        ddp = nn.parallel.DistributedDataParallel(_model())
        _d_loss(ddp, rank, impl).backward()  # backward(create_graph=True) would raise under DDP; we never call it
        if rank == 0:
            torch.save([p.grad.clone() for p in ddp.module.parameters()], out_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing")
@pytest.mark.skipif(sys.platform == "win32", reason="spawned gloo workers: Linux/macOS only here")
def test_ddp_two_gloo_processes_match_single_process_average(tmp_path):
    impl = "cpu" if ganops.backend_status("gp_norm_penalty", "cpu", torch.device("cpu"))[0] else "ref"
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(_free_port(), out, impl), nprocs=WORLD, join=True)
    got = torch.load(out)
    expected = None
    for rank in range(WORLD):  # DDP averages the gradients of the ranks' losses
        D = _model()
        _d_loss(D, rank, "ref").backward()
        grads = [p.grad for p in D.parameters()]
        expected = grads if expected is None else [a + b for a, b in zip(expected, grads)]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e / WORLD)
