# SPDX-License-Identifier: BSD-3-Clause
"""Offline GAN metrics: LPIPS, FID/KID (standard Inception), precision/recall, SWD, memorisation check, SIFID."""
from __future__ import annotations

from ._assets import AssetMissingError
from ._images import ImageSource, open_images
from .efficientnet import EfficientNetLite0, efficientnet_features
from .features import cached_features, inception_features
from .fid import (compute_fid, compute_kid, feature_statistics, fid_from_features, frechet_distance,
                  kid_from_features, sqrtm_psd)
from .inception import FIDInceptionV3
from .lpips import LPIPS, VGG16Features, vgg16_features
from .memorization import memorization_check, nearest_training_images, pairwise_lpips
from .prdc import compute_precision_recall, prdc, precision_recall
from .sifid import diversity, sifid
from .swd import compute_swd, swd

__all__ = [
    "AssetMissingError", "ImageSource", "open_images", "LPIPS", "VGG16Features", "vgg16_features",
    "EfficientNetLite0", "efficientnet_features", "FIDInceptionV3", "inception_features", "cached_features",
    "feature_statistics", "frechet_distance", "sqrtm_psd", "fid_from_features", "kid_from_features",
    "compute_fid", "compute_kid", "precision_recall", "prdc", "compute_precision_recall", "swd", "compute_swd",
    "pairwise_lpips", "nearest_training_images", "memorization_check", "sifid", "diversity",
]
