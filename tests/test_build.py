# SPDX-License-Identifier: BSD-3-Clause
"""The installed extension: loaded, CPU and CUDA kernels for every compiled op, info command works."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import ganops
import ganops.ops  # noqa: F401  (registers every op)
from ganops._dispatch import registry

COMPILED = sorted({op.compiled for op in registry().values() if op.compiled})
COMPILED_CUDA = {op.compiled for op in registry().values() if op.compiled and op.cuda}


def test_extension_loaded():
    # CI builds the extension; a pure-Python install (GANOPS_BUILD_EXT=0) sets GANOPS_EXPECT_EXT=0.
    if os.environ.get("GANOPS_EXPECT_EXT", "1") == "0":
        pytest.skip("pure-Python install expected")
    assert ganops._ext.loaded, ganops._ext.load_error


@pytest.mark.parametrize("op", COMPILED)
def test_cpu_and_cuda_kernels_registered(op):
    """CI proves the CUDA code compiles: every compiled op must have CPU and CUDA kernels in the .so."""
    if not ganops._ext.loaded:
        pytest.skip("extension not loaded")
    assert ganops._ext.has_kernel(op, "CPU"), f"ganops::{op} has no CPU kernel"
    if op not in COMPILED_CUDA:
        assert not ganops._ext.has_kernel(op, "CUDA"), f"ganops::{op} has a CUDA kernel: set OpInfo.cuda"
        return  # a CPU-only op (the Winograd convolutions)
    if os.environ.get("GANOPS_EXPECT_CUDA", "1") == "0":
        pytest.skip("built without CUDA on purpose")
    assert ganops._ext.has_kernel(op, "CUDA"), f"ganops::{op} has no CUDA kernel (was the extension built with CUDA?)"


def test_info_command_lists_every_op():
    out = subprocess.run([sys.executable, "-m", "ganops", "info"], capture_output=True, text=True, check=True).stdout
    assert "torch " + torch.__version__ in out
    for name in registry():
        assert any(line.split()[0] == name for line in out.splitlines() if line.strip()), f"{name} missing from info"
    if ganops._ext.loaded:
        assert "sle" in out and "available" in out


@pytest.mark.slow
def test_import_never_fails_without_extension():
    code = ("import warnings, torch, ganops; assert not ganops._ext.loaded; "
            "x=torch.randn(2,3,4,4); g=torch.randn(2,3);"
            "torch.testing.assert_close(ganops.sle(x,g), ganops.sle_ref(x,g)); print('fallback ok')")
    env = dict(os.environ, GANOPS_DISABLE_EXT="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "fallback ok" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ganops", "info"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "NOT loaded" in r.stdout


@pytest.mark.slow
def test_explicit_backend_missing_raises_and_auto_warns_once():
    code = ("import warnings, torch, ganops\n"
            "x=torch.randn(2,3,4,4); g=torch.randn(2,3)\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    ganops.sle(x,g); ganops.sle(x,g)\n"
            "    n=sum('reference implementation' in str(m.message) for m in w)\n"
            "assert n==1, n\n"
            "try:\n    ganops.sle(x,g,impl='cpu')\nexcept RuntimeError as e:\n    print('raised', e)\n")
    env = dict(os.environ, GANOPS_DISABLE_EXT="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "raised" in r.stdout and "unavailable" in r.stdout
