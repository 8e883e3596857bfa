# SPDX-License-Identifier: BSD-3-Clause
"""TrainLoop end to end in subprocesses: SIGKILL + resume equality, NaN stop, DDP with 2 gloo processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import requires_cuda
from ganops.train import InfiniteSampler, load_checkpoint, open_dataset

RECIPE = str(Path(__file__).with_name("train_tiny_recipe.py"))
COMMON = ["--resolution", "16", "--batch", "4", "--iters", "12", "--snap", "4", "--sample-every", "6",
          "--deterministic", "--device", "cpu", "--workers", "0"]


def _env(**extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GANOPS_IMPL", None)
    env.update(extra)
    return env


def _run(args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RECIPE, *args], env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]


def _one_run(outdir: Path) -> Path:
    runs = sorted(p for p in outdir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_sigkill_resume_equals_uninterrupted(tmp_path):
    ref = _run(COMMON + ["--outdir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = _one_run(tmp_path / "ref")
    ref_stats = _stats(ref_dir)
    assert [r["step"] for r in ref_stats] == list(range(1, 13))
    for name in ("config.json", "reals.png", "fakes00000006.png", "fakes00000012.png", "ATTRIBUTION.txt"):
        assert (ref_dir / name).is_file(), name
    assert (ref_dir / "latest").read_text().strip() == "checkpoint-00000012.pt"
    assert "CC-BY 4.0" in (ref_dir / "ATTRIBUTION.txt").read_text() and "CC-BY 4.0" in ref.stdout
    assert json.loads((ref_dir / "config.json").read_text())["nz"] == 8

    # Same run, killed with SIGKILL once the step-4 checkpoint is on disk (steps are slowed so it cannot finish).
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, RECIPE, *COMMON, "--outdir", str(out)], env=_env(TINY_STEP_SLEEP="0.3"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:
            ptr = list(out.glob("*/latest"))
            if ptr and ptr[0].read_text().strip():
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
    finally:
        rc = p.wait(30)
    assert rc == -signal.SIGKILL, "the run finished before it could be killed"
    run_dir = _one_run(out)
    killed_at = load_checkpoint(run_dir)["step"]
    assert 4 <= killed_at < 12

    res = _run(COMMON + ["--outdir", str(out), "--resume", "auto"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {run_dir}" in res.stdout
    assert _one_run(out) == run_dir  # continued in place
    got = _stats(run_dir)
    assert [r["step"] for r in got] == list(range(1, 13))  # lines of the killed run past its checkpoint dropped
    for a, b in zip(ref_stats, got):
        assert (a["loss_d"], a["loss_g"]) == (b["loss_d"], b["loss_g"]), (a, b)  # bitwise equal
    ck_ref, ck = load_checkpoint(ref_dir), load_checkpoint(run_dir)
    for k, v in ck_ref["models"]["G"].items():
        assert torch.equal(v, ck["models"]["G"][k]), k
    for k, v in ck_ref["ema"]["G_ema"]["module"].items():
        assert torch.equal(v, ck["ema"]["G_ema"]["module"][k]), k


@pytest.mark.slow
def test_nan_stops_with_step_and_loss_name_after_checkpoint(tmp_path):
    res = _run(COMMON + ["--outdir", str(tmp_path), "--nan-at", "6"])
    assert res.returncode != 0
    assert "loss 'loss_d' is nan at step 6" in res.stderr
    run_dir = _one_run(tmp_path)
    assert "checkpoint-00000006.pt" in res.stderr
    ck = load_checkpoint(run_dir)
    assert ck["step"] == 6 and ck["data"]["consumed"] == 6 * 4
    assert all(torch.isfinite(v).all() for v in ck["models"]["D"].values())
    assert [r["step"] for r in _stats(run_dir)] == list(range(1, 7))
    # A NaN found after an optimizer stepped keeps the previous checkpoint as the good one.
    res = _run(COMMON + ["--outdir", str(tmp_path / "g"), "--nan-g-at", "5"])
    assert res.returncode != 0 and "loss 'loss_g' is nan at step 5" in res.stderr
    assert "last good checkpoint: " in res.stderr and "checkpoint-00000004.pt" in res.stderr
    assert load_checkpoint(_one_run(tmp_path / "g"))["step"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", RECIPE, "--resolution", "16", "--batch", "4", "--iters", "3",
           "--snap", "2", "--sample-every", "0", "--device", "cpu", "--workers", "0", "--outdir",
           str(tmp_path / "out")]
    res = subprocess.run(cmd, env=_env(TINY_PROBE=str(probe)), capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stderr[-4000:]
    run_dir = _one_run(tmp_path / "out")  # rank 0 alone created the run dir and wrote files
    assert [r["step"] for r in _stats(run_dir)] == [1, 2, 3]
    ck = load_checkpoint(run_dir)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["data"]["consumed"] == 3 * 2
    r0, r1 = (json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["g_sum"] == pytest.approx(r1["g_sum"], rel=1e-12)  # DDP kept the replicas in sync
    # Global batch 4 = 2 per rank; together the ranks draw what one process would draw, without overlap.
    ds = open_dataset("builtin:emoji", 16, verbose=False)
    s = InfiniteSampler(len(ds), seed=0)
    it = iter(s)
    for step in range(3):
        want = [ds[next(it)].sum().item() for _ in range(4)]
        got = [r0["batches"][step][0], r1["batches"][step][0], r0["batches"][step][1], r1["batches"][step][1]]
        assert got == pytest.approx(want, abs=1e-3)
    # Resumed by one process: the data stream continues at the same global position.
    res = _run(["--resolution", "16", "--batch", "4", "--iters", "4", "--device", "cpu", "--workers", "0",
                "--outdir", str(tmp_path / "out"), "--resume", "auto"], TINY_PROBE=str(probe))
    assert res.returncode == 0 and "from 2 process(es), now 1" in res.stdout, res.stderr[-3000:]
    r0 = json.loads((probe / "rank0.json").read_text())
    assert r0["batches"][0] == pytest.approx([ds[next(it)].sum().item() for _ in range(4)], abs=1e-3)


@requires_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_amp_channels_last_resume(tmp_path, precision):
    import numpy as np
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(data / f"{i}.png")
    args = ["--data", str(data), "--resolution", "16", "--batch", "4", "--snap", "3", "--device", "cuda",
            "--precision", precision, "--channels-last", "--deterministic", "--workers", "2"]
    ref = _run(args + ["--iters", "6", "--outdir", str(tmp_path / "ref")])
    assert ref.returncode == 0, ref.stderr[-3000:]
    part = _run(args + ["--iters", "3", "--outdir", str(tmp_path / "res")])
    assert part.returncode == 0, part.stderr[-3000:]
    res = _run(args + ["--iters", "6", "--outdir", str(tmp_path / "res"), "--resume", "auto"])
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _stats(_one_run(tmp_path / "ref")), _stats(_one_run(tmp_path / "res"))
    assert [(r["loss_d"], r["loss_g"]) for r in a] == [(r["loss_d"], r["loss_g"]) for r in b]
    assert all(r["gpu_mem_gb"] > 0 for r in a)
    ck = load_checkpoint(_one_run(tmp_path / "res"))
    assert ck["amp"]["precision"] == precision and (precision != "fp16" or ck["amp"]["scaler"]["scale"] > 0)


@pytest.mark.slow
def test_sigterm_checkpoints_at_step_boundary_and_exits(tmp_path):
    p = subprocess.Popen([sys.executable, RECIPE, *COMMON, "--outdir", str(tmp_path)], env=_env(TINY_STEP_SLEEP="0.3"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not list(tmp_path.glob("*/latest")):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM received" in err and "continue with --resume auto" in err
    run_dir = _one_run(tmp_path)
    step = load_checkpoint(run_dir)["step"]
    assert 4 <= step < 12 and _stats(run_dir)[-1]["step"] == step  # nothing trained after the checkpoint
