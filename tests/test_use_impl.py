# SPDX-License-Identifier: BSD-3-Clause
"""ganops.use_impl: one scoped route for the backend choice (a training run's --impl), instead of writing
GANOPS_IMPL into the process environment and leaving it there; and the dispatch layer's Triton kernel loaders."""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch

import ganops
from ganops._dispatch import default_impl, registry, resolve_impl_cached, triton_loader


def test_use_impl_scopes_auto_and_restores(monkeypatch):
    monkeypatch.delenv("GANOPS_IMPL", raising=False)
    x = torch.randn(2, 3, 4, 4)
    auto = resolve_impl_cached("sle", "auto", x)
    with ganops.use_impl("ref"):
        assert default_impl() == "ref" and resolve_impl_cached("sle", "auto", x) == "ref"
        with ganops.use_impl("auto"):  # "auto" keeps the enclosing choice
            assert resolve_impl_cached("sle", "auto", x) == "ref"
        assert resolve_impl_cached("sle", "cpu" if auto == "cpu" else "ref", x) in ("cpu", "ref")  # explicit wins
    assert resolve_impl_cached("sle", "auto", x) == auto and "GANOPS_IMPL" not in os.environ
    with pytest.raises(RuntimeError, match="boom"):
        with ganops.use_impl("ref"):
            raise RuntimeError("boom")
    assert default_impl() == "auto"
    monkeypatch.setenv("GANOPS_IMPL", "ref")  # the environment variable still works, below a scope
    assert resolve_impl_cached("sle", "auto", x) == "ref"
    with pytest.raises(ValueError, match="impl must be one of"):
        with ganops.use_impl("nope"):
            pass


def test_train_loop_impl_is_scoped_to_the_run(tmp_path, monkeypatch):
    """TrainLoop's --impl applies inside run() and leaves the process environment as it found it."""
    from ganops.train import TrainLoop

    monkeypatch.delenv("GANOPS_IMPL", raising=False)
    cfg = dict(iters=1, device="cpu", outdir=str(tmp_path), impl="ref", resolution=16, batch=2, snap=0,
               sample_every=0, workers=0)
    loop = TrainLoop("scoped", cfg, dataset=None)
    seen = []
    x = torch.randn(2, 3, 4, 4)

    def step(batch, it):
        seen.append(default_impl())
        y = ganops.sle(x, torch.zeros(2, 3))
        return {"loss": y.sum()}

    lin = torch.nn.Linear(1, 1)
    loop.run(step, models={"m": lin}, optimizers={"m": torch.optim.SGD(lin.parameters(), 0.1)})
    assert seen == ["ref"]
    assert "GANOPS_IMPL" not in os.environ and default_impl() == "auto"


def test_triton_loader_loads_once_and_retries_a_failed_import(monkeypatch):
    calls = []
    broken = triton_loader("no_such_kernels", lambda: calls.append("broken"))
    for _ in range(2):  # a failed import is not cached: it raises again, and registers nothing
        with pytest.raises(ModuleNotFoundError, match="ganops.triton.no_such_kernels"):
            broken()
    fake = types.ModuleType("ganops.triton.fake_kernels")
    monkeypatch.setitem(sys.modules, "ganops.triton.fake_kernels", fake)
    load = triton_loader("fake_kernels", lambda: calls.append("fake"))
    assert load() is fake and load() is fake and calls == ["fake"]  # imported and registered once
    assert "ganops.triton.fake_kernels" in load.__doc__


def test_each_triton_op_loads_through_its_modules_loader():
    mod = {name: sys.modules[f"ganops.ops.{name}"] for name in ("sle", "diffaug", "penalty", "spectral_norm")}
    ops = registry()
    assert ops["sle"].load_triton is mod["sle"].triton_kernels
    assert ops["diff_augment"].load_triton is mod["diffaug"].triton_kernels
    assert ops["gp_interpolate"].load_triton is ops["gp_norm_penalty"].load_triton is mod["penalty"].triton_kernels
    assert ops["spectral_norm"].load_triton is mod["spectral_norm"].triton_kernels
    assert {name for name, info in ops.items() if info.triton} == {"sle", "diff_augment", "gp_interpolate",
                                                                   "gp_norm_penalty", "spectral_norm"}
