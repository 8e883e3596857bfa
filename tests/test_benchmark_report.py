# SPDX-License-Identifier: BSD-3-Clause
"""The target report (`python -m benchmarks.report`): rows, checks, exit status, on hand-made result files."""
from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # noqa: E402
from benchmarks.targets import Row, read_rows, write_rows  # noqa: E402


@pytest.fixture
def results(tmp_path, monkeypatch):
    import benchmarks.targets as targets

    monkeypatch.setattr(report, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(targets, "RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(report, "sn_launch_rows", lambda: [])  # counted live; tested in test_sn_launch_rows
    return tmp_path


def _ops(path, vs_ref, vs_comp):
    ratios = [dict(op="sle", case="8x16x4x4", mode="fwd+bwd", device="cpu", provider="cpu", time_s=1e-3,
                   vs_ref=vs_ref, vs_compiled=vs_comp, bytes=None, min_bytes=None)]
    with open(os.path.join(path, "ops-latest.json"), "w") as f:
        json.dump({"environment": {"threads": 2}, "results": [], "ratios": ratios}, f)


def _model_files(fastgan_time: float):
    write_rows("fastgan", [Row("FastGAN 256² b8 (ours) time / iteration", fastgan_time, 0.18, "s", "projected",
                               "RTX 2080 Ti", note="band 0.1-0.3 s; fp32"),
                           Row("FastGAN 256² b8 projection check: paper's 0.36 s/it inside the reference way's "
                               "fp32 band", 1.0, 1.0, "bool", "projected", "RTX 2080 Ti", True)])
    write_rows("consingan", [Row("ConSinGAN last stage speed-up", 2.5, 2.0, "x", "measured", "CPU", True)])
    write_rows("gmm", [Row("GMM speed-up", 25.0, 20.0, "x", "measured", "CPU", True)])


def test_all_met_exits_zero_and_renders_markdown(results, capsys):
    _ops(results, 3.5, 1.2)
    _model_files(0.15)
    assert report.main([]) == 0
    out = capsys.readouterr().out
    assert "SLE fwd+bwd 8x16x4x4 [cpu] vs eager ref" in out and "3.50x" in out
    assert "projection check" in out and "yes" in out and "0 measured missed" in out
    assert report.main(["--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("| target |") and "| measured |" in md


def test_measured_miss_fails_projected_miss_does_not(results, capsys):
    _ops(results, 3.5, 1.2)
    _model_files(0.25)  # projected miss only
    assert report.main([]) == 0
    assert "1 projected missed" in capsys.readouterr().out
    _ops(results, 2.0, 1.2)  # measured miss: below 3x the eager reference
    assert report.main([]) == 1
    assert "1 measured missed" in capsys.readouterr().out


def test_missing_results_fail_and_name_the_command(results, capsys):
    _ops(results, 3.5, 1.2)
    write_rows("fastgan", [Row("x", 1.0, 2.0, "s", "projected", "d")])
    assert report.main([]) == 1
    out = capsys.readouterr().out
    assert "python -m benchmarks.bench_consingan" in out and "python -m benchmarks.bench_gmm" in out


def test_rows_round_trip(tmp_path, monkeypatch):
    import benchmarks.targets as targets

    monkeypatch.setattr(targets, "RESULTS_DIR", str(tmp_path))
    path = write_rows("x", [Row("a", 1.5, 2.0, "s", "measured", "cpu", note="n")], extra={"k": 1})
    data, rows = read_rows(path)
    assert data["extra"] == {"k": 1} and rows[0].ok is True and rows[0].note == "n"


@pytest.mark.slow
def test_sn_launch_rows():
    pytest.importorskip("ganops._C")
    rows = report.sn_launch_rows()
    growth = [r for r in rows if "added by 33 more" in r.target]
    assert growth and growth[0].value == 0 and growth[0].ok is True
    hook = [r for r in rows if "torch's hook" in r.target]
    assert hook and hook[0].value > 500  # ~22 per layer for torch's spectral norm


def _ops_spread(path, op, extra):
    r = dict(op=op, case="c1", mode="fwd+bwd", device="cpu", provider="cpu", time_s=1e-3, bytes=None, min_bytes=None)
    r.update(extra)
    with open(os.path.join(path, "ops-latest.json"), "w") as f:
        json.dump({"environment": {"threads": 2}, "results": [], "ratios": [r]}, f)


def test_op_rows_show_the_spread_and_mark_noisy_rows(results, capsys):
    _model_files(0.15)
    _ops_spread(results, "sle", dict(vs_ref=2.9, vs_ref_lo=2.6, vs_ref_hi=3.2, vs_ref_noisy=True, vs_compiled=1.5,
                                     vs_compiled_lo=1.4, vs_compiled_hi=1.6, vs_compiled_noisy=False))
    rows = report.op_rows()
    assert [r.note for r in rows] == ["median 2.90x [2.60-3.20], noisy", "median 1.50x [1.40-1.60]"]
    assert [report.is_noisy(r) for r in rows] == [True, False]
    assert report.main([]) == 1  # a noisy miss is still a miss
    out = capsys.readouterr().out
    assert "(median 2.90x [2.60-3.20], noisy)" in out and "1 measured missed" in out and "1 noisy" in out
    assert report.main(["--markdown"]) == 1
    assert "SLE fwd+bwd c1 [cpu] vs eager ref (median 2.90x [2.60-3.20], noisy) | 2.90x |" in capsys.readouterr().out


def test_spectral_norm_row_is_cpu_time_with_both_spreads(results):
    _ops_spread(results, "spectral_norm", dict(vs_ref=2.0, vs_ref_lo=1.8, vs_ref_hi=2.2, vs_ref_cpu_time=3.5,
                                               vs_ref_cpu_time_lo=3.3, vs_ref_cpu_time_hi=3.6,
                                               vs_ref_cpu_time_noisy=False, vs_compiled=None))
    (row,) = report.op_rows()
    assert row.target.endswith("CPU time vs eager ref") and row.value == 3.5 and row.ok is True
    assert row.note == "median 3.50x [3.30-3.60]; wall time 2.00x [1.80-2.20]" and not report.is_noisy(row)


def test_op_rows_from_results_without_spread(results):
    _ops(results, 3.5, 1.2)  # ops-latest.json written before the interleaved harness
    rows = report.op_rows()
    assert [r.value for r in rows] == [3.5, 1.2] and all(r.note == "" for r in rows)


def test_across_runs_takes_the_median_of_runs_and_their_range(results):
    """--repeat: a ratio is the median of the runs' medians, its spread the runs' range (a rerun's spread), noisy
    when that range straddles the target, even if each run alone looked settled."""
    def run(vs_ref, vs_comp):
        return [dict(op="sle", case="c1", mode="fwd+bwd", device="cpu", provider="cpu", vs_ref=vs_ref, vs_ref_lo=vs_ref,
                     vs_ref_hi=vs_ref, vs_compiled=vs_comp, vs_compiled_lo=vs_comp, vs_compiled_hi=vs_comp,
                     vs_ref_cpu_time=None)]
    (row,) = report.across_runs([run(1.1, 1.5), run(4.9, 1.6), run(3.4, 1.4)])
    assert row["runs"] == 3 and row["vs_ref"] == 3.4 and (row["vs_ref_lo"], row["vs_ref_hi"]) == (1.1, 4.9)
    assert row["vs_ref_runs"] == [1.1, 4.9, 3.4] and row["vs_ref_noisy"] is True  # 1.9 > |3.4 - 3|
    assert row["vs_compiled"] == 1.5 and row["vs_compiled_noisy"] is False and row["meets_target"] is True
    assert row["noisy"] is True and row["vs_ref_cpu_time"] is None
    _model_files(0.15)
    _ops_spread(results, "sle", {k: v for k, v in row.items() if k not in ("op", "case", "mode", "device",
                                                                            "provider")})
    notes = [r.note for r in report.op_rows()]
    assert notes == ["median of 3 runs 3.40x [range 1.10-4.90], noisy", "median of 3 runs 1.50x [range 1.40-1.60]"]
