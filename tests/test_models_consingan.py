# SPDX-License-Identifier: BSD-3-Clause
"""ConSinGAN models: pyramid sizes, imresize, parameter counts, growth, learning rates, the iteration's maths."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import requires_cuda
from ganops.models.consingan import (Discriminator, GrowingGenerator, LeakyReLUGP, adjust_to_max_size,
                                     bicubic_resize, count_params, create_pyramid, imresize, imresize_to_shape,
                                     pyramid_sizes, sample_noise)
from ganops.models.consingan_aug import composite, editing_input, prepare_mask, shuffle_grid, strong_aug
from ganops.train.consingan import ConSinGANTrainer, gp_plain
from ganops.train.consingan import project_seconds_left
from ganops.train.consingan_run import DivergenceWatch


def _cfg(**kw):
    c = dict(nfc=8, num_layer=3, slope=0.05, batch_norm=False, mode="generation", train_depth=3, lr_g=5e-4,
             lr_d=5e-4, lr_scale=0.1, beta1=0.5, niter=4, gamma=0.1, d_steps=3, g_steps=3, lambda_grad=0.1,
             alpha=10, noise_amp=0.1, gp="fused", gp_every=1, step_order="ours")
    c.update(kw)
    return c


def _reals(h=40, w=54, stages=5, min_size=16, seed=0, rule="improved"):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, h, w, generator=g) * 2 - 1
    img = F.avg_pool2d(img, 3, 1, 1)  # some spatial structure
    return create_pyramid(adjust_to_max_size(img, max(h, w)), stages=stages, min_size=min_size, rule=rule)


# ------------------------------------------------------------------------------------------------- pyramid ---
def test_pyramid_sizes_pinned():
    assert pyramid_sizes(375, 500) == [(25, 34), (32, 42), (42, 56), (63, 84), (126, 167), (188, 250)]
    assert [h for h, _ in pyramid_sizes(250, 250)] == [25, 33, 45, 72, 158, 250]
    assert pyramid_sizes(375, 500, rule="old") == [(25, 34), (38, 50), (57, 75), (84, 112), (126, 167),
                                                   (188, 250)]
    assert [h for h, _ in pyramid_sizes(250, 250, rule="old")] == [25, 40, 63, 100, 158, 250]


def test_create_pyramid_matches_sizes():
    reals = create_pyramid(adjust_to_max_size(torch.zeros(1, 3, 75, 100), 50), stages=4, min_size=12)
    assert [tuple(r.shape[2:]) for r in reals] == pyramid_sizes(75, 100, stages=4, min_size=12, max_size=50)


def test_imresize_constant_and_quantised():
    x = torch.full((1, 3, 30, 40), 0.2)
    y = imresize(x, 0.5)
    assert y.shape == (1, 3, 15, 20)
    q = np.floor(255 * (1.2 / 2)) / 255 * 2 - 1  # the uint8 round trip truncates
    assert torch.allclose(y, torch.full_like(y, q), atol=1e-6)
    assert imresize(x, 1.0).shape == x.shape  # scale 1: no resampling, still quantised
    assert imresize_to_shape(x, (7, 9)).shape == (1, 3, 7, 9)


def test_imresize_close_to_antialiased_bicubic():
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.rand(1, 3, 64, 80) * 2 - 1, 5, 1, 2)
    y = imresize(x, 0.5)
    ref = F.interpolate(x, size=(32, 40), mode="bicubic", antialias=True, align_corners=False)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    assert (y - ref)[inner].abs().mean() < 0.01


# ------------------------------------------------------------------------------------------------ networks ---
def test_param_counts_pinned():
    G = GrowingGenerator()
    assert count_params(G) == 1792 + 110784 + 1731
    for _ in range(5):
        G.init_next_stage()
    assert count_params(G) == 668227
    assert count_params(Discriminator()) == 113153
    assert count_params(Discriminator(gp_act=False)) == 113153


def test_shapes_generation_and_retarget():
    shapes = [(12, 16), (15, 20), (20, 27)]
    for mode in ("generation", "retarget"):
        G = GrowingGenerator(nfc=8, mode=mode)
        G.init_next_stage()
        G.init_next_stage()
        noise = sample_noise(shapes, nfc=8, gen_mode=G.gen_mode)
        if mode == "generation":
            assert noise[1].shape == (1, 8, 21, 26)
        out = G(noise, shapes, [1.0, 0.1, 0.1])
        assert out.shape == (1, 3, 20, 27) and out.abs().max() <= 1
    assert Discriminator(nfc=8)(torch.zeros(2, 3, 20, 27)).shape == (2, 1, 10, 17)


@pytest.mark.slow
def test_stage_growth_copies_weights():
    t = ConSinGANTrainer(_reals(), _cfg())
    t.start_stage(0)
    t.step()
    d_before = copy.deepcopy(t.D.state_dict())
    t.start_stage(1)
    assert len(t.G.body) == 2
    for a, b in zip(t.G.body[0].parameters(), t.G.body[1].parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    for k, v in t.D.state_dict().items():
        assert torch.equal(v, d_before[k])  # new stage's D starts from the previous D
    assert t.amps[1] > 0 and t.amps[0] == 1.0


@pytest.mark.slow
def test_per_stage_learning_rates_and_freezing():
    t = ConSinGANTrainer(_reals(), _cfg())
    for s in range(5):
        t.start_stage(s)
        groups = t.optG.param_groups
        n_body = min(s + 1, 3)
        lrs = [g["lr"] for g in groups]
        assert lrs[:n_body] == pytest.approx([5e-4 * 0.1 ** (n_body - 1 - i) for i in range(n_body)])
        if s < 3:
            assert lrs[n_body] == pytest.approx(5e-4 * 0.1 ** s)  # head
            assert len(groups) == n_body + 2
        else:
            assert len(groups) == n_body + 1
            assert not any(p.requires_grad for p in t.G.head.parameters())
        assert lrs[-1] == 5e-4  # tail
        frozen = t.G.body[:max(0, s + 1 - 3)]
        assert not any(p.requires_grad for p in frozen.parameters())
    for _ in range(4):
        t.step()
    # the reference's MultiStepLR milestone is the float 0.8 * niter: 3.2 for niter 4, never reached
    assert t.optD.param_groups[0]["lr"] == t.optG.param_groups[-1]["lr"] == pytest.approx(5e-4)
    t5 = ConSinGANTrainer(_reals(), _cfg(niter=5))
    t5.start_stage(0)
    for i in range(5):
        assert t5.optD.param_groups[0]["lr"] == pytest.approx(5e-4 if i < 4 else 5e-5), i  # x0.1 after 4 of 5
        assert t5.optG.param_groups[-1]["lr"] == pytest.approx(5e-4 if i < 4 else 5e-5), i
        t5.step()


def test_one_iteration_finite():
    t = ConSinGANTrainer(_reals(stages=3), _cfg())
    t.start_stage(0)
    losses = t.step()
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    assert set(losses) == {"loss_d", "gp", "loss_g", "rec"}


def _run(order, gp, stages=4, iters=2, dtype=torch.float64, **kw):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        reals = [r.to(dtype) for r in _reals(stages=stages)]
        torch.manual_seed(1)
        t = ConSinGANTrainer(reals, _cfg(step_order=order, gp=gp, **kw))
        out = []
        for s in range(stages):
            t.start_stage(s)
            for _ in range(iters):
                out.append([float(v) for v in t.step().values()])
        return np.array(out), t
    finally:
        torch.set_default_dtype(old)


@pytest.mark.slow
def test_fused_vs_plain_penalty_same_losses():
    a, _ = _run("reference", "plain")
    b, _ = _run("reference", "fused")
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_ours_order_same_maths_as_reference():
    a, ta = _run("reference", "plain")
    b, tb = _run("ours", "fused")
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)  # Adam's first steps amplify float64 rounding
    for p, q in zip(ta.G.parameters(), tb.G.parameters()):
        assert torch.allclose(p, q, atol=1e-8)


def test_batch_norm_mode_and_editing_inputs():
    reals = _reals(stages=3, rule="improved")
    t = ConSinGANTrainer(reals, _cfg(batch_norm=True, mode="editing"), stage0=editing_input)
    for s in range(3):
        t.start_stage(s)
        assert all(np.isfinite(float(v)) for v in t.step().values())
    x = t.generate(1, stage0=reals[0])
    assert x.shape == reals[-1].shape


def test_projected_seconds_left_scale_with_padded_area():
    """The run's ETA: seconds per padded pixel from the newest stage measured over min_iters iterations, times
    each stage's (H + 2L)(W + 2L) and iterations left; not the uniform rate of the current stage."""
    shapes, L, niter = [(10, 14), (20, 24), (40, 44)], 3, 100
    area = [16 * 20, 26 * 30, 46 * 50]
    assert np.isnan(project_seconds_left(shapes, L, niter, 0, 0, {}))
    k0 = 0.01 / area[0]
    got = project_seconds_left(shapes, L, niter, 0, 40, {0: (0.01, 40)})
    assert got == pytest.approx(k0 * (area[0] * 60 + area[1] * 100 + area[2] * 100), rel=1e-12)
    assert got > 0.01 * (60 + 200) * 2  # far above the uniform rate's remaining steps x 0.01 s
    # stage 1 after 5 iterations: too few, k still from stage 0 (the first iteration of a stage is slow)
    got = project_seconds_left(shapes, L, niter, 1, 5, {0: (0.01, 100), 1: (0.5, 5)})
    assert got == pytest.approx(k0 * (area[1] * 95 + area[2] * 100), rel=1e-12)
    k1 = 0.03 / area[1]
    got = project_seconds_left(shapes, L, niter, 1, 10, {0: (0.01, 100), 1: (0.03, 10)})
    assert got == pytest.approx(k1 * (area[1] * 90 + area[2] * 100), rel=1e-12)
    assert project_seconds_left(shapes, L, niter, 2, 100, {2: (1.0, 1)}) == 0
    # a resumed run: only the current stage is measured (few iterations): it is used
    assert project_seconds_left(shapes, L, niter, 1, 50, {1: (0.03, 2)}) == pytest.approx(
        k1 * (area[1] * 50 + area[2] * 100), rel=1e-12)


