# SPDX-License-Identifier: BSD-3-Clause
"""ConSinGAN stage-wise training: stage growth, per-stage optimisers, noise amplitude and one iteration in the
reference's order or ganops' order (same maths, no regenerated fakes, cached frozen stages, batched D), and the
z random-walk animation of a trained model."""
from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..ops.penalty import gradient_penalty
from .consingan import Discriminator, GrowingGenerator, sample_noise

__all__ = ["STEP_ORDERS", "project_seconds_left", "DivergenceWatch", "gp_plain", "ConSinGANTrainer",
           "random_walk_frames", "GraphedIteration", "CudaGraph"]

STEP_ORDERS = ("ours", "reference")


def project_seconds_left(shapes: list[tuple[int, int]], num_layer: int, niter: int, stage: int, done: int,
                         rates: dict[int, tuple[float, int]], min_iters: int = 10) -> float:
    """Seconds left in a run of ``len(shapes)`` stages of ``niter`` iterations, ``done`` of them done in ``stage``.

    An iteration's cost grows with its stage, so the uniform-rate ETA (steps left / it/s) of stage 0 is far too
    short: at 250 px stage 5 takes ~35x stage 0's time on a CPU. Here an iteration of stage j takes
    ``k * (H_j + 2 num_layer) * (W_j + 2 num_layer)`` seconds: G's padded map area (the discriminator's and the
    trained stages' work scale with the stage's area too). ``k`` (seconds per padded pixel) is measured: from the
    newest stage with ``min_iters`` or more iterations this session (else the newest measured), so it follows
    what the larger stages cost on this machine. On the benchmark's 1-thread CPU figures (250 px, docs/consingan.md)
    ``k`` of the six stages ranges over 50-68 us; the whole run projected from stage 0 comes out 7% short, from a
    later stage at most 26% long. On a GPU the small stages are launch-bound, so the projection from them is too
    long until a larger stage runs.

    Args:
        rates: ``{stage: (seconds per iteration, iterations measured)}``.
    """
    if not rates:
        return float("nan")
    area = [(h + 2 * num_layer) * (w + 2 * num_layer) for h, w in shapes]
    ref = max((s for s, (_, n) in rates.items() if n >= min_iters), default=max(rates))
    k = rates[ref][0] / area[ref]
    return k * (area[stage] * max(0, niter - done) + sum(area[j] * niter for j in range(stage + 1, len(shapes))))


class DivergenceWatch:
    """Tells when a stage has diverged: its reconstruction loss stays above ``factor`` x the median of its last
    ``window`` healthy iterations for ``patience`` iterations in a row (checked from the ``warmup``-th iteration of
    the stage on; call ``reset`` at a new stage).

    Within a stage ConSinGAN's reconstruction loss falls or holds. The reference's known collapse to black samples
    (tohinz/ConSinGAN issues #23, #35) shows as a jump of 10-1000x that does not come back; a transient spike (one to
    five iterations) does and is not reported. Watching changes nothing in training.
    """

    factor, patience, window, warmup = 10.0, 20, 200, 50  # the defaults (class attributes: tests shorten them)

    def __init__(self, factor: float | None = None, patience: int | None = None, window: int | None = None,
                 warmup: int | None = None) -> None:
        for k, v in (("factor", factor), ("patience", patience), ("window", window), ("warmup", warmup)):
            if v is not None:
                setattr(self, k, v)
        self.reset()

    def reset(self) -> None:
        self.hist: deque[float] = deque(maxlen=self.window)
        self.run, self.start, self.fired = 0, -1, False

    def update(self, it: int, rec: float) -> tuple[int, float] | None:
        """Feed iteration ``it`` of the stage; returns ``(first high iteration, healthy median)`` once, when the
        stage is judged diverged, else None."""
        if self.fired:
            return None
        if len(self.hist) >= self.warmup and rec > self.factor * statistics.median(self.hist):
            if self.run == 0:
                self.start = it
            self.run += 1
            if self.run >= self.patience:
                self.fired = True
                return self.start, statistics.median(self.hist)
            return None
        self.run = 0
        self.hist.append(rec)
        return None


