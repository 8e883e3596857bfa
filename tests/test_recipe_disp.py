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
    assert cfg["data"] == "builtin:emoji" and cfg["prior"] == "vgg16" and cfg["diffaug"] == "color,translation,cutout"
    lines = [json.loads(s) for s in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2]
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in lines)
    pri = torch.load(run / "priors.pt", weights_only=True)
    assert pri["priors"].shape == (80, 512) and pri["extractor"] == "vgg16"
    torch.testing.assert_close(pri["priors"].norm(dim=1), torch.ones(80))  # --prior-norm l2
    assert "GMM K=3 diag" in p.stdout and "vicinal.png" in p.stdout
    assert "computed and cached" in p.stdout
    assert cfg["cbn_z"] is False and cfg["preset"] == "cpu" and cfg["eval_split"] == 0  # the paper's CBN input


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
              "color,translation,cutout", "--preset", "--cbn-z", "--cr-fakes", "--eval-split", "SimCLR"):
        assert s in r.output, s
    top = CliRunner().invoke(m.cli, ["--help"])
    assert "differ" in top.output and "generate" in top.output and "eval" in top.output
    assert any(ln.startswith("    * priors:") for ln in top.output.splitlines())  # one deviation per line
    bad = CliRunner().invoke(m.cli, ["train", "--resolution", "16", "--dry-run"])
    assert bad.exit_code != 0 and "--resolution must be 32, 64 or 128" in bad.output
    r = CliRunner().invoke(m.cli, ["generate", "--run", "/nonexistent/run"])
    assert r.exit_code == 2 and "--run /nonexistent/run: no such checkpoint file" in r.output  # no traceback


def test_presets_fill_unset_options_and_explicit_ones_win(tmp_path):
    """--preset biggan32 sets the paper's settings (dry run of the baseline: no prior extraction); --batch wins."""
    from ganops.train.disp import PRESETS

    m = load_recipe()
    args = ["train", "--preset", "biggan32", "--baseline", "--batch", "4", "--dry-run", "--outdir", str(tmp_path)]
    r = CliRunner().invoke(m.cli, args)
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output[r.output.index("{"): r.output.rindex("}") + 1])["config"]
    want = {k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS["biggan32"].items()}
    assert {k: cfg[k] for k in want if k != "batch"} == {k: v for k, v in want.items() if k != "batch"}
    assert cfg["batch"] == 4 and cfg["d_steps"] == 4 and cfg["cr_weight"] == 10 and cfg["cr_fakes"] is True
    assert cfg["diffaug"] == "color,translation,cutout"
    # the cpu preset is the options' own defaults
    defaults = {p.name: p.default for p in m.train.params}
    for k, v in PRESETS["cpu"].items():
        assert defaults[k] == v, k


def test_generate_one_file_per_image_and_old_conditioning(trained, tmp_path):
    """generate --out DIR --num N writes N PNGs; a run whose config predates --cbn-z loads with cat(W_G c, z)."""
    from PIL import Image

    from ganops.train import load_checkpoint, save_checkpoint

    run, _ = trained
    m = load_recipe()
    r = CliRunner().invoke(m.cli, ["generate", "--run", str(run), "--num", "5", "--out", str(tmp_path / "imgs")])
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "imgs").glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    assert Image.open(files[0]).size == (32, 32)
    old = tmp_path / "old"
    old.mkdir()
    for f in ("priors.pt", "gmm.pt"):
        (old / f).write_bytes((run / f).read_bytes())
    ck = load_checkpoint(run / "checkpoint-00000002.pt")
    g_old, _ = m.build_models({**ck["config"], "cbn_z": True}, 80)  # what a run before the option trained
    ck["ema"]["G_ema"]["module"] = g_old.state_dict()
    del ck["config"]["cbn_z"], ck["config"]["eval_split"]
    save_checkpoint(ck, old / "checkpoint-00000002.pt")
    g, pri, cfg, _ = m._load_run(str(old), "cpu")
    assert cfg["cbn_z"] is True and g.cbn_z and pri.shape == (80, 512)


