# SPDX-License-Identifier: BSD-3-Clause
"""The benchmarks' timing harness (benchmarks/interleave.py) and the op benchmarks' compare fixture, on fakes."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import conftest as bench  # noqa: E402
from benchmarks.interleave import Interleaved, noisy, ratio_stats, time_rounds  # noqa: E402


def _recorders(names, log):
    return {n: (lambda n=n: log.append(n)) for n in names}


def test_rounds_interleave_the_providers():
    log: list[str] = []
    cpu: dict = {}
    wall = time_rounds(_recorders("ABC", log), rounds=4, warmup=2, device="cpu", cpu=cpu)
    assert log == list("ABC") * 6  # 2 warm-up rounds, then 4 timed ones, each A B C (never A A A B B B)
    assert {k: len(v) for k, v in wall.items()} == {"A": 4, "B": 4, "C": 4}
    assert {k: len(v) for k, v in cpu.items()} == {"A": 4, "B": 4, "C": 4}
    assert all(t >= 0 for v in wall.values() for t in v)


def test_interleaved_keeps_the_last_rounds():
    log: list[str] = []
    t = Interleaved(_recorders(["ref", "cpu"], log), device="cpu")
    for _ in range(5):
        t.round()
    wall, cpu = t.last(3)
    assert log == ["ref", "cpu"] * 5
    assert wall["ref"] == t.wall["ref"][2:] and len(cpu["cpu"]) == 3


class FakeBenchmark:
    """pytest-benchmark's fixture as far as compare uses it: pedantic runs warm-up rounds, then timed rounds."""

    disabled = False

    def __init__(self):
        self.extra_info: dict = {}
        self.calls: list[tuple[int, int]] = []

    def pedantic(self, fn, rounds, warmup_rounds=0, iterations=1):
        self.calls.append((rounds, warmup_rounds))
        for _ in range(warmup_rounds + rounds * iterations):
            fn()


