# SPDX-License-Identifier: BSD-3-Clause
"""A complete, tiny GAN recipe on the ganops.train toolkit; used by tests (resume after SIGKILL, DDP, NaN)."""
from __future__ import annotations

import contextlib
import json
import os
import time

import click
import torch
import torch.nn.functional as F
from torch import nn

from ganops.train import EMA, TrainLoop, check_options, fixed_noise, train_options


def make_g(nz: int, res: int) -> nn.Module:
    return nn.Sequential(nn.Linear(nz, 3 * res * res), nn.Tanh(), nn.Unflatten(1, (3, res, res)))


def make_d(res: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * res * res // 4, 1))


_PAUSES = [0]


def _pause(kind: str, detail: str) -> None:
    """(test hook) With ``TINY_HANDSHAKE=DIR``: announce a pause point as the empty file ``DIR/PID_N_KIND_DETAIL``
    and wait until the test writes ``DIR/PID_N_KIND_DETAIL.go`` (or kills this process there), so a kill lands at
    the chosen point however loaded the machine is. Without it: nothing."""
    d = os.environ.get("TINY_HANDSHAKE")
    if not d:
        return
    _PAUSES[0] += 1
    tag = os.path.join(d, f"{os.getpid()}_{_PAUSES[0]:05d}_{kind}_{detail}")
    open(tag, "w").close()
    end = time.monotonic() + 600  # a test that went away: carry on
    while not os.path.exists(tag + ".go") and time.monotonic() < end:
        time.sleep(0.002)


def _pausing_writes() -> None:
    """Checkpoints written in two halves with a ``checkpoint`` pause between; sample images paused (``sample``)
    after the temp file is written, before its rename. A SIGKILL in a pause is a kill in the middle of that write."""
    import io

    import torchvision.utils as tvu  # ganops.train.samples imports save_image from it at each call

    real_save, real_image = torch.save, tvu.save_image

    def save(obj, f, *a, **k):
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        data = buf.getvalue()
        with (open(f, "wb") if isinstance(f, (str, os.PathLike)) else contextlib.nullcontext(f)) as out:
            out.write(data[: len(data) // 2])
            out.flush()
            _pause("checkpoint", os.path.basename(out.name))
            out.write(data[len(data) // 2:])

    def image(tensor, fp, *a, **k):
        real_image(tensor, fp, *a, **k)
        _pause("sample", os.path.basename(fp))

    torch.save, tvu.save_image = save, image


@click.command()
@train_options(resolution=16, batch=4, iters=20, snap=5, sample_every=10, workers=0)
@click.option("--nz", type=click.IntRange(min=1), default=8, show_default=True, help="latent size")
@click.option("--nan-at", type=int, default=-1, help="(test hook) make loss_d NaN at this iteration")
@click.option("--nan-g-at", type=int, default=-1, help="(test hook) make loss_g NaN at this iteration")
def main(nz: int, nan_at: int, nan_g_at: int, **opts) -> None:
    check_options(opts)
    cfg = dict(opts, nz=nz)
    loop = TrainLoop("tiny", cfg, arch_keys=["nz", "resolution"])
    res = opts["resolution"]
    G, D = make_g(nz, res).to(loop.device), make_d(res).to(loop.device)
    G_ddp, D_ddp = loop.prepare(G), loop.prepare(D)
    ema = EMA(G, decay=0.9)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.99))
    z_fixed = fixed_noise(16, nz, seed=123, device=loop.device)

    probe = {"rank": loop.rank, "batches": []}
    sleep = float(os.environ.get("TINY_STEP_SLEEP", "0"))
    if os.environ.get("TINY_HANDSHAKE"):  # test hook: kills at chosen points (during a step, in a write)
        _pausing_writes()

    def step(reals: torch.Tensor, it: int) -> dict:
        probe["batches"].append(reals.sum(dim=(1, 2, 3)).tolist())
        time.sleep(sleep)
        _pause("step", str(it))
        z = torch.randn(reals.shape[0], nz, device=loop.device)
        with loop.amp.autocast():
            loss_d = F.softplus(D_ddp(G_ddp(z).detach())).mean() + F.softplus(-D_ddp(reals)).mean()
        if it == nan_at:
            loss_d = loss_d * float("nan")
        loop.check_finite({"loss_d": loss_d})
        loop.amp.backward_step(loss_d, opt_d)
        with loop.amp.autocast():
            loss_g = F.softplus(-D_ddp(G_ddp(z))).mean()
        if it == nan_g_at:
            loss_g = loss_g * float("nan")
        loop.check_finite({"loss_g": loss_g})
        loop.amp.backward_step(loss_g, opt_g)
        loop.amp.update()
        ema.update(G)
        return {"loss_d": loss_d, "loss_g": loss_g}

    result = loop.run(step, lambda it: ema.module(z_fixed), models={"G": G, "D": D},
                      optimizers={"G": opt_g, "D": opt_d}, ema={"G_ema": ema},
                      fakes=lambda n, seed: ema.module(fixed_noise(n, nz, seed=seed, device=loop.device)))
    if os.environ.get("TINY_PROBE"):  # test hook: what each rank saw and ended with
        probe["g_sum"] = float(sum(p.double().sum() for p in G.parameters()))
        with open(os.path.join(os.environ["TINY_PROBE"], f"rank{loop.rank}.json"), "w") as f:
            json.dump(probe, f)
    if loop.is_main and os.environ.get("TINY_PRINT_RESULT"):
        print("RESULT", result["run_dir"], result["step"])


if __name__ == "__main__":
    main()
