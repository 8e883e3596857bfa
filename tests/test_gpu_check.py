# SPDX-License-Identifier: BSD-3-Clause
"""The device check without a device: benchmarks/gpu_check.sh's mechanics on CPU (steps, limits, the budget, what
lands in OUTDIR), its correctness section's ability to see a wrong kernel, and benchmarks.gpu_results' rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import requires_cuda, requires_ext

ROOT = Path(__file__).resolve().parents[1]


def _run_check(out: Path, steps: str, budget: int = 600, **env):
    e = dict(os.environ, GPU_CHECK_BUILD="0", GPU_CHECK_QUICK="1", GPU_CHECK_STEPS=steps,
             GPU_CHECK_BUDGET=str(budget), PYTHON=sys.executable, **env)
    e.pop("OUT", None)
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], capture_output=True,
                          text=True, env=e, timeout=600)


@pytest.mark.slow
@requires_ext
def test_gpu_check_sh_leaves_archive_results_and_summary(tmp_path):
    r = _run_check(tmp_path / "out", "correct-gp_end_to_end")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.tar.gz", "results.json", "summary.txt"]
    res = json.loads((out / "results.json").read_text())
    assert set(res["steps"]) == {"build", "env", "correct-gp_end_to_end"}
    assert res["steps"]["correct-gp_end_to_end"]["rc"] == 0
    assert res["sections"]["correct-gp_end_to_end"]["mismatches"] == 0
    assert res["sections"]["correct-gp_end_to_end"]["checks"] >= 4
    with tarfile.open(out / "gpu-check.tar.gz") as t:
        names = t.getnames()
    assert any(n.endswith("logs/env.log") for n in names) and any(n.endswith("results.json") for n in names)
    # the summary table comes last in the output, one line per step
    tail = r.stdout.strip().splitlines()[-8:]
    assert any(line.startswith("correct-gp_end_to_end") for line in tail), r.stdout[-2000:]
    assert "3 of 3 steps passed" in r.stdout


@pytest.mark.slow
@requires_ext
def test_gpu_check_sh_skips_steps_past_the_budget(tmp_path):
    """A budget already spent skips the remaining steps (rc -1, said in the summary) and fails the run."""
    r = _run_check(tmp_path / "out", "correct-sle", budget=1)
    assert r.returncode == 1, r.stdout[-3000:]
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["steps"]["correct-sle"]["rc"] == -1 and "budget" in res["steps"]["correct-sle"]["note"]
    assert "correct-sle: skipped" in r.stdout


def test_correct_section_catches_a_wrong_kernel(monkeypatch):
    """The correctness check itself can fail: a backend off by one ulp-scale factor is a mismatch."""
    from benchmarks import gpu_check as G

    monkeypatch.setattr(G, "QUICK", True)
    case = G.sle_cases()[0]
    good = G.check_case(case, "cpu" if "cpu" in G.backends("sle") else "ref", seed=1)
    assert good["ok"], good
    bad_case = G.Case(case.op, case.label, case.dtype, case.layout, case.inputs, case.grad_in,
                      lambda b, t: [case.fast(b, t)[0] * 1.01], case.ref, keep_cl=True)
    bad = G.check_case(bad_case, "ref", seed=1)
    assert not bad["ok"] and any("rel err" in p for p in bad["problems"])


def test_a_section_cut_short_keeps_its_rows_and_says_so(monkeypatch, tmp_path, capsys):
    """A step its time box ends (timeout kills it) keeps the rows it measured: the section is written after every
    row, marked incomplete, and the summary says PARTIAL."""
    import argparse

    from benchmarks import gpu_check as G

    monkeypatch.setattr(G, "QUICK", True)
    monkeypatch.setattr(G, "OUT", str(tmp_path))
    real, seen = G.check_case, []

    def cut_after_two(case, backend, seed):
        if len(seen) == 2:
            raise KeyboardInterrupt  # stands for the SIGTERM of `timeout`
        seen.append(case)
        return real(case, backend, seed)

    monkeypatch.setattr(G, "check_case", cut_after_two)
    with pytest.raises(KeyboardInterrupt):
        G.section_correct(argparse.Namespace(op="sle"))
    d = json.loads((tmp_path / "correct-sle.json").read_text())
    assert d["complete"] is False and d["checks"] == 2 and len(d["rows"]) == 2 and d["mismatches"] == 0
    (tmp_path / "steps.tsv").write_text("correct-sle\t124\t120\n")
    G.section_summary(argparse.Namespace())
    assert "PARTIAL" in capsys.readouterr().out
    monkeypatch.setattr(G, "check_case", real)  # run to the end: complete
    G.section_correct(argparse.Namespace(op="sle"))
    assert json.loads((tmp_path / "correct-sle.json").read_text())["complete"] is True


def test_junit_counts(tmp_path):
    from benchmarks.gpu_check import _junit_counts

    p = tmp_path / "t.xml"
    p.write_text('<testsuites><testsuite><testcase classname="a" name="x"/><testcase classname="a" name="y">'
                 '<failure message="m"/></testcase><testcase classname="b" name="z"><skipped/></testcase>'
                 '</testsuite></testsuites>')
    assert _junit_counts(str(p)) == {"passed": 1, "failed": 1, "errors": 0, "skipped": 1, "failed_ids": ["a.y"]}
    assert _junit_counts(str(tmp_path / "none.xml")) == {}


def _results():
    dev = "NVIDIA H200"
    sl = {"op": "sle", "case": "8x16x512x512 channels_last", "provider": "cuda", "median_s": 1e-3,
          "vs_ref": {"median": 3.5, "lo": 3.2, "hi": 3.8}, "vs_compiled": {"median": 1.4, "lo": 1.3, "hi": 1.5},
          "gbps": 3000.0, "copy_gbps": 4300.0, "frac_copy_bw": 0.70, "noisy": False}
    return {"device": dev, "steps": {"env": {"rc": 0, "seconds": 3}, "correct-sle": {"rc": 1, "seconds": 30},
                                     "memcheck": {"rc": 0, "seconds": 80}, "speed": {"rc": 0, "seconds": 60},
                                     "fuzz": {"rc": 1, "seconds": 90},
                                     "fastgan": {"rc": 124, "seconds": 170},
                                     "gmm": {"rc": -1, "seconds": 0, "note": "skipped: the budget of 510s was spent"}},
            "sections": {"env": {"device": dev, "torch": "2.11.0+cu130"},
                         "correct-sle": {"group": "sle", "backends": ["cuda", "triton"], "checks": 90,
                                         "mismatches": 2, "not_run": 0},
                         "speed": {"rows": [sl, {"op": "sle", "case": "x", "error": "RuntimeError: boom"}]}}}


def test_gpu_rows_from_a_device_check(tmp_path):
    from benchmarks.gpu_results import gpu_rows

    assert gpu_rows(str(tmp_path / "missing.json")) == []
    p = tmp_path / "results.json"
    p.write_text(json.dumps(_results()))
    rows = {r.target: r for r in gpu_rows(str(p))}
    corr = rows["GPU correctness sle: mismatches vs float64 (cuda, triton)"]
    assert corr.value == 2 and corr.ok is False and corr.kind == "measured" and corr.device == "NVIDIA H200"
    assert rows["compute-sanitizer memcheck: errors (exit status 9 = errors found)"].ok is True
    assert rows["GPU fuzz suite (cuda, Triton): pytest exit status"].ok is False
    vs = rows["GPU sle fwd+bwd 8x16x512x512 channels_last [cuda] vs eager ref"]
    assert vs.value == 3.5 and vs.ok and "3.20-3.80" in vs.note
    assert rows["GPU sle fwd+bwd 8x16x512x512 channels_last [cuda] fraction of copy bandwidth"].ok is True
    assert any("error" in t for t in rows)
    # a step that ran out of time or was skipped still has its row, never dropped
    assert rows["FastGAN iteration: step exit 124"].ok is False and "time limit" in \
        rows["FastGAN iteration: step exit 124"].note
    assert "budget" in rows["GMM fit: step exit -1"].note


def test_report_includes_gpu_rows(tmp_path, monkeypatch):
    from benchmarks import gpu_results, report

    p = tmp_path / "results.json"
    p.write_text(json.dumps(_results()))
    monkeypatch.setattr(gpu_results, "GPU_RESULTS", str(p))
    monkeypatch.setattr(report, "gpu_rows", lambda: gpu_results.gpu_rows(str(p)))
    text = report.render(report.gpu_rows(), [], markdown=True)
    assert "| GPU correctness sle" in text and "NVIDIA H200" in text


@requires_cuda
def test_backends_on_a_gpu_are_cuda_and_triton():
    from benchmarks import gpu_check as G

    assert set(G.backends("sle")) <= {"cuda", "triton"}


def test_gpu_rows_merge_a_second_call(tmp_path):
    """results-2.json (the steps a first call's budget skipped) completes results.json."""
    from benchmarks.gpu_results import gpu_rows

    first = _results()
    (tmp_path / "results.json").write_text(json.dumps(first))
    second = {"device": first["device"], "steps": {"gmm": {"rc": 0, "seconds": 20}, "env": {"rc": 0, "seconds": 3}},
              "sections": {"gmm": {"n": 50000, "d": 512, "k": 10, "cpu_cores": 16, "speedup_f32": 45.0}}}
    (tmp_path / "results-2.json").write_text(json.dumps(second))
    rows = {r.target: r for r in gpu_rows(str(tmp_path / "results.json"))}
    assert not any(t.startswith("GMM fit: step exit") for t in rows)
    gmm = [r for t, r in rows.items() if t.startswith("GMM fit N=50000")]
    assert len(gmm) == 1 and gmm[0].value == 45.0 and gmm[0].ok
    assert "GPU correctness sle: mismatches vs float64 (cuda, triton)" in rows  # the first call's rows stay