def test_divergence_watch_reports_a_lasting_jump_once_not_a_spike():
    """The shape of the collapse seen at stage 3 of a 250 px run (rec ~0.02, then 0.85 ... 15, staying > 1.4) is
    reported once, 20 iterations after it starts; a 1-5 iteration spike (0.31, then back) and a falling loss are
    not; reset() starts a new stage."""
    rng = np.random.default_rng(0)
    w = DivergenceWatch()
    healthy = list(0.02 * (1 + 0.3 * rng.random(300)))
    for i, r in enumerate(healthy):
        assert w.update(i + 1, r) is None
    for i, r in enumerate([0.31, 0.11, 0.13, 0.14, 0.09] + healthy[:100]):  # a transient spike: recovers
        assert w.update(301 + i, r) is None
    hits = [w.update(406 + i, r) for i, r in enumerate([0.85, 1.6, 1.5, 12.2, 5.5, 15.5] + [2.6] * 100)]
    assert [h for h in hits if h] == [(406, pytest.approx(np.median(healthy[-200:]), rel=0.2))]
    assert hits.index(next(h for h in hits if h)) == 19  # the 20th high iteration in a row
    w.reset()
    assert all(w.update(i + 1, 1.0 / (i + 1)) is None for i in range(500))  # a new stage whose loss falls
    assert DivergenceWatch(warmup=50).update(1, 1e6) is None  # nothing judged before the warm-up


