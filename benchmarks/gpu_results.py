# SPDX-License-Identifier: BSD-3-Clause
"""The device check's results as report rows: ``benchmarks/results/gpu/results.json`` -> :class:`Row` list.

``bash benchmarks/gpu_check.sh`` writes ``results.json`` (every section's JSON and each step's exit status); a
session that ran it on a lent GPU commits that file under ``benchmarks/results/gpu/``, and ``python -m
benchmarks.report`` shows these rows beside the projections: each one ``measured`` on the GPU it names. A step that
failed, timed out or was skipped still gives a row (a figure the check could not reach is said, never dropped).
"""
from __future__ import annotations

import glob
import json
import math
import os

from .targets import RESULTS_DIR, Row

GPU_RESULTS = os.path.join(RESULTS_DIR, "gpu", "results.json")

# The GPU targets (shared/spec/targets.md and the device-check issue).
SPEED_TARGET_VS_REF = {"sle": 3.0, "diff_augment": 5.0, "gradient_penalty": 1.5, "spectral_norm": 3.0}
COPY_BW_FRACTION = 0.7
FASTGAN_TARGETS = {"speedup_recommended": 2.5, "memory_ratio_recommended": 0.45, "speedup_fp32": 1.3}


def _ratio_note(st: dict) -> str:
    return f"median of per-round ratios, spread {st['lo']:.2f}-{st['hi']:.2f}" if st else ""


def _step_row(label: str, step: dict | None, device: str) -> Row | None:
    """A row for a step that did not finish (exit status, limit, skip): the figure it should have given is missing."""
    if step is None:
        return Row(f"{label}: not run", float("nan"), None, "", "measured", device, note="no step in results.json")
    rc = step.get("rc", 0)
    if rc == 0:
        return None
    why = {124: "ran past its time limit", 137: "killed at its time limit", -1: step.get("note") or "skipped"}
    return Row(f"{label}: step exit {rc}", float(rc), 0, "", "measured", device,
               note=why.get(rc, "failed; see its log in gpu-check.tar.gz"))


def _load(path: str) -> dict | None:
    """``path``, merged with its siblings ``results-*.json`` (a second call's steps, e.g. the ones the first call's
    budget skipped: later files replace a step and its section); None when there is none."""
    paths = sorted(glob.glob(os.path.join(os.path.dirname(path), "results-*.json")))
    paths = ([path] if os.path.exists(path) else []) + paths
    if not paths:
        return None
    data: dict = {"steps": {}, "sections": {}}
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        data["device"] = data.get("device") or d.get("device")
        for k, st in d.get("steps", {}).items():
            if st.get("rc") == -1 and k in data["steps"]:
                continue  # skipped there, ran in an earlier file
            data["steps"][k] = st
            if k in d.get("sections", {}):
                data["sections"][k] = d["sections"][k]
        for k, sec in d.get("sections", {}).items():
            data["sections"].setdefault(k, sec)
    return data