def test_eval_split_holds_out_images_and_eval_uses_them(tmp_path):
    """--eval-split: the held-out images are not trained on; `eval` compares the same number of generated and
    held-out real images, with separate k for precision and recall."""
    from ganops.train.disp import eval_dataset, split_indices

    tr, held = split_indices(80, 0.25, seed=3)
    assert len(held) == 20 and not set(tr) & set(held) and sorted(tr + held) == list(range(80))
    assert split_indices(80, 0.25, seed=3) == (tr, held) and split_indices(80, 0.0) == (list(range(80)), [])
    p = run_cli([(["train", "--baseline", "--eval-split", "0.25", "--iters", "1"], {"train": tiny(tmp_path / "o")})],
                tmp_path)
    assert "20 of 80 images held out" in p.stdout
    run = tmp_path / "o" / "00000-disp"
    assert torch.load(run / "priors.pt", weights_only=True)["priors"].shape[0] == 60  # G's table: 60 images
    cfg = json.loads((run / "config.json").read_text())
    reals, label = eval_dataset(cfg, "auto")
    assert label == "held-out" and len(reals) == 20
    # the whole command: held-out reals, as many fakes as reals, k for precision and recall apart
    run_cli([(["eval", "--run", str(run), "--num", "6", "--k-precision", "2", "--k-recall", "4"], None)], tmp_path)
    res = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert res["eval_data"] == "held-out" and res["num_real"] == res["num_fake"] == 6
    assert (res["k_precision"], res["k_recall"]) == (2, 4) and math.isfinite(res["fid6"])


def test_d_loss_consistency_regularisation():
    """CR adds w*(D(T(x)) - D(x))^2 on reals; --cr-fakes (bCR) adds the same on fakes."""
    from ganops.train.disp import d_loss

    torch.manual_seed(0)
    w = torch.randn(3 * 4 * 4, requires_grad=True)
    D = lambda x, **kw: x.flatten(1) @ w  # noqa: E731
    reals, fakes = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    aug = lambda x: x.flip(-1)  # noqa: E731
    hinge = torch.relu(1 - D(aug(reals))).mean() + torch.relu(1 + D(aug(fakes))).mean()
    torch.testing.assert_close(d_loss(D, reals, fakes, {}, aug), hinge)
    cr_r = (D(aug(reals)) - D(reals)).square().mean()
    cr_f = (D(aug(fakes)) - D(fakes)).square().mean()
    torch.testing.assert_close(d_loss(D, reals, fakes, {}, aug, 10.0), hinge + 10 * cr_r)
    loss = d_loss(D, reals, fakes, {}, aug, 10.0, cr_fakes=True)
    torch.testing.assert_close(loss, hinge + 10 * cr_r + 10 * cr_f)
    loss.backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_loop_keeps_best_fid_snapshot(tmp_path, monkeypatch):
    """TrainLoop.run(best=NAME) keeps best.pt/best.json at the lowest NAME so far (scripted metric values); a
    resumed loop reads the best value back from best.pt and does not replace it with a worse one."""
    from ganops.train import TrainLoop, load_checkpoint
    from ganops.train.best import BestSnapshot
    from ganops.train.metrics import TrainMetrics

    vals = iter([3.0, 1.0, 2.0, 1.5])
    monkeypatch.setattr(TrainMetrics, "evaluate", lambda self, fakes, log=print: {"swd16": next(vals)})
    cfg = dict(data="builtin:emoji", resolution=16, iters=3, batch=2, outdir=str(tmp_path), metrics="swd16",
               metrics_every=1, snap=0, sample_every=0, workers=0)
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)

    def step(batch, it):
        opt.zero_grad()
        loss = lin(torch.ones(1, 2)).sum()
        loss.backward()
        opt.step()
        return {"loss": loss}

    fakes = lambda n, s: torch.zeros(n, 3, 16, 16)  # noqa: E731
    out = TrainLoop("bt", cfg).run(step, models={"m": lin}, optimizers={"m": opt}, fakes=fakes, best="swd16")
    run = Path(out["run_dir"])
    assert json.loads((run / "best.json").read_text()) == {"metric": "swd16", "value": 1.0, "step": 2}
    ck = load_checkpoint(run / "best.pt")
    assert ck["step"] == 2 and ck["best"]["value"] == 1.0 and "m" in ck["models"]
    assert (run / "latest").read_text().strip() == "checkpoint-00000003.pt"  # best.pt is not the latest
    assert not list(run.glob(".best.pt.tmp*"))
    snap = BestSnapshot(run, "swd16")
    assert snap.value == 1.0 and snap.step == 2 and not snap.improved({"swd16": 1.5}) and snap.improved({"swd16": 0.9})
    TrainLoop("bt", {**cfg, "iters": 4, "resume": "auto"}).run(step, models={"m": lin}, optimizers={"m": opt},
                                                                 fakes=fakes, best="swd16")
    assert json.loads((run / "best.json").read_text())["step"] == 2  # 1.5 at step 4 is worse than 1.0


