# SPDX-License-Identifier: BSD-3-Clause
"""FastGAN as the paper evaluates it: the reference's data pipeline (random flip, stretch), the ablation switches and
their resume checks, eval's protocol (N fakes vs the whole training set, every checkpoint), appendix B's probe."""
from __future__ import annotations

import json
import math
import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganops.train import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--ngf", "4", "--ndf", "4", "--nz", "16", "--batch", "2", "--recon-loss", "l1", "--sample-every", "0",
        "--n-sample", "2", "--workers", "0", "--device", "cpu", "--deterministic"]


@pytest.fixture(scope="module")
def cli():
    return runpy.run_path(str(ROOT / "recipes" / "fastgan.py"), run_name="fastgan_recipe")["cli"]


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GANOPS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
    n = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
    torch.set_num_threads(n)


def invoke(cli, *args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, f"{res.exception!r}\n{res.output[-3000:]}"
    return res.output


def run_of(outdir: Path) -> Path:
    runs = sorted(outdir.glob("*-fastgan"))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def reals(tmp_path_factory) -> Path:
    """Four 256x256 images (Inception on a few reals keeps eval's tests fast)."""
    d = tmp_path_factory.mktemp("reals")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    for i in range(4):
        a = np.stack([(xx * (i + 1)) % 256, yy, (xx + yy * i) % 256], -1) + rng.integers(0, 30, (256, 256, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"im{i}.png")
    return d


@pytest.fixture(scope="module")
def sweep_run(cli, reals, tmp_path_factory) -> Path:
    """4 steps on the 4 reals, a checkpoint every step, all kept (--keep 0)."""
    out = tmp_path_factory.mktemp("sweep")
    invoke(cli, "train", *TINY, "--data", str(reals), "--iters", "4", "--snap", "1", "--keep", "0",
           "--outdir", str(out))
    return run_of(out)


def _state(path: Path) -> dict:
    st = torch.load(path, weights_only=True)
    return {k: st[k] for k in ("models", "ema", "optimizers", "rng", "data", "step")}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _stats(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k in ("step", "d_real", "d_rec", "d_fake", "g")}
            for x in (run / "stats.jsonl").read_text().splitlines()]


# -- data ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_random_flip_is_the_default_and_resume_stays_bit_identical(cli, tmp_path):
    """The default --hflip random: a run stopped after 2 steps and resumed ends bit-identical (weights, EMA, Adam
    moments, RNG) to the uninterrupted 3-step run; and the flips are really drawn (--hflip off trains otherwise)."""
    out = invoke(cli, "train", *TINY, "--iters", "3", "--snap", "2", "--outdir", str(tmp_path / "a"))
    assert "--hflip random" in out and "80 images -> 80 items" in out  # no mirrored copies in the dataset
    a = run_of(tmp_path / "a")
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["flip"] == "random" and cfg["hflip"] is False and cfg["resize"] == "crop"
    invoke(cli, "train", *TINY, "--iters", "2", "--snap", "2", "--outdir", str(tmp_path / "b"))
    invoke(cli, "train", *TINY, "--iters", "3", "--snap", "2", "--outdir", str(tmp_path / "b"), "--resume", "auto")
    b = run_of(tmp_path / "b")
    assert _same(_state(latest_checkpoint(a)), _state(latest_checkpoint(b)))
    assert _stats(a) == _stats(b)
    invoke(cli, "train", *TINY, "--iters", "1", "--outdir", str(tmp_path / "c"), "--hflip", "off")
    off, on = _stats(run_of(tmp_path / "c")), _stats(a)
    assert off[0]["d_fake"] == on[0]["d_fake"]  # every other draw is the same: the first fake term too
    assert off[0]["d_real"] != on[0]["d_real"]  # the flipped reals change the real term


def test_hflip_copy_doubles_the_dataset(cli, tmp_path):
    out = invoke(cli, "train", *TINY, "--hflip", "copy", "--dry-run", "--outdir", str(tmp_path))
    assert "80 images -> 160 items" in out and "--hflip copy" in out
    out = invoke(cli, "train", *TINY, "--hflip", "off", "--dry-run", "--outdir", str(tmp_path))
    assert "80 images -> 80 items" in out
    assert "[default: random]" in " ".join(invoke(cli, "train", "--help").split())


def test_resize_stretch_is_the_reference_resize(tmp_path):
    """--resize stretch: the whole image to R x R with PIL bilinear (torchvision's Resize on a PIL image);
    crop (default) takes the centre square; set_resize switches a preloaded dataset."""
    from ganops.train import open_dataset

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)  # wide: crop and stretch differ
    Image.fromarray(a).save(tmp_path / "wide.png")
    ds = open_dataset(tmp_path, 32, verbose=False)
    ds.preload()
    crop = ds[0].clone()
    want_crop = np.asarray(Image.fromarray(a[:, 20:60]).resize((32, 32), Image.Resampling.LANCZOS)).copy()
    assert torch.equal(((crop + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(want_crop).permute(2, 0, 1))
    ds.set_resize("stretch")
    want = np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.BILINEAR)).copy()
    assert torch.equal(((ds[0] + 1) * 127.5).round().to(torch.uint8), torch.from_numpy(want).permute(2, 0, 1))
    assert torch.equal(open_dataset(tmp_path, 32, verbose=False, resize="stretch")[0], ds[0])
    with pytest.raises(ValueError, match="resize"):
        ds.set_resize("squash")


