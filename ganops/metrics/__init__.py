# SPDX-License-Identifier: BSD-3-Clause
"""Offline GAN metrics: LPIPS, FID/KID (standard Inception), precision/recall, SWD, memorisation check."""
from __future__ import annotations

from ._assets import AssetMissingError
from .lpips import LPIPS, VGG16Features, vgg16_features

__all__ = ["AssetMissingError", "LPIPS", "VGG16Features", "vgg16_features"]
