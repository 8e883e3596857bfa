# SPDX-License-Identifier: BSD-3-Clause
"""ConSinGAN stage-wise training: stage growth, per-stage optimisers, noise amplitude and one iteration in the
reference's order or ganops' order (same maths, no regenerated fakes, cached frozen stages, batched D)."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..models.consingan import Discriminator, GrowingGenerator, sample_noise
from ..models.step_order import STEP_ORDERS, check_step_order
from ..ops.penalty import gradient_penalty
from .amp import Amp
from .consingan_graphs import CudaGraph, GraphedIteration, cuda_graph_problems

__all__ = ["STEP_ORDERS", "trainer_config", "gp_plain", "project_seconds_left", "ConSinGANTrainer"]


def trainer_config(o: dict) -> dict:
    """The trainer's ``cfg`` from the recipe's ``train`` options (also those saved in a run's config)."""
    return dict(nfc=o["nfc"], num_layer=o["num_layer"], slope=o["slope"], batch_norm=o["batch_norm"],
                mode=o["mode"], train_depth=o["train_depth"], lr_g=o["lr"], lr_d=o["lr"], lr_scale=o["lr_scale"],
                beta1=0.5, niter=o["niter"], gamma=o["gamma"], d_steps=o["d_steps"], g_steps=o["g_steps"],
                lambda_grad=o["lambda_grad"], alpha=o["alpha"], noise_amp=o["noise_amp"], gp=o["gp"],
                gp_every=o["gp_every"], step_order=o["step_order"], conv=o.get("conv", "winograd"),
                cuda_graphs_upto=o.get("cuda_graphs_upto", -1))


def gp_plain(D: Callable, real: torch.Tensor, fake: torch.Tensor, weight: float = 0.1,
             u: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's ``calc_gradient_penalty`` in plain autograd: one u ~ U[0,1) for the batch,
    x = u real + (1-u) fake, ``weight * mean((||dsum D(x)/dx||_2 over channels - 1)^2)`` over (N, H, W)."""
    u = torch.rand(1, device=real.device) if u is None else u
    x = (u * real + (1 - u) * fake).detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return ((g.norm(2, dim=1) - 1) ** 2).mean() * weight


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
        amp: a :class:`ganops.train.Amp` (autocast, loss scaling), or None for fp32.
        stage0: optional ``fn(reals[0]) -> stage-0 input`` per iteration (harmonization/editing augmentations);
            None draws N(0, 1) as in generation.
    """

    def __init__(self, reals: list[torch.Tensor], cfg: dict, device: torch.device | str = "cpu",
                 amp: Any = None, stage0: Callable | None = None) -> None:
        self.cfg, self.device, self.stage0 = dict(cfg), torch.device(device), stage0
        self.amp = amp if amp is not None else Amp("fp32", self.device)
        self.reals = [r.to(self.device) for r in reals]
        self.shapes = [tuple(r.shape[2:]) for r in self.reals]
        c = self.cfg
        check_step_order(c.get("step_order", "ours"), "step_order")
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
            why = cuda_graph_problems(step_order=c.get("step_order", "ours"), amp=self.amp.enabled,
                                      stage0_aug=stage0 is not None)
            if why:
                raise ValueError(f"cuda_graphs_upto needs {', '.join(why)}")
        self._rec_cache: torch.Tensor | None = None
        self._t0, self._n0 = time.time(), 0
        self._rates: dict[int, tuple[float, int]] = {}  # stage -> (seconds per iteration, iterations) this session

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
        trainable = list(G.body[-c["train_depth"]:])
        for block in G.body[:len(G.body) - len(trainable)]:
            block.requires_grad_(False)
        groups = [{"params": list(b.parameters()), "lr": c["lr_g"] * c["lr_scale"] ** (len(trainable) - 1 - i)}
                  for i, b in enumerate(trainable)]
        if s - c["train_depth"] < 0:
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
                "reals": [r.cpu() for r in self.reals]}

    def load_state_dict(self, st: dict) -> None:
        self.reals = [r.to(self.device) for r in st["reals"]]
        self.shapes = [tuple(r.shape[2:]) for r in self.reals]
        while self.G.num_stages < st["stage"] + 1:
            self.G.init_next_stage()
        self.stage, self.amps = int(st["stage"]), list(st["amps"])
        self.z_opt = [z.to(self.device) for z in st["z_opt"]]
        self._t0, self._n0 = time.time(), 0  # a resumed stage's clock starts now
        if self.stage >= 0:
            self._make_optimizers()

    def keep_trained_stages(self) -> int:
        """Cut the pyramid to the stages G has (a run stopped before its end: the newest stage partly trained);
        returns the number of stages the run was meant to have."""
        planned = len(self.reals)
        self.reals, self.shapes = self.reals[:self.stage + 1], self.shapes[:self.stage + 1]
        return planned

    def start_fine_tune(self, stage0: Callable, iters: int, train_depth: int | None = None) -> None:
        """Fine-tuning before harmonising/editing, as the reference's ``--fine_tune``: the last stage trained again
        for ``iters`` iterations with fresh Adam optimisers over its last ``train_depth`` (default: the run's)
        stages at the usual lr scaling (newest lr, older x lr_scale, ...; the head while the stage index is below
        ``train_depth``; the tail), the lr decayed at 0.8 ``iters``, and ``stage0(reals[0])`` (the naive image) as
        every iteration's stage-0 input; the fixed reconstruction noise and noise amplitudes stay the run's."""
        self.cfg["train_depth"] = int(train_depth or self.cfg["train_depth"])
        self.cfg["niter"] = int(iters)
        self.stage0 = stage0
        self._make_optimizers()

    @torch.no_grad()
    def reconstruct_from(self, stage0: torch.Tensor) -> torch.Tensor:
        """G with ``stage0`` (1, 3, H_0, W_0) as stage 0's input and the fixed reconstruction noise at stages >= 1
        (the reference's harmonisation / editing inference): (1, 3, H_last, W_last) in [-1, 1]."""
        return self.G([stage0, *self.z_opt[1:self.stage + 1]], self.shapes[:self.stage + 1], self.amps)

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
        return self.amp.autocast()

    def _penalty(self, D: Callable, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, Any]:
        c = self.cfg
        u = torch.rand(1, device=real.device)
        if c.get("gp", "fused") == "plain":
            return gp_plain(D, real, fake, c["lambda_grad"], u), None
        scaler = self.amp.scaler if self.amp.scaler.is_enabled() else None
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
        """One backward, then ``g_steps`` Adam steps on that gradient (the reference's Gsteps); under fp16 the first
        goes through the scaler and the repeats follow only when it was not skipped for inf/NaN gradients."""
        amp = self.amp
        amp.backward_step(loss, self.optG)
        sc = amp.scaler
        if not sc.is_enabled() or sum(v.item() for v in sc._found_inf_per_device(self.optG).values()) == 0:
            for _ in range(self.cfg["g_steps"] - 1):
                self.optG.step()  # same (already unscaled) gradient, like the reference's repeated step
        amp.update()

    def _d_backward(self, loss: torch.Tensor) -> None:
        self.amp.backward(loss, self.optD)
        self.amp.update()

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
                d_gp = D.forward_gp if not self.amp.enabled else D
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
