# SPDX-License-Identifier: BSD-3-Clause
"""Modules built on the fused ops."""
from .condbn import CondBatchNorm2d
from .diffaug import DiffAugment
from .sle import SLE
from .spectral_norm import (SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear, SpectralNormGroup, remove_spectral_norm,
                            sn_wrap, spectral_norm, spectral_norm_group)

__all__ = ["DiffAugment", "SLE"]
__all__ += ["CondBatchNorm2d"]
__all__ += ["SNConv2d", "SNConvTranspose2d", "SNEmbedding", "SNLinear", "SpectralNormGroup", "remove_spectral_norm",
            "sn_wrap", "spectral_norm", "spectral_norm_group"]
