# SPDX-License-Identifier: BSD-3-Clause
"""ganops: fused kernels and recipes for data-efficient GAN training."""
from __future__ import annotations

from . import _ext
from ._dispatch import BACKENDS, backend_status, registry, use_impl
from .ops import diff_augment, diff_augment_params, diff_augment_ref, sle, sle_ref
from .ops import spectral_norm_weight, spectral_norm_weights
from .ops import LazyRegularizer, gradient_penalty, r1_penalty, r2_penalty

__version__ = "0.1.0"

__all__ = ["__version__", "BACKENDS", "backend_status", "registry", "use_impl", "diff_augment", "diff_augment_params",
           "diff_augment_ref", "sle", "sle_ref", "nn"]
__all__ += ["gradient_penalty", "r1_penalty", "r2_penalty", "LazyRegularizer"]
__all__ += ["spectral_norm_weight", "spectral_norm_weights"]


def __getattr__(name):  # lazy submodules keep `import ganops` light
    import importlib

    if name in ("nn", "ops", "train", "metrics", "models", "triton"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ganops' has no attribute {name!r}")
