# SPDX-License-Identifier: BSD-3-Clause
"""CUDA graphs for ConSinGAN's launch-bound small stages: one training iteration captured once and replayed."""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["CudaGraph", "GraphedIteration", "cuda_graph_problems"]


def cuda_graph_problems(*, step_order: str, amp: bool, stage0_aug: bool, cuda: bool | None = None) -> list[str]:
    """What replaying iterations as CUDA graphs (``cuda_graphs_upto``) needs and this configuration lacks (empty: all
    there). ``cuda`` None: not checked (the trainer runs eagerly off CUDA; its CPU tests use a stand-in graph)."""
    return [need for need, bad in (("a CUDA device", cuda is False), ("--step-order ours", step_order != "ours"),
                                   ("fp32 (no --precision fp16/bf16)", amp),
                                   ("--mode generation or animation (no stage-0 augmentation)", stage0_aug)) if bad]


class CudaGraph:
    """``fn()`` captured once into a ``torch.cuda.CUDAGraph``; :meth:`replay` reruns its kernels and returns the
    same (static) output tensors, now holding this replay's values."""

    def __init__(self, fn: Callable[[], dict]) -> None:
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn()

    def replay(self) -> dict:
        self.graph.replay()
        return self.out


class GraphedIteration:
    """One training iteration replayed as a CUDA graph, for ConSinGAN's launch-bound small stages.

    The first ``warmup`` calls run ``fn`` eagerly (on a side stream on CUDA, as capture requires: it lets autograd,
    cuDNN and the optimisers create their state), the next call captures ``fn`` with ``graph_cls`` (default
    :class:`CudaGraph`) and replays it, and every later call only replays. A capture does not execute the work, so
    the capturing call replays too: each call is one iteration. Outputs (a dict of tensors in the graph's static
    memory) are returned as clones. ``graph_cls`` is the seam the CPU tests use (a stand-in that reruns ``fn``).
    """

    def __init__(self, fn: Callable[[], dict], warmup: int = 3, graph_cls: type | None = None) -> None:
        self.fn, self.warmup = fn, int(warmup)
        self.graph_cls = CudaGraph if graph_cls is None else graph_cls
        self.calls, self.graph = 0, None

    def __call__(self) -> dict:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            return self._eager()
        if self.graph is None:
            self.graph = self.graph_cls(self.fn)
        return {k: v.clone() for k, v in self.graph.replay().items()}

    def _eager(self) -> dict:
        if self.graph_cls is not CudaGraph:
            return self.fn()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.fn()
        torch.cuda.current_stream().wait_stream(side)
        return out