def gpu_rows(path: str = GPU_RESULTS) -> list[Row]:
    """Rows of one device check's ``results.json`` (and ``results-*.json`` beside it); [] when there is none."""
    data = _load(path)
    if data is None:
        return []
    sec = data.get("sections", {})
    steps = data.get("steps", {})
    dev = data.get("device") or sec.get("env", {}).get("device") or "GPU"
    torch_v = sec.get("env", {}).get("torch", "?")
    rows: list[Row] = []

    # correctness: mismatches per op group (target 0), and compute-sanitizer
    for name in sorted(k for k in steps if k.startswith("correct-")):
        d = sec.get(name)
        bad = _step_row(f"GPU correctness {name[8:]}", steps[name], dev)
        if d:
            rows.append(Row(f"GPU correctness {d['group']}: mismatches vs float64 ({', '.join(d['backends'])})",
                            d["mismatches"] + d.get("not_run", 0), 0, "", "measured", dev,
                            note=f"{d['checks']} checks" + (f", {d['not_run']} not run" if d.get("not_run") else "")))
        if bad and not (d and bad.value == 1):  # rc 1 = mismatches, already in the row above
            rows.append(bad)
    if "memcheck" in steps:
        st = steps["memcheck"]
        rows.append(Row("compute-sanitizer memcheck: errors (exit status 9 = errors found)", float(st["rc"]), 0, "",
                        "measured", dev, note=f"{st['seconds']} s"))
    if "fuzz" in steps:  # tests/test_fuzz.py on cuda and compiled Triton: pytest's exit status (0 = no mismatch)
        st = steps["fuzz"]
        rows.append(Row("GPU fuzz suite (cuda, Triton): pytest exit status", float(st["rc"]), 0, "", "measured", dev,
                        note=f"{st['seconds']} s" + (f"; {st['note']}" if st.get("note") else "")))
    if "tests" in sec:
        t = sec["tests"]
        rows.append(Row(f"pytest -m 'cuda or triton' on the GPU: failures ({t.get('passed', 0)} passed, "
                        f"{t.get('skipped', 0)} skipped)", t.get("failed", 0) + t.get("errors", 0), 0, "",
                        "measured", dev, note=", ".join(t.get("failed_ids", [])[:3])))

    # op speed: vs eager and compiled reference, achieved bandwidth against the measured copy bandwidth
    sp = sec.get("speed")
    if sp:
        for r in sp.get("rows", []):
            if "error" in r:
                rows.append(Row(f"{r['op']} {r['case']}: error", float("nan"), None, "", "measured", dev,
                                note=r["error"][:120]))
                continue
            label = f"GPU {r['op']} fwd+bwd {r['case']} [{r['provider']}]"
            tgt = SPEED_TARGET_VS_REF.get(r["op"])
            if r.get("vs_ref"):
                rows.append(Row(f"{label} vs eager ref", r["vs_ref"]["median"], tgt, "x", "measured", dev, True,
                                note=_ratio_note(r["vs_ref"]) + (", noisy" if r.get("noisy") else "")))
            if r.get("vs_compiled"):
                rows.append(Row(f"{label} vs compiled ref", r["vs_compiled"]["median"], 1.0, "x", "measured", dev,
                                True, note=_ratio_note(r["vs_compiled"])))
            rows.append(Row(f"{label} fraction of copy bandwidth", r["frac_copy_bw"], COPY_BW_FRACTION, "x",
                            "measured", dev, True,
                            note=f"{r['gbps']:.0f} of {r['copy_gbps']:.0f} GB/s for its minimum bytes"))
    elif "speed" in steps:
        rows.append(_step_row("GPU op speed", steps["speed"], dev))

    # FastGAN: one full iteration per configuration, and the ratios
    fg = sec.get("fastgan")
    if fg:
        for r in fg.get("rows", []):
            cfg = f"{r['variant']}, {r['precision']}{', G checkpointed' if r.get('g_checkpoint') else ''}"
            if "error" in r:
                rows.append(Row(f"FastGAN {r['res']}² b{r.get('batch', 8)} ({cfg}): error", float("nan"), None, "",
                                "measured", dev, note=r["error"][:120]))
                continue
            rows.append(Row(f"FastGAN {r['res']}² b{r['batch']} ({cfg}) time / iteration", r["median_s"], None, "s",
                            "measured", dev, note=f"torch {torch_v}"))
            if r.get("max_memory_gib") is not None:
                rows.append(Row(f"FastGAN {r['res']}² b{r['batch']} ({cfg}) max_memory_allocated",
                                r["max_memory_gib"], None, "GiB", "measured", dev))
        for res, s in fg.get("summary", {}).items():
            for key, label, higher in (("speedup_recommended", "recommended (fp16, G checkpointed) speed-up vs the "
                                        "reference way in fp32", True),
                                       ("memory_ratio_recommended", "recommended peak memory / reference way fp32",
                                        False),
                                       ("speedup_fp32", "ours fp32 speed-up vs the reference way fp32", True)):
                v = s.get(key)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    continue
                lim = FASTGAN_TARGETS[key] if str(res) == "256" else None
                rows.append(Row(f"FastGAN {res}² b8: {label}", v, lim, "x", "measured", dev, higher))
    elif "fastgan" in steps:
        rows.append(_step_row("FastGAN iteration", steps["fastgan"], dev))

    cg = sec.get("consingan")
    if cg:
        for v, m in cg.get("minutes_per_image", {}).items():
            rows.append(Row(f"ConSinGAN 250 px, 6x2000 it: time per image ({v})", m, 10.0 if v == "ours" else None,
                            "min", "measured", dev, note="per-stage medians x 2000 iterations"))
    elif "consingan" in steps:
        rows.append(_step_row("ConSinGAN stages", steps["consingan"], dev))

    gm = sec.get("gmm")
    if gm:
        rows.append(Row(f"GMM fit N={gm['n']} D={gm['d']} K={gm['k']} diag [ganops-f32 on the GPU] speed-up vs "
                        f"scikit-learn on {gm['cpu_cores']} CPU cores", gm["speedup_f32"], 20.0, "x", "measured", dev,
                        True))
    elif "gmm" in steps:
        rows.append(_step_row("GMM fit", steps["gmm"], dev))
    return [r for r in rows if r is not None]