def test_compare_times_all_providers_in_one_interleaved_run(monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", [])
    log: list[str] = []
    bm = FakeBenchmark()
    fns = _recorders(["ref", "ref+compile", "cpu"], log)
    out = bench.make_compare(bm)(op="sle", case="2x3", mode="fwd+bwd", fns=fns, rounds=5, warmup=2,
                                 bytes={"ref": 100, "cpu": 40}, min_bytes=40)
    assert log == ["ref", "ref+compile", "cpu"] * 7
    assert bm.calls == [(5, 2)] and bm.group == "sle | 2x3 | fwd+bwd"
    assert [r["provider"] for r in bench.RESULTS] == ["ref", "ref+compile", "cpu"]
    assert len({r["run"] for r in bench.RESULTS}) == 1 and all(r["interleaved"] for r in bench.RESULTS)
    assert all(len(r["wall_s"]) == len(r["cpu_s"]) == r["rounds"] == 5 for r in bench.RESULTS)  # warm-up dropped
    assert out["cpu"]["bytes"] == 40 and out["ref+compile"]["bytes"] is None
    rows = bench.ratio_rows(bench.RESULTS)
    assert len(rows) == 1 and rows[0]["provider"] == "cpu" and rows[0]["rounds"] == 5
    assert rows[0]["vs_ref_lo"] <= rows[0]["vs_ref"] <= rows[0]["vs_ref_hi"]


def test_ratio_stats_median_and_quartiles_of_the_per_round_ratios():
    st = ratio_stats([2.0, 10.0, 6.0, 4.0, 8.0], [1.0] * 5)
    assert st["median"] == pytest.approx(6.0) and st["lo"] == pytest.approx(4.0) and st["hi"] == pytest.approx(8.0)
    st = ratio_stats([1.0, 2.0, 3.0, 4.0], [1.0] * 4)  # quartiles interpolate between order statistics
    assert (st["lo"], st["median"], st["hi"]) == pytest.approx((1.75, 2.5, 3.25))
    # a disturbance both sides of a round share cancels in that round's ratio (the point of interleaving)
    st = ratio_stats([1.0, 10.0, 1.0, 10.0, 3.0], [0.5, 5.0, 0.5, 5.0, 1.5])
    assert st["median"] == st["lo"] == st["hi"] == pytest.approx(2.0)
    assert ratio_stats([3.0], [2.0]) == {"median": 1.5, "lo": 1.5, "hi": 1.5, "rounds": 1}


def test_ratio_stats_pairs_rounds():
    with pytest.raises(ValueError, match="rounds"):
        ratio_stats([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no rounds"):
        ratio_stats([], [])


def test_noisy_rule():
    st = {"median": 2.9, "lo": 2.6, "hi": 3.2}  # half spread 0.3
    assert noisy(st, 3.0)  # margin 0.1: the rounds do not settle which side of 3x it is on
    assert not noisy(st, 2.0)  # margin 0.9
    assert not noisy(st, 3.3)  # margin 0.4
    assert not noisy({"median": 2.0, "lo": 1.5, "hi": 2.5}, 2.5)  # half spread == margin: not wider
    assert not noisy(st, None)


def _result(provider, wall, cpu=None, op="sle", mode="fwd+bwd", device="cpu", run="run-1", interleaved=True):
    cpu = cpu or wall
    return dict(op=op, case="c", mode=mode, provider=provider, device=device, run=run, interleaved=interleaved,
                rounds=len(wall), wall_s=wall, cpu_s=cpu, min_s=min(wall), median_s=sorted(wall)[len(wall) // 2],
                cpu_min_s=min(cpu), bytes=None, min_bytes=None)


def test_ratio_rows_carry_spread_and_noisy_flag():
    res = [_result("ref", [3.0, 3.0, 3.0, 3.0, 3.0]), _result("ref+compile", [1.0] * 5),
           _result("cpu", [1.5, 1.2, 1.0, 0.9, 0.8])]  # vs ref per round: 2, 2.5, 3, 3.33, 3.75
    (row,) = bench.ratio_rows(res)
    assert row["vs_ref"] == pytest.approx(3.0)
    assert (row["vs_ref_lo"], row["vs_ref_hi"]) == pytest.approx((2.5, 10 / 3))
    assert row["vs_ref_noisy"] is True and row["noisy"] is True  # target 3x sits inside the spread
    assert row["vs_compiled"] == pytest.approx(1.0) and row["vs_compiled_noisy"] is True
    assert row["meets_target"] is True  # the medians meet 3x and 1x


def test_ratio_rows_cpu_time_for_spectral_norm_and_older_results():
    res = [_result("ref", [1.0] * 4, [4.0] * 4, op="spectral_norm"),
           _result("cpu", [0.5] * 4, [1.0, 1.0, 2.0, 2.0], op="spectral_norm")]
    (row,) = bench.ratio_rows(res)
    assert row["vs_ref"] == pytest.approx(2.0) and row["vs_ref_cpu_time"] == pytest.approx(3.0)
    assert (row["vs_ref_cpu_time_lo"], row["vs_ref_cpu_time_hi"]) == pytest.approx((2.0, 4.0))
    assert row["vs_ref_cpu_time_noisy"] is True and "vs_ref_noisy" not in row  # the CPU target checks CPU time
    # results written before the interleaved harness (no per-round lists): ratio of minimums, no spread, not noisy
    old = [{k: v for k, v in r.items() if k not in ("wall_s", "cpu_s", "run", "interleaved")} for r in res]
    (row,) = bench.ratio_rows(old)
    assert row["vs_ref_cpu_time"] == pytest.approx(4.0) and row["vs_ref_cpu_time_lo"] is None
    assert row["noisy"] is None and row["meets_target"] is True


def test_sides_of_separate_runs_are_not_paired_by_round():
    # measure(): each provider in its own test, its own block of rounds; round i of one is not round i of the other
    res = [_result("ref", [4.0, 1.0, 1.0], run="a", interleaved=False),
           _result("cpu", [1.0, 1.0, 2.0], run="b", interleaved=False)]
    (row,) = bench.ratio_rows(res)
    assert row["vs_ref"] == pytest.approx(1.0) and row["vs_ref_lo"] is None  # minimum over minimum, no spread


def test_merge_results_replaces_whole_groups_in_place():
    old = [_result("ref", [1.0], op="a"), _result("cpu", [1.0], op="a"), _result("stale", [1.0], op="a"),
           _result("ref", [1.0], op="b"), _result("ref", [1.0], op="m", interleaved=False),
           _result("ours", [1.0], op="m", interleaved=False)]
    new = [_result("ref", [2.0], op="a"), _result("cpu", [2.0], op="a"), _result("ref", [2.0], op="c"),
           _result("ours", [2.0], op="m", run="run-2", interleaved=False)]
    merged = bench.merge_results(old, new)
    assert [(r["op"], r["provider"], r["wall_s"][0]) for r in merged] == [
        ("a", "ref", 2.0), ("a", "cpu", 2.0), ("b", "ref", 1.0), ("m", "ref", 1.0), ("m", "ours", 2.0),
        ("c", "ref", 2.0)]


def test_measure_keeps_one_provider_per_test(monkeypatch):
    """bench_metrics' fixture: one provider per test, on the same harness, named as before."""
    monkeypatch.setattr(bench, "RESULTS", [])
    log: list[str] = []
    bm = FakeBenchmark()
    r = bench.make_measure(bm)(op="fid", case="c", mode="fwd", provider="ref", fn=lambda: log.append("ref"),
                               rounds=3, warmup=1, bytes=8)
    assert log == ["ref"] * 4 and bm.name == "ref" and bm.group == "fid | c | fwd"
    assert r["interleaved"] is False and r["bytes"] == 8 and len(r["wall_s"]) == 3 and bench.RESULTS == [r]