def test_eval_gmm_uses_the_runs_mixture(trained, tmp_path, monkeypatch):
    """`eval --mode gmm` and `generate --mode gmm` draw from the run's gmm.pt (the mixture behind gmm.png): no refit.
    A run without gmm.pt (stopped before its end) is refitted, with a note."""
    import shutil

    import ganops.train.disp as tdisp

    monkeypatch.setenv("GANOPS_CACHE", str(tmp_path / "cache"))
    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    m = load_recipe()

    def no_fit(*a, **k):
        raise AssertionError("fit_gmm called although the run has gmm.pt")

    monkeypatch.setattr(tdisp, "fit_gmm", no_fit)
    r = CliRunner().invoke(m.cli, ["eval", "--run", str(run), "--mode", "gmm", "--num", "4"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["mode"] == "gmm"
    r = CliRunner().invoke(m.cli, ["generate", "--run", str(run), "--mode", "gmm", "--n", "2"])
    assert r.exit_code == 0, r.output
    assert "no gmm.pt" not in r.output
    monkeypatch.undo()
    monkeypatch.setenv("GANOPS_CACHE", str(tmp_path / "cache"))
    (run / "gmm.pt").unlink()
    r = CliRunner().invoke(m.cli, ["eval", "--run", str(run), "--mode", "gmm", "--num", "4"])
    assert r.exit_code == 0, r.output
    assert f"disp: note: no gmm.pt in {run}" in r.output and "fitting a GMM on the prior table" in r.output


def test_eval_user_errors_and_bugs(trained, tmp_path, monkeypatch):
    """`eval`: too few images for the k asked is one `Error:` line (exit 2); a ValueError from inside the metrics
    (a bug) keeps its type and traceback instead of passing for a usage error."""
    import ganops.train.disp as tdisp
    from ganops.train.errors import UserError

    run, _ = trained
    m = load_recipe()
    r = CliRunner().invoke(m.cli, ["eval", "--run", str(run), "--num", "4", "--k-recall", "4"])
    assert r.exit_code == 2 and "Error: --k-precision/--k-recall (3/4) must be below the number of images (4)" \
        in r.output, r.output
    g, pri, cfg, _ = m._load_run(str(run), "cpu")
    one = [torch.zeros(3, 32, 32)]
    with pytest.raises(UserError, match="at least 2 real images, the evaluation set has 1"):
        tdisp.evaluate(g, pri, one, cfg, mode="train", num=None, seed=0, k_precision=1, k_recall=1, device="cpu")

    def bug(*a, **k):
        raise ValueError("a bug deep in the metrics")

    monkeypatch.setattr(tdisp, "draw_priors", bug)
    r = CliRunner().invoke(m.cli, ["eval", "--run", str(run), "--num", "4", "--mode", "train"])
    assert isinstance(r.exception, ValueError) and "a bug deep in the metrics" in str(r.exception)
    assert r.exit_code != 2 and "Error:" not in r.output


def test_dry_run_computes_no_priors(tmp_path, monkeypatch):
    """train --dry-run neither hashes the images nor runs the prior extractor, writes no prior cache, and says what
    training would compute; --hierarchical records cbn_z (the one rule: with_arch_defaults)."""
    import ganops.models.priors as mp

    def boom(*a, **k):
        raise AssertionError("the dry run ran the prior extractor or the image index pass")

    monkeypatch.setattr(mp, "get_extractor", boom)
    monkeypatch.setattr(mp.ImageIndex, "__init__", boom)
    m = load_recipe()
    r = CliRunner().invoke(m.cli, ["train", "--dry-run", "--hierarchical", "--outdir", str(tmp_path / "o"),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert "--dry-run: training would take the --prior vgg16 priors of the 80 images at --prior-size 128" in r.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o").exists()
    cfg = json.loads(r.output[r.output.index("{"): r.output.rindex("}") + 1])["config"]
    assert cfg["hierarchical"] is True and cfg["cbn_z"] is True


def test_hierarchical_implies_cbn_z_in_one_place():
    """with_arch_defaults owns 'hierarchical implies cbn_z' (old configs and new runs alike); build_models gives
    the model its exclusive flags (each CBN reads its latent chunk, not the whole latent)."""
    from ganops.train.disp import build_models, with_arch_defaults

    base = dict(resolution=32, prior="vgg16", prior_norm="l2", ch=2, z_dim=24, embed_dim=8, baseline=False,
                g_sn=True)
    assert with_arch_defaults({**base, "hierarchical": True, "cbn_z": False})["cbn_z"] is True
    assert with_arch_defaults({**base, "hierarchical": False, "cbn_z": False})["cbn_z"] is False
    assert with_arch_defaults({**base, "hierarchical": False})["cbn_z"] is True  # a run before --cbn-z
    g, _ = build_models({**base, "hierarchical": True, "cbn_z": True}, 4)
    assert g.hierarchical and not g.cbn_z and g.z_chunk == 6
