# SPDX-License-Identifier: BSD-3-Clause
"""The ground floor for image data: file listing, decoding, RGB conversion and the embedded default datasets.

``ganops.train`` (training datasets) and ``ganops.metrics`` (image sets to measure) both read images through this
package; it imports torch, numpy and PIL only, never a higher ganops layer.
"""
from __future__ import annotations

from .builtin import (BUILTINS, SINGLE_IMAGE, TWEMOJI_ATTRIBUTION, BuiltinData, builtin_name, is_builtin,
                      load_builtin)
from .images import (IMAGE_SUFFIXES, DataError, list_images, pil_to_uint8, read_image, read_rgb, to_rgb, to_uint8,
                     visible_files)

__all__ = [
    "IMAGE_SUFFIXES", "DataError", "visible_files", "list_images", "read_image", "to_rgb", "read_rgb", "pil_to_uint8",
    "to_uint8", "BUILTINS", "SINGLE_IMAGE", "TWEMOJI_ATTRIBUTION", "BuiltinData", "builtin_name", "is_builtin",
    "load_builtin",
]