def test_generate_arbitrary_size():
    t = ConSinGANTrainer(_reals(stages=3), _cfg())
    for s in range(3):
        t.start_stage(s)
    x = t.generate(2, scale_w=2.0)
    assert x.shape == (2, 3, t.shapes[-1][0], int(t.shapes[-1][1] * 2)) and torch.isfinite(x).all()


def test_generate_feeds_fresh_unscaled_stage0_noise_and_scaled_feature_noise():
    """The random-sample path (reference ``sample_random_noise`` + ``GrowingGenerator.forward``), written out by hand:
    fresh N(0, 1) 3-channel noise at stage 0 (not z_opt, not scaled by amps[0]), nfc-channel (H+6)x(W+6) noise
    times amps[d] added to the (H+6)x(W+6) bicubic upsample at stages >= 1, the H x W upsample added back
    (residual), tail + tanh."""
    torch.manual_seed(0)
    t = ConSinGANTrainer(_reals(stages=3), _cfg())
    for s in range(3):
        t.start_stage(s)
        t.step()
    G, k = t.G, 2 * t.cfg["num_layer"]
    with torch.no_grad():  # weights this small (N(0, 0.02), 3 iterations) make G's output nearly input-independent
        for m in G.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(10)
    up = bicubic_resize  # = F.interpolate(bicubic, align_corners=True): test_bicubic_resize_is_interpolate_bicubic
    g = torch.Generator().manual_seed(3)
    zs = [torch.randn(1, 3, *t.shapes[0], generator=g)]
    zs += [torch.randn(1, t.cfg["nfc"], h + k, w + k, generator=g) for h, w in t.shapes[1:]]
    with torch.no_grad():
        x = G.head(F.pad(zs[0], (1,) * 4))
        x = G.body[0](F.pad(up(x, (x.shape[2] + 2, x.shape[3] + 2)), (2,) * 4))
        for d in (1, 2):
            h, w = t.shapes[d]
            x = G.body[d](up(x, (h + k, w + k)) + zs[d] * t.amps[d]) + up(x, (h, w))
        want = G.tail(F.pad(x, (1,) * 4))
        got = t.generate(1, generator=torch.Generator().manual_seed(3))
        # atol: the trainer's G convolves with Winograd (float32 rounding ~1e-5), the hand forward with nn.Conv2d;
        # a wrong noise, amplitude or residual moves the output by O(0.1)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
        assert 0 < t.amps[1] < 1 and 0 < t.amps[2] < 1 and t.amps[0] == 1.0
        t.amps[0] = 123.0  # amp[0] is never used: stage-0 noise enters unscaled
        torch.testing.assert_close(t.generate(1, generator=torch.Generator().manual_seed(3)), want, rtol=0, atol=1e-4)
        rec = G(t.z_opt, t.shapes, t.amps)
        assert (got - rec).abs().mean() > 1e-2  # a random sample, not the reconstruction from z_opt