def gp_plain(D: Callable, real: torch.Tensor, fake: torch.Tensor, weight: float = 0.1,
             u: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's ``calc_gradient_penalty`` in plain autograd: one u ~ U[0,1) for the batch,
    x = u real + (1-u) fake, ``weight * mean((||dsum D(x)/dx||_2 over channels - 1)^2)`` over (N, H, W)."""
    u = torch.rand(1, device=real.device) if u is None else u
    x = (u * real + (1 - u) * fake).detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return ((g.norm(2, dim=1) - 1) ** 2).mean() * weight


class CudaGraph:
    """``fn()`` captured once into a ``torch.cuda.CUDAGraph``; :meth:`replay` reruns its kernels and returns the
    same (static) output tensors, now holding this replay's values."""

    def __init__(self, fn: Callable[[], dict]) -> None:
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = fn()

    def replay(self) -> dict:
        self.graph.replay()
        return self.out


class GraphedIteration:
    """One training iteration replayed as a CUDA graph, for ConSinGAN's launch-bound small stages.

    The first ``warmup`` calls run ``fn`` eagerly (on a side stream on CUDA, as capture requires: it lets autograd,
    cuDNN and the optimisers create their state), the next call captures ``fn`` with ``graph_cls`` (default
    :class:`CudaGraph`) and replays it, and every later call only replays. A capture does not execute the work, so
    the capturing call replays too: each call is one iteration. Outputs (a dict of tensors in the graph's static
    memory) are returned as clones. ``graph_cls`` is the seam the CPU tests use (a stand-in that reruns ``fn``).
    """

    def __init__(self, fn: Callable[[], dict], warmup: int = 3, graph_cls: type | None = None) -> None:
        self.fn, self.warmup = fn, int(warmup)
        self.graph_cls = CudaGraph if graph_cls is None else graph_cls
        self.calls, self.graph = 0, None

    def __call__(self) -> dict:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            return self._eager()
        if self.graph is None:
            self.graph = self.graph_cls(self.fn)
        return {k: v.clone() for k, v in self.graph.replay().items()}

    def _eager(self) -> dict:
        if self.graph_cls is not CudaGraph:
            return self.fn()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.fn()
        torch.cuda.current_stream().wait_stream(side)
        return out


class ConSinGANTrainer:
    """Holds G, D, the pyramid and the per-stage state, and runs iterations.

    Args:
        reals: the pyramid (coarsest first), each (1, 3, H_d, W_d) in [-1, 1].
        cfg: options: nfc, num_layer, slope, batch_norm, mode, train_depth, lr_g, lr_d, lr_scale, beta1, niter,
            gamma, d_steps, g_steps, lambda_grad, alpha, noise_amp, gp ("fused" | "plain"), gp_every (lazy GP,
            1 = reference), step_order ("ours" | "reference"), conv ("winograd" | "aten"), cuda_graphs_upto (-1:
            off; S: stages 0..S replay each iteration as a CUDA graph, see :class:`GraphedIteration`; generation or
            animation mode, step_order "ours", no AMP).
        device: torch device.
        amp: a ``ganops.train.Amp`` or None.
        stage0: optional ``fn(reals[0]) -> stage-0 input`` per iteration (harmonization/editing augmentations);
            None draws N(0, 1) as in generation.
    """

    def __init__(self, reals: list[torch.Tensor], cfg: dict, device: torch.device | str = "cpu",
                 amp: Any = None, stage0: Callable | None = None) -> None:
        self.cfg, self.device, self.amp, self.stage0 = dict(cfg), torch.device(device), amp, stage0
        self.reals = [r.to(self.device) for r in reals]
        self.shapes = [tuple(r.shape[2:]) for r in self.reals]
        c = self.cfg
        self.reference_order = ref = c.get("step_order", "ours") == "reference"
        conv = "aten" if ref else c.get("conv", "winograd")
        self.G = GrowingGenerator(c["nfc"], c["num_layer"], c["slope"], c["batch_norm"], c["mode"],
                                  upsample="interpolate" if ref else "matmul", conv_impl=conv).to(self.device)
        self.D = Discriminator(c["nfc"], c["num_layer"], c["slope"], gp_act=not ref, conv_impl=conv).to(self.device)
        self.stage, self.amps, self.z_opt = -1, [], []
        self.optG = self.optD = self.schedG = self.schedD = None
        self.graphs_upto = int(c.get("cuda_graphs_upto", -1))
        self.graph_cls: type | None = None  # None: CudaGraph (tests put a CPU stand-in here)
        self._graphed: GraphedIteration | None = None
        if self.graphs_upto >= 0:
            why = [w for w, bad in (("--step-order ours", ref), ("no AMP", amp is not None and amp.enabled),
                                    ("generation or animation mode (no stage-0 augmentation)", stage0 is not None))
                   if bad]
            if why:
                raise ValueError(f"cuda_graphs_upto needs {', '.join(why)}")
        self._rec_cache: torch.Tensor | None = None
        self._t0, self._n0 = time.time(), 0
        self._rates: dict[int, tuple[float, int]] = {}  # stage -> (seconds per iteration, iterations) this session
        self.only_last = False

    # ---- stage structure ---------------------------------------------------------------------------------------
    @property
    def gen_mode(self) -> bool:
        return self.G.gen_mode

    def _z_opt(self, s: int) -> torch.Tensor:
        c, (h, w) = self.cfg, self.shapes[s]
        if s == 0:
            if c["mode"] == "animation":
                return torch.randn(1, 3, h, w, device=self.device)
            if c["mode"] == "editing":
                return self.reals[0] + 0.1 * torch.randn(1, 3, h, w, device=self.device)
            return self.reals[0].clone()
        k = 2 * c["num_layer"] if self.gen_mode else 0
        return torch.randn(1, c["nfc"], h + k, w + k, device=self.device)

    def _frozen_upto(self) -> int:
        """Index of the last stage without trainable parameters (head frozen too), or -1."""
        s, depth = self.stage, self.cfg["train_depth"]
        return s - depth if s - depth >= 0 else -1

    def _make_optimizers(self) -> None:
        c, s, G = self.cfg, self.stage, self.G
        for p in G.parameters():
            p.requires_grad_(True)
        trainable = list(G.body[-c["train_depth"]:]) if not self.only_last else [G.body[-1]]
        for block in G.body[:len(G.body) - len(trainable)]:
            block.requires_grad_(False)
        groups = [{"params": list(b.parameters()), "lr": c["lr_g"] * c["lr_scale"] ** (len(trainable) - 1 - i)}
                  for i, b in enumerate(trainable)]
        if s - c["train_depth"] < 0 and not self.only_last:
            groups.append({"params": list(G.head.parameters()), "lr": c["lr_g"] * c["lr_scale"] ** s})
        elif not self.reference_order:
            G.head.requires_grad_(False)  # not optimised: skip its weight gradients (the reference computes them)
        groups.append({"params": list(G.tail.parameters()), "lr": c["lr_g"]})
        betas = (c["beta1"], 0.999)
        foreach = None if self.reference_order else True
        cap = self._capturable()
        self.optG = torch.optim.Adam(groups, lr=c["lr_g"], betas=betas, foreach=foreach, capturable=cap)
        self.optD = torch.optim.Adam(self.D.parameters(), lr=c["lr_d"], betas=betas, foreach=foreach, capturable=cap)
        self.fix_lr_types()
        # The reference's float milestone 0.8 * niter: the decay happens only when it is a whole number of
        # iterations (every niter that is a multiple of 5, the paper's 2000 included; never for e.g. niter 333).
        ms = [0.8 * c["niter"]]
        self.schedG = torch.optim.lr_scheduler.MultiStepLR(self.optG, milestones=ms, gamma=c["gamma"])
        self.schedD = torch.optim.lr_scheduler.MultiStepLR(self.optD, milestones=ms, gamma=c["gamma"])
        self._rec_cache = None
        self._graphed = self._new_graphed()

    def _new_graphed(self) -> GraphedIteration | None:
        """A fresh (not yet captured) graph wrapper for this stage's iteration, or None when it runs eagerly."""
        return GraphedIteration(self._step_ours, graph_cls=self.graph_cls) if self.graphs_now() else None

    def graphs_now(self) -> bool:
        """True when this stage's iterations are replayed as a graph (on CUDA, or with a test stand-in)."""
        return (0 <= self.stage <= self.graphs_upto
                and (self.device.type == "cuda" or self.graph_cls not in (None, CudaGraph)))

    def _capturable(self) -> bool:
        return self.graphs_now() and self.device.type == "cuda"

    def fix_lr_types(self) -> None:
        """Learning rates as device tensors for capturable Adam (a graph replays the kernels, so the schedulers
        must change a tensor's value, not the Python float baked into the capture), floats otherwise; also after
        loading an optimiser state saved the other way."""
        cap = self._capturable()
        for opt in (self.optG, self.optD):
            for g in opt.param_groups:
                lr = float(g["lr"])
                g["lr"] = torch.tensor(lr, device=self.device) if cap else lr

    def start_stage(self, s: int) -> None:
        """Build stage s (0 or the next one): grow G (copy of the last stage), D fresh-initialised and loaded with
        the previous D, fixed reconstruction noise, optimisers/schedulers, noise amplitude from the RMSE."""
        if s != self.stage + 1:
            raise ValueError(f"start_stage({s}) after stage {self.stage}")
        c = self.cfg
        if s > 0:
            fresh = Discriminator(c["nfc"], c["num_layer"], c["slope"])  # the reference's init draws (RNG parity)
            del fresh
            self.G.init_next_stage()
        self.stage = s
        self.z_opt.append(self._z_opt(s))
        self._make_optimizers()
        if s == 0:
            self.amps.append(1.0)
        else:
            self.amps.append(0.0)
            with torch.no_grad():
                rec = self.G(self.z_opt, self.shapes, self.amps)
                rmse = torch.sqrt(F.mse_loss(rec, self.reals[s]))
            self.amps[-1] = float(c["noise_amp"] * rmse)
        self._t0, self._n0 = time.time(), 0

    # ---- state for checkpoints (ganops.train restores `extra` first) ------------------------------------------
    def state_dict(self) -> dict:
        return {"stage": self.stage, "amps": list(self.amps), "z_opt": [z.cpu() for z in self.z_opt],
                "reals": [r.cpu() for r in self.reals], "only_last": self.only_last}

    def load_state_dict(self, st: dict) -> None:
        self.reals = [r.to(self.device) for r in st["reals"]]
        self.shapes = [tuple(r.shape[2:]) for r in self.reals]
        while self.G.num_stages < st["stage"] + 1:
            self.G.init_next_stage()
        self.stage, self.amps = int(st["stage"]), list(st["amps"])
        self.z_opt = [z.to(self.device) for z in st["z_opt"]]
        self.only_last = bool(st.get("only_last", False))
        self._t0, self._n0 = time.time(), 0  # a resumed stage's clock starts now
        if self.stage >= 0:
            self._make_optimizers()

    def optim_state(self) -> "_OptimState":
        """An object for ``TrainLoop(optimizers=...)`` following the per-stage optimisers and schedulers."""
        return _OptimState(self)

    # ---- one iteration -----------------------------------------------------------------------------------------
    def draw_noise(self) -> list[torch.Tensor]:
        c = self.cfg
        noise = sample_noise(self.shapes[:self.stage + 1], nfc=c["nfc"], num_layer=c["num_layer"],
                             gen_mode=self.gen_mode, device=self.device)
        if self.stage0 is not None:
            noise[0] = self.stage0(self.reals[0])
        return noise

    def _autocast(self):
        return self.amp.autocast() if self.amp is not None else torch.autocast(self.device.type, enabled=False)

    def _penalty(self, D: Callable, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, Any]:
        c = self.cfg
        u = torch.rand(1, device=real.device)
        if c.get("gp", "fused") == "plain":
            return gp_plain(D, real, fake, c["lambda_grad"], u), None
        scaler = self.amp.scaler if self.amp is not None and self.amp.scaler.is_enabled() else None
        pen, out = gradient_penalty(D, real, fake, weight=c["lambda_grad"], alpha=(1 - u).to(real.dtype),
                                    norm_over="channel", return_output=True, scaler=scaler)
        return pen, out

    def step(self) -> dict[str, float]:
        """One iteration (3 D steps with WGAN-GP, one G backward with ``g_steps`` Adam steps on it)."""
        if self._graphed is not None:
            out = self._graphed()
        elif self.reference_order:
            out = self._step_reference()
        else:
            out = self._step_ours()
        self.schedD.step()
        self.schedG.step()
        self._n0 += 1
        self._rates[self.stage] = ((time.time() - self._t0) / self._n0, self._n0)
        return out

    def _g_steps(self, loss: torch.Tensor) -> None:
        self.optG.zero_grad(set_to_none=True)
        if self.amp is not None and self.amp.scaler.is_enabled():
            sc = self.amp.scaler
            sc.scale(loss).backward()
            sc.step(self.optG)
            if sum(v.item() for v in sc._found_inf_per_device(self.optG).values()) == 0:
                for _ in range(self.cfg["g_steps"] - 1):
                    self.optG.step()  # same (already unscaled) gradient, like the reference's repeated step
            sc.update()
        else:
            loss.backward()
            for _ in range(self.cfg["g_steps"]):
                self.optG.step()

    def _d_backward(self, loss: torch.Tensor) -> None:
        if self.amp is not None and self.amp.scaler.is_enabled():
            self.amp.scaler.scale(loss).backward()
            self.amp.scaler.step(self.optD)
            self.amp.scaler.update()
        else:
            loss.backward()
            self.optD.step()

    def _step_reference(self) -> dict[str, float]:
        """The official order: the fake regenerated every D step, separate D calls, one G backward."""
        c, G, D, real = self.cfg, self.G, self.D, self.reals[self.stage]
        noise = self.draw_noise()
        for j in range(c["d_steps"]):
            D.zero_grad()
            with self._autocast():
                err_real = -D(real).mean()
                if j == c["d_steps"] - 1:
                    fake = G(noise, self.shapes, self.amps)
                else:
                    with torch.no_grad():
                        fake = G(noise, self.shapes, self.amps)
                err_fake = D(fake.detach()).mean()
            gp, _ = self._penalty(D, real, fake.detach().to(real.dtype))
            loss_d = err_real + err_fake + gp
            self._d_backward(loss_d)
        with self._autocast():
            err_g = -D(fake).mean()
            rec = G(self.z_opt, self.shapes, self.amps)
            rec_loss = c["alpha"] * F.mse_loss(rec.to(real.dtype), real)
        G.zero_grad()
        self._g_steps(err_g + rec_loss)
        return {"loss_d": loss_d.detach(), "gp": gp.detach(), "loss_g": err_g.detach(), "rec": rec_loss.detach()}

    def _rec_prefix(self, p: int) -> torch.Tensor | None:
        if p < 0:
            return None
        if self._rec_cache is None:  # frozen stages + fixed noise: constant for the whole stage
            with torch.no_grad(), self._autocast():
                self._rec_cache = self.G.features(self.z_opt, self.shapes, self.amps, p)
        return self._rec_cache

    def _step_ours(self) -> dict[str, float]:
        """Same maths: one G forward (fake and reconstruction batched when G has no BatchNorm), frozen stages
        under no_grad (their reconstruction cached), real/fake/interpolate in one D call, no D weight gradients
        in the G backward."""
        c, G, D, real = self.cfg, self.G, self.D, self.reals[self.stage]
        noise = self.draw_noise()
        p = self._frozen_upto()
        with self._autocast():
            if p >= 0:
                with torch.no_grad():
                    pre = G.features(noise, self.shapes, self.amps, p)
                rec_pre = self._rec_prefix(p)
            if not c["batch_norm"]:
                both = [torch.cat([a, b]) for a, b in zip(noise, self.z_opt)]
                out = G(both, self.shapes, self.amps, start=p + 1, prev=torch.cat([pre, rec_pre]) if p >= 0 else None)
                fake, rec = out[:1], out[1:]
            else:
                fake = G(noise, self.shapes, self.amps, start=p + 1, prev=pre if p >= 0 else None)
                rec = G(self.z_opt, self.shapes, self.amps, start=p + 1, prev=rec_pre if p >= 0 else None)
        fake_d = fake.detach()
        gp_every = max(1, int(c.get("gp_every", 1)))
        for j in range(c["d_steps"]):
            self.optD.zero_grad(set_to_none=True)
            with self._autocast():
                o2 = D(torch.cat([real, fake_d.to(real.dtype)]))  # real and fake in one call
            if j % gp_every == 0:
                # forward_gp: same penalty and weight gradients, cheaper double backward (fp32 only: its custom
                # backward does not follow autocast's dtypes)
                d_gp = D.forward_gp if self.amp is None or not self.amp.enabled else D
                gp = self._penalty(d_gp, real, fake_d.to(real.dtype))[0] * gp_every
            else:
                gp = torch.zeros((), device=real.device)
            err_real, err_fake = -o2[0:1].mean(), o2[1:2].mean()
            loss_d = err_real + err_fake + gp
            self._d_backward(loss_d)
        D.requires_grad_(False)
        try:
            with self._autocast():
                err_g = -D(fake).mean()
                rec_loss = c["alpha"] * F.mse_loss(rec.to(real.dtype), real)
            self._g_steps(err_g + rec_loss)
        finally:
            D.requires_grad_(True)
        return {"loss_d": loss_d.detach(), "gp": gp.detach(), "loss_g": err_g.detach(), "rec": rec_loss.detach()}

    def stage_seconds(self) -> float:
        """Seconds since this stage started, or since it was resumed in this session."""
        return time.time() - self._t0

    def stage_eta(self, done_in_stage: int) -> float:
        """Seconds left in the current stage from this stage's measured speed."""
        if self.stage not in self._rates:
            return float("nan")
        return self._rates[self.stage][0] * max(0, self.cfg["niter"] - done_in_stage)

    def run_eta(self, done_in_stage: int) -> float:
        """Seconds left in the whole run, the rest of this stage and every later one, from ``project_seconds_left``
        on this session's measured speeds (nan before the first iteration)."""
        return project_seconds_left(self.shapes, self.cfg["num_layer"], self.cfg["niter"], self.stage,
                                    done_in_stage, self._rates)

    @torch.no_grad()
    def generate(self, n: int = 1, *, scale_h: float = 1.0, scale_w: float = 1.0,
                 stage0: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random samples (n, 3, H, W) in [-1, 1], every stage's shape scaled by (scale_h, scale_w)."""
        c = self.cfg
        shapes = [(max(1, int(h * scale_h)), max(1, int(w * scale_w))) for h, w in self.shapes[:self.stage + 1]]
        outs = []
        for _ in range(n):
            noise = sample_noise(shapes, nfc=c["nfc"], num_layer=c["num_layer"], gen_mode=self.gen_mode,
                                 device=self.device, generator=generator)
            if stage0 is not None:
                noise[0] = stage0
            outs.append(self.G(noise, shapes, self.amps))
        return torch.cat(outs)


@torch.no_grad()
def random_walk_frames(trainer: ConSinGANTrainer, frames: int = 100, *, alpha: float = 0.1, beta: float = 0.9,
                       start_scale: int = 2, generator: torch.Generator | None = None, chunk: int = 16
                       ) -> torch.Tensor:
    """SinGAN's ``generate_gif`` z random walk on ConSinGAN's single generator: (frames, 3, H, W) in [-1, 1].

    Per stage d >= ``start_scale``, with Z = ``trainer.z_opt[d]`` and fresh N(0, 1) draws e of Z's shape:
    z_{-2} = Z, z_{-1} = 0.95 Z + 0.05 e_0, then per frame t
    diff = beta (z_{t-1} - z_{t-2}) + (1 - beta) e_t and z_t = alpha Z + (1 - alpha) (z_{t-1} + diff).
    Stages below ``start_scale`` get Z in every frame (their features are computed once); frame t is
    ``G([z_0(t), ..., z_S(t)], shapes, amps)`` (G scales stages >= 1 by their noise amplitude, stage 0 unscaled).
    Differences from SinGAN: the stage-0 draws are 3-channel N(0, 1), as ConSinGAN's ``sample_random_noise`` (SinGAN
    expands one channel to three), and no noise is drawn for the fixed stages. The draws go frame by frame (e_0 of
    every moving stage first, then per frame one e_t per moving stage, coarsest first), so a generator gives the
    same frames whatever ``chunk`` is (up to the batched convolutions' rounding).

    Args:
        trainer: a trained (or training) ConSinGANTrainer; its stages 0..``trainer.stage`` are used.
        frames: number of frames.
        alpha: pull back to Z (1: every frame is the reconstruction G(z_opt); the reference uses 0.1).
        beta: momentum of the walk, 0 <= beta < 1 (the reference sweeps 0.80, 0.85, 0.90, 0.95).
        start_scale: first moving stage, 0..number of stages (= number of stages: nothing moves).
        generator: torch.Generator on the trainer's device for the draws (None: the global RNG).
        chunk: frames per G forward (1 with BatchNorm, whose batch statistics would mix frames).
    """
    n_st = trainer.stage + 1
    if n_st < 1:
        raise ValueError("random_walk_frames: the trainer has no trained stage")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    if not 0 <= start_scale <= n_st:
        raise ValueError(f"start_scale must be in 0..{n_st} (the model has stages 0..{n_st - 1}), got {start_scale}")
    G, shapes, amps = trainer.G, trainer.shapes[:n_st], trainer.amps[:n_st]
    zs = trainer.z_opt[:n_st]
    if start_scale == n_st:  # nothing moves: every frame is the reconstruction
        rec = G(zs, shapes, amps)
        return rec.expand(frames, *rec.shape[1:]).clone()
    chunk = 1 if trainer.cfg.get("batch_norm") else max(1, int(chunk))

    def draw(z: torch.Tensor) -> torch.Tensor:
        return torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)

    moving = range(start_scale, n_st)
    prev2 = {d: zs[d] for d in moving}
    prev1 = {d: 0.95 * zs[d] + 0.05 * draw(zs[d]) for d in moving}
    pre = G.features(zs, shapes, amps, start_scale - 1) if start_scale > 0 else None
    out = []
    for t0 in range(0, frames, chunk):
        n = min(chunk, frames - t0)
        walk: dict[int, list[torch.Tensor]] = {d: [] for d in moving}
        for _ in range(n):
            for d in moving:
                diff = beta * (prev1[d] - prev2[d]) + (1 - beta) * draw(zs[d])
                z = alpha * zs[d] + (1 - alpha) * (prev1[d] + diff)
                prev2[d], prev1[d] = prev1[d], z
                walk[d].append(z)
        noise = [torch.cat(walk[d]) if d >= start_scale else zs[d].expand(n, *zs[d].shape[1:]) for d in range(n_st)]
        prev = pre.expand(n, *pre.shape[1:]) if pre is not None else None
        out.append(G(noise, shapes, amps, start=start_scale, prev=prev))
    return torch.cat(out)


class _OptimState:
    def __init__(self, t: ConSinGANTrainer) -> None:
        self.t = t

    def state_dict(self) -> dict:
        t = self.t
        return {"G": t.optG.state_dict(), "D": t.optD.state_dict(), "sG": t.schedG.state_dict(),
                "sD": t.schedD.state_dict()}

    def load_state_dict(self, st: dict) -> None:
        t = self.t
        t.optG.load_state_dict(st["G"])
        t.optD.load_state_dict(st["D"])
        t.schedG.load_state_dict(st["sG"])
        t.schedD.load_state_dict(st["sD"])
        t.fix_lr_types()
        t._graphed = t._new_graphed()  # new state tensors: capture again (after a fresh warm-up)
