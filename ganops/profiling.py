# SPDX-License-Identifier: BSD-3-Clause
"""Count what a step costs (FLOPs, bytes, launches, peak live tensors) and project its time on a GPU.

Everything here runs on CPU or on the meta device, so the figures are the same on every machine:

* **launches**: aten-level ops seen by a ``TorchDispatchMode`` that would launch a kernel (views, metadata ops
  and bare allocations are not counted). A fused ganops op counts as one launch.
* **bytes**: for each launched op, the bytes of its tensor inputs plus its tensor outputs (what a one-pass kernel
  moves; an op that re-reads its input counts once, so this is a lower bound for multi-pass kernels).
* **FLOPs**: ``torch.utils.flop_counter``'s formulas (matmul/conv/attention; elementwise work is memory-bound and
  priced by its bytes instead).
* **peak live tensors**: a tracker of live storages (weak references to every storage an op touches or creates),
  sampled after every op. It sees tensors, not an allocator: a GPU's caching allocator rounds up and keeps freed
  blocks, and cuDNN/cuBLAS workspaces are invisible, so this is a **lower bound** of
  ``torch.cuda.max_memory_allocated``.

The projection prices each op at ``max(flops / rate, bytes / bandwidth) + launch overhead`` on a device from
:data:`DEVICES`, at three efficiency points (optimistic, nominal, pessimistic) that form the reported band.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

__all__ = ["Device", "DEVICES", "Efficiency", "EFFICIENCY", "OpRecord", "Counts", "CostCounter", "count",
           "project", "format_bytes"]

GiB = 1024 ** 3


@dataclass(frozen=True)
class Device:
    """Peak rates of a GPU. ``tc16`` is the fp16/bf16 tensor-core rate (fp32 accumulate); ``bf16`` says whether
    bf16 runs on tensor cores (Turing and Pascal have no bf16: it is priced at the fp32 rate there)."""

    name: str
    fp32: float  # FLOP/s
    tc16: float  # FLOP/s, fp16 (and bf16 where supported) matrix work
    bandwidth: float  # bytes/s
    bf16: bool
    memory_gib: float


DEVICES: dict[str, Device] = {
    # targets.md: 13.45 TFLOP/s fp32, 53.8 fp16 tensor-core with fp32 accumulate, 616 GB/s.
    "rtx2080ti": Device("RTX 2080 Ti", 13.45e12, 53.8e12, 616e9, False, 11.0),
    # Pascal: no tensor cores; fp16 arithmetic is 1/64 rate, so fp16 matrix work is priced at fp32.
    "gtx1080ti": Device("GTX 1080 Ti", 11.3e12, 11.3e12, 484e9, False, 11.0),
    "a100": Device("A100 40GB (SXM)", 19.5e12, 312e12, 1555e9, True, 40.0),
    "h100": Device("H100 (SXM)", 67e12, 989e12, 3350e9, True, 80.0),
}


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak reached, and the fixed cost of one launch."""

    compute: float
    bandwidth: float
    launch_s: float


EFFICIENCY = {
    "optimistic": Efficiency(1.0, 1.0, 3e-6),
    "nominal": Efficiency(0.5, 0.7, 5e-6),
    "pessimistic": Efficiency(0.3, 0.5, 10e-6),
}

_ALLOC_ONLY = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
               "lift_fresh", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
               "is_same_size", "_has_compatible_shallow_copy_type", "set_", "resize_", "record_stream"}


def _is_view(func) -> bool:
    """A view/metadata op (no kernel): returns an alias of an input without writing to it."""
    try:
        rets = func._schema.returns
    except AttributeError:
        return False
    if not rets:
        return False
    ai = rets[0].alias_info
    return ai is not None and not ai.is_write


@dataclass
class OpRecord:
    name: str
    flops: float
    bytes: float
    dtype: torch.dtype | None


@dataclass
class Counts:
    """Totals of one counted region."""

    flops: float = 0.0
    bytes: float = 0.0
    launches: int = 0
    peak_bytes: int = 0
    start_bytes: int = 0
    ops: list = field(default_factory=list)

    def by_op(self, top: int = 15) -> list[tuple[str, int, float, float]]:
        """[(op name, calls, bytes, flops)] sorted by bytes."""
        agg: dict[str, list] = {}
        for r in self.ops:
            a = agg.setdefault(r.name, [0, 0.0, 0.0])
            a[0] += 1
            a[1] += r.bytes
            a[2] += r.flops
        rows = sorted(((k, v[0], v[1], v[2]) for k, v in agg.items()), key=lambda t: -t[2])
        return rows[:top]