def test_leaky_relu_gp_same_values_and_second_order():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64, requires_grad=True)

    def pen(act):
        y = act(F.conv2d(x, w, padding=1))
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return (g.norm(dim=1) - 1).pow(2).mean(), y

    p1, y1 = pen(torch.nn.LeakyReLU(0.05))
    p2, y2 = pen(LeakyReLUGP(0.05))
    assert torch.equal(y1, y2)
    g1 = torch.autograd.grad(p1, w)[0]
    g2 = torch.autograd.grad(p2, w)[0]
    assert torch.allclose(g1, g2, atol=1e-12)
    torch.autograd.gradcheck(lambda t: LeakyReLUGP(0.05)(t), (torch.randn(3, 4, dtype=torch.float64,
                                                                          requires_grad=True),))


def test_gp_plain_formula():
    D = Discriminator(nfc=4)
    real, fake = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    u = torch.tensor([0.3])
    x = (0.3 * real + 0.7 * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x)
    ref = 0.1 * ((g.norm(2, dim=1) - 1) ** 2).mean()
    assert torch.allclose(gp_plain(D, real, fake, 0.1, u), ref, atol=1e-6)


def test_augmentations_and_mask():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 40, 50) * 2 - 1
    for _ in range(5):
        y = strong_aug(x, p=1.0)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    s = shuffle_grid(x)
    assert s.shape == x.shape and not torch.equal(s, x)
    m = torch.zeros(1, 1, 40, 50)
    m[..., 18:22, 20:25] = 1
    soft = prepare_mask(m, radius=5, sigma=2.0)
    assert soft[..., 20, 22] > 0.99 and soft[..., 20, 29] > 0.5 and soft[..., 0, 0] < 1e-3
    out = composite(x, -x, soft)
    assert torch.allclose(out[..., 0, 0], x[..., 0, 0], atol=1e-3)


def _plain_g(W, noise, shapes, amps, slope=0.05):
    """The official GrowingGenerator.forward (generation mode) re-stated with F.conv2d on plain weight lists."""
    act = lambda x: F.leaky_relu(x, slope)  # noqa: E731
    x = act(F.conv2d(F.pad(noise[0], [1] * 4), *W["head"]))
    x = F.pad(F.interpolate(x, size=[x.shape[2] + 2, x.shape[3] + 2], mode="bicubic", align_corners=True), [2] * 4)
    for wb in W["body"][0]:
        x = act(F.conv2d(x, *wb))
    for d in range(1, len(noise)):
        (h, w), n = shapes[d], len(W["body"][d])
        up1 = F.interpolate(x, size=[h, w], mode="bicubic", align_corners=True)
        y = F.interpolate(x, size=[h + 2 * n, w + 2 * n], mode="bicubic", align_corners=True) + noise[d] * amps[d]
        for wb in W["body"][d]:
            y = act(F.conv2d(y, *wb))
        x = y + up1
    return torch.tanh(F.conv2d(F.pad(x, [1] * 4), *W["tail"]))


