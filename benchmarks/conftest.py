# SPDX-License-Identifier: BSD-3-Clause
"""Shared benchmark fixture: every provider of a case timed in interleaved rounds, environment in extra_info, ratios.

Every op benchmark builds all providers' callables for one (device, case, mode) and calls ``compare(op=...,
case=..., mode=..., fns={provider: fn})``, which times them in the same rounds (A B C A B C ...; CUDA events and
synchronisation on a GPU, see benchmarks.interleave). At the end of the session the ratios of each provider against
the eager reference ("ref") and the compiled reference ("ref+compile") -- the median of the per-round ratios and
its quartiles -- are printed per (op, case, mode), checked against the targets in ``OP_TARGETS`` (a row is noisy
when half its spread is wider than the margin to the target), and written to ``benchmarks/results/ops-latest.json``
(read by ``python -m benchmarks.report``). ``measure(op=..., provider=..., fn=...)`` times one provider per test,
on the same harness, for benchmarks without a reference to interleave with (bench_metrics).
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict

import pytest
import torch

from benchmarks.interleave import Interleaved, noisy, ratio_stats

RESULTS: list[dict] = []
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")

# Targets (targets.md): provider time must be <= eager ref / speedup and <= compiled ref (ratio >= 1).
OP_TARGETS = {
    "sle": {"mode": "fwd+bwd", "vs_ref": 3.0, "vs_compiled": 1.0},
    "diff_augment": {"mode": "fwd+bwd", "vs_ref": 5.0, "vs_compiled": 1.0},
    # issue 4: ">= 3x less CPU time spent on the SN part than torch's hook" (on CPU: process CPU time, all threads)
    "spectral_norm": {"mode": "fwd+bwd", "vs_ref": 3.0, "vs_compiled": None, "cpu_time": True},
    "gradient_penalty": {"mode": "fwd+bwd", "vs_ref": 1.5, "vs_compiled": None},
}


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def environment() -> dict:
    import ganops

    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "ganops": ganops.__version__,
        "extension": ganops._ext.loaded,
        "git": git_rev(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


_GIT = git_rev()


def _load() -> float | None:
    """1-minute load average when the figure was taken (the shared 2-core machines are often busy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


_RUNS = itertools.count()


def make_compare(benchmark, interleaved: bool = True):
    """compare(op, case, mode, fns, device="cpu", rounds=11, warmup=3, bytes=None, min_bytes=None) -> results.

    ``fns`` maps provider -> callable; all of them are timed in the same interleaved rounds (A B C A B C ..., see
    benchmarks.interleave): ``benchmark.pedantic`` runs ``warmup`` untimed rounds and then ``rounds`` rounds, each
    calling every provider once; pytest-benchmark's own figure is the time of a whole round, and each provider's
    wall and process CPU seconds per round are collected inside it. Ratios are then taken per round, so the sides
    of a ratio share whatever else the machine was doing in that round (on the shared 2-core machines other jobs,
    OpenMP wake-ups and the allocator's state make single calls 2-10x slower at random), and summarised by their
    median and quartiles in ``ratio_rows``. ``bytes`` maps provider -> bytes counted per call (ganops.profiling).
    Returns provider -> its result entry (also appended to ``RESULTS``); empty under ``--benchmark-disable``.
    ``interleaved=False`` is the single-provider ``measure`` fixture's mode (its entries pair with no other test's).
    """

    def run(*, op, case, mode, fns, device="cpu", rounds=11, warmup=3, bytes=None, min_bytes=None) -> dict:
        timer = Interleaved(fns, device)
        run_id = f"{_GIT}-{os.getpid()}-{next(_RUNS)}"
        benchmark.group = f"{op} | {case} | {mode}"
        benchmark.name = f"interleaved: {' / '.join(fns)}" if interleaved else next(iter(fns))
        benchmark.extra_info.update(environment())
        benchmark.extra_info.update(op=op, case=case, mode=mode, device=device, providers=list(fns), rounds=rounds)
        if bytes:
            benchmark.extra_info["bytes"] = bytes
        benchmark.pedantic(timer.round, rounds=rounds, warmup_rounds=warmup, iterations=1)
        if getattr(benchmark, "disabled", False):  # one untimed call of each provider: nothing to record
            return {}
        wall, cpu = timer.last(rounds)
        out = {}
        for p in fns:
            w, c = wall[p], cpu[p]
            out[p] = dict(op=op, case=case, mode=mode, provider=p, device=device, run=run_id, interleaved=interleaved,
                          rounds=len(w), wall_s=w, cpu_s=c, mean_s=statistics.mean(w), min_s=min(w),
                          median_s=statistics.median(w), cpu_median_s=statistics.median(c), cpu_min_s=min(c),
                          bytes=(bytes or {}).get(p), min_bytes=min_bytes, date=time.strftime("%Y-%m-%d %H:%M:%S"),
                          git=_GIT, load=_load())
            RESULTS.append(out[p])
        benchmark.extra_info["median_s"] = {p: r["median_s"] for p, r in out.items()}
        benchmark.extra_info["cpu_median_s"] = {p: r["cpu_median_s"] for p, r in out.items()}
        return out

    return run


@pytest.fixture
def compare(benchmark):
    """The op benchmarks' fixture: every provider of one (device, case, mode) in the same rounds; see make_compare."""
    return make_compare(benchmark)


def make_measure(benchmark):
    """measure(op, case, mode, provider, fn, device="cpu", rounds=11, warmup=3, bytes=None, min_bytes=None).

    One provider in its own block of rounds (benchmarks without a reference to interleave with, e.g. metrics): its
    ratios against providers of other tests are ratios of minimums, without a spread. Op benchmarks use compare.
    """
    run = make_compare(benchmark, interleaved=False)

    def one(*, op, case, mode, provider, fn, device="cpu", rounds=11, warmup=3, bytes=None, min_bytes=None):
        return run(op=op, case=case, mode=mode, fns={provider: fn}, device=device, rounds=rounds, warmup=warmup,
                   bytes=None if bytes is None else {provider: bytes}, min_bytes=min_bytes).get(provider)

    return one


@pytest.fixture
def measure(benchmark):
    """One provider per test (bench_metrics); see make_measure."""
    return make_measure(benchmark)


def _ratio(ref: dict | None, r: dict, key: str) -> dict | None:
    """Speed-up of ``r`` over ``ref`` (``key``: "wall_s" or "cpu_s"): the per-round ratios when both were timed in
    the same interleaved run (benchmarks.interleave.ratio_stats).

    Sides timed in separate blocks of rounds (``measure``, or results written before the interleaved harness, which
    have no per-round lists) get the ratio of their minimums, without a spread (lo = hi = None).
    """
    if not ref:
        return None
    a, b = ref.get(key), r.get(key)
    if a and b and ref.get("run") is not None and ref.get("run") == r.get("run"):
        return ratio_stats(a, b)
    mk = "min_s" if key == "wall_s" else "cpu_min_s"
    if ref.get(mk) and r.get(mk):
        return {"median": ref[mk] / r[mk], "lo": None, "hi": None}
    return None


def ratio_rows(results: list[dict]) -> list[dict]:
    """One row per (op, case, mode, device, provider != ref*): speed-ups vs the eager and the compiled reference.

    Each ratio (``vs_ref``, ``vs_compiled``, and ``vs_ref_cpu_time`` from process CPU time) is the median of the
    per-round ratios, with ``<ratio>_lo`` / ``<ratio>_hi`` their first and third quartiles (sides not timed in one
    run: the ratio of their minimums, lo = hi = None; see _ratio). ``meets_target`` checks the medians against
    ``OP_TARGETS``; ``<ratio>_noisy`` is set for each checked ratio with a spread (benchmarks.interleave.noisy: half
    the spread wider than the margin to the target) and ``noisy`` is True when any of them is.
    """
    by = defaultdict(dict)
    for r in results:
        by[(r["op"], r["case"], r["mode"], r["device"])][r["provider"]] = r
    rows = []
    for (op, case, mode, dev), provs in by.items():
        ref = provs.get("ref")
        comp = provs.get("ref+compile")
        for p, r in provs.items():
            if p in ("ref", "ref+compile"):
                continue
            row = dict(op=op, case=case, mode=mode, device=dev, provider=p, time_s=r.get("median_s", r.get("min_s")),
                       rounds=r.get("rounds"), bytes=r.get("bytes"), min_bytes=r.get("min_bytes"))
            for key, other, times in (("vs_ref", ref, "wall_s"), ("vs_ref_cpu_time", ref, "cpu_s"),
                                      ("vs_compiled", comp, "wall_s")):
                st = _ratio(other, r, times)
                row[key] = st["median"] if st else None
                row[f"{key}_lo"] = st["lo"] if st else None
                row[f"{key}_hi"] = st["hi"] if st else None
            rows.append(check_targets(row))
    return rows


def check_targets(row: dict) -> dict:
    """Set ``row``'s ``meets_target`` (its medians against ``OP_TARGETS``), ``<ratio>_noisy`` for each checked ratio
    with a spread and ``noisy`` (any of them); returns the row."""
    tgt = OP_TARGETS.get(row["op"])
    ok = noisy_any = None
    if tgt and tgt["mode"] == row["mode"]:
        ok = True
        key = "vs_ref_cpu_time" if tgt.get("cpu_time") and row["device"] == "cpu" else "vs_ref"
        for k, limit in ((key, tgt["vs_ref"]), ("vs_compiled", tgt["vs_compiled"])):
            if not limit or row.get(k) is None:
                continue
            ok &= row[k] >= limit
            if row.get(f"{k}_lo") is not None:
                row[f"{k}_noisy"] = noisy({"median": row[k], "lo": row[f"{k}_lo"], "hi": row[f"{k}_hi"]}, limit)
                noisy_any = bool(noisy_any) or row[f"{k}_noisy"]
    row["meets_target"] = ok
    row["noisy"] = noisy_any
    return row


def _spread(r: dict, key: str) -> str:
    if r.get(key) is None:
        return "-"
    if r.get(f"{key}_lo") is None:
        return f"{r[key]:.2f}x"
    return f"{r[key]:.2f}x [{r[f'{key}_lo']:.2f}-{r[f'{key}_hi']:.2f}]"


def merge_results(old: list[dict], new: list[dict]) -> list[dict]:
    """Earlier results with the groups ``new`` re-measured replaced in place, so one file holds the latest figure of
    each in a stable order. An interleaved (op, case, mode, device) group is replaced whole: its providers come from
    one run (one test), so their rounds pair up; a ``measure`` entry replaces its own provider's entry only."""
    def slot(r, interleaved):
        k = (r["op"], r["case"], r["mode"], r["device"])
        return k if interleaved else k + (r["provider"],)

    slots: dict[tuple, list[dict]] = {}
    for r in new:
        slots.setdefault(slot(r, r.get("interleaved", False)), []).append(r)
    out, done = [], set()
    for r in old:
        k = next((k for k in (slot(r, True), slot(r, False)) if k in slots), None)
        if k is None:
            out.append(r)
        elif k not in done:
            out += slots[k]
            done.add(k)
    return out + [r for k, rs in slots.items() if k not in done for r in rs]


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    rows = ratio_rows(RESULTS)
    tr = terminalreporter
    tr.section("ganops: speed-ups of each provider vs the eager and compiled reference (interleaved rounds: median "
               "of the per-round ratios [quartiles])")
    tr.write_line(f"{'op':16} {'case':22} {'mode':8} {'provider':11} {'median':>10} {'vs ref':>20} "
                  f"{'vs comp':>20} {'bytes/min':>9}  target")
    for r in sorted(rows, key=lambda r: (r["op"], r["mode"], r["case"], r["provider"])):
        vr = _spread(r, "vs_ref_cpu_time" if OP_TARGETS.get(r["op"], {}).get("cpu_time") and r["device"] == "cpu"
                     else "vs_ref")
        vc = _spread(r, "vs_compiled")
        bm = f"{r['bytes'] / r['min_bytes']:.2f}" if r.get("bytes") and r.get("min_bytes") else "-"
        mark = {True: "met", False: "MISSED", None: ""}[r["meets_target"]] + (", noisy" if r["noisy"] else "")
        tr.write_line(f"{r['op']:16} {r['case']:22} {r['mode']:8} {r['provider']:11} {r['time_s'] * 1e3:8.2f}ms "
                      f"{vr:>20} {vc:>20} {bm:>9}  {mark}")
    tr.write_line("(spectral_norm on CPU: vs ref is the ratio of process CPU time, what its target is stated in; "
                  "noisy: half the quartile spread is wider than the margin to the target)")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, "ops-latest.json")
    old = []
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f).get("results", [])
        except (OSError, ValueError):
            old = []
    merged = merge_results(old, RESULTS)
    with open(path, "w") as f:
        json.dump({"environment": environment(), "results": merged, "ratios": ratio_rows(merged)}, f, indent=1)
    tr.write_line(f"results written to {os.path.relpath(path)}")
