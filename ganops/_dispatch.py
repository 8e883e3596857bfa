# SPDX-License-Identifier: BSD-3-Clause
"""Backend selection shared by every op: impl="auto"|"ref"|"cpu"|"cuda"|"triton", :func:`use_impl` and GANOPS_IMPL.

What ``impl="auto"`` means, first match wins: the innermost :func:`use_impl` scope (a training run's ``--impl``),
then the ``GANOPS_IMPL`` environment variable, then the automatic choice. An explicit ``impl=`` always wins.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import torch

from . import _ext

__all__ = ["BACKENDS", "OpInfo", "register_op", "registry", "resolve_impl", "resolve_impl_cached", "backend_status",
           "triton_status", "triton_interpreting", "triton_loader", "use_impl", "default_impl"]

BACKENDS = ("ref", "cpu", "cuda", "triton")


@dataclass
class OpInfo:
    """What backends an op has.

    ``compiled`` names the C++ forward op in the ganops namespace; ``cuda``: that op has CUDA kernels too (False for
    a CPU-only op). ``triton``: a Triton backend exists; ``load_triton`` (set by the op's module, made by
    :func:`triton_loader`) imports its ``ganops.triton.<op>_kernels`` module and registers the kernels' autograd and
    fake kernels, once; it runs whenever the triton backend is picked.
    """

    name: str
    compiled: str | None = None
    triton: bool = False
    cuda: bool = True
    load_triton: Callable[[], object] | None = None
    notes: dict = field(default_factory=dict)


_REGISTRY: dict[str, OpInfo] = {}
_WARNED: set = set()


def register_op(info: OpInfo) -> OpInfo:
    _REGISTRY[info.name] = info
    return info


def registry() -> dict[str, OpInfo]:
    return dict(_REGISTRY)


@functools.lru_cache(maxsize=None)
def triton_status() -> tuple[bool, str]:
    """(importable, reason). Computed once."""
    try:
        import triton  # noqa: F401

        return True, f"triton {triton.__version__}"
    except Exception as e:  # noqa: BLE001
        return False, f"triton not importable: {type(e).__name__}: {e}"


def triton_loader(module: str, register: Callable[[], None]) -> Callable[[], ModuleType]:
    """The ``triton_kernels()`` of an op's module, its :attr:`OpInfo.load_triton`: a function that imports
    ``ganops.triton.<module>`` (which imports Triton), runs ``register()`` (the autograd and fake kernels of the
    module's ops) and returns the module, once. A failed import raises and is tried again at the next call.

    The import is by name, at call time: this layer sits below ``ganops.triton`` and never imports it itself.
    """

    @functools.cache
    def triton_kernels() -> ModuleType:
        mod = importlib.import_module(f"{__package__}.triton.{module}")
        register()
        return mod

    triton_kernels.__doc__ = (f"The module ganops.triton.{module} (imports Triton), with its ops' autograd and fake "
                              "kernels registered; loaded once.")
    return triton_kernels


def triton_interpreting() -> bool:
    """TRITON_INTERPRET is set: Triton kernels run on CPU tensors through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# The compiled backends' reasons, in backend_status's order: (dispatch key, no kernel, not built in, ok).
_COMPILED = {
    "cpu": ("CPU", "no C++ kernel for this op", "extension built without this op", "C++ kernel"),
    "cuda": ("CUDA", "no CUDA kernel for this op", "extension built without CUDA (see `python -m ganops info`)",
             "CUDA kernel"),
}


def _compiled_status(info: OpInfo, backend: str, device: torch.device | None) -> tuple[bool, str]:
    key, missing, unbuilt, ok = _COMPILED[backend]
    if info.compiled is None or (backend == "cuda" and not info.cuda):
        return False, missing
    if not _ext.loaded:
        return False, f"extension not loaded ({_ext.load_error})"
    if not _ext.has_kernel(info.compiled, key):
        return False, unbuilt
    if device is not None and device.type != backend:
        return False, f"tensor on {device.type}, {backend} kernel needs {key} tensors"
    if backend == "cuda" and device is None and not torch.cuda.is_available():
        return False, "compiled; no CUDA device present"
    return True, ok


def backend_status(op: str, backend: str, device: torch.device | None = None) -> tuple[bool, str]:
    """Can ``backend`` run ``op`` (on ``device`` when given)? Returns (ok, reason)."""
    info = _REGISTRY[op]
    if backend == "ref":
        return True, "plain PyTorch"
    if backend in _COMPILED:
        return _compiled_status(info, backend, device)
    if backend == "triton":
        if not info.triton:
            return False, "no Triton kernel for this op"
        ok, why = triton_status()
        if not ok:
            return False, why
        dev = device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        if dev == "cuda":
            return True, why
        if dev == "cpu" and triton_interpreting():
            return True, why + " (TRITON_INTERPRET=1)"
        return False, "needs a CUDA device, or CPU tensors with TRITON_INTERPRET=1"
    raise ValueError(f"unknown backend {backend!r}; expected one of {('auto',) + BACKENDS}")


_SCOPED: list[str] = []  # the use_impl stack (innermost last)


def default_impl() -> str:
    """What ``impl="auto"`` stands for now: the innermost :func:`use_impl`, else ``GANOPS_IMPL``, else "auto"."""
    if _SCOPED:
        return _SCOPED[-1]
    return os.environ.get("GANOPS_IMPL", "auto") or "auto"


@contextlib.contextmanager
def use_impl(impl: str):
    """Within the ``with`` block, ``impl="auto"`` means ``impl`` for every op (``"auto"`` keeps the automatic
    choice, and GANOPS_IMPL); restored on exit, also after an exception. Nothing in the process environment changes.

    Example::

        with ganops.use_impl("ref"):
            loss = step(batch)  # every ganops op on its PyTorch reference
    """
    if impl not in ("auto",) + BACKENDS:
        raise ValueError(f"use_impl: impl must be one of {('auto',) + BACKENDS}, got {impl!r}")
    if impl == "auto":
        yield
        return
    _SCOPED.append(impl)
    try:
        yield
    finally:
        _SCOPED.pop()


def resolve_impl(op: str, impl: str, x: torch.Tensor) -> str:
    """Pick the backend for ``op`` on tensor ``x`` (see :func:`_resolve`)."""
    return _resolve(op, impl, x.device.type, x.device.index)


_RESOLVED: dict = {}


def resolve_impl_cached(op: str, impl: str, x: torch.Tensor) -> str:
    """:func:`resolve_impl` memoised per (op, impl, device, GANOPS_IMPL), for the ops' per-call path.

    The lookup costs ~15 us of dispatcher queries, as much as a fused op on a small tensor. Traced code calls
    :func:`resolve_impl` directly; an unavailable backend raises every time; "triton" is not memoised (on CPU its
    availability follows TRITON_INTERPRET).
    """
    if torch.compiler.is_compiling():
        return resolve_impl(op, impl, x)
    dev = x.device
    key = (op, impl, dev.type, dev.index, default_impl() if impl == "auto" else None)
    backend = _RESOLVED.get(key)
    if backend is None:
        backend = resolve_impl(op, impl, x)
        if backend != "triton":
            _RESOLVED[key] = backend
    return backend


@torch.compiler.assume_constant_result  # torch.compile evaluates the choice once, at trace time
def _resolve(op: str, impl: str, device_type: str, device_index) -> str:
    """:func:`_pick`, and the op's Triton kernels loaded (:attr:`OpInfo.load_triton`) when it picks "triton"."""
    backend = _pick(op, impl, device_type, device_index)
    if backend == "triton" and _REGISTRY[op].load_triton is not None:
        _REGISTRY[op].load_triton()
    return backend


def _pick(op: str, impl: str, device_type: str, device_index) -> str:
    """Pick the backend for ``op`` on tensor ``x``.

    ``impl="auto"`` (or what :func:`default_impl` names) tries cuda -> triton -> ref for CUDA tensors and cpu ->
    ref for CPU tensors; a fallback warns once naming the op and the reason. An explicitly requested backend that
    cannot run raises.
    """
    if impl == "auto":
        impl = default_impl()
    if impl not in ("auto",) + BACKENDS:
        raise ValueError(f"{op}: impl must be one of {('auto',) + BACKENDS}, got {impl!r}")
    dev = torch.device(device_type, device_index)
    if impl != "auto":
        ok, why = backend_status(op, impl, dev)
        if not ok:
            raise RuntimeError(f"ganops.{op}: backend {impl!r} is unavailable: {why}")
        return impl
    order = ("cuda", "triton") if dev.type == "cuda" else ("cpu",)
    reasons = []
    for b in order:
        ok, why = backend_status(op, b, dev)
        if ok:
            return b
        reasons.append(f"{b}: {why}")
    if dev.type in ("cpu", "cuda"):
        key = (op, dev.type)
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(f"ganops.{op}: using the reference implementation ({'; '.join(reasons)})", RuntimeWarning,
                          stacklevel=4)
    return "ref"
