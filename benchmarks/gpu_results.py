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
GPU_TRAIN = os.path.join(RESULTS_DIR, "gpu", "train.json")  # benchmarks.gpu_train_score's output

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


def gpu_train_rows(path: str = GPU_TRAIN) -> list[Row]:
    """Rows of the training runs of ``benchmarks/gpu_train.sh`` as scored here (``benchmarks.gpu_train_score``):
    FastGAN's speed and FID of both step orders at equal iterations, ConSinGAN's time per image and sample
    quality, DISP's FIDs, and the check of the compact Inception against the real one. [] when there is none."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        res = json.load(f)
    dev_res = res.get("device", {})
    dev = (dev_res.get("env") or {}).get("device") or "GPU"
    rows: list[Row] = []
    ic = res.get("inception_check") or {}
    if ic.get("max_rel_diff") is not None:
        rows.append(Row("GPU training: compact FID Inception vs the package's, largest relative feature difference",
                        ic["max_rel_diff"], 1e-2, "", "measured", dev, note=f"FID between the two feature sets "
                        f"{ic.get('fid_device_vs_here')}"))
    fg = dev_res.get("fastgan") or {}
    for order, r in fg.items():
        if not r:
            continue
        c = r.get("config", {})
        what = f"FastGAN {c.get('resolution', '?')}² b{c.get('batch', '?')} {c.get('precision', '')} training " \
               f"({order} step order)"
        if r.get("s_per_it"):
            rows.append(Row(f"{what} time / iteration", r["s_per_it"], None, "s", "measured", dev,
                            note=f"{r.get('iters')} iterations in {r.get('train_seconds')} s"))
        for step, fid in r.get("fid", []):
            rows.append(Row(f"{what} {r.get('fid_name', 'fid')} vs the training set at step {step}", fid, None, "",
                            "measured", dev))
    eq = res.get("fastgan_equal_iterations") or []
    if eq:
        worst = max(abs(e["ours"] - e["reference"]) / max(abs(e["reference"]), 1e-9) for e in eq)
        rows.append(Row("FastGAN: largest relative FID difference between the two step orders at equal iterations",
                        worst, None, "", "measured", dev,
                        note=f"{len(eq)} points; the maths is the same, so the difference is noise"))
    cg = res.get("consingan") or {}
    dc = dev_res.get("consingan") or {}
    if dc:
        minutes = (dc.get("wall_seconds") or 0) / 60 if dc.get("finished") else \
            (dc.get("projected_total_recipe_eta_s") or dc.get("projected_total_flat_s") or float("nan")) / 60
        rows.append(Row("ConSinGAN 250 px, 6 x 2000 it: time per image" + ("" if dc.get("finished") else
                                                                         " (projected from the stages run)"),
                        minutes, 10.0, "min", "measured" if dc.get("finished") else "projected", dev,
                        note=f"{dc.get('iters_done')} of {dc.get('iters_total')} iterations run"))
    ev = cg.get("eval") or {}
    if ev:
        for layer in ("sifid_conv_4", "sifid_conv_2"):
            if layer in ev:
                rows.append(Row(f"ConSinGAN {layer.replace('_', ' ', 1)} of {ev.get('num')} samples",
                                ev[layer]["mean"], None, "", "measured", dev))
        if "diversity" in ev:
            rows.append(Row(f"ConSinGAN diversity of {ev.get('num')} samples", ev["diversity"], None, "", "measured",
                            dev))
    d = (dev_res.get("disp") or {}).get("eval") or {}
    for key in ("fid_vicinal", "fid_gmm"):
        if d.get(key) is not None:
            rows.append(Row(f"DISP FID{d.get('num', '')} of {key[4:]} samples vs the set", d[key], None, "",
                            "measured", dev))
    return rows
