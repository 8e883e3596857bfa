# SPDX-License-Identifier: BSD-3-Clause
"""Report torch/CUDA/Triton versions, the extension's build, and which backend can run each op."""
from __future__ import annotations

import argparse
import platform

import torch

from . import _ext
from ._dispatch import BACKENDS, backend_status, registry, triton_status

__all__ = ["info_table", "main"]


def _cuda_cell(op) -> str:
    """The cuda column: distinguishes 'compiled, no GPU' (usable on a GPU machine) from 'not built'."""
    ok, why = backend_status(op.name, "cuda")
    if ok:
        return "available"
    if op.compiled and _ext.has_kernel(op.compiled, "CUDA"):
        return "compiled (no GPU here)"
    return f"no: {why}"


def info_table() -> list[tuple[str, dict]]:
    """[(op, {backend: status text})] for every registered op."""
    import ganops.ops  # noqa: F401  (registers every op)

    rows = []
    for name, op in sorted(registry().items()):
        cells = {}
        for b in BACKENDS:
            if b == "cuda":
                cells[b] = _cuda_cell(op)
            elif b == "triton" and not torch.cuda.is_available():
                ok, why = backend_status(name, b, torch.device("cpu"))
                if ok:
                    cells[b] = "available (interpreted)"
                elif op.triton and triton_status()[0]:
                    cells[b] = "interpreted with TRITON_INTERPRET=1"
                else:
                    cells[b] = f"no: {why}"
            else:
                ok, why = backend_status(name, b, torch.device("cpu") if b in ("cpu", "ref") else None)
                cells[b] = "available" if ok else f"no: {why}"
        rows.append((name, cells))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganops", description=__doc__)
    p.add_argument("command", nargs="?", default="info", choices=["info"], help="what to print (default: info)")
    p.parse_args(argv)
    import ganops

    tri_ok, tri = triton_status()
    print(f"ganops {ganops.__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  torch CUDA {torch.version.cuda}  "
          f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    print(f"triton: {tri}")
    if _ext.loaded:
        bi = _ext.build_info()
        cuda = "with CUDA kernels" if _ext.cuda_compiled() else "CPU kernels only"
        print(f"extension ganops._C: loaded, {cuda}")
        if bi:
            print(f"  built against torch {bi.get('torch')} (CUDA {bi.get('torch_cuda')}); "
                  f"CUDA: {bi.get('cuda_reason')}; nvcc {bi.get('nvcc', '-')}; archs {bi.get('arch_list', '-')}")
    else:
        print(f"extension ganops._C: NOT loaded ({_ext.load_error}); ops use the reference/Triton backends")
    rows = info_table()
    w0 = max([len("op")] + [len(r[0]) for r in rows])
    widths = {b: max(len(b), *(len(c[b]) for _, c in rows)) for b in BACKENDS}
    print()
    print("  ".join(["op".ljust(w0)] + [b.ljust(widths[b]) for b in BACKENDS]))
    print("  ".join(["-" * w0] + ["-" * widths[b] for b in BACKENDS]))
    for name, cells in rows:
        print("  ".join([name.ljust(w0)] + [cells[b].ljust(widths[b]) for b in BACKENDS]))
    print("\nauto picks cuda -> triton -> ref for CUDA tensors and cpu -> ref for CPU tensors; GANOPS_IMPL overrides.")
    return 0
