# SPDX-License-Identifier: BSD-3-Clause
"""Fused ops: one module per op, each with its public function, reference, and registrations."""
from . import winograd  # noqa: F401  (the Winograd 3x3 convolutions, "conv3x3": used as ganops.ops.winograd.*)
from .diffaug import diff_augment, diff_augment_params, diff_augment_ref
from .sle import sle, sle_ref
from .spectral_norm import spectral_norm_weight, spectral_norm_weights
from .penalty import LazyRegularizer, gradient_penalty, interpolate, norm_penalty, r1_penalty, r2_penalty

__all__ = ["diff_augment", "diff_augment_params", "diff_augment_ref", "sle", "sle_ref"]
__all__ += ["gradient_penalty", "r1_penalty", "r2_penalty", "LazyRegularizer", "interpolate", "norm_penalty"]
__all__ += ["spectral_norm_weight", "spectral_norm_weights"]
