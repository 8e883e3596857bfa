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

**AMP on the meta device.** ``torch.autocast`` does nothing to meta tensors (they carry no Autocast dispatch key,
and CUDA autocast disables itself without a GPU; fake CUDA tensors cannot run backward without one either).
:class:`MetaAutocast` emulates CUDA autocast with a ``TorchFunctionMode``: the inputs of the ops that have an
``AutocastCUDA`` kernel are cast by CUDA autocast's policy (:data:`AUTOCAST_CUDA_POLICY`: fp16 for convs and matrix
products, fp32 for the precision-sensitive list, promotion for the promote list), above autograd, so the casts are
recorded by autograd (``_to_copy`` launches, fp16 copies saved for backward) exactly as under CUDA autocast, with
its weight-cast cache. :class:`MetaAmp` is the counted stand-in of ``ganops.train.Amp("fp16")`` (autocast + the
GradScaler's scale / unscale / update kernels).
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

__all__ = ["Device", "DEVICES", "Efficiency", "EFFICIENCY", "OpRecord", "Counts", "CostCounter", "count",
           "project", "format_bytes", "AUTOCAST_CUDA_POLICY", "autocast_policy", "MetaAutocast", "MetaAmp"]

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


# -- AMP emulation --------------------------------------------------------------------------------------------------
#: CUDA autocast's policy per aten op name (overloads share it), as in ATen's autocast_mode.cpp for CUDA:
#: "lower" = cast floating inputs to the autocast dtype; "fp32" = cast them to float32; "fp32_opt_dtype" = run with
#: ``dtype=float32`` when the first input is a lower-precision float and no dtype is given; "promote" = cast to the
#: widest floating input type; "banned" = raises under autocast. Every aten op with an ``AutocastCUDA`` kernel in
#: the installed torch must appear here (tests/test_profiling.py checks it).
AUTOCAST_CUDA_POLICY: dict[str, str] = {
    **dict.fromkeys(
        ["_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d", "convolution", "cudnn_convolution", "cudnn_convolution_transpose", "prelu", "addmm",
         "addmv", "addr", "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm",
         "chain_matmul", "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell", "gru_cell",
         "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
         "_cudnn_rnn"], "lower"),
    **dict.fromkeys(
        ["acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
         "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm", "group_norm", "rms_norm",
         "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss",
         "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss",
         "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
         "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
         "linalg_matrix_sqrth", "upsample_nearest1d", "_upsample_nearest_exact1d", "upsample_nearest2d",
         "_upsample_nearest_exact2d", "upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_linear1d",
         "upsample_bilinear2d", "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d",
         "_upsample_bicubic2d_aa"], "fp32"),
    **dict.fromkeys(["prod", "softmax", "log_softmax", "cumprod", "cumsum", "linalg_vector_norm", "linalg_matrix_norm",
                     "sum", "norm"], "fp32_opt_dtype"),
    **dict.fromkeys(["addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put",
                     "tensordot", "scatter_add"], "promote"),
    "binary_cross_entropy": "banned",
}
_DUNDER = {"__pow__": "pow", "__rpow__": "pow", "__matmul__": "matmul", "__rmatmul__": "matmul"}


def autocast_policy(func) -> str | None:
    """CUDA autocast's policy for a callable seen by a ``TorchFunctionMode`` (None: runs in its inputs' dtypes).

    Only C++ entry points (torch.*, Tensor methods, torch._C._nn / _linalg, ``torch.ops.aten``) are classified;
    Python functions (``F.interpolate``, ``F.batch_norm``...) are decomposed by :class:`MetaAutocast`, which sees
    the entry points they call, as CUDA autocast sees the aten ops.
    """
    if isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        ns, _, name = (func._schema.name if isinstance(func, torch._ops.OpOverload)
                       else func._qualified_op_name).partition("::")
        return AUTOCAST_CUDA_POLICY.get(name) if ns == "aten" else None
    name = getattr(func, "__name__", None)
    name = _DUNDER.get(name, name)
    return AUTOCAST_CUDA_POLICY.get(name)


_NO_TF = {"has_torch_function": lambda *a: False, "has_torch_function_unary": lambda *a: False,
          "has_torch_function_variadic": lambda *a: False}
_UNCHECKED: dict = {}


def _unchecked(func: types.FunctionType):
    """A copy of a Python torch function whose own ``has_torch_function*`` entry check is off, so that its body runs
    under a mode (the functions it calls keep their checks). None when it does not use those module globals."""
    if func in _UNCHECKED:
        return _UNCHECKED[func]
    names = set(func.__code__.co_names)
    out = None
    if names & set(_NO_TF):
        g = dict(func.__globals__)
        g.update(_NO_TF)
        out = types.FunctionType(func.__code__, g, func.__name__, func.__defaults__, func.__closure__)
        out.__kwdefaults__ = func.__kwdefaults__
    _UNCHECKED[func] = out
    return out


def _eligible(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


class MetaAutocast(TorchFunctionMode):
    """CUDA autocast emulated on any device (meant for meta tensors, where ``torch.autocast`` is a no-op).

    Use as a context, nestable like ``torch.autocast``: inside, every op with a CUDA autocast policy gets its
    floating inputs cast by that policy (:data:`AUTOCAST_CUDA_POLICY`) before it runs, above autograd, as the
    ``AutocastCUDA`` dispatch key would. Casts of float32 leaf tensors that require grad (parameters) to the
    autocast dtype are cached until the outermost context exits, as autocast's weight cache does.

    Limits: ops reached only from inside a C++ composite that has no policy itself are not seen (none in FastGAN,
    LPIPS or DiffAugment); custom ops run in their inputs' dtypes (ganops' ops register no CUDA autocast policy
    except the penalty ops, which are not emulated).
    """

    replay_in_recompute = True  # re-entered by FastGAN's checkpointed G segments when they recompute

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        self.dtype = dtype
        self._depth = 0
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._open: set = set()
        self.opaque: set[str] = set()  # Python functions that could not be decomposed (run as one unit)

    def __enter__(self):
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        out = super().__exit__(*exc)
        self._depth -= 1
        if self._depth == 0:
            self._cache.clear()
        return out

    def _cast(self, t, dtype: torch.dtype):
        if not _eligible(t) or t.dtype == dtype:
            return t
        cacheable = (dtype == self.dtype and t.dtype == torch.float32 and t.requires_grad and t.is_leaf
                     and not t._is_view())
        if cacheable:
            hit = self._cache.get(id(t))
            if hit is not None and hit[0] is t:
                return hit[1]
        out = t.to(dtype)
        if cacheable:
            self._cache[id(t)] = (t, out)
        return out

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, types.FunctionType):  # Python composite: run its body under this mode
            body = _unchecked(func)
            if body is not None and func not in self._open:
                self._open.add(func)
                try:
                    with self:
                        return body(*args, **kwargs)
                finally:
                    self._open.discard(func)
            self.opaque.add(getattr(func, "__qualname__", repr(func)))
            return func(*args, **kwargs)
        policy = autocast_policy(func)
        if policy is None:
            return func(*args, **kwargs)
        flat = [t for t in _tensors((args, kwargs)) if _eligible(t)]
        if policy == "banned":
            raise RuntimeError(f"{getattr(func, '__name__', func)} is unsafe to autocast (CUDA autocast raises)")
        if policy == "fp32_opt_dtype":
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if (first is not None and _eligible(first) and first.dtype != torch.float32
                    and kwargs.get("dtype") is None and not any(isinstance(a, torch.dtype) for a in args)):
                kwargs = {**kwargs, "dtype": torch.float32}
            return func(*args, **kwargs)
        if policy == "lower":
            to = self.dtype
        elif policy == "fp32":
            to = torch.float32
        else:  # promote
            to = self.dtype
            for t in flat:
                to = torch.promote_types(to, t.dtype)
        args, kwargs = tree_map(lambda t: self._cast(t, to) if isinstance(t, torch.Tensor) else t, (args, kwargs))
        return func(*args, **kwargs)


class MetaAmp:
    """Counted stand-in of ``ganops.train.Amp("fp16", "cuda")`` for meta-device counts: :meth:`autocast` is
    :class:`MetaAutocast`; the loss scaling runs GradScaler's kernels (scale multiply; per optimizer step the
    fused non-finite check + unscale of all gradients; one scale update per iteration). The scaler's host sync
    (``found_inf.item()``) is skipped: on meta there is no value, and every step is taken."""

    precision = "fp16"
    enabled = True

    def __init__(self, dtype: torch.dtype = torch.float16, device: str | torch.device = "meta",
                 init_scale: float = 2.0 ** 16) -> None:
        self.dtype = dtype
        self.mode = MetaAutocast(dtype)
        self._scale = torch.full((), init_scale, dtype=torch.float32, device=device)
        self._growth = torch.zeros((), dtype=torch.int32, device=device)
        self._found: list[torch.Tensor] = []

    def autocast(self) -> MetaAutocast:
        return self.mode

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self._scale.to(device=loss.device)

    def scaler_value(self) -> float:
        return 2.0 ** 16

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        inv = self._scale.double().reciprocal().float()
        found = torch.full((), 0.0, dtype=torch.float32, device=self._scale.device)
        groups: dict = {}
        for g in optimizer.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for grads in groups.values():
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv)
        self._found.append(found)
        optimizer.step()

    def update(self) -> None:
        if self._found:
            found = self._found[0]
            for f in self._found[1:]:
                found = found + f
            torch._amp_update_scale_(self._scale, self._growth, found, 2.0, 0.5, 2000)
        self._found = []