def _tensors(obj) -> list[torch.Tensor]:
    flat, _ = tree_flatten(obj)
    return [t for t in flat if isinstance(t, torch.Tensor)]


class CostCounter(TorchDispatchMode):
    """Dispatch mode that counts launches, bytes, FLOPs and the peak of live storages.

    Args:
        track_memory: keep the live-storage tracker (costs time per op).
        keep_ops: keep one :class:`OpRecord` per launch (needed by :func:`project`).
        live: tensors alive before the region (parameters, optimizer state...) to count from the start, in
            addition to every storage an op touches.
    """

    def __init__(self, track_memory: bool = True, keep_ops: bool = True, live: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.counts = Counts()
        self.track_memory = track_memory
        self.keep_ops = keep_ops
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self._live_bytes = 0
        for t in live:
            self._see(t)
        self.counts.start_bytes = self._live_bytes
        self.counts.peak_bytes = self._live_bytes

    def _see(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        ref = StorageWeakRef(st)
        if ref.cdata not in self._live:
            nb = st.nbytes()
            self._live[ref.cdata] = (ref, nb)
            self._live_bytes += nb

    def _collect(self) -> None:
        dead = [k for k, (ref, _) in self._live.items() if ref.expired()]
        for k in dead:
            self._live_bytes -= self._live.pop(k)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        ins, outs = _tensors((args, kwargs)), _tensors(out)
        if self.track_memory:
            for t in ins + outs:
                self._see(t)
        if not (_is_view(func) or name in _ALLOC_ONLY):
            nbytes = float(sum(t.numel() * t.element_size() for t in ins + outs))
            flops = 0.0
            fn = flop_registry.get(func.overloadpacket) if hasattr(func, "overloadpacket") else None
            if fn is not None:
                try:
                    flops = float(fn(*args, **kwargs, out_val=out))
                except Exception:  # noqa: BLE001 - a formula that cannot price this call counts 0
                    flops = 0.0
            c = self.counts
            c.launches += 1
            c.bytes += nbytes
            c.flops += flops
            if self.keep_ops:
                dt = outs[0].dtype if outs else (ins[0].dtype if ins else None)
                c.ops.append(OpRecord(name, flops, nbytes, dt))
        if self.track_memory:
            self._collect()
            self.counts.peak_bytes = max(self.counts.peak_bytes, self._live_bytes)
        return out


def count(fn: Callable[[], object], *, live: Iterable[torch.Tensor] = (), track_memory: bool = True) -> Counts:
    """Run ``fn()`` under a :class:`CostCounter` and return its :class:`Counts`."""
    with CostCounter(track_memory=track_memory, live=live) as m:
        fn()
    if track_memory:
        m._collect()
    return m.counts


_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward", "_convolution",
               "cudnn_convolution", "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
               "_scaled_dot_product_cudnn_attention", "_flash_attention_forward", "_efficient_attention_forward",
               "_flash_attention_backward", "_efficient_attention_backward"}


def _rate(dev: Device, rec: OpRecord) -> float:
    if rec.dtype in (torch.float16,) and rec.name in _MATMUL_OPS:
        return dev.tc16
    if rec.dtype == torch.bfloat16 and rec.name in _MATMUL_OPS and dev.bf16:
        return dev.tc16
    if rec.dtype == torch.float64:
        return dev.fp32 / 32
    return dev.fp32


def project(counts: Counts, device: str = "rtx2080ti") -> dict[str, float]:
    """Projected seconds for the counted region on ``device``: {"optimistic", "nominal", "pessimistic"}.

    Per op: ``max(flops / (rate * eff.compute), bytes / (bandwidth * eff.bandwidth)) + eff.launch_s``, summed.
    fp16 matrix ops use the tensor-core rate (bf16 too where the device supports it).
    """
    if not counts.ops and counts.launches:
        raise ValueError("project() needs per-op records: count with keep_ops=True")
    dev = DEVICES[device]
    out = {}
    for k, eff in EFFICIENCY.items():
        t = 0.0
        for r in counts.ops:
            t += max(r.flops / (_rate(dev, r) * eff.compute), r.bytes / (dev.bandwidth * eff.bandwidth)) + eff.launch_s
        out[k] = t
    return out


def format_bytes(n: float) -> str:
    for unit, div in (("GiB", GiB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


@contextlib.contextmanager
def meta_device():
    """Build modules and tensors on the meta device inside this block (``torch.device('meta')`` default)."""
    with torch.device("meta"):
        yield
