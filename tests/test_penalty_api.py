# SPDX-License-Identifier: BSD-3-Clause
"""gradient_penalty / r1_penalty / r2_penalty vs plain autograd: values and D-parameter gradients, every mode."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ganops
from conftest import backends, compiled_backends, requires_cuda

IMPLS = ["ref"] + [b for b in compiled_backends("gp_norm_penalty", "cpu") if b == "cpu"]
MODES = [(a, no, red) for a in ("per_sample", "per_batch") for no in ("sample", "channel")
         for red in ("mean", "sum", "none")]


def patch_d(ch=8, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(ch, 1, 3, 1, 1)).to(dtype)


def batch(shape=(3, 3, 8, 10), dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype)


def plain_gp(D, real, fake, alpha, weight, target, norm_over, reduce):
    """The textbook PyTorch WGAN-GP (ConSinGAN's calc_gradient_penalty for norm_over="channel")."""
    a = alpha.reshape(-1, 1, 1, 1)
    x = (real + a * (fake - real)).detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out), create_graph=True)
    if norm_over == "sample":
        per = (g.reshape(g.shape[0], -1).norm(2, dim=1) - target) ** 2
    else:
        per = ((g.norm(2, dim=1) - target) ** 2).reshape(g.shape[0], -1).mean(1)
    per = per * weight
    return per.mean() if reduce == "mean" else (per.sum() if reduce == "sum" else per)


def plain_r1(D, x, gamma):
    x = x.detach().requires_grad_(True)
    out = D(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return gamma / 2 * g.pow(2).reshape(g.shape[0], -1).sum(1).mean()


def param_grads(D, loss):
    return torch.autograd.grad(loss.sum(), [p for p in D.parameters() if p.requires_grad], allow_unused=True,
                               materialize_grads=True)


def assert_grads_close(a, b, **kw):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_penalty_matches_plain_autograd_every_mode(impl):
    D = patch_d()
    real, fake = batch()
    for alpha_mode, norm_over, reduce in MODES:
        gen = torch.Generator().manual_seed(7)
        pen = ganops.gradient_penalty(D, real, fake, weight=0.3, alpha=alpha_mode, norm_over=norm_over, reduce=reduce,
                                      generator=gen, impl=impl)
        gen = torch.Generator().manual_seed(7)
        alpha = torch.rand(3 if alpha_mode == "per_sample" else 1, generator=gen, dtype=torch.float64).expand(3)
        ref = plain_gp(D, real, fake, alpha, 0.3, 1.0, norm_over, reduce)
        msg = f"{alpha_mode}/{norm_over}/{reduce}"
        assert pen.shape == ref.shape, msg
        torch.testing.assert_close(pen, ref, msg=msg)
        assert_grads_close(param_grads(D, pen), param_grads(D, ref))


@pytest.mark.parametrize("impl", IMPLS)
def test_r1_r2_match_plain_autograd(impl):
    D = patch_d()
    real, fake = batch()
    for fn, x in ((ganops.r1_penalty, real), (ganops.r2_penalty, fake)):
        pen, out = fn(D, x, 5.0, impl=impl, return_output=True)
        ref = plain_r1(D, x, 5.0)
        torch.testing.assert_close(pen, ref)
        assert_grads_close(param_grads(D, pen), param_grads(D, ref))
        torch.testing.assert_close(out, D(x))  # D's logits come back for the adversarial term
        per = fn(D, x, 5.0, impl=impl, reduce="none")
        torch.testing.assert_close(per.mean(), ref)


def test_alpha_options_and_consingan_call():
    D = patch_d()
    real, fake = batch()
    seen = []

    def spy(x):
        seen.append(x.detach().clone())
        return D(x)

    ganops.gradient_penalty(spy, real, fake, alpha="per_batch", generator=torch.Generator().manual_seed(0))
    a = (seen[-1] - real) / (fake - real)
    torch.testing.assert_close(a, torch.full_like(a, a.flatten()[0].item()))  # one alpha for the batch
    ganops.gradient_penalty(spy, real, fake, alpha="per_sample", generator=torch.Generator().manual_seed(0))
    a = ((seen[-1] - real) / (fake - real)).flatten(1)
    assert a.std(1).max() < 1e-9 and a[:, 0].unique().numel() == 3  # one alpha per sample
    p1 = ganops.gradient_penalty(D, real, fake, alpha=0.25, norm_over="channel")
    p2 = ganops.gradient_penalty(D, real, fake, alpha=torch.full((3,), 0.25, dtype=torch.float64),
                                 norm_over="channel")
    torch.testing.assert_close(p1, p2)
    # ConSinGAN's call: lambda 0.1, one alpha, per-pixel channel norm.
    pen = ganops.gradient_penalty(D, real[:1], fake[:1], weight=0.1, alpha="per_batch", norm_over="channel")
    assert pen.dim() == 0 and torch.isfinite(pen)


def _sle_d(impl, sn=False, augment=None, seed=0):
    torch.manual_seed(seed)

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, 1, 1)
            self.c2 = nn.Conv2d(8, 16, 4, 2, 1)
            if sn:
                self.c1, self.c2 = ganops.nn.spectral_norm(self.c1), ganops.nn.spectral_norm(self.c2)
            self.sle = ganops.nn.SLE(16, 8, spectral_norm=sn, impl=impl)
            self.out = nn.Conv2d(8, 1, 3, 1, 1)

        def forward(self, x):
            if augment is not None:
                x = augment(x)
            h = nn.functional.leaky_relu(self.c1(x), 0.2)
            low = nn.functional.leaky_relu(self.c2(h), 0.2)
            return self.out(self.sle(low, h))

    return D().double()


