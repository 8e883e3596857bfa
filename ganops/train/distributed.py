# SPDX-License-Identifier: BSD-3-Clause
"""DDP under ``torchrun``: process-group setup from the environment, rank-0-only I/O helpers, model wrapping.

Batch semantics: ``--batch`` is the **global** batch (all ranks together, as in StyleGAN2-ADA); each rank draws
``batch // world_size`` images (:func:`per_rank_batch`), so changing the number of GPUs keeps the optimisation the
same. Under DDP, ``loss.backward(create_graph=True)`` is not supported: compute R1/GP penalties with
``torch.autograd.grad(out, x, create_graph=True)`` and add them to the loss.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "resolve_device", "per_rank_batch", "wrap_ddp", "is_main", "barrier",
           "broadcast_object", "all_gather_object", "reduce_mean", "cleanup"]


@dataclass
class DistInfo:
    """This process's place in the job (world_size 1 when not launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` if a GPU is visible else ``cpu``; explicit values are validated."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    d = torch.device(device)
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if d.index is None:
            d = torch.device(f"cuda:{local_rank}")
    return d


def init_distributed(device: str = "auto", backend: str | None = None, timeout_s: int = 1800) -> DistInfo:
    """Read the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and join the group.

    Args:
        device: "auto" | "cpu" | "cuda" | "cuda:N".
        backend: None -> NCCL on CUDA, gloo on CPU.
        timeout_s: collective timeout.

    Returns:
        DistInfo; world_size 1 (no process group) when WORLD_SIZE is unset or 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(0, 0, 1, dev, None)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(dist.get_rank(), local, dist.get_world_size(), dev, backend)


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """``--batch`` (global) split over ranks; raises ValueError naming --batch if it does not divide."""
    if global_batch < world_size or global_batch % world_size:
        raise ValueError(f"--batch {global_batch} is the global batch and must be a multiple of the number of "
                         f"processes ({world_size})")
    return global_batch // world_size


def wrap_ddp(model: nn.Module, info: DistInfo, **kwargs: Any) -> nn.Module:
    """DistributedDataParallel around ``model`` when distributed (identity otherwise). ``broadcast_buffers``
    defaults to False (GAN discriminators run several forward passes per step)."""
    if not info.distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    kwargs.setdefault("broadcast_buffers", False)
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **kwargs)


def is_main() -> bool:
    """True on rank 0 (or when not distributed): the only process that writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalar logs over ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
