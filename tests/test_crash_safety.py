# SPDX-License-Identifier: BSD-3-Clause
"""Crash safety: a training run killed with SIGKILL again and again (during a step, in the middle of a checkpoint
write, in the middle of a sample write) and continued each time with ``--resume auto`` ends exactly as the run
that was never interrupted: the same losses, bit-identical weights and EMA, the same sample images, and no torn
or temporary file left behind.

The child stops at each of those points and waits for the test (tests/train_tiny_recipe.py ``TINY_HANDSHAKE``),
which either kills it there or lets it go on: every kill lands where it is meant to, on a loaded machine too,
and the run is the same whatever the timing."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ganops.train import load_checkpoint

RECIPE = str(Path(__file__).with_name("train_tiny_recipe.py"))
ITERS = 24
ARGS = ["--resolution", "16", "--batch", "4", "--iters", str(ITERS), "--snap", "2", "--sample-every", "3",
        "--deterministic", "--device", "cpu", "--workers", "0"]
KILLS = 21  # 7 of each kind
START_TIMEOUT = 300.0  # seconds for a started run to reach its next pause point (imports on a loaded machine)


def _env(**extra):
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GANOPS_IMPL", None)
    env.update(extra)
    return env


def _one_run(outdir: Path) -> Path:
    runs = sorted(p for p in outdir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def _temps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if ".tmp" in p.name)


def _next_pause(hs: Path, proc: subprocess.Popen, seen: set[str]) -> tuple[Path, str, str] | None:
    """The next pause point ``proc`` announced (tests/train_tiny_recipe.py ``_pause``): (its file, kind, detail), or
    None once ``proc`` has exited (a paused process waits for its ``.go`` file, so none is left unanswered)."""
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        new = sorted(p for p in hs.glob(f"{proc.pid}_*") if p.suffix != ".go" and p.name not in seen)
        if new:
            seen.add(new[0].name)
            _, _, kind, detail = new[0].name.split("_", 3)
            return new[0], kind, detail
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    proc.kill()
    proc.wait(30)
    raise AssertionError(f"no pause point of the run in {START_TIMEOUT:.0f} s: " + proc.stderr.read()[-3000:])


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_auto(tmp_path):
    ref = subprocess.run([sys.executable, RECIPE, *ARGS, "--outdir", str(tmp_path / "ref")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_dir = _one_run(tmp_path / "ref")

    out = tmp_path / "killed"
    rng = random.Random(20261206)
    kinds = ["step", "checkpoint", "sample"] * (KILLS // 3)
    rng.shuffle(kinds)
    hit = {"step": 0, "checkpoint": 0, "sample": 0}

    def files():
        return [p for d in (out.iterdir() if out.exists() else []) if d.is_dir() for p in d.iterdir()]

    def has_latest():  # killed before the first checkpoint, a run has nothing to resume (a new one would start)
        return any(p.name == "latest" for p in files())

    def last_logged():
        lines = [p.read_text().splitlines() for p in files() if p.name == "stats.jsonl"]
        return json.loads(lines[0][-1])["step"] if lines and lines[0] else 0

    hs = tmp_path / "handshake"
    hs.mkdir()
    seen: set[str] = set()
    cycles = 0
    while True:
        cycles += 1
        assert cycles < 100, "the run never finished"
        kind = kinds.pop() if kinds else None
        env = _env() if kind is None else _env(TINY_HANDSHAKE=str(hs))
        proc = subprocess.Popen([sys.executable, RECIPE, *ARGS, "--outdir", str(out), "--resume", "auto"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if kind is None:  # the last start: let it finish
                _, err = proc.communicate(timeout=300)
                assert proc.returncode == 0, err[-3000:]
                break
            before = last_logged()
            while True:
                pause = _next_pause(hs, proc, seen)
                assert pause is not None, f"the run ended before a '{kind}' kill: " + proc.stderr.read()[-3000:]
                tag, at, detail = pause
                if at == kind and has_latest():
                    if kind == "step":
                        # inside step `detail` (steps 1..detail logged): a step past the last one logged before
                        # whose logged predecessor had no checkpoint or sample due
                        due = int(detail) > before and int(detail) % 2 and int(detail) % 3
                    elif kind == "checkpoint":
                        due = detail.startswith(".checkpoint-")
                    else:
                        due = detail.startswith("fakes")
                    if due:
                        break
                (hs / (tag.name + ".go")).touch()
            if kind != "step":  # the kill is in the middle of a write: its temp file is there
                assert detail in [p.name for p in files()], (kind, detail)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            hit[kind] += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        run_dir = _one_run(out)
        # after each kill: `latest` names a complete checkpoint that loads, whatever the moment
        ck = load_checkpoint(run_dir)
        assert ck["step"] % 2 == 0 and 0 < ck["step"] < ITERS

    assert hit == {k: KILLS // 3 for k in hit}, hit
    run_dir = _one_run(out)
    assert _temps(run_dir) == [], _temps(run_dir)  # the torn writes were cleared at resume
    stats = [json.loads(x) for x in (run_dir / "stats.jsonl").read_text().splitlines()]
    ref_stats = [json.loads(x) for x in (ref_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == list(range(1, ITERS + 1))
    for a, b in zip(ref_stats, stats):
        assert (a["loss_d"], a["loss_g"]) == (b["loss_d"], b["loss_g"]), (a, b)  # bitwise equal
    ck_ref, ck = load_checkpoint(ref_dir), load_checkpoint(run_dir)
    assert ck["step"] == ck_ref["step"] == ITERS
    for group in ("G", "D"):
        for k, v in ck_ref["models"][group].items():
            assert torch.equal(v, ck["models"][group][k]), (group, k)
    for k, v in ck_ref["ema"]["G_ema"]["module"].items():
        assert torch.equal(v, ck["ema"]["G_ema"]["module"][k]), k
    # every sample of the uninterrupted run, byte for byte (a kill mid-sample resumes before it and writes it again)
    for p in sorted(ref_dir.glob("fakes*.png")):
        assert (run_dir / p.name).read_bytes() == p.read_bytes(), p.name
    # every checkpoint file left loads (none torn)
    for p in sorted(run_dir.glob("checkpoint-*.pt")):
        load_checkpoint(p)
