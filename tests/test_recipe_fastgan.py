# SPDX-License-Identifier: BSD-3-Clause
"""recipes/fastgan.py end to end in subprocesses: a tiny train run, resume, generate / mix / eval, CLI errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "fastgan.py")
TINY = ["--ngf", "4", "--ndf", "4", "--nz", "16", "--batch", "2", "--recon-loss", "l1", "--snap", "1",
        "--sample-every", "1", "--n-sample", "2", "--workers", "0", "--device", "cpu", "--deterministic"]


def _run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GANOPS_IMPL", None)
    return subprocess.run([sys.executable, RECIPE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fastgan")
    _ok(_run("train", *TINY, "--iters", "2", "--outdir", str(out)))
    runs = sorted(out.glob("*-fastgan"))
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_train_writes_outputs(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "stats.jsonl", "reals.png", "latest", "ATTRIBUTION.txt"} <= names
    assert "fakes00000002.png" in names and "checkpoint-00000002.pt" in names
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2]
    for s in stats:
        for k in ("d_real", "d_rec", "d_fake", "g"):
            assert abs(s[k]) < 1e4
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["ngf"] == 4 and cfg["recon_loss"] == "l1" and cfg["step_order"] == "ours"


@pytest.mark.slow
def test_g_checkpoint_flag_gives_the_same_run(run_dir, tmp_path):
    """--g-checkpoint (the memory-saving G step the benchmark counts) trains the same numbers."""
    _ok(_run("train", *TINY, "--iters", "2", "--outdir", str(tmp_path), "--g-checkpoint"))
    run = next(tmp_path.glob("*-fastgan"))
    assert json.loads((run / "config.json").read_text())["g_checkpoint"] is True
    a = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    for sa, sb in zip(a, b):
        for k in ("d_real", "d_rec", "d_fake", "g"):
            assert sb[k] == pytest.approx(sa[k], rel=1e-5, abs=1e-6), k


@pytest.mark.slow
def test_resume_auto_continues(run_dir):
    _ok(_run("train", *TINY, "--iters", "3", "--outdir", str(run_dir.parent), "--resume", "auto"))
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2, 3]


@pytest.mark.slow
def test_generate_mix_eval_from_checkpoint(run_dir):
    out = _ok(_run("generate", "--run", str(run_dir), "--seeds", "0-2"))
    assert (run_dir / "generate.png").is_file() and "3 images" in out
    _ok(_run("generate", "--run", str(run_dir), "--seeds", "5,7", "--per-image", "--bn", "running"))
    assert sorted(p.name for p in (run_dir / "generate").iterdir()) == ["seed00005.png", "seed00007.png"]
    _ok(_run("mix", "--run", str(run_dir), "--content-seeds", "0-1", "--style-seeds", "2-3",
             "--resolutions", "64,256"))
    assert (run_dir / "mix.png").is_file()
    bad = _run("mix", "--run", str(run_dir), "--resolutions", "512")
    assert bad.returncode != 0 and "--resolutions" in bad.stderr
    out = _ok(_run("eval", "--run", str(run_dir), "--num", "4"))
    res = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    assert res["num"] == res["num_fake"] == 4 and res["fid"] >= 0 and res["num_real"] == 80  # builtin:emoji, whole
    assert {"kid", "kid_std", "precision", "recall", "step"} <= set(res)


@pytest.mark.slow
def test_no_argument_run_writes_outputs(tmp_path):
    """The no-argument code path (`python recipes/fastgan.py`) with the preset shrunk to a few tiny steps."""
    code = (f"import runpy, sys; sys.argv = [{RECIPE!r}]; "
            f"g = runpy.run_path({RECIPE!r}, run_name='fastgan_recipe'); "
            "g['PRESET_OPTS'].update(ngf=4, ndf=4, nz=16, batch=2, iters=2, snap=0, sample_every=1, "
            f"outdir={str(tmp_path)!r}, n_sample=2, device='cpu'); "
            "g['cli'].main([], standalone_mode=False)")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no command given, training the default preset" in p.stdout
    run = next(tmp_path.glob("*-fastgan"))
    names = {f.name for f in run.iterdir()}
    assert {"config.json", "stats.jsonl", "fakes00000002.png", "checkpoint-00000002.pt"} <= names
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recon_loss"] == "l1" and cfg["ema_warmup"] == 10 and cfg["resolution"] == 256


@pytest.mark.slow
def test_help_shows_defaults_and_preset():
    out = _ok(_run("train", "--help"))
    for flag in ("--recon-loss", "--step-order", "--tanh", "--ngf", "--ema-decay", "--resume", "--precision",
                 "--g-checkpoint"):
        assert flag in out
    assert "lpips-vgg" in out and "default: 0.999" in out
    top = _ok(_run("--help"))
    assert "reference" in top
    assert any(ln.startswith("    * --tanh auto") for ln in top.splitlines())  # one deviation per line


@pytest.mark.slow
def test_bad_resolution_and_run_errors(tmp_path):
    p = _run("train", "--resolution", "128", "--outdir", str(tmp_path))
    assert p.returncode != 0 and "--resolution" in p.stderr
    p = _run("generate", "--run", str(tmp_path / "nope"))
    assert p.returncode != 0 and "--run" in p.stderr


@pytest.mark.slow
def test_metrics_during_training(tmp_path):
    """--metrics swd16 (no pretrained net): G_ema fakes vs the training set at every snapshot, in metrics.jsonl."""
    _ok(_run("train", *TINY, "--iters", "2", "--snap", "2", "--outdir", str(tmp_path), "--metrics", "swd16"))
    run = next(tmp_path.glob("*-fastgan"))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2]
    assert rows[0]["swd16"] > 0 and rows[0]["swd16"] == rows[0]["swd16"]  # positive, not NaN
