# SPDX-License-Identifier: BSD-3-Clause
"""One table of every target in shared/spec/targets.md: `python -m benchmarks.report [--run] [--markdown]`.

Reads the latest results in benchmarks/results/ (op microbenchmarks from `pytest benchmarks/ --benchmark-only`,
model-level figures written by the bench_* scripts through benchmarks.targets.write_rows, and the device check's
benchmarks/results/gpu/results.json when a GPU session committed one: benchmarks.gpu_results). `--run` refreshes them
first (minutes on a 2-core CPU). Each row is `measured` (on the device named) or `projected` (roofline model of
ganops.profiling for a GPU we did not run on). Exit status 1 when a measured target is missed or a result is
missing; projected misses are reported but do not fail (they are model outputs, not measurements). An op ratio is
the median of per-round ratios (providers timed in interleaved rounds); its note gives the quartiles, and "noisy"
when half that spread is wider than the margin to the target (the rounds do not settle which side it is on).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

from .gpu_results import gpu_rows, gpu_train_rows
from .targets import RESULTS_DIR, Row, read_rows

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Model-level results each bench script must write (name -> how to produce it).
# (The op benchmarks -- SLE, DiffAugment, spectral norm, penalties -- are pytest-benchmark files whose ratios land
# in ops-latest.json; spectral-norm launch counts are counted here, live, in sn_launch_rows.)
MODEL_BENCHES = {
    "fastgan": [sys.executable, "-m", "benchmarks.bench_fastgan"],
    "consingan": [sys.executable, "-m", "benchmarks.bench_consingan"],
    "gmm": [sys.executable, "-m", "benchmarks.bench_gmm"],
}
# (bench_fastgan writes the check of the projection model: the paper's 2080 Ti times inside the reference band.)
OP_TARGET_TEXT = {
    "sle": "SLE fwd+bwd",
    "diff_augment": "DiffAugment fwd+bwd",
    "spectral_norm": "spectral norm fwd+bwd",
    "gradient_penalty": "gradient penalty",
}


NOISY = ", noisy"


def spread_note(r: dict, key: str) -> str:
    """The note of one ratio: 'median 2.90x [2.60-3.20]' (the median of the per-round ratios and its quartiles), or
    for several runs (``--repeat``) 'median of 3 runs 2.90x [range 2.60-3.20]'; ', noisy' appended when half that
    spread is wider than the margin to the target; '' without per-round figures."""
    if r.get(key) is None or r.get(f"{key}_lo") is None:
        return ""
    lo, hi = r[f"{key}_lo"], r[f"{key}_hi"]
    text = (f"median of {r['runs']} runs {r[key]:.2f}x [range {lo:.2f}-{hi:.2f}]" if r.get("runs", 1) > 1
            else f"median {r[key]:.2f}x [{lo:.2f}-{hi:.2f}]")
    return text + (NOISY if r.get(f"{key}_noisy") else "")


def is_noisy(row: Row) -> bool:
    """A row whose note marks its ratio noisy (spread_note)."""
    return "]" + NOISY in row.note


def op_rows() -> list[Row]:
    path = os.path.join(RESULTS_DIR, "ops-latest.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        data = json.load(f)
    env = data.get("environment", {})
    dev = env.get("gpu") or f"CPU ({env.get('threads', '?')} threads)"
    from .conftest import OP_TARGETS

    rows = []
    for r in data.get("ratios", []):
        tgt = OP_TARGETS.get(r["op"])
        if not tgt or r["mode"] != tgt["mode"] or r["provider"] in ("triton",) and r["device"] == "cpu":
            continue
        label = f"{OP_TARGET_TEXT.get(r['op'], r['op'])} {r['case']} [{r['provider']}]"
        d = dev if r["device"] == "cuda" else f"CPU ({env.get('threads', '?')} threads)"
        if tgt.get("cpu_time") and r["device"] == "cpu" and r.get("vs_ref_cpu_time") is not None:
            wall = ""
            if r.get("vs_ref"):
                wall = f"wall time {r['vs_ref']:.2f}x"
                if r.get("vs_ref_lo") is not None:
                    wall += f" [{r['vs_ref_lo']:.2f}-{r['vs_ref_hi']:.2f}]"
            note = "; ".join(n for n in (spread_note(r, "vs_ref_cpu_time"), wall) if n)
            rows.append(Row(f"{label} CPU time vs eager ref", r["vs_ref_cpu_time"], tgt["vs_ref"], "x", "measured", d,
                            True, note=note))
        elif r.get("vs_ref") is not None and tgt["vs_ref"]:
            rows.append(Row(f"{label} vs eager ref", r["vs_ref"], tgt["vs_ref"], "x", "measured", d, True,
                            note=spread_note(r, "vs_ref")))
        if r.get("vs_compiled") is not None and tgt["vs_compiled"]:
            rows.append(Row(f"{label} vs compiled ref", r["vs_compiled"], tgt["vs_compiled"], "x", "measured", d, True,
                            note=spread_note(r, "vs_compiled")))
        if r.get("bytes") and r.get("min_bytes") and r["op"] == "diff_augment":
            rows.append(Row(f"{label} bytes / one-read-one-write", r["bytes"] / r["min_bytes"], 1.25, "x",
                            "measured", "counted (any device)"))
    return rows


def sn_launch_rows() -> list[Row]:
    """Spectral-norm launches per forward + backward for 11/22/44 FastGAN-D layers (counted, any device)."""
    from .bench_spectral_norm import FASTGAN_D_CONVS, launches

    rows = []
    for prov in ("ref", "cpu-grouped"):
        try:
            n = [launches(prov, "cpu", FASTGAN_D_CONVS[:k]) for k in (11, 44)]
        except Exception as e:  # noqa: BLE001 -- e.g. no compiled extension: say so in the table
            rows.append(Row(f"spectral norm launches [{prov}]: not counted ({e})", float("nan"), None, "", "counted",
                            "any"))
            continue
        name = "torch's hook" if prov == "ref" else "ganops grouped"
        rows.append(Row(f"spectral norm launches per fwd+bwd, 44 SN layers [{name}]", n[1], None, "launches",
                        "counted", "any (aten-level ops)", note=f"{n[0]} at 11 layers"))
        if prov != "ref":
            rows.append(Row(f"spectral norm launches added by 33 more SN layers [{name}]", n[1] - n[0], 0,
                            "launches", "counted", "any (aten-level ops)", note="target: constant in the layers"))
    return rows


def model_rows() -> tuple[list[Row], list[str]]:
    rows, missing = [], []
    for name in MODEL_BENCHES:
        path = os.path.join(RESULTS_DIR, f"{name}.json")
        if not os.path.exists(path):
            missing.append(name)
            continue
        _, rs = read_rows(path)
        rows.extend(rs)
    return rows, missing


RATIO_KEYS = ("vs_ref", "vs_ref_cpu_time", "vs_compiled")


def across_runs(runs: list[list[dict]]) -> list[dict]:
    """The op ratio rows of several runs of the op benchmarks as one: each ratio the median of the runs' medians,
    ``_lo`` / ``_hi`` their smallest and largest (a rerun's spread, which on a shared machine is wider than one run's
    quartiles: page faults and other tenants change between runs, not between interleaved rounds), ``_runs`` the
    values, ``runs`` their count, noisy and meets_target recomputed (``conftest.check_targets``). Rows are those of the
    last run; a ratio missing from some run is taken over the runs that have it."""
    import statistics

    from .conftest import check_targets

    def key(r):
        return r["op"], r["case"], r["mode"], r["device"], r["provider"]

    by = {}
    for rows in runs:
        for r in rows:
            by.setdefault(key(r), []).append(r)
    out = []
    for r in runs[-1]:
        row, same = dict(r), by[key(r)]
        row["runs"] = len(same)
        for k in RATIO_KEYS:
            vals = [x[k] for x in same if x.get(k) is not None]
            if not vals:
                continue
            row[k], row[f"{k}_runs"] = statistics.median(vals), vals
            row[f"{k}_lo"], row[f"{k}_hi"] = min(vals), max(vals)
        out.append(check_targets(row))
    return out


def run_all(repeat: int = 1) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.time()
    ops = os.path.join(RESULTS_DIR, "ops-latest.json")
    runs = []
    for i in range(repeat):
        if repeat > 1:
            print(f"== op benchmarks, run {i + 1} of {repeat}", flush=True)
        subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q",
                        "--benchmark-json", os.path.join(RESULTS_DIR, "pytest-benchmark.json")], cwd=ROOT, env=env,
                       check=False)
        with open(ops) as f:
            data = json.load(f)
        runs.append(data.get("ratios", []))
    if repeat > 1:
        data["ratios"], data["runs"] = across_runs(runs), repeat
        with open(ops + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
        os.replace(ops + ".tmp", ops)
    for name, cmd in MODEL_BENCHES.items():
        path = os.path.join(RESULTS_DIR, f"{name}.json")
        if os.path.exists(path) and os.path.getmtime(path) >= start:
            continue  # its pytest entry point already wrote fresh rows
        if os.path.exists(os.path.join(HERE, f"bench_{name}.py")):
            print(f"== {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, cwd=ROOT, env=env, check=False)


def fmt(v: float, unit: str) -> str:
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "bool":
        return "yes" if v else "no"
    if unit == "launches":
        return f"{v:.0f}"
    if unit in ("s", "min", "GiB", "ms"):
        return f"{v:.3g} {unit}"
    return f"{v:.4g} {unit}".strip()


def _lim(r: Row, sep: str) -> str:
    if r.limit is None:
        return "-"
    if r.unit == "bool":
        return "yes"
    return ("≥" if r.higher_is_better else "≤") + sep + fmt(r.limit, r.unit)


def render(rows: list[Row], missing: list[str], markdown: bool) -> str:
    lines = []
    mark = {True: "✓", False: "✗", None: "–"}
    if markdown:
        lines.append("| target | figure | target value | kind | device | |")
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            lim = _lim(r, " ")
            note = f" ({r.note})" if r.note else ""
            lines.append(f"| {r.target}{note} | {fmt(r.value, r.unit)} | {lim} | {r.kind} | {r.device} | {mark[r.ok]} |")
        for m in missing:
            lines.append(f"| {m}: no results (run `python -m benchmarks.bench_{m}`) | – | – | – | – | ✗ |")
        return "\n".join(lines)
    w = max([len(r.target) for r in rows] + [20])
    lines.append(f"{'target':{w}}  {'figure':>12}  {'target':>12}  {'kind':9}  {'ok':2}  device")
    for r in rows:
        lim = _lim(r, "")
        lines.append(f"{r.target:{w}}  {fmt(r.value, r.unit):>12}  {lim:>12}  {r.kind:9}  {mark[r.ok]:2}  {r.device}"
                     + (f"  ({r.note})" if r.note else ""))
    for m in missing:
        lines.append(f"{m + ': no results':{w}}  {'-':>12}  {'-':>12}  {'-':9}  ✗   run python -m benchmarks.bench_{m}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run every benchmark first (minutes)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="with --run: run the op benchmarks N times; each ratio is then the median of the N runs with "
                        "their range (what a rerun reproduces), noisy when that range straddles the target")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    if args.run:
        run_all(args.repeat)
    rows = op_rows()
    mrows, missing = model_rows()
    rows += mrows + sn_launch_rows() + gpu_rows() + gpu_train_rows()
    if not glob.glob(os.path.join(RESULTS_DIR, "ops-latest.json")):
        missing.insert(0, "ops (pytest benchmarks/ --benchmark-only)")
    print(render(rows, missing, args.markdown))
    failed = [r for r in rows if r.kind in ("measured", "counted") and r.ok is False]
    proj_missed = [r for r in rows if r.kind == "projected" and r.ok is False]
    noisy = [r for r in rows if is_noisy(r)]
    print(f"\n{len(rows)} rows: {sum(r.ok is True for r in rows)} met, {len(failed)} measured missed, "
          f"{len(proj_missed)} projected missed, {len(missing)} without results, {len(noisy)} noisy")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
