# SPDX-License-Identifier: BSD-3-Clause
"""``TrainLoop``: the driver a recipe calls with its models, optimizers, a step function and a sample function."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import click
import torch
from torch import nn

from .._dispatch import use_impl
from .._io import write_text
from . import distributed as ddp
from .amp import Amp
from .best import BestSnapshot
from .checkpoint import (FORMAT, CheckpointError, check_config, config_diff, get_rng_state, latest_checkpoint,
                         load_checkpoint, load_state, resolve_checkpoint, save_checkpoint, set_rng_state)
from .data import InfiniteLoader, open_dataset
from .errors import MetricsError
from .metrics import FakesFn, TrainMetrics, check_metrics, parse_metrics
from .progress import NonFiniteLossError, Progress, StatsWriter, append_jsonl, find_non_finite, to_floats
from .rundir import RunDirError, _jsonable, check_outdir, find_run_dirs, make_run_dir, remove_stale_temps
from .runtime import any_rank_bad, ganops_version, git_sha, seed_everything, set_deterministic
from .samples import save_grid
from .signals import StopRequest

__all__ = ["TrainLoop", "MetricsError", "set_deterministic", "seed_everything"]

StepFn = Callable[[Any, int], Mapping[str, Any]]
SampleFn = Callable[[int], torch.Tensor]


class TrainLoop:
    """Owns everything around a recipe's loss step: devices/DDP, seeding, data, run directory, resume,
    checkpoints, samples, progress, stats and NaN handling.

    Construct it first (it resolves the device, opens and validates the data, creates the run directory and
    writes ``config.json``; a resumed run's directory is opened by :meth:`run`, once the checkpoint has loaded),
    build models on ``loop.device``, wrap them with :meth:`prepare`, then call :meth:`run`.

    Args:
        name: run name; the run directory is ``{outdir}/{id:05d}-{name}``.
        config: all options (the shared flags of :func:`ganops.train.train_options` plus the recipe's own); it is
            written to ``config.json`` and stored in checkpoints.
        arch_keys: config keys that must match on resume (default: every key except
            :data:`ganops.train.checkpoint.NON_ARCH_KEYS`).
        arch_defaults: ``{key: value}`` for architecture keys added after runs were written: a checkpoint whose
            config lacks ``key`` was trained with ``value`` (the architecture before the option existed), so it
            resumes with that value and is refused with another. The keys are checked on resume beside
            ``arch_keys``.
        dataset: "auto" (open ``config["data"]`` at ``config["resolution"]``), an explicit dataset, or None (the
            step gets ``batch=None``; e.g. single-image GANs that hold their image themselves).
        attribution: licence text to print and write to ``ATTRIBUTION.txt`` (builtin data sets add theirs).
        log_every: write a ``stats.jsonl`` line every N steps.
        keep: number of checkpoints kept on disk (the one ``latest`` points to is never deleted).
        resolutions: the ``--resolution`` values the recipe accepts, for the advice when images are too small.

    Bad input (data, checkpoint, ``--outdir``) raises a :class:`ganops.train.errors.UserError`: one ``Error:`` line
    and exit status 2 under click, before anything is written.
    """

    def __init__(self, name: str, config: Mapping[str, Any], *, arch_keys: list[str] | None = None,
                 dataset: str | torch.utils.data.Dataset | None = "auto", attribution: str | None = None,
                 log_every: int = 1, keep: int = 3, resolutions: list[int] | tuple[int, ...] | None = None,
                 arch_defaults: Mapping[str, Any] | None = None) -> None:
        self.name, self.config = name, dict(_jsonable(dict(config)))
        self.arch_keys = list(arch_keys) if arch_keys is not None else None
        self.log_every, self.keep = max(1, log_every), max(1, keep)
        c = self.config
        self.iters = int(c.get("iters", 1000))
        self.snap, self.sample_every = int(c.get("snap", 0)), int(c.get("sample_every", 0))
        self.dry_run = bool(c.get("dry_run", False))
        # --metrics: names, a data set to compare with and the Inception weights are checked before anything else.
        self.metric_specs = parse_metrics(c.get("metrics", "none"))
        self.metrics_every = int(c.get("metrics_every", 0))
        check_metrics(self.metric_specs, resolution=c.get("resolution"), has_dataset=dataset is not None,
                      recipe=f"recipe '{name}'")
        self.impl = str(c.get("impl", "auto") or "auto")  # --impl: applied to the run's ops by run() (use_impl)
        self.dist = ddp.init_distributed(str(c.get("device", "auto")))
        self.device, self.rank, self.world_size = self.dist.device, self.dist.rank, self.dist.world_size
        self.is_main = self.dist.is_main
        self.deterministic = bool(c.get("deterministic", False))
        if self.deterministic or self.device.type == "cuda":  # leave global flags alone otherwise
            set_deterministic(self.deterministic)
        self.seed = int(c.get("seed", 0))
        seed_everything(self.seed + self.rank)
        self.amp = Amp(str(c.get("precision", "fp32")), self.device)
        self.channels_last = bool(c.get("channels_last", False))
        self.batch_per_rank = ddp.per_rank_batch(int(c.get("batch", 1)), self.world_size)

        # Resume target first: an incompatible config must fail before anything is written.
        self.resume_path, self.run_dir = self._find_resume(c.get("resume"))
        self._resume_state = None
        if self.resume_path is not None:
            self._resume_state = load_checkpoint(self.resume_path, recipe=name)
            saved = {**dict(arch_defaults or {}), **self._resume_state.get("config", {})}
            keys = None if self.arch_keys is None else self.arch_keys + [k for k in arch_defaults or {}
                                                                         if k not in self.arch_keys]
            check_config(saved, self.config, keys, source=str(self.resume_path))
        if self.run_dir is None:  # a new run dir: its --outdir must be usable, known before the data pass
            bad = None
            if self.is_main:
                try:
                    check_outdir(c.get("outdir", "runs"))
                except RunDirError as e:
                    bad = str(e)
            bad = ddp.broadcast_object(bad)
            if bad is not None:
                raise RunDirError(bad)

        self.dataset: torch.utils.data.Dataset | None
        if isinstance(dataset, str) and dataset == "auto":
            for k in ("data", "resolution"):
                if k not in c:
                    raise KeyError(f"TrainLoop: config has no {k!r} (use train_options() or pass dataset=)")
            self.dataset = open_dataset(c["data"], int(c["resolution"]), hflip=bool(c.get("hflip", False)),
                                        allow_upscale=bool(c.get("allow_upscale", False)),
                                        skip_bad=bool(c.get("skip_bad", False)), verbose=self.is_main,
                                        resolutions=resolutions)
        else:
            self.dataset = dataset
        self.attribution = attribution or getattr(self.dataset, "attribution", None)
        self.data = None
        if self.dataset is not None and not self.dry_run and hasattr(self.dataset, "preload"):
            self.dataset.preload()
        if self.dataset is not None:
            self.data = InfiniteLoader(self.dataset, self.batch_per_rank, seed=self.seed, rank=self.rank,
                                       world_size=self.world_size, num_workers=int(c.get("workers", 0)),
                                       device=self.device)

        if self.dry_run:
            self.run_dir = self.run_dir or Path(c.get("outdir", "runs")) / f"<next-id>-{name}"
        elif self._resume_state is None:
            self._open_run_dir(None)
        # else run() opens the run dir (a new one for --resume CK, or the resumed one, logging the resume) once
        # the state has been loaded into the recipe's objects: a checkpoint that does not fit them writes nothing.
        self.start_step = int(self._resume_state["step"]) if self._resume_state else 0
        self.step = self.start_step

    def _open_run_dir(self, resumed: dict | None) -> None:
        """Make a new run dir (rank 0, broadcast), write its attribution, and log a resume in ``resume.jsonl``
        (called for real runs only: a dry run writes nothing)."""
        if self.run_dir is None:
            rd: Any = None
            if self.is_main:
                try:
                    rd = str(make_run_dir(self.config.get("outdir", "runs"), self.name, self.config))
                except RunDirError as e:  # tell the other ranks instead of leaving them in the broadcast
                    rd = e
            rd = ddp.broadcast_object(rd)
            if isinstance(rd, BaseException):
                raise RunDirError(str(rd))
            self.run_dir = Path(rd)
        if self.is_main:
            if self.attribution:
                write_text(self.run_dir / "ATTRIBUTION.txt", self.attribution.rstrip() + "\n")
            if resumed is not None:  # what changed (non-architecture options) at each resume
                remove_stale_temps(self.run_dir)  # torn writes of a killed process (never what `latest` names)
                changed = config_diff(resumed.get("config", {}), self.config, keys=sorted(
                    set(self.config) | set(resumed.get("config", {}))))
                append_jsonl(self.run_dir / "resume.jsonl", _jsonable({
                    "step": resumed.get("step"), "time": time.time(), "from": str(self.resume_path),
                    "changed": changed}))

    # -- setup helpers -------------------------------------------------------------------------------------------
    def _find_resume(self, resume: Any) -> tuple[Path | None, Path | None]:
        """(checkpoint to resume, run dir to continue in place or None for a new one)."""
        if resume in (None, "", "none", "None"):
            return None, None
        if resume == "auto":
            for rd in reversed(find_run_dirs(self.config.get("outdir", "runs"), self.name)):
                ck = latest_checkpoint(rd)
                if ck is not None:
                    return ck, rd
            if ddp.is_main():
                print(f"[ganops.train] --resume auto: no checkpoint of '{self.name}' in "
                      f"{self.config.get('outdir', 'runs')}; starting a new run")
            return None, None
        return resolve_checkpoint(resume), None

    def prepare(self, model: nn.Module, *, ddp_wrap: bool = True, compile: bool | None = None) -> nn.Module:
        """Move to the device (channels_last if set), optionally ``torch.compile`` (``--compile``), and wrap in
        DDP when distributed. Register the *unwrapped* module in ``models=`` (checkpoints hold its state_dict)."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if ddp_wrap:
            model = ddp.wrap_ddp(model, self.dist)
        if compile if compile is not None else bool(self.config.get("compile", False)):
            model = torch.compile(model)
        return model

    def check_finite(self, losses: Mapping[str, Any] | torch.Tensor, name: str = "loss") -> None:
        """Raise :class:`NonFiniteLossError` if any loss is NaN/Inf (on any rank: all ranks raise together).

        Call it inside ``step`` right before the optimizer step of that loss. If no optimizer has stepped yet in
        this iteration, the loop saves the exact state at the start of the iteration as the last good checkpoint.
        """
        vals = to_floats({name: losses} if isinstance(losses, torch.Tensor) else losses)
        bad = any_rank_bad(find_non_finite(vals), self.device)
        if bad:
            raise NonFiniteLossError(self.step, bad[0], bad[1])

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _state(self, step: int, rng: dict, consumed: int | None) -> dict:
        st = {
            "format": FORMAT, "name": self.name, "step": step, "config": self.config,
            "arch_keys": self.arch_keys, "world_size": self.world_size,
            "models": {k: m.state_dict() for k, m in self._models.items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers.items()},
            "ema": {k: e.state_dict() for k, e in self._ema.items()},
            "extra": {k: e.state_dict() for k, e in self._extra.items()},
            "amp": self.amp.state_dict(),
            "data": {"consumed": consumed} if consumed is not None else None,
            "rng": ddp.all_gather_object(rng),
            "ganops_version": ganops_version(), "git_sha": self._sha, "time": time.time(),
        }
        return st

    def save(self, step: int, *, rng: dict | None = None, consumed: int | None = None) -> Path | None:
        """Checkpoint ``step`` (completed iterations) to ``checkpoint-{step:08d}.pt`` (all ranks must call)."""
        rng = rng if rng is not None else get_rng_state()
        if consumed is None and self.data is not None:
            consumed = self.data.consumed
        st = self._state(step, rng, consumed)
        path = None
        if self.is_main:
            path = save_checkpoint(st, self.run_dir / f"checkpoint-{step:08d}.pt")
            old = sorted(self.run_dir.glob("checkpoint-*.pt"))[: -self.keep]
            for p in old:
                if p != path:
                    p.unlink(missing_ok=True)
        ddp.barrier()
        return path

    def _restore(self, st: dict) -> None:
        # `extra` first: it may rebuild structure the others need (e.g. grow a ConSinGAN generator to its stage).
        for group, objs in (("extra", self._extra), ("models", self._models), ("optimizers", self._optimizers),
                            ("ema", self._ema)):
            saved = st.get(group, {})
            missing = sorted(set(objs) - set(saved))
            if missing:
                raise CheckpointError(f"--resume {self.resume_path}: the checkpoint has no {group} entries {missing} "
                                      f"(it has {sorted(saved)}): not a checkpoint of this recipe's training; "
                                      "start a new run without --resume")
            for k, obj in objs.items():
                load_state(obj, saved[k], f"--resume {self.resume_path}: {group}[{k!r}]")
        load_state(self.amp, st.get("amp") or {}, f"--resume {self.resume_path}: amp")
        if self.data is not None and st.get("data"):
            data = dict(st["data"])
            old_world = int(st.get("world_size", self.world_size))
            if old_world != self.world_size:  # same global stream position, re-split over the new ranks
                data["consumed"] = int(data["consumed"]) * old_world // self.world_size
            load_state(self.data, data, f"--resume {self.resume_path}: data")
        rngs = st.get("rng") or []
        if rngs:
            if len(rngs) != self.world_size and self.is_main:
                print(f"[ganops.train] note: checkpoint from {len(rngs)} process(es), now {self.world_size}: "
                      "RNG streams are not identical to an uninterrupted run")
            set_rng_state(rngs[min(self.rank, len(rngs) - 1)])

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self, step: StepFn, sample: SampleFn | None = None, *, models: Mapping[str, nn.Module],
            optimizers: Mapping[str, torch.optim.Optimizer], ema: Mapping[str, Any] | None = None,
            extra: Mapping[str, Any] | None = None, fakes: FakesFn | None = None,
            eta: Callable[[int], float] | None = None, best: str | None = None) -> dict:
        """Train from the start (or the resumed step) to ``config["iters"]``.

        Args:
            step: ``step(batch, it) -> {name: loss}``; ``batch`` is (B_rank, 3, R, R) in [-1, 1] on the device
                (None without a dataset), ``it`` the 0-based iteration. Does forward, backward and optimizer
                steps itself (use ``loop.amp``); returns scalar floats/tensors to log.
            sample: ``sample(it) -> images`` in [-1, 1] from fixed noise (e.g. the EMA generator), saved as
                ``fakes{it:08d}.png`` every ``--sample-every`` steps and at the end. Called under no_grad, rank 0.
            models, optimizers, ema, extra: name -> object with ``state_dict()``/``load_state_dict()`` (unwrapped
                models; ``extra`` for schedulers, augmentation state, ...). All go into checkpoints; the objects
                are read at every save, so modules may grow during the run, and a ``dict`` passed here is used
                live: entries added or replaced during the run (e.g. new optimizers for a ConSinGAN stage) are
                checkpointed. On resume ``extra`` is restored first (so it can rebuild structure, e.g. a stage
                counter that grows G and fills the optimizers dict), then models, optimizers, EMA.
            fakes: ``fakes(n, seed) -> (n, 3, H, W)`` images in [-1, 1] for ``--metrics`` (e.g. the EMA generator
                on latents drawn from ``seed`` with its own generator); called on rank 0 under no_grad in chunks
                of 32 with ``seed`` = index of the chunk's first image, so every evaluation uses the same latents.
                Must be deterministic in (n, seed). Required when ``--metrics`` is not ``none``.
            eta: ``eta(done) -> seconds left in the run``, shown and logged (``eta_s``) instead of the uniform-rate
                ETA, for runs whose iterations get costlier (ConSinGAN's growing stages); non-finite: the uniform one.
            best: a ``--metrics`` name (e.g. ``fid1k``): after each evaluation where it is lower than before, the
                full state of that step is kept as ``best.pt`` (+ ``best.json``), see ``ganops.train.best``.

        Returns:
            ``{"run_dir", "step", "losses", "checkpoint"}``.
        """
        live = lambda d: d if isinstance(d, dict) else dict(d or {})  # noqa: E731
        self._models, self._optimizers = live(models), live(optimizers)
        self._ema, self._extra = live(ema), live(extra)
        if self.metric_specs and fakes is None:
            raise click.UsageError(f"--metrics {self.config.get('metrics')}: recipe '{self.name}' does not pass "
                                   "fakes= to TrainLoop.run, so it cannot evaluate metrics; use --metrics none")
        self._sha = git_sha() if self.is_main else ""
        self._stepped = False
        self._hooks: dict[int, Any] = {}
        self._best_name = best
        try:
            with use_impl(self.impl):  # --impl for every op of the run, restored after it (no process-wide env)
                self._start()
                return self._run(step, sample, fakes, eta)
        finally:
            for h in self._hooks.values():
                h.remove()
            self._hooks = {}

    def _start(self) -> None:
        """Load a resumed state into the recipe's objects, then open its run dir (nothing is written before a
        state that does not fit them has failed)."""
        resumed = self._resume_state
        if resumed is not None and not self.dry_run:
            self._restore(resumed)
            self._open_run_dir(resumed)
            if self.is_main:
                print(f"[ganops.train] resumed from {self.resume_path} at step {self.start_step}")
            self._resume_state = None
        self._best = (BestSnapshot(self.run_dir, self._best_name) if self._best_name and self.is_main
                      and not self.dry_run else None)

    def _mark_stepped(self, *args: Any) -> None:
        self._stepped = True

    def _hook_optimizers(self) -> None:
        """Watch every optimizer (also ones added during the run) so a NaN knows whether weights changed."""
        for o in self._optimizers.values():
            if id(o) not in self._hooks and hasattr(o, "register_step_pre_hook"):
                self._hooks[id(o)] = o.register_step_pre_hook(self._mark_stepped)

    def _run(self, step: StepFn, sample: SampleFn | None, fakes: FakesFn | None = None,
             eta: Callable[[int], float] | None = None) -> dict:
        if self.dry_run:
            return self._dry_run_report()
        if self.is_main and self.attribution and self.attribution != getattr(self.dataset, "attribution", None):
            print(f"[ganops.train] attribution: {self.attribution}")
        if self.is_main and self.dataset is not None and not (self.run_dir / "reals.png").exists():
            n = min(len(self.dataset), 32)
            save_grid(torch.stack([self.dataset[i] for i in range(n)]), self.run_dir / "reals.png")
        stats = StatsWriter(self.run_dir / "stats.jsonl",
                            truncate_after=self.start_step) if self.is_main else None
        prog = Progress(self.iters, self.start_step, enabled=self.is_main, device=self.device, eta=eta)
        self._metrics, self._metrics_log, self._last_metrics = None, None, {}
        if self.is_main and (self.metric_specs or (self.run_dir / "metrics.jsonl").exists()):
            self._metrics_log = StatsWriter(self.run_dir / "metrics.jsonl", truncate_after=self.start_step)
        if self.is_main and self.metric_specs:
            self._metrics = TrainMetrics(self.metric_specs, self.dataset, device=self.device)
            every = (f"every {self.metrics_every} iterations" if self.metrics_every else
                     f"at every checkpoint (--snap {self.snap})" if self.snap else "")
            print(f"[ganops.train] metrics: {self._metrics.describe()}; {every + ' and ' if every else ''}"
                  f"at the end -> {self.run_dir / 'metrics.jsonl'}")
        last_ckpt, losses = (str(self.resume_path) if self.resume_path else None), {}
        last_saved, last_sampled = self.start_step, -1
        stop = StopRequest()
        try:
            stop.__enter__()
            for it in range(self.start_step, self.iters):
                self.step = it
                rng0 = get_rng_state()
                consumed0 = self.data.consumed if self.data is not None else None
                batch = next(self.data) if self.data is not None else None
                if batch is not None and self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                self._hook_optimizers()
                self._stepped = False
                try:
                    out = step(batch, it)
                except NonFiniteLossError as e:
                    unseen = any(id(o) not in self._hooks for o in self._optimizers.values())
                    if not self._stepped and not unseen:  # nothing updated yet: exactly the end of it - 1
                        last_ckpt = str(self.save(it, rng=rng0, consumed=consumed0))
                    raise e.with_checkpoint(last_ckpt) from None
                losses = to_floats(out or {})
                bad = any_rank_bad(find_non_finite(losses), self.device)
                if bad:  # the optimizers stepped on it: weights may be corrupt, the last file stays the good one
                    raise NonFiniteLossError(it, bad[0], bad[1], last_ckpt)
                done = it + 1
                timing = prog.update(done, {**losses, **self._last_metrics})
                due = self._metrics_due(done)  # before the checkpoint: a kill during metrics resumes before them
                measured = self._eval_metrics(fakes, done, prog) if due else {}
                if due and self._best_name and ddp.broadcast_object(bool(self._best and self._best.improved(measured))):
                    st = self._state(done, get_rng_state(), self.data.consumed if self.data is not None else None)
                    if self._best is not None:  # best.pt: this step's state (the lowest --metrics value so far)
                        self._best.save(st, done, measured)
                if done % self.log_every == 0 or done == self.iters or due:
                    logged = ddp.reduce_mean(losses)
                    if stats is not None:
                        stats.write({"step": done, "kimg": self._kimg(done), **logged, **timing, **measured,
                                     "time": time.time()})
                # the sample before the checkpoint of the same step: a kill between the two resumes from the
                # checkpoint before and writes the sample again (the other order would lose it for good)
                if sample is not None and self.sample_every and done % self.sample_every == 0:
                    self._sample(sample, done)
                    last_sampled = done
                if self.snap and done % self.snap == 0:
                    last_ckpt, last_saved = str(self.save(done)), done
                if stop.agreed(self.device) and done < self.iters:
                    if last_saved != done:
                        last_ckpt, last_saved = str(self.save(done)), done
                    prog.write(f"[ganops.train] stopped at step {done}; checkpoint {last_ckpt}; "
                               "continue with --resume auto")
                    raise SystemExit(128 + int(stop.signum or 15))
            self.step = self.iters
            if sample is not None and last_sampled != self.iters:
                self._sample(sample, self.iters)
            if last_saved != self.iters or last_ckpt is None:
                last_ckpt = str(self.save(self.iters))
        finally:
            stop.__exit__()
            prog.close()
            if stats is not None:
                stats.close()
            if self._metrics_log is not None:
                self._metrics_log.close()
        return {"run_dir": str(self.run_dir), "step": self.step, "losses": losses, "checkpoint": last_ckpt}

    def _kimg(self, done: int) -> float:
        return done * self.batch_per_rank * self.world_size / 1000

    def _metrics_due(self, done: int) -> bool:
        every = self.metrics_every or self.snap
        return bool(self.metric_specs) and (done == self.iters or bool(every and done % every == 0))

    def _eval_metrics(self, fakes: FakesFn | None, done: int, prog: Progress) -> dict[str, float]:
        """Rank 0 evaluates (no_grad, RNG state restored after); the other ranks wait in a broadcast of the
        outcome, so a failure stops every rank (after a checkpoint of this step) instead of deadlocking."""
        vals: dict[str, float] = {}
        exc: BaseException | None = None
        t = time.time()
        if self._metrics is not None:
            prog.write(f"[ganops.train] step {done}: evaluating {self.config.get('metrics')} ...")
            rng = get_rng_state()
            try:
                vals = self._metrics.evaluate(fakes, log=prog.write)
            except Exception as e:  # noqa: BLE001 - reported to every rank below
                exc = e
            finally:
                set_rng_state(rng)
        err = ddp.broadcast_object(None if exc is None else f"{type(exc).__name__}: {exc}")
        if err is not None:
            ck = self.save(done)
            raise MetricsError(f"--metrics failed at step {done}: {err}\ncheckpoint {ck} written; continue with "
                               "--resume auto (add --metrics none to train without them)") from exc
        dt = time.time() - t
        prog.exclude(dt)
        if self._metrics_log is not None:
            self._metrics_log.write({"step": done, "kimg": self._kimg(done), **vals, "time_s": dt, "time": time.time()})
            prog.write(f"[ganops.train] step {done}: " + "  ".join(f"{k}={v:.4g}" for k, v in vals.items())
                       + f"  ({dt:.1f} s)")
        self._last_metrics = {k: v for k, v in vals.items() if not k.endswith("_std")}
        return vals

    @torch.no_grad()
    def _sample(self, sample: SampleFn, step: int) -> None:
        if self.is_main:
            save_grid(sample(step), self.run_dir / f"fakes{step:08d}.png")

    def _dry_run_report(self) -> dict:
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in self._models.items()}
        if self.is_main:
            print(json.dumps({"run_dir": str(self.run_dir), "device": str(self.device),
                              "world_size": self.world_size, "batch_per_rank": self.batch_per_rank,
                              "dataset_size": len(self.dataset) if self.dataset is not None else None,
                              "parameters": counts, "resume": str(self.resume_path) if self.resume_path else None,
                              "config": self.config}, indent=2))
            print("[ganops.train] dry run: nothing written")
        return {"run_dir": str(self.run_dir), "step": self.start_step, "losses": {}, "checkpoint": None,
                "parameters": counts}