# -- ablations ------------------------------------------------------------------------------------------------------
def test_ablation_flags_build_smaller_models(cli, tmp_path):
    out = invoke(cli, "train", *TINY, "--iters", "1", "--no-sle", "--no-decoders", "--outdir", str(tmp_path))
    full = invoke(cli, "train", *TINY, "--dry-run", "--outdir", str(tmp_path / "full"))
    assert "G 114,516 params (SLE links 10,836), D 47,215 params (decoders 12,618)" in full
    assert "G 103,680 params (no SLE links: --no-sle), D 34,597 params (no decoders: --no-decoders)" in out
    run = run_of(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["sle"] is False and cfg["decoders"] is False
    st = torch.load(latest_checkpoint(run), weights_only=True)
    assert not any(k.startswith("se_") for k in st["models"]["G"])
    assert not any("decoder" in k for k in st["models"]["D"])
    assert "d_rec" not in json.loads((run / "stats.jsonl").read_text().splitlines()[0])
    invoke(cli, "generate", "--run", str(run), "--seeds", "0-1")  # the ablated G loads for sampling


def _refused(cli, *args: str, needles=()) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 2, res.output[-3000:]
    err = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and all(n in err[0] for n in needles), res.output[-2000:]
    return err[0]


@pytest.mark.slow
def test_ablation_keys_are_architecture_and_old_runs_resume(cli, tmp_path):
    """sle/decoders must match on resume (one-line error, nothing written); a checkpoint written before the keys
    existed (its config lacks them) resumes with the defaults and is refused with --no-sle."""
    invoke(cli, "train", *TINY, "--iters", "1", "--outdir", str(tmp_path / "new"), "--no-decoders")
    run = run_of(tmp_path / "new")
    before = sorted(p.name for p in run.iterdir())
    _refused(cli, "train", *TINY, "--iters", "2", "--outdir", str(tmp_path / "new"), "--resume", "auto",
             needles=("architecture config differs", "decoders: checkpoint=False, now=True"))
    assert sorted(p.name for p in run.iterdir()) == before
    invoke(cli, "train", *TINY, "--iters", "2", "--outdir", str(tmp_path / "new"), "--resume", "auto",
           "--no-decoders")
    # an "old" checkpoint: a default run's, with the keys added since taken out of its config
    old = tmp_path / "old.pt"
    invoke(cli, "train", *TINY, "--iters", "1", "--outdir", str(tmp_path / "o"))
    st = torch.load(latest_checkpoint(run_of(tmp_path / "o")), weights_only=True)
    for k in ("sle", "decoders", "flip", "resize", "keep"):
        del st["config"][k]
    torch.save(st, old)
    _refused(cli, "train", *TINY, "--iters", "2", "--outdir", str(tmp_path / "o2"), "--resume", str(old), "--no-sle",
             needles=(f"--resume {old}", "sle: checkpoint=True, now=False"))
    assert not (tmp_path / "o2").exists()
    invoke(cli, "train", *TINY, "--iters", "2", "--outdir", str(tmp_path / "o2"), "--resume", str(old))


def test_seed_lists_are_checked(cli, tmp_path):
    """generate/mix seed lists: one Error line naming the flag, before any run is read."""
    _refused(cli, "generate", "--run", str(tmp_path / "nope"), "--seeds", "3-1", needles=("--seeds", "is empty"))
    _refused(cli, "mix", "--run", str(tmp_path / "nope"), "--style-seeds", "1,x", needles=("--style-seeds",
                                                                                           "'x' is not a seed"))


# -- evaluation protocol --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_draws_as_many_fakes_as_asked(cli, sweep_run):
    out = invoke(cli, "eval", "--run", str(sweep_run), "--num", "6", "--batch", "4")
    res = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    assert res["num_fake"] == 6 and res["num_real"] == 4 and res["step"] == 4  # more fakes than reals
    assert all(math.isfinite(res[k]) for k in ("fid", "kid", "kid_std", "precision", "recall"))
    assert 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1
    logged = json.loads((sweep_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["source"] == "eval" and logged["fid"] == res["fid"]


@pytest.mark.slow
def test_eval_all_checkpoints_one_table_best_marked_and_cached(cli, sweep_run):
    assert sorted(p.name for p in sweep_run.glob("checkpoint-*.pt")) == [f"checkpoint-{i:08d}.pt" for i in (1, 2, 3, 4)]
    for i in (1, 2):  # two are enough (time); the sweep takes what is on disk
        (sweep_run / f"checkpoint-{i:08d}.pt").unlink()
    out = invoke(cli, "eval", "--run", str(sweep_run), "--num", "4", "--all-checkpoints")
    table = json.loads((sweep_run / "eval_checkpoints.json").read_text())
    rows = table["rows"]
    assert [r["step"] for r in rows] == [3, 4] and all(r["num_fake"] == 4 and r["num_real"] == 4 for r in rows)
    fids = [r["fid"] for r in rows]
    assert table["best"] == fids.index(min(fids))
    best_line = next(ln for ln in out.splitlines() if ln.endswith("* best"))
    assert best_line.startswith(rows[table["best"]]["checkpoint"])
    again = invoke(cli, "eval", "--run", str(sweep_run), "--num", "4", "--all-checkpoints")
    assert again.count(": cached (step") == 2
    assert json.loads((sweep_run / "eval_checkpoints.json").read_text())["rows"] == rows
    other = invoke(cli, "eval", "--run", str(sweep_run), "--num", "4", "--all-checkpoints", "--seed", "1")
    assert ": cached" not in other  # other latents: every row recomputed


def test_sweep_resumes_and_recomputes_only_what_changed(tmp_path, monkeypatch):
    """ganops.metrics.sweep on fake features (no Inception): rows reused by checkpoint name and size under the same
    settings; a new checkpoint adds one evaluation; other settings recompute all."""
    import ganops.metrics.sweep as sweep

    calls = []

    def feats(fakes, num, **kw):
        x = fakes(num, 0)
        calls.append(num)
        return x.flatten(1).double().numpy()[:, :8].repeat(4, 1)

    monkeypatch.setattr(sweep, "fake_features", feats)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 32))
    cks = []
    for i, scale in enumerate((3.0, 0.1, 1.0)):
        p = tmp_path / f"checkpoint-{i:08d}.pt"
        p.write_bytes(b"x" * (i + 1))
        cks.append((p, scale))
    scales = dict(cks)

    def load(path):
        s = scales[path]
        g = torch.Generator().manual_seed(int(s * 10))
        return int(path.stem[-1]), lambda n, start: s * torch.randn(n, 3, 2, 4, generator=g)

    table = tmp_path / "t.json"
    res = sweep.sweep_checkpoints([p for p, _ in cks[:2]], load, real, 30, table=table, settings={"seed": 0},
                                  log=lambda m: None)
    assert len(calls) == 2 and [r["step"] for r in res["rows"]] == [0, 1]
    res = sweep.sweep_checkpoints([p for p, _ in cks], load, real, 30, table=table, settings={"seed": 0},
                                  log=lambda m: None)
    assert len(calls) == 3 and res["best"] == sweep.best_row(res["rows"])
    assert res["rows"][res["best"]]["fid"] == min(r["fid"] for r in res["rows"])
    sweep.sweep_checkpoints([p for p, _ in cks], load, real, 30, table=table, settings={"seed": 1},
                            log=lambda m: None)
    assert len(calls) == 6
    txt = sweep.format_table(res["rows"], best=res["best"])
    assert len(txt.splitlines()) == 4 and txt.splitlines()[1 + res["best"]].endswith("* best")


# -- appendix B -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_probe_decoders_leaves_d_frozen_and_learns():
    """Fresh decoders on a frozen D: D's parameters and buffers (BN stats, SN u/v) unchanged, the decoders' loss
    falls on a fixed batch; a D trained without decoders can be probed too."""
    from ganops.models.fastgan import FastGANDiscriminator, weights_init
    from ganops.models.fastgan_probe import probe_decoders
    from ganops.models.fastgan_step import make_recon_loss

    torch.manual_seed(0)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    for dec in (True, False):
        D = weights_init(FastGANDiscriminator(256, 4, decoders=dec)).train()
        before = {k: v.clone() for k, v in D.state_dict().items()}
        res = probe_decoders(D, iter(lambda: x, None), make_recon_loss("l1"), iters=8, eval_images=x, lr=2e-3)
        assert all(torch.equal(before[k], v) for k, v in D.state_dict().items())
        assert D.training and all(p.grad is None for p in D.parameters())
        assert res["last_loss"] < 0.92 * res["first_loss"], res
        assert set(res["eval"]) == {"big", "small", "part", "mean"} and all(v > 0 for v in res["eval"].values())
        assert res["samples"].shape == (6, 3, 128, 128)


def test_probe_decoders_command(cli, sweep_run, tmp_path):
    out = invoke(cli, "probe-decoders", "--run", str(sweep_run), "--iters", "2", "--batch", "2", "--eval-images", "2",
                 "--out", str(tmp_path / "probe.json"))
    assert "D trained with decoders, probe l1 after 2 steps" in out
    res = json.loads((tmp_path / "probe.json").read_text())
    (row,) = res["rows"]
    assert row["decoders_in_training"] is True and row["recon_loss"] == "l1" and row["step"] == 4
    assert all(math.isfinite(v) for v in row["eval"].values())
    assert (sweep_run / "probe_decoders.png").is_file()