def _through(D_ours, D_ref, impl, **kw):
    real, fake = batch((2, 3, 16, 16))
    for norm_over in ("sample", "channel"):
        ours = ganops.gradient_penalty(D_ours, real, fake, alpha=0.4, norm_over=norm_over, impl=impl, **kw)
        ref = plain_gp(D_ref, real, fake, torch.full((2,), 0.4, dtype=torch.float64), 10.0, 1.0, norm_over, "mean")
        torch.testing.assert_close(ours, ref)
        assert_grads_close(param_grads(D_ours, ours), param_grads(D_ref, ref))
    r1, r1_ref = ganops.r1_penalty(D_ours, real, 1.0, impl=impl), plain_r1(D_ref, real, 1.0)
    torch.testing.assert_close(r1, r1_ref)
    assert_grads_close(param_grads(D_ours, r1), param_grads(D_ref, r1_ref))


@pytest.mark.parametrize("impl", IMPLS)
def test_through_sle_discriminator(impl):
    """D with ganops SLE (its double backward): fused everything vs plain autograd with SLE's reference."""
    _through(_sle_d(impl), _sle_d("ref"), impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_through_spectral_norm_discriminator(impl):
    if not hasattr(ganops.nn, "spectral_norm"):
        pytest.skip("ganops.nn.spectral_norm has not landed")
    D = _sle_d(impl, sn=True).eval()  # eval: no power iteration, so both runs see the same weights
    D_ref = copy.deepcopy(D)
    _through(D, D_ref, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_through_diff_augment_discriminator(impl):
    if not hasattr(ganops, "diff_augment"):
        pytest.skip("ganops.diff_augment has not landed (issue: DiffAugment)")

    def aug(backend):
        state = {"k": 0}

        def f(x):  # a fixed generator per call: ours and the reference draw the same parameters
            state["k"] += 1
            return ganops.diff_augment(x, "color,translation,cutout", impl=backend,
                                       generator=torch.Generator().manual_seed(state["k"]))

        return f

    _through(_sle_d(impl, augment=aug("auto" if impl != "ref" else "ref")), _sle_d("ref", augment=aug("ref")), impl)


def test_output_forms_and_reducer():
    D = patch_d()
    real, fake = batch()
    base = ganops.gradient_penalty(D, real, fake, alpha=0.5)
    tup = ganops.gradient_penalty(lambda x: (D(x), torch.zeros(1)), real, fake, alpha=0.5)
    torch.testing.assert_close(tup, base)
    dic = ganops.gradient_penalty(lambda x: {"logits": D(x), "step": 3}, real, fake, alpha=0.5)
    torch.testing.assert_close(dic, base)
    both = ganops.gradient_penalty(lambda x: {"a": D(x), "b": D(x)}, real, fake, alpha=0.5)  # sum of outputs
    torch.testing.assert_close(both, ganops.gradient_penalty(lambda x: 2 * D(x), real, fake, alpha=0.5))
    red = ganops.gradient_penalty(lambda x: (torch.zeros(1), D(x)), real, fake, alpha=0.5,
                                  output_reducer=lambda out: out[1])
    torch.testing.assert_close(red, base)
    pen, out = ganops.gradient_penalty(D, real, fake, alpha=0.5, return_output=True)
    assert out.shape == (3, 1, 8, 10) and out.requires_grad


def test_no_grad_mode_gives_value_without_graph():
    D = patch_d()
    real, fake = batch()
    with torch.no_grad():
        pen = ganops.gradient_penalty(D, real, fake, alpha=0.5)
    assert not pen.requires_grad
    torch.testing.assert_close(pen, ganops.gradient_penalty(D, real, fake, alpha=0.5).detach())


def test_compiled_discriminator_runs_eagerly_for_the_penalty():
    """torch.compile has no double backward: a compiled D is unwrapped to its eager module for the penalty."""
    torch._dynamo.reset()
    D = patch_d(dtype=torch.float32)
    Dc = torch.compile(D, backend="aot_eager")
    real, fake = batch(dtype=torch.float32)
    loss_c = Dc(fake).mean() - Dc(real).mean()  # the adversarial terms do run compiled
    pen_c = ganops.gradient_penalty(Dc, real, fake, alpha=0.3)
    pen = ganops.gradient_penalty(D, real, fake, alpha=0.3)
    torch.testing.assert_close(pen_c, pen)
    (loss_c + pen_c).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    fn_c = torch.compile(lambda x: D(x), backend="aot_eager")  # compiled functions too
    torch.testing.assert_close(ganops.r1_penalty(fn_c, real), ganops.r1_penalty(D, real))


def test_amp_bfloat16_and_grad_scaler():
    D = patch_d(dtype=torch.float32)
    real, fake = batch(dtype=torch.float32)
    ref = ganops.gradient_penalty(D, real, fake, alpha=0.5, norm_over="channel")
    ref_grads = param_grads(D, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pen = ganops.gradient_penalty(D, real, fake, alpha=0.5, norm_over="channel")
    assert pen.dtype == torch.float32
    torch.testing.assert_close(pen, ref, rtol=5e-2, atol=5e-2)
    # GradScaler (PyTorch's AMP GP recipe): scale before autograd.grad, unscale the gradient before the norm.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    pen_s = ganops.gradient_penalty(D, real, fake, alpha=0.5, norm_over="channel", scaler=scaler)
    torch.testing.assert_close(pen_s, ref, rtol=1e-5, atol=1e-6)  # the value does not depend on the scale
    D.zero_grad()
    scaler.scale(pen_s).backward()
    opt = torch.optim.SGD(D.parameters(), lr=0.0)
    scaler.unscale_(opt)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in D.parameters()]
    assert_grads_close(grads, list(ref_grads), rtol=1e-4, atol=1e-6)
    r1 = ganops.r1_penalty(D, real, 2.0, scaler=scaler)
    torch.testing.assert_close(r1, ganops.r1_penalty(D, real, 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_cpu_float16_autocast_with_grad_scaler(impl):
    """float16 autocast on the CPU (D's convs run in float16) + GradScaler: the penalty and, after unscale_, D's
    gradients match float32; a 2**16 seed overflows float16 and gives a non-finite penalty for GradScaler to skip."""
    D = patch_d(dtype=torch.float32)
    real, fake = batch(dtype=torch.float32)
    ref = ganops.gradient_penalty(D, real, fake, alpha=0.5, norm_over="channel")
    ref_grads = param_grads(D, ref)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    with torch.autocast("cpu", dtype=torch.float16):
        assert D(real).dtype == torch.float16
        pen = ganops.gradient_penalty(D, real, fake, alpha=0.5, norm_over="channel", scaler=scaler, impl=impl)
    assert pen.dtype == torch.float32
    torch.testing.assert_close(pen, ref, rtol=1e-2, atol=1e-3)
    D.zero_grad()
    scaler.scale(pen).backward()
    scaler.unscale_(torch.optim.SGD(D.parameters(), lr=0.0))
    for p, r in zip(D.parameters(), ref_grads):
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        assert (g - r).abs().max() <= 5e-2 * r.abs().max() + 1e-6
    with torch.autocast("cpu", dtype=torch.float16):
        over = ganops.r1_penalty(D, real, 1.0, impl=impl, scaler=torch.amp.GradScaler("cpu"))  # 2**16 > fp16 max
    assert not torch.isfinite(over)


def test_lazy_regularizer():
    D = patch_d()
    real, _ = batch()
    lazy = ganops.LazyRegularizer(every=4)
    assert [lazy.due(s) for s in range(6)] == [True, False, False, False, True, False]
    assert lazy(1, ganops.r1_penalty, D, real, gamma=1.0) is None
    torch.testing.assert_close(lazy(8, ganops.r1_penalty, D, real, gamma=1.0), 4 * plain_r1(D, real, 1.0))
    pen, out = lazy(0, ganops.r1_penalty, D, real, gamma=1.0, return_output=True)
    torch.testing.assert_close(pen, 4 * plain_r1(D, real, 1.0))
    lr, betas = lazy.adam_hparams(0.0025, (0.0, 0.99))
    assert lr == pytest.approx(0.002) and betas[1] == pytest.approx(0.99 ** 0.8)
    with pytest.raises(ValueError, match="every"):
        ganops.LazyRegularizer(0)


def test_errors_are_clear():
    D = patch_d()
    real, fake = batch()
    with pytest.raises(ValueError, match="same shape"):
        ganops.gradient_penalty(D, real, fake[:, :, :4])
    with pytest.raises(ValueError, match="does not require grad"):
        ganops.gradient_penalty(lambda x: D(x).detach(), real, fake)
    with pytest.raises(ValueError, match="does not depend on its input"):
        ganops.gradient_penalty(lambda x: D(real), real, fake)
    with pytest.raises(ValueError, match="nothing to differentiate"):
        ganops.gradient_penalty(lambda x: {"n": 3}, real, fake)
    with pytest.raises(TypeError, match="tensor, tuple/list or dict"):
        ganops.gradient_penalty(lambda x: 3.0, real, fake)
    with pytest.raises(ValueError, match="alpha must be"):
        ganops.gradient_penalty(D, real, fake, alpha="per_pixel")
    with pytest.raises(ValueError, match="norm_over"):
        ganops.gradient_penalty(D, real, fake, norm_over="pixel")
    with pytest.raises(ValueError, match="reduce"):
        ganops.r1_penalty(D, real, reduce="avg")


@requires_cuda
@pytest.mark.parametrize("impl", backends("cuda", "triton"))
def test_cuda_backends_and_fp16_grad_scaler(impl):
    D = patch_d(dtype=torch.float32).cuda()
    real, fake = (t.cuda() for t in batch(dtype=torch.float32))
    for norm_over in ("sample", "channel"):
        ref = plain_gp(D, real, fake, torch.full((3,), 0.3, device="cuda"), 10.0, 1.0, norm_over, "mean")
        pen = ganops.gradient_penalty(D, real, fake, alpha=0.3, norm_over=norm_over, impl=impl)
        torch.testing.assert_close(pen, ref, rtol=1e-4, atol=1e-5)
        assert_grads_close(param_grads(D, pen), param_grads(D, ref), rtol=1e-4, atol=1e-5)
    # float16 autocast + GradScaler: the unscaled penalty matches float32 to fp16 accuracy and stays finite.
    # (At the default 2**16 the per-logit gradient 1 * scale overflows float16 once; GradScaler then skips a step
    # and halves the scale, as for any loss. Start lower so this single step is finite.)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10)
    with torch.autocast("cuda", dtype=torch.float16):
        pen16 = ganops.gradient_penalty(D, real, fake, alpha=0.3, norm_over="channel", scaler=scaler, impl=impl)
    ref = ganops.gradient_penalty(D, real, fake, alpha=0.3, norm_over="channel", impl="ref")
    assert pen16.dtype == torch.float32 and torch.isfinite(pen16)
    torch.testing.assert_close(pen16, ref, rtol=2e-2, atol=2e-3)
    D.zero_grad()
    scaler.scale(pen16).backward()
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)