def _plain_d(Wd, x, slope=0.05):
    for wb in Wd[:-1]:
        x = F.leaky_relu(F.conv2d(x, *wb), slope)
    return F.conv2d(x, *Wd[-1])


def _conv_copies(m):
    return [[c.weight.detach().clone().requires_grad_(), c.bias.detach().clone().requires_grad_()]
            for c in m.modules() if isinstance(c, torch.nn.Conv2d)]


@pytest.mark.slow
def test_plain_restatement_of_the_official_iteration():
    """Stages 0 and 1 of the official training loop (training_generation.py) written out with F.conv2d, plain
    autograd and torch.optim on copied weights, fed the same random draws: the trainer's reference order and ours
    give the same losses and weights (float64). Pins G/D structure, the GP, the loss signs, Gsteps, the per-stage
    learning rates and the noise amplitude against a statement that shares no ganops module."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        reals = [r.double() for r in _reals(stages=2)]
        for order, gp, tol in (("reference", "plain", 1e-9), ("ours", "fused", 1e-6)):
            torch.manual_seed(1)
            t = ConSinGANTrainer(reals, _cfg(step_order=order, gp=gp, niter=5))
            g = _conv_copies(t.G)
            W = {"head": g[0], "body": [g[1:4]], "tail": g[4]}
            Wd = _conv_copies(t.D)
            for s in range(2):
                t.start_stage(s)
                if s == 1:  # growth: a copy of the last stage; noise amp = 0.1 RMSE of the amp-0 reconstruction
                    W["body"].append([[p.detach().clone().requires_grad_() for p in wb] for wb in W["body"][-1]])
                    with torch.no_grad():
                        rec0 = _plain_g(W, t.z_opt, t.shapes, [1.0, 0.0])
                    assert t.amps[1] == pytest.approx(0.1 * float(torch.sqrt(F.mse_loss(rec0, reals[1]))), rel=1e-12)
                lr = 5e-4
                groups = [{"params": [p for wb in W["body"][d] for p in wb], "lr": lr * 0.1 ** (s - d)}
                          for d in range(s + 1)]
                groups += [{"params": W["head"], "lr": lr * 0.1 ** s}, {"params": W["tail"], "lr": lr}]
                optG = torch.optim.Adam(groups, lr=lr, betas=(0.5, 0.999))
                optD = torch.optim.Adam([p for wb in Wd for p in wb], lr=lr, betas=(0.5, 0.999))
                real, shapes, amps = reals[s], t.shapes, t.amps
                for _ in range(3):
                    rng = torch.get_rng_state()
                    got = {k: float(v) for k, v in t.step().items()}
                    torch.set_rng_state(rng)
                    noise = [torch.randn(1, 3, *shapes[0])]
                    noise += [torch.randn(1, 8, h + 6, w + 6) for h, w in shapes[1:s + 1]]
                    for j in range(3):
                        optD.zero_grad()
                        err_real = -_plain_d(Wd, real).mean()
                        with torch.set_grad_enabled(j == 2):
                            fake = _plain_g(W, noise, shapes, amps)
                        err_fake = _plain_d(Wd, fake.detach()).mean()
                        u = torch.rand(1, 1)
                        x = (u * real + (1 - u) * fake).detach().requires_grad_(True)
                        o = _plain_d(Wd, x)
                        (gx,) = torch.autograd.grad(o, x, torch.ones_like(o), create_graph=True)
                        pen = ((gx.norm(2, dim=1) - 1) ** 2).mean() * 0.1
                        loss_d = err_real + err_fake + pen
                        loss_d.backward()
                        optD.step()
                    err_g = -_plain_d(Wd, fake).mean()
                    rec_loss = 10 * F.mse_loss(_plain_g(W, t.z_opt, shapes, amps), real)
                    optG.zero_grad()
                    (err_g + rec_loss).backward()
                    for _ in range(3):
                        optG.step()
                    want = {"loss_d": loss_d, "gp": pen, "loss_g": err_g, "rec": rec_loss}
                    for k, v in want.items():
                        assert got[k] == pytest.approx(float(v.detach()), rel=tol, abs=tol), (order, s, k)
            mine = [p for m in (t.G, t.D) for c in m.modules() if isinstance(c, torch.nn.Conv2d)
                    for p in (c.weight, c.bias)]
            plain = [p for wb in [W["head"], *W["body"][0], *W["body"][1], W["tail"], *Wd] for p in wb]
            assert len(mine) == len(plain)
            for p, q in zip(mine, plain):
                assert torch.allclose(p, q, rtol=tol, atol=tol), order
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("src,dst", [((25, 38), (33, 46)), ((7, 5), (13, 19)), ((20, 30), (11, 17)), ((6, 9), (1, 4)),
                                     ((1, 5), (3, 8)), ((115, 171), (173, 256))])
def test_bicubic_resize_is_interpolate_bicubic(src, dst):
    """The matmul resize used by G is F.interpolate(bicubic, align_corners=True): values and gradients (float64),
    up and down, size-1 axes, channels_last input; dtype kept under autocast."""
    g = torch.Generator().manual_seed(sum(src) + sum(dst))
    x = torch.randn(2, 3, *src, dtype=torch.float64, generator=g)
    for inp in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, :, :].transpose(2, 3).transpose(2, 3)):
        a = inp.clone().requires_grad_(True)
        b = inp.clone().requires_grad_(True)
        ref = F.interpolate(a, size=dst, mode="bicubic", align_corners=True)
        got = bicubic_resize(b, dst)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
        up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
        ref.backward(up)
        got.backward(up)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bicubic_resize(x.float(), dst).dtype == torch.float32
    with pytest.raises(ValueError, match="upsample must be one of"):
        GrowingGenerator(upsample="nearest")


def test_generator_upsample_impls_agree():
    torch.manual_seed(0)
    a, b = GrowingGenerator(nfc=8), GrowingGenerator(nfc=8, upsample="interpolate")
    for G in (a, b):
        G.init_next_stage()
    b.load_state_dict(a.state_dict())
    shapes = [(10, 14), (16, 22)]
    noise = sample_noise(shapes, nfc=8)
    torch.testing.assert_close(a(noise, shapes, [1.0, 0.3]), b(noise, shapes, [1.0, 0.3]), rtol=1e-5, atol=1e-5)


def test_discriminator_forward_gp_same_penalty_and_weight_gradients():
    """forward_gp: D's values, and a WGAN-GP whose value and D-weight gradients equal plain autograd through
    nn.Conv2d/nn.LeakyReLU (float64); the transposed-conv input gradient and its dedicated weight-gradient backward
    are checked against autograd's own second-order formulas."""
    torch.manual_seed(0)
    d_gp = Discriminator(nfc=6, gp_act=True).double()
    d_ref = Discriminator(nfc=6, gp_act=False).double()
    d_ref.load_state_dict(d_gp.state_dict())
    real, fake = torch.randn(2, 3, 17, 19, dtype=torch.float64), torch.randn(2, 3, 17, 19, dtype=torch.float64)
    u = torch.rand(1, dtype=torch.float64)
    torch.testing.assert_close(d_gp.forward_gp(real), d_ref(real), rtol=1e-12, atol=1e-12)
    grads = []
    for D, fn in ((d_ref, d_ref), (d_gp, d_gp.forward_gp)):
        D.zero_grad()
        pen = gp_plain(fn, real, fake, 0.1, u)
        pen.backward()
        grads.append((float(pen.detach()), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                   for p in D.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)  # biases: zero / none (the masks are constants)
    assert any(g.abs().max() > 1e-6 for g in grads[0][1])
    with pytest.raises(ValueError, match="gp_act=True"):
        d_ref.forward_gp(real)


# ---- CUDA graphs for the small stages (control flow on CPU through a stand-in; the capture itself needs a GPU) ---
class _StandIn:
    """What GraphedIteration needs of a graph: built once from fn (a real capture records, it does not run), then
    replay() runs one iteration and returns the same output objects each time (static memory)."""
    built = 0

    def __init__(self, fn):
        type(self).built += 1
        self.fn, self.out = fn, None

    def replay(self):
        new = self.fn()
        if self.out is None:
            self.out = new
        else:
            for k, v in new.items():
                self.out[k].copy_(v)
        return self.out


def test_graphed_iteration_warms_up_captures_once_and_returns_clones():
    from ganops.train.consingan_graphs import GraphedIteration
    calls = []

    def fn():
        calls.append(1)
        return {"x": torch.tensor(float(len(calls)))}

    _StandIn.built = 0
    g = GraphedIteration(fn, warmup=2, graph_cls=_StandIn)
    outs = [g() for _ in range(5)]
    assert [float(o["x"]) for o in outs] == [1, 2, 3, 4, 5]  # one iteration per call, capture call included
    assert _StandIn.built == 1 and g.calls == 2
    assert outs[3]["x"] is not outs[4]["x"] and outs[3]["x"].data_ptr() != g.graph.out["x"].data_ptr()


@pytest.mark.slow
def test_trainer_graph_path_same_losses_and_recaptures_per_stage():
    """cuda_graphs_upto=1 with the stand-in: stages 0-1 go through GraphedIteration (one capture each, a fresh
    one after a stage change and after an optimiser-state load), stage 2 runs eagerly; the losses are those of the
    plain trainer (same seeds). On CPU the learning rates stay floats (capturable Adam is CUDA-only)."""
    runs = []
    _StandIn.built = 0
    for upto in (-1, 1):
        torch.manual_seed(0)
        t = ConSinGANTrainer(_reals(stages=3), _cfg(niter=5, cuda_graphs_upto=upto))
        t.graph_cls = _StandIn
        losses = []
        for s in range(3):
            t.start_stage(s)
            assert t.graphs_now() == (s <= upto) and (t._graphed is not None) == (s <= upto)
            for _ in range(5):
                losses.append([float(v) for v in t.step().values()])
        runs.append(losses)
        assert all(isinstance(g["lr"], float) for g in t.optG.param_groups + t.optD.param_groups)
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=0)
    assert _StandIn.built == 2  # stages 0 and 1 (5 iterations each: 3 warm-up, the 4th captures)


