# SPDX-License-Identifier: BSD-3-Clause
"""Shared test helpers: devices, dtypes with tolerances, layouts, and backend lists."""
from __future__ import annotations

import os

import pytest
import torch

# Triton picks interpreted or compiled kernels when a kernel module is imported: on a machine without a GPU the
# interpreter is the only way to run them, so turn it on before anything imports a kernel module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import ganops  # noqa: E402
import ganops._dispatch  # noqa: E402
from ganops._dispatch import backend_status  # noqa: E402

# Tolerances per dtype, relative to the float64 reference computed from the same (rounded) inputs:
# fp32 differs from the reference only by summation order; fp16/bf16 round the output once (and the reference
# computes in the low precision itself), so allow a few ulps of each format.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]

HAS_CUDA = torch.cuda.is_available()
# `-m cuda` selects exactly the tests that need a GPU (tests/test_markers.py checks that every test using a CUDA
# device carries the marker); without a GPU they skip with a reason.
CUDA_MARKS = (pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))


def _apply(marks, obj):
    for m in reversed(marks):
        obj = m(obj)
    return obj


def requires_cuda(obj):
    """Decorator: the `cuda` marker plus a skip without a GPU."""
    return _apply(CUDA_MARKS, obj)


def devices():
    """Devices to parametrize over: "cpu", and "cuda" carrying the cuda marks (skipped without a GPU)."""
    return ["cpu", pytest.param("cuda", marks=CUDA_MARKS)]


def triton_device() -> str:
    """Where the Triton tests put their tensors: compiled kernels on the GPU when there is one, the interpreter on CPU
    tensors otherwise (TRITON_INTERPRET=1 is only set above when no GPU is present)."""
    return "cuda" if HAS_CUDA else "cpu"


def device_for(backend: str) -> str:
    """The device a test runs `backend` on: "cuda" for "cuda", triton_device() for "triton", else "cpu"."""
    return "cuda" if backend == "cuda" else triton_device() if backend == "triton" else "cpu"


def make_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """Return a tensor equal to x in the given memory layout (strided = a non-dense view)."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        big = torch.zeros(*x.shape[:-1], x.shape[-1] * 2, dtype=x.dtype, device=x.device)
        big[..., ::2] = x
        v = big[..., ::2]
        assert x.shape[-1] <= 1 or not v.is_contiguous()
        return v
    raise ValueError(layout)


def compiled_backends(op: str, device: str = "cpu") -> list[str]:
    """Non-reference backends that can run `op` on `device` here (cpu/cuda kernels; triton under the
    interpreter only when TRITON_INTERPRET=1 is set for the whole test process)."""
    out = []
    for b in ("cpu", "cuda", "triton"):
        ok, _ = backend_status(op, b, torch.device(device))
        if ok:
            out.append(b)
    return out


def checked_backends(op: str, device: str = "cpu") -> list[str]:
    """compiled_backends(op, device), failing when the extension loaded without op's cpu kernel (a broken build
    must not pass as skipped cpu tests)."""
    bs = compiled_backends(op, device)
    assert "cpu" in bs or device != "cpu" or not ganops._ext.loaded, f"extension loaded but the {op} cpu kernel missing"
    return bs


def backend_available(op: str, backend: str) -> bool:
    """Is `backend` runnable for `op` on its test device (device_for: Triton on the GPU when there is one)?"""
    return backend == "ref" or backend in checked_backends(op, device_for(backend))


def skip_unless_available(op: str, backend: str) -> None:
    """Skip the calling test unless backend_available(op, backend)."""
    if not backend_available(op, backend):
        pytest.skip(f"{backend} unavailable here")


TRITON_MARKS = (pytest.mark.triton, pytest.mark.skipif(
    not (HAS_CUDA or ganops._dispatch.triton_interpreting()) or not ganops._dispatch.triton_status()[0],
    reason="Triton needs a GPU or TRITON_INTERPRET=1",
))


def requires_triton(obj):
    """Decorator: the `triton` marker plus a skip where Triton cannot run. Put the test's tensors on
    triton_device()."""
    return _apply(TRITON_MARKS, obj)


def backends(*names: str) -> list:
    """Backend names for parametrize: "triton" carries the triton marker, "cuda" the cuda marks."""
    marks = {"triton": (pytest.mark.triton,), "cuda": CUDA_MARKS}
    return [pytest.param(n, marks=marks[n]) if n in marks else n for n in names]


requires_ext = pytest.mark.skipif(not ganops._ext.loaded, reason=f"extension not loaded: {ganops._ext.load_error}")
