# SPDX-License-Identifier: BSD-3-Clause
"""Memory-layout helpers shared by the compiled ops' fake kernels and the Triton launchers."""
from __future__ import annotations

import torch

__all__ = ["dense_output_like"]


def dense_output_like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised output in a layout the NCHW/NHWC kernels write.

    ``empty_like(x)`` when that is NCHW- or NHWC-contiguous; otherwise (a dense input in another permutation, which
    ``empty_like`` would keep) a contiguous tensor.
    """
    out = torch.empty_like(x)
    if out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last):
        return out
    return torch.empty_like(x, memory_format=torch.contiguous_format)