def test_trainer_graph_state_load_recaptures():
    torch.manual_seed(0)
    t = ConSinGANTrainer(_reals(stages=2), _cfg(cuda_graphs_upto=0))
    t.graph_cls = _StandIn
    t.start_stage(0)
    for _ in range(4):
        t.step()
    old = t._graphed
    assert old.graph is not None
    st = t.optim_state().state_dict()
    t.optim_state().load_state_dict(st)
    assert t._graphed is not old and t._graphed.graph is None


def test_trainer_graph_option_errors():
    with pytest.raises(ValueError, match="step-order ours"):
        ConSinGANTrainer(_reals(stages=2), _cfg(cuda_graphs_upto=0, step_order="reference"))
    with pytest.raises(ValueError, match="generation or animation"):
        ConSinGANTrainer(_reals(stages=2), _cfg(cuda_graphs_upto=0), stage0=lambda r: r)


@requires_cuda
def test_cuda_graphs_match_eager_on_gpu():
    """The real capture: stages 0-1 with CUDA graphs give the eager losses (same seeds; graph-safe RNG), and the
    lr milestone reaches the captured Adam through its tensor learning rates."""
    runs = []
    for upto in (-1, 1):
        torch.manual_seed(0)
        t = ConSinGANTrainer(_reals(stages=2), _cfg(niter=10, cuda_graphs_upto=upto), device="cuda")
        losses = []
        for s in range(2):
            t.start_stage(s)
            for _ in range(10):
                losses.append([float(v) for v in t.step().values()])
        runs.append(losses)
        assert abs(float(t.optD.param_groups[0]["lr"]) - 5e-5) < 1e-12  # decayed at 8 of 10
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-4, atol=1e-6)


def test_graphed_iteration_has_no_host_sync_or_dynamic_shape():
    """What a CUDA-graph capture forbids, checked on CPU: the iteration ours replays reads no tensor value on the
    host (.item(), float(t), bool(t): aten::_local_scalar_dense) and has no data-dependent output shapes."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            # CPU Adam (capturable=False, CUDA-only otherwise) reads its step count on the host; the graphed
            # path's capturable Adam keeps it on the device, so syncs inside torch.optim are not the step's own
            if not (name == "_local_scalar_dense"
                    and any("torch/optim/" in f.filename.replace("\\", "/") for f in traceback.extract_stack())):
                seen.add(name)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    t = ConSinGANTrainer(_reals(stages=4), _cfg())
    for s in range(4):
        t.start_stage(s)
        t.step()  # warm-up (fills the frozen-stage cache from stage 3 on, as GraphedIteration's warm-up does)
        with Ops():
            t._step_ours()
    assert "convolution" in seen or "wino3x3_forward" in seen  # the mode saw the iteration
    bad = seen & {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "item"}
    assert not bad, bad
