# SPDX-License-Identifier: BSD-3-Clause
"""DISP recipe end to end on tiny settings: no-argument path, outputs, generate modes, resume, baseline, eval."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "disp.py"


def tiny(outdir: Path, **extra) -> dict:
    """Tiny training settings (as a click default_map for the `train` command)."""
    d = dict(iters=2, ch=2, batch=4, prior_size=16, outdir=str(outdir), cache_dir=str(outdir / "cache"), snap=0,
             sample_every=0, gmm_components=3, workers=0, ema_decay=0.5)
    d.update(extra)
    return d


def run_cli(calls: list[tuple[list[str], dict | None]], cwd: Path) -> subprocess.CompletedProcess:
    """Run `cli.main(args, default_map=...)` for each call in one fresh interpreter (import cost paid once)."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('disp_recipe', {str(RECIPE)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"for args, dm in json.loads({json.dumps(json.dumps(calls))}):\n"
        "    m.cli.main(args, default_map=dm, prog_name='disp.py', standalone_mode=False)\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore", GANOPS_CACHE=str(cwd / "cache"))
    p = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def load_recipe():
    spec = importlib.util.spec_from_file_location("disp_recipe_inproc", RECIPE)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The no-argument path (`python recipes/disp.py` = train with the preset) with tiny overrides."""
    tmp = tmp_path_factory.mktemp("disp")
    p = run_cli([([], {"train": tiny(tmp / "runs")})], tmp)
    return tmp / "runs" / "00000-disp", p


@pytest.mark.slow
def test_no_argument_run_writes_outputs(trained):
    run, p = trained
    assert "no command given, training the default preset" in p.stdout
    for f in ("config.json", "stats.jsonl", "reals.png", "vicinal.png", "gmm.png", "priors.pt", "gmm.pt",
              "ATTRIBUTION.txt", "latest"):
        assert (run / f).is_file(), f
    assert list(run.glob("fakes*.png")) and list(run.glob("checkpoint-*.pt"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"] == "builtin:emoji" and cfg["prior"] == "vgg16" and cfg["diffaug"] == "translation,cutout,color"
    lines = [json.loads(s) for s in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in lines)
    pri = torch.load(run / "priors.pt", weights_only=True)
    assert pri["priors"].shape == (80, 512) and pri["extractor"] == "vgg16"
    torch.testing.assert_close(pri["priors"].norm(dim=1), torch.ones(80))  # --prior-norm l2
    assert "GMM K=3 diag" in p.stdout and "vicinal.png" in p.stdout
    assert "computed and cached" in p.stdout


def test_final_fakes_match_checkpointed_ema(trained):
    """The last fakes grid is G_ema of the final checkpoint (guards the EMA/spectral-norm first-forward clobber)."""
    import numpy as np
    from PIL import Image

    from ganops.train import fixed_noise, load_checkpoint, save_grid

    run, _ = trained
    m = load_recipe()
    ck = load_checkpoint(run / "checkpoint-00000002.pt")
    g, _ = m.build_models(ck["config"], 80)
    g.load_state_dict(ck["ema"]["G_ema"]["module"])
    pri = torch.load(run / "priors.pt", weights_only=True)["priors"]
    with torch.no_grad():
        x = g.eval()(fixed_noise(16, ck["config"]["z_dim"], seed=0), pri[:16])
    save_grid(x, run / "regen.png")
    a = np.asarray(Image.open(run / "regen.png")).astype(int)
    b = np.asarray(Image.open(run / "fakes00000002.png")).astype(int)
    assert np.abs(a - b).max() <= 1


@pytest.mark.slow
def test_generate_modes(trained, tmp_path):
    run, _ = trained
    img = tmp_path / "edit.png"
    calls = [(["generate", "--run", str(run), "--mode", m, "--n", "4", "--out", str(tmp_path / f"{m}.png")], None)
             for m in ("train", "vicinal", "gmm")]
    calls.append((["generate", "--run", str(run), "--mode", "image", "--image", str(run / "reals.png"),
                   "--edit", "cutout", "--n", "3", "--out", str(img)], None))
    calls.append((["invert", "--run", str(run), "--image", str(run / "reals.png"), "--steps", "5",
                   "--optimize-z", "--out", str(tmp_path / "inv.png")], None))
    p = run_cli(calls, tmp_path)
    for m in ("train", "vicinal", "gmm"):
        assert (tmp_path / f"{m}.png").is_file(), p.stdout
    assert img.is_file() and "3 samples (image priors)" in p.stdout
    inv = torch.load(tmp_path / "inv.pt", weights_only=True)
    assert inv["priors"].shape == (1, 3, 512)  # one prior per G block (3 blocks at 32x32)
    first, last = (float(v) for v in p.stdout.split("inversion MSE ")[1].split(" after")[0].split(" -> "))
    assert last < first  # Adam on the per-block priors (and z) lowers the reconstruction error


@pytest.mark.slow
def test_resume_continues_and_baseline(trained, tmp_path):
    run, _ = trained
    outdir = run.parent
    # --resume auto continues the newest run in place (prior cache hit this time)
    p = run_cli([(["train", "--resume", "auto", "--iters", "3"], {"train": tiny(outdir)}),
                 (["train", "--baseline", "--iters", "1", "--cr-weight", "10"], {"train": tiny(tmp_path / "b")})],
                tmp_path)
    steps = [json.loads(s)["step"] for s in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and not (outdir / "00001-disp").exists()
    assert "cache hit" in p.stdout
    b = tmp_path / "b" / "00000-disp"
    assert (b / "vicinal.png").is_file() and (b / "gmm.png").is_file()
    assert torch.load(b / "priors.pt", weights_only=True)["priors"].shape == (80, 512)  # G's embedding table
    rec = json.loads((b / "stats.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(rec["loss_d"]) and json.loads((b / "config.json").read_text())["cr_weight"] == 10


@pytest.mark.slow
def test_eval_metrics(trained, tmp_path):
    run, _ = trained
    p = run_cli([(["eval", "--run", str(run), "--num", "4", "--mode", "gmm"], None)], tmp_path)
    res = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert res["num"] == 4 and math.isfinite(res["fid4"]) and res["fid4"] > 0
    assert 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1 and math.isfinite(res["kid4"])
    assert '"fid4"' in p.stdout


@pytest.mark.slow
def test_ddp_two_gloo_processes_bf16(tmp_path):
    """torchrun with 2 gloo processes on the CPU, bfloat16 autocast: rank 0 alone writes one run directory."""
    import socket

    from ganops.train import load_checkpoint

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["train", "--iters", "2", "--ch", "2", "--batch", "4", "--prior-size", "16", "--outdir", str(tmp_path / "o"),
            "--cache-dir", str(tmp_path / "cache"), "--snap", "0", "--sample-every", "0", "--gmm-components", "3",
            "--workers", "0", "--ema-decay", "0.5", "--device", "cpu", "--precision", "bf16"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("GANOPS_IMPL", None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                        f"--master_port={port}", str(RECIPE), *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = [d for d in (tmp_path / "o").iterdir() if d.is_dir()]
    assert [d.name for d in runs] == ["00000-disp"]
    run = runs[0]
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all(math.isfinite(r["loss_d"]) for r in lines)
    ck = load_checkpoint(run)
    assert ck["world_size"] == 2 and ck["amp"]["precision"] == "bf16" and ck["config"]["batch"] == 4
    for f in ("vicinal.png", "gmm.png", "priors.pt"):
        assert (run / f).is_file(), f


def test_help_and_usage_errors():
    m = load_recipe()
    r = CliRunner().invoke(m.cli, ["train", "--help"])
    assert r.exit_code == 0
    for s in ("--prior", "--vicinal", "--gmm-components", "--baseline", "--hierarchical", "[default: 600",
              "translation,cutout,color"):
        assert s in r.output, s
    top = CliRunner().invoke(m.cli, ["--help"])
    assert "differ" in top.output and "generate" in top.output and "eval" in top.output
    assert any(ln.startswith("    * priors:") for ln in top.output.splitlines())  # one deviation per line
    bad = CliRunner().invoke(m.cli, ["train", "--resolution", "16", "--dry-run"])
    assert bad.exit_code != 0 and "--resolution must be 32, 64 or 128" in bad.output
    r = CliRunner().invoke(m.cli, ["generate", "--run", "/nonexistent/run"])
    assert r.exit_code == 2 and "--run /nonexistent/run: no such checkpoint file" in r.output  # no traceback
