# SPDX-License-Identifier: BSD-3-Clause
"""Settings shared by the Triton kernels: autotune switch read at call time, launch helpers."""
from __future__ import annotations

import os

__all__ = ["autotune_enabled", "interpreting"]


def autotune_enabled() -> bool:
    """GANOPS_AUTOTUNE=1 enables autotuning (read at call time); never under the interpreter."""
    return os.environ.get("GANOPS_AUTOTUNE", "0") == "1" and not interpreting()


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
