# SPDX-License-Identifier: BSD-3-Clause
"""Load the compiled extension ganops._C once; record why it failed instead of raising."""
from __future__ import annotations

import json
import os
import traceback
import warnings

import torch

__all__ = ["loaded", "load_error", "build_info", "has_ops", "assert_has_ops", "has_kernel", "cuda_compiled"]

loaded: bool = False
load_error: str | None = None
_HERE = os.path.dirname(os.path.abspath(__file__))


def _load() -> None:
    global loaded, load_error
    if os.environ.get("GANOPS_DISABLE_EXT", "") not in ("", "0"):
        load_error = "disabled by GANOPS_DISABLE_EXT"
        return
    try:
        from . import _C  # noqa: F401  (registers the ganops:: ops with the dispatcher)

        loaded = True
    except Exception as e:  # noqa: BLE001 - any failure must leave a working pure-Python package
        load_error = f"{type(e).__name__}: {e}"
        if os.environ.get("GANOPS_DEBUG_LOAD"):
            traceback.print_exc()
        warnings.warn(
            f"ganops: the compiled extension could not be loaded ({load_error}); ops fall back to the "
            "reference (and Triton) implementations. Rebuild with `pip install --no-build-isolation -e .` "
            "against torch " + torch.__version__ + "; GANOPS_DEBUG_LOAD=1 prints the traceback.",
            RuntimeWarning,
            stacklevel=3,
        )


def build_info() -> dict:
    """How the extension was built (written by setup.py), or {} when unknown."""
    path = os.path.join(_HERE, "build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def has_kernel(op: str, key: str) -> bool:
    """True if ``ganops::<op>`` has a kernel for dispatch key ``key`` ("CPU", "CUDA")."""
    if not loaded:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"ganops::{op}", key))
    except RuntimeError:
        return False


def cuda_compiled() -> bool:
    """True if the loaded extension contains CUDA kernels (compiled, whether or not a GPU exists)."""
    return loaded and has_kernel("sle_forward", "CUDA")


def has_ops() -> bool:
    return loaded


def assert_has_ops() -> None:
    if not loaded:
        raise RuntimeError(
            f"ganops._C is not available ({load_error}). Build it with "
            "`pip install --no-build-isolation -e .` (see README: Building)."
        )


_load()
