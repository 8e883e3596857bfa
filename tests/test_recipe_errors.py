# SPDX-License-Identifier: BSD-3-Clause
"""The bad-input table: every recipe's command line on every class of bad input.

Each row runs a recipe's CLI in-process (click's CliRunner; three subprocess runs check the real entry point) and
checks what a user sees. A user's mistake ends in exactly one line, ``Error: <the path or flag>: <what is wrong>;
<what to do>``, as the last line on stderr, with exit status 2, no traceback, never torch's advice to load with
``weights_only=False``, and nothing written or overwritten (the test folder's tree, names + sizes + mtimes, is
the same before and after). Valid but unusual input (greyscale, RGBA, 16-bit, CMYK, palette images, elongated
images, one corrupt file with ``--skip-bad``, a damaged DISP prior cache) trains, with a note.

NaN in the data: the folder loaders read jpg/jpeg/png/webp/bmp, whose pixels are 8- or 16-bit integers, so NaN
reaches them only through a float image that PIL recognises by content (a 32-bit float TIFF under a .png name):
it counts as unreadable ("float image with NaN/Inf values"). The float inputs that do carry NaN are checkpoints
(``--resume``, ``--run``: refused, naming the file) and DISP's prior cache (recomputed with a note).
"""
from __future__ import annotations

import os
import runpy
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from ganops.train import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("fastgan", "disp", "consingan")
FOLDER_RECIPES = ("fastgan", "disp")  # --data is a folder of images (consingan: one image file)
TINY = {
    "fastgan": ["--ngf", "4", "--ndf", "4", "--nz", "16", "--batch", "2", "--recon-loss", "l1", "--n-sample", "2"],
    "disp": ["--ch", "2", "--batch", "2", "--prior-size", "16", "--gmm-components", "2", "--ema-decay", "0.5"],
    "consingan": ["--resolution", "40", "--min-size", "12", "--stages", "2", "--nfc", "4", "--threads", "1"],
}
COMMON = ["--iters", "1", "--snap", "0", "--device", "cpu"]
SIZE = {"fastgan": 256, "disp": 40}  # image side that trains at the recipe's default --resolution (256, 32)
OTHER_ARCH = {"fastgan": ["--ngf", "8"], "disp": ["--ch", "4"], "consingan": ["--nfc", "8"]}
FOREIGN = {"fastgan": "disp", "disp": "fastgan", "consingan": "fastgan"}  # whose checkpoint is another recipe's


# ------------------------------------------------------------------------------------------------- inputs ---
def _pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with a little noise (compresses well, is not uniform)."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) * 255 // max(1, h + w - 2)], -1)
    return np.clip(a + np.random.default_rng(seed).integers(-8, 9, a.shape), 0, 255).astype(np.uint8)


def _png16_rgb(path: Path, a: np.ndarray) -> None:
    """A 48-bit RGB PNG (PIL cannot write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def image(path: Path, kind: str = "RGB", size: tuple[int, int] = (40, 40), seed: int = 0) -> Path:
    """Write an image of ``kind`` with ``size`` = (w, h); returns its path (CMYK is a JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    a = _pixels(h, w, seed)
    if kind == "RGB":
        Image.fromarray(a).save(path)
    elif kind == "L":
        Image.fromarray(a).convert("L").save(path)
    elif kind == "RGBA":  # alpha ramp: composited on white
        Image.fromarray(np.dstack([a, a[..., :1]]), "RGBA").save(path)
    elif kind == "P":  # palette with a transparent entry
        Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path, transparency=0)
    elif kind == "I;16":  # 16-bit greyscale PNG: the "L" image's values x 257
        Image.fromarray(np.asarray(Image.fromarray(a).convert("L")).astype(np.uint16) * 257).save(path)
    elif kind == "RGB16":
        _png16_rgb(path, a.astype(np.uint16) * 257)
    elif kind == "CMYK":
        Image.fromarray(a).convert("CMYK").save(path, format="JPEG", quality=95)
    elif kind == "F-NaN":  # a float TIFF under an image suffix: PIL opens it by content
        f = a[..., 0].astype(np.float32) / 255
        f[h // 2, w // 2] = np.nan
        Image.fromarray(f, "F").save(path, format="TIFF")
    else:
        raise ValueError(kind)
    return path


def folder(root: Path, n: int = 2, kind: str = "RGB", size: tuple[int, int] = (40, 40)) -> Path:
    suffix = ".jpg" if kind == "CMYK" else ".png"
    for i in range(n):
        image(root / f"im{i}{suffix}", kind, size, seed=i)
    return root


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return path


class _Foreign:
    """A pickled Python object: what a non-ganops checkpoint may hold (weights_only loading refuses it)."""


def derived_checkpoint(src: Path, dst: Path, kind: str) -> Path:
    """A damaged or foreign copy of checkpoint ``src`` at ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if kind == "truncated":
        dst.write_bytes(data[: len(data) // 2])
    elif kind == "random-bytes":
        dst.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind == "text":
        dst.write_text("not a checkpoint\n")
    elif kind == "pickled-object":
        torch.save({"model": _Foreign(), "step": 1}, dst)
    elif kind == "state-dict":
        torch.save(torch.nn.Linear(2, 2).state_dict(), dst)
    else:
        st = torch.load(src, weights_only=True)
        if kind == "newer":
            st["format"], st["ganops_version"] = "ganops.train/99", "99.0"
        elif kind == "nan":
            w = next(v for v in st["models"]["G"].values() if v.is_floating_point())
            w.view(-1)[0] = float("nan")
        elif kind == "wrong-shape":  # hand-edited: G's first tensor (and the EMA copy's) replaced by a 3x3 one
            for sd in (st["models"]["G"], st.get("ema", {}).get("G_ema", {}).get("module", {})):
                if sd:
                    sd[next(iter(sd))] = torch.zeros(3, 3)
        else:
            raise ValueError(kind)
        torch.save(st, dst)
    return dst


# ------------------------------------------------------------------------------------------------ fixtures ---
@pytest.fixture(scope="module")
def clis() -> dict:
    return {r: runpy.run_path(str(ROOT / "recipes" / f"{r}.py"), run_name=f"{r}_recipe")["cli"] for r in RECIPES}


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def invoke(clis: dict, recipe: str, args: list[str], env: dict | None = None) -> Result:
    return CliRunner().invoke(clis[recipe], args, env=env)


def train_args(recipe: str, base: Path, *extra: str) -> list[str]:
    args = ["train", *TINY[recipe], *COMMON, "--outdir", str(base / "runs")]
    if recipe == "fastgan":
        args += ["--workers", "0", "--sample-every", "0"]
    if recipe == "disp":
        args += ["--workers", "0", "--sample-every", "0", "--cache-dir", str(base / "cache")]
    return args + list(extra)


@pytest.fixture(scope="module")
def trained(clis, tmp_path_factory) -> dict:
    """One finished tiny run per recipe: {recipe: run dir}, plus 'cs_image' (the ConSinGAN image) and 'cache'
    (DISP's prior cache, filled by its run)."""
    base = tmp_path_factory.mktemp("trained")
    out: dict = {"cs_image": image(base / "cs.png", size=(20, 16))}
    for r in RECIPES:
        extra = ["--data", str(out["cs_image"])] if r == "consingan" else []
        res = invoke(clis, r, train_args(r, base / r, *extra))
        assert res.exit_code == 0, res.output
        out[r] = next((base / r / "runs").glob(f"*-{r}"))
    out["cache"] = base / "disp" / "cache"
    assert list(out["cache"].glob("disp-priors-*.pt"))
    return out


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with (is_dir, size, mtime_ns)."""
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def assert_one_line_error(res: Result, *needles: str) -> str:
    """Exit status 2, no traceback, one `Error:` line, last on stderr, holding every needle."""
    out = res.output
    assert res.exit_code == 2, f"exit {res.exit_code}, {res.exception!r}\n{out[-3000:]}"
    assert "Traceback" not in out and "weights_only" not in out, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out[-3000:]
    assert res.stderr.strip().splitlines()[-1] == errors[0], res.stderr[-2000:]
    for s in needles:
        assert s in errors[0], (s, errors[0])
    return errors[0]


# --------------------------------------------------------------------------------------------------- table ---
@dataclass
class Row:
    """One bad input: ``args(tmp, trained) -> command line``; ``expect`` 'error' (exit 2, one line holding each of
    ``needles``, nothing written) or 'ok' (trains or, with --dry-run, starts; each needle in the output)."""

    case: str
    recipe: str
    args: Callable[[Path, dict], list[str]]
    expect: str
    needles: tuple[str, ...] = ()
    behaviour: str = ""
    check: Callable[[Path, dict], None] | None = field(default=None, repr=False)


def _train(recipe: str, data: Callable[[Path], Path] | None = None, *extra: str):
    """train with --data from ``data(tmp)`` (default: the recipe's default data; consingan: the fixture's image)."""
    def args(tmp: Path, tr: dict) -> list[str]:
        d = data(tmp) if data else (tr["cs_image"] if recipe == "consingan" else None)
        return train_args(recipe, tmp, *(["--data", str(d)] if d is not None else []), *extra)
    return args


def _resume(recipe: str, kind: str):
    """train --resume CK with a damaged/foreign checkpoint (or a path that is not a checkpoint)."""
    def args(tmp: Path, tr: dict) -> list[str]:
        src = latest_checkpoint(tr[recipe])
        if kind == "missing":
            ck = tmp / "nope.pt"
        elif kind == "folder":  # a folder where a checkpoint file is expected
            ck = tmp / "not-a-run"
            ck.mkdir()
        elif kind == "other-recipe":
            ck = tmp / "other.pt"
            shutil.copy(latest_checkpoint(tr[FOREIGN[recipe]]), ck)
        elif kind == "other-arch":
            ck = tmp / "same.pt"
            shutil.copy(src, ck)
        else:
            ck = derived_checkpoint(src, tmp / f"{kind}.pt", kind)
        extra = OTHER_ARCH[recipe] if kind == "other-arch" else []
        if recipe == "disp" and kind == "wrong-shape":  # fails once the priors are known: reuse the run's cache
            extra = ["--cache-dir", str(tr["cache"])]
        return _train(recipe)(tmp, tr) + ["--resume", str(ck), *extra]
    return args


def _resume_auto_damaged(recipe: str):
    """--resume auto whose newest run's latest checkpoint is truncated."""
    def args(tmp: Path, tr: dict) -> list[str]:
        run = shutil.copytree(tr[recipe], tmp / "runs" / tr[recipe].name)
        ck = latest_checkpoint(run)
        ck.write_bytes(ck.read_bytes()[:1000])
        return _train(recipe)(tmp, tr) + ["--resume", "auto"]
    return args


def _run(recipe: str, kind: str):
    """generate --run CK (a damaged/foreign checkpoint), output inside the test folder."""
    def args(tmp: Path, tr: dict) -> list[str]:
        if kind == "other-recipe":
            ck = Path(shutil.copytree(tr[FOREIGN[recipe]], tmp / "other"))
        else:
            run = Path(shutil.copytree(tr[recipe], tmp / "run"))
            ck = derived_checkpoint(latest_checkpoint(run), run / f"checkpoint-{kind}.pt", kind)
        return ["generate", "--run", str(ck), "--out", str(tmp / "out.png")]
    return args


def _out_under_a_file(recipe: str):
    """generate --run RUN --out FILE/x.png: the output's folder is a file."""
    def args(tmp: Path, tr: dict) -> list[str]:
        (tmp / "a-file").write_text("x")
        run = shutil.copytree(tr[recipe], tmp / "run")
        return ["generate", "--run", str(run), "--out", str(tmp / "a-file" / "x.png")]
    return args


def _sub(recipe: str, command: str, *extra: str, damage: str | None = None):
    """Another subcommand on the finished run (copied into the test folder; ``damage`` truncates one of its files),
    e.g. eval --real TMP/nope with TMP the test folder."""
    def args(tmp: Path, tr: dict) -> list[str]:
        rd = Path(shutil.copytree(tr[recipe], tmp / "run"))
        if damage:
            (rd / damage).write_bytes((rd / damage).read_bytes()[:10])
        return [command, "--run", str(rd), *(a.replace("TMP", str(tmp)) for a in extra)]
    return args


def _outdir(recipe: str, kind: str):
    def args(tmp: Path, tr: dict) -> list[str]:
        f = tmp / "a-file"
        f.write_text("x")
        out = f / "runs" if kind == "under-a-file" else f
        return [a if a != str(tmp / "runs") else str(out) for a in _train(recipe)(tmp, tr)]
    return args


def _cache_is_finite(tmp: Path, tr: dict) -> None:
    for f in (tmp / "cache").glob("disp-priors-*.pt"):
        assert torch.isfinite(torch.load(f, weights_only=True)["priors"]).all()


def _nan_cache(tmp: Path, tr: dict) -> list[str]:
    cache = shutil.copytree(tr["cache"], tmp / "cache")
    for f in cache.glob("disp-priors-*.pt"):
        blob = torch.load(f, weights_only=True)
        blob["priors"][0, 0] = float("nan")
        torch.save(blob, f)
    return train_args("disp", tmp)


MODES = ("L", "RGBA", "P", "I;16", "RGB16", "CMYK")  # grayscale, RGBA, palette, 16-bit grey and RGB, CMYK


def _folder_rows(r: str) -> list[Row]:
    """fastgan and disp: --data is a folder of images."""
    s, big = SIZE[r], (SIZE[r], SIZE[r])
    return [
        Row("missing-folder", r, _train(r, lambda t: t / "nope"), "error", ("--data", "nope: does not exist"),
            "exit 2: the folder does not exist; names a builtin to try"),
        Row("empty-folder", r, _train(r, lambda t: (t / "empty").mkdir() or (t / "empty")), "error",
            ("empty: no images found",), "exit 2: no images found (searched recursively)"),
        Row("only-corrupt", r, _train(r, lambda t: corrupt(corrupt(t / "d" / "a.png").parent / "b.png").parent),
            "error", ("none of its 2 image file(s) can be read", "a.png"),
            "exit 2: no readable image (--skip-bad would leave nothing)"),
        Row("only-corrupt+skip-bad", r, _train(r, lambda t: corrupt(t / "d" / "a.png").parent, "--skip-bad"),
            "error", ("none of its 1 image file(s) can be read",), "exit 2, as without --skip-bad"),
        Row("one-corrupt-of-many", r, _train(r, lambda t: corrupt(folder(t / "d", 3, size=big) / "bad.png")
                                             .parent), "error", ("1 unreadable image(s): bad.png", "--skip-bad"),
            "exit 2 naming the file and --skip-bad"),
        Row("one-corrupt-of-many+skip-bad", r, _train(r, lambda t: corrupt(folder(t / "d", 3, size=big)
                                                                           / "bad.png").parent, "--skip-bad"),
            "ok", ("bad.png", "skipped (--skip-bad)"), "trains on the 3 readable images, with a note"),
        *[Row(f"mode-{m}", r, _train(r, lambda t, m=m: folder(t / "d", 2, m, big)), "ok",
              () if m == "RGB16" else (f"2 {m} image(s) converted to RGB",),
              "trains" + ("" if m == "RGB16" else ", with a note: converted to RGB (alpha on white, 16-bit "
                                                  "scaled to 8)")) for m in MODES],
        Row("too-small", r, _train(r, lambda t: folder(t / "d", 2, size=(s // 2, s // 2)))
            if r == "fastgan" else _train(r, lambda t: folder(t / "d", 2, size=big), "--resolution", "64"),
            "error", ("2 image(s) smaller than --resolution", "--allow-upscale")
            + (("smallest --resolution is 256",) if r == "fastgan" else ("pass --resolution 32 or lower",)),
            "exit 2: names the images, a --resolution the recipe takes, or --allow-upscale"),
        Row("aspect-4:1", r, _train(r, lambda t: folder(t / "d", 2, size=(4 * s, s))), "ok",
            ("more than 2:1 keep less than half their area",), "trains, with a note: the centre crop"),
        Row("aspect-20:1-too-thin", r, _train(r, lambda t: folder(t / "d", 2, size=(10 * s, s // 2))), "error",
            ("smaller than --resolution",), "exit 2: the short side is below --resolution"),
        Row("file-instead-of-folder", r, _train(r, lambda t: image(t / "one.png", size=big)), "error",
            ("one.png: is a file, not a directory", "pass --data"),
            "exit 2: --data takes a folder; names the image's folder"),
        Row("nan-float-image", r, _train(r, lambda t: image(folder(t / "d", 2, size=big) / "nan.png", "F-NaN",
                                                             big).parent), "error",
            ("nan.png", "float image with NaN/Inf values", "--skip-bad"),
            "exit 2: a float image with NaN counts as unreadable"),
        Row("unknown-builtin", r, _train(r, lambda t: Path("builtin:nope")), "error",
            ("--data builtin:nope: unknown builtin dataset",), "exit 2, listing the builtins"),
    ]


def _table() -> list[Row]:
    rows = [row for r in FOLDER_RECIPES for row in _folder_rows(r)]
    c = "consingan"
    rows += [
        Row("missing-file", c, _train(c, lambda t: t / "nope.png"), "error", ("--data", "nope.png: no such file"),
            "exit 2"),
        Row("empty-folder", c, _train(c, lambda t: (t / "empty").mkdir() or (t / "empty")), "error",
            ("needs one image file, found 0",), "exit 2"),
        Row("corrupt-file", c, _train(c, lambda t: corrupt(t / "bad.png")), "error",
            ("bad.png: cannot read image",), "exit 2"),
        Row("folder-instead-of-file", c, _train(c, lambda t: folder(t / "d", 2)), "error",
            ("a single-image GAN needs one image file, found 2", "pass the file path"), "exit 2"),
        Row("folder-with-one-image", c, _train(c, lambda t: folder(t / "d", 1), "--dry-run"), "ok", ("dry run",),
            "starts: a folder holding one image stands for it"),
        *[Row(f"mode-{m}", c, _train(c, lambda t, m=m: image(t / ("x.jpg" if m == "CMYK" else "x.png"), m,
                                                               (54, 40)), "--dry-run"), "ok",
              () if m == "RGB16" else (f"is {m}; converted to RGB",), "starts, with a note") for m in MODES],
        Row("too-small", c, _train(c, lambda t: image(t / "s.png", size=(10, 10))), "error",
            ("s.png: the image is 10x10, smaller than --min-size 12",), "exit 2"),
        Row("aspect-10:1", c, _train(c, lambda t: image(t / "w.png", size=(400, 40))), "error",
            ("--resolution 40: the image becomes 4x40",), "exit 2: the short side falls below --min-size"),
        Row("nan-float-image", c, _train(c, lambda t: image(t / "nan.png", "F-NaN")), "error",
            ("nan.png: cannot read image", "float image with NaN/Inf values"), "exit 2"),
    ]
    for r in RECIPES:
        damaged = "damaged or not a ganops checkpoint"
        rows += [
            Row("resume-missing", r, _resume(r, "missing"), "error", ("--resume", "nope.pt: no such checkpoint",),
                "exit 2"),
            Row("resume-folder-without-latest", r, _resume(r, "folder"), "error",
                ("not-a-run: run directory has no 'latest'",), "exit 2"),
            *[Row(f"resume-{k}", r, _resume(r, k), "error", (f"{k}.pt: {damaged}",) + why,
                  f"exit 2: damaged or not a ganops checkpoint ({why[0] if why else ''})")
              for k, why in (("truncated", ("truncated, or not a torch zip archive",)),
                             ("random-bytes", ()), ("empty", ("empty or ends early",)), ("text", ()),
                             ("pickled-object", ("pickled Python object of class", "left unpickled")))],
            Row("resume-state-dict", r, _resume(r, "state-dict"), "error",
                ("state-dict.pt: not a ganops checkpoint", "bare state_dict"), "exit 2"),
            Row("resume-other-recipe", r, _resume(r, "other-recipe"), "error",
                (f"other.pt: a '{FOREIGN[r]}' checkpoint, not '{r}'",), "exit 2"),
            Row("resume-other-architecture", r, _resume(r, "other-arch"), "error",
                ("same.pt: the architecture config differs in", OTHER_ARCH[r][0][2:]),
                "exit 2: lists the differing keys"),
            Row("resume-newer-ganops", r, _resume(r, "newer"), "error",
                ("newer.pt: written by a newer ganops (99.0", "upgrade ganops"), "exit 2"),
            Row("resume-nan-weights", r, _resume(r, "nan"), "error", ("nan.pt: holds NaN/Inf values", "models.G."),
                "exit 2: use an earlier checkpoint"),
            Row("resume-wrong-shape", r, _resume(r, "wrong-shape"), "error",
                ("wrong-shape.pt: models['G'] does not fit this", "size mismatch"),
                "exit 2: names the first mismatching tensors (a hand-edited checkpoint)"),
            Row("resume-auto-damaged-latest", r, _resume_auto_damaged(r), "error", ("--resume", damaged),
                "exit 2 naming the run's latest checkpoint; the run is left as it was"),
            *[Row(f"run-{k}", r, _run(r, k), "error", ("--run",) + needles, "exit 2")
              for k, needles in (("truncated", (damaged,)), ("pickled-object", (damaged,)),
                                 ("other-recipe", (f"a '{FOREIGN[r]}' checkpoint",)),
                                 ("newer", ("written by a newer ganops",)), ("nan", ("holds NaN/Inf values",)),
                                 ("wrong-shape", ("does not fit this", "size mismatch")))],
            Row("out-under-a-file", r, _out_under_a_file(r), "error", ("a-file/x.png: Not a directory",),
                "exit 2: an OSError on a path the user gave is one line too"),
            Row("outdir-under-a-file", r, _outdir(r, "under-a-file"), "error",
                ("--outdir", "a-file is a file", "choose another --outdir"), "exit 2, before the data pass"),
            Row("outdir-is-a-file", r, _outdir(r, "is-a-file"), "error",
                ("--outdir", "exists and is not a directory"), "exit 2"),
        ]
    rows += [
        Row("option-conflict", "fastgan", _train("fastgan", None, "--resolution", "128"), "error",
            ("--resolution must be one of",), "exit 2 (click usage error)"),
        Row("option-conflict", "disp", _train("disp", None, "--resolution", "256"), "error",
            ("--resolution must be 32, 64 or 128",), "exit 2 (click usage error)"),
        Row("option-conflict", "consingan", _train("consingan", None, "--reseed", "3"), "error",
            ("--reseed applies to --resume",), "exit 2 (click usage error)"),
        Row("eval-real-missing", "fastgan", _sub("fastgan", "eval", "--real", "TMP/nope"), "error",
            ("--real", "nope: does not exist"), "exit 2"),
        Row("generate-image-missing", "disp", _sub("disp", "generate", "--mode", "image", "--image", "TMP/nope.png",
                                                   "--out", "TMP/o.png"), "error",
            ("--image", "nope.png: no such file"), "exit 2"),
        Row("run-damaged-priors", "disp", _sub("disp", "generate", "--out", "TMP/o.png", damage="priors.pt"), "error",
            ("priors.pt: damaged or not a ganops checkpoint", "train --resume auto"), "exit 2"),
        Row("harmonize-naive-missing", "consingan", _sub("consingan", "harmonize", "--naive", "TMP/nope.png",
                                                         "--mask", "TMP/nope.png", "--out", "TMP/o.png"), "error",
            ("--naive", "nope.png: no such file"), "exit 2"),
        Row("nan-prior-cache", "disp", _nan_cache, "ok", ("holds NaN/Inf values (a damaged file); recomputing",),
            "trains: the damaged cache entry is recomputed and rewritten, with a note", _cache_is_finite),
    ]
    return rows


TABLE = _table()


@pytest.mark.parametrize("row", TABLE, ids=[f"{r.recipe}-{r.case}" for r in TABLE])
def test_bad_input(row: Row, clis, trained, tmp_path):
    args = row.args(tmp_path, trained)
    if row.expect == "ok" and row.recipe == "disp" and row.case.startswith(("mode-", "aspect", "one-corrupt")):
        args.append("--baseline")  # no prior extractor: the data path is what this row tests
    before = snapshot(tmp_path)
    res = invoke(clis, row.recipe, args)
    if row.expect == "error":  # row.behaviour says what a user gets
        assert_one_line_error(res, *row.needles)
        assert snapshot(tmp_path) == before, "an error wrote or changed files"
    else:
        assert res.exit_code == 0, f"{res.exception!r}\n{res.output[-3000:]}"
        assert "Traceback" not in res.output and not any(ln.startswith("Error:") for ln in res.output.splitlines())
        for s in row.needles:
            assert s in res.output, (s, res.output[-3000:])
        if "--dry-run" in args:
            assert snapshot(tmp_path) == before
        else:
            assert latest_checkpoint(next((tmp_path / "runs").glob(f"*-{row.recipe}"))) is not None
    if row.check:
        row.check(tmp_path, trained)


def test_the_table_covers_every_class():
    """Each recipe meets each class of bad input the issue lists (or the class does not apply, see the docstring)."""
    cases = {(r.recipe, r.case) for r in TABLE}
    for r in RECIPES:
        for c in ("resume-truncated", "resume-pickled-object", "resume-other-recipe", "resume-other-architecture",
                  "resume-newer-ganops", "resume-nan-weights", "resume-wrong-shape", "run-truncated", "run-wrong-shape",
                  "outdir-under-a-file", "nan-float-image", "too-small", "option-conflict",
                  *(f"mode-{m}" for m in MODES)):
            assert (r, c) in cases, (r, c)
    for r in FOLDER_RECIPES:
        for c in ("missing-folder", "empty-folder", "only-corrupt", "one-corrupt-of-many",
                  "one-corrupt-of-many+skip-bad", "file-instead-of-folder", "aspect-4:1", "aspect-20:1-too-thin"):
            assert (r, c) in cases, (r, c)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder: permission bits do not stop it")
@pytest.mark.parametrize("recipe", RECIPES)
def test_read_only_outdir(recipe, clis, trained, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        args = [a if a != str(tmp_path / "runs") else str(ro / "runs") for a in _train(recipe)(tmp_path, trained)]
        before = snapshot(tmp_path)
        assert_one_line_error(invoke(clis, recipe, args), "--outdir", "not writable by this user")
        assert snapshot(tmp_path) == before
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("recipe", RECIPES)
def test_outdir_without_write_permission(recipe, clis, trained, tmp_path, monkeypatch):
    """The read-only --outdir as a non-root user meets it, also when the tests run as root: os.access says no."""
    import ganops.train.rundir as rundir

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(rundir.os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    args = [a if a != str(tmp_path / "runs") else str(ro) for a in _train(recipe)(tmp_path, trained)]
    before = snapshot(tmp_path)
    assert_one_line_error(invoke(clis, recipe, args), f"--outdir {ro}: not writable by this user")
    args = [a if a != str(ro) else str(ro / "runs") for a in args]  # a new folder inside it
    assert_one_line_error(invoke(clis, recipe, args), f"{ro} is not writable by this user")
    assert snapshot(tmp_path) == before


def test_16bit_and_cmyk_load_like_their_8bit_versions(tmp_path):
    """16-bit PNGs are scaled to 8 bits (PIL's own conversion clips them at 255: a white image), CMYK is converted."""
    from ganops.train import load_single_image, open_dataset

    ref = open_dataset(folder(tmp_path / "rgb", 1, "L", (32, 32)), 32, verbose=False)[0]
    for kind, tol in (("I;16", 1e-6), ("RGB16", None)):
        x = open_dataset(folder(tmp_path / kind, 1, kind, (32, 32)), 32, verbose=False)[0]
        if tol:
            torch.testing.assert_close(x, ref, atol=tol, rtol=0)
        else:
            torch.testing.assert_close(x, open_dataset(folder(tmp_path / "c", 1, "RGB", (32, 32)), 32,
                                                       verbose=False)[0], atol=1e-6, rtol=0)
    assert load_single_image(image(tmp_path / "g.png", "I;16", (32, 32)))[0].std() > 0.3
    cmyk = open_dataset(folder(tmp_path / "cmyk", 1, "CMYK", (32, 32)), 32, verbose=False)[0]
    rgb = open_dataset(folder(tmp_path / "rgb8", 1, "RGB", (32, 32)), 32, verbose=False)[0]
    assert (cmyk - rgb).abs().mean() < 0.1  # JPEG round trip of PIL's naive CMYK


def test_debug_env_shows_the_traceback(clis, tmp_path):
    args = train_args("fastgan", tmp_path, "--data", str(tmp_path / "nope"))
    res = invoke(clis, "fastgan", args, env={"GANOPS_DEBUG": "1"})
    assert res.exit_code == 2 and "Traceback" in res.stderr and "DatasetError" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Error: --data")


def test_a_data_error_is_a_dataset_error_line():
    """ganops.data's DataError reaches a recipe as it is (no wrapper on the way): RecipeGroup shows it as a
    DatasetError, the same one line and exit status; a DatasetError is a DataError for Python callers."""
    import click

    from ganops.data import DataError
    from ganops.train import DatasetError, RecipeGroup, open_dataset
    from ganops.train.errors import as_click_error

    err = as_click_error(DataError("--data builtin:nope: unknown builtin dataset"))
    assert isinstance(err, DatasetError) and err.exit_code == 2
    assert err.message == "--data builtin:nope: unknown builtin dataset"
    assert issubclass(DatasetError, DataError) and issubclass(DatasetError, ValueError)
    with pytest.raises(DataError, match="--real builtin:nope: unknown builtin dataset; available: builtin:emoji"):
        open_dataset("builtin:nope", 32, flag="--real")

    @click.group(cls=RecipeGroup)
    def cli():
        pass

    @cli.command()
    def train():
        open_dataset("builtin:nope", 32, flag="--real")

    res = CliRunner().invoke(cli, ["train"])
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith(
        "Error: --real builtin:nope: unknown builtin dataset; available: builtin:emoji"), res.output


def test_bugs_keep_their_traceback(clis, tmp_path, monkeypatch):
    """Only users' mistakes become one line: an exception from a bug still raises (CliRunner records it)."""
    import ganops.train.loop as loop

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(loop, "open_dataset", boom)
    res = invoke(clis, "fastgan", train_args("fastgan", tmp_path))
    assert res.exit_code == 1 and isinstance(res.exception, ZeroDivisionError)


def test_nan_loss_stops_in_one_line(clis, tmp_path, monkeypatch):
    """Not a user's mistake, but the same line: a NaN loss stops the run naming the loss, the step and the last
    good checkpoint, exit status 1, no traceback."""
    from ganops.models.fastgan_step import FastGANStep

    monkeypatch.setattr(FastGANStep, "__call__", lambda self, reals: {"g": torch.tensor(float("nan"))})
    res = invoke(clis, "fastgan", train_args("fastgan", tmp_path))
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines()[-1].startswith("Error: loss 'g' is nan at step 0: training stopped")


def _script(recipe: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("GANOPS_DEBUG", None)
    return subprocess.run([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_the_script_prints_one_line(recipe, trained, tmp_path):
    """`python recipes/X.py ...` itself (the issue's report): a truncated --resume checkpoint (fastgan: also a
    missing folder) gives one line on stderr and exit status 2."""
    ck = derived_checkpoint(latest_checkpoint(trained[recipe]), tmp_path / "t.pt", "truncated")
    data = ["--data", str(trained["cs_image"])] if recipe == "consingan" else []
    p = _script(recipe, *train_args(recipe, tmp_path, *data, "--resume", str(ck)), cwd=tmp_path)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stderr.strip().splitlines() == [f"Error: --resume {ck}: damaged or not a ganops checkpoint (truncated, "
                                             "or not a torch zip archive); resume from another checkpoint-*.pt of "
                                             "that run, or start a new run without --resume"], p.stderr
    if recipe == "fastgan":
        p = _script(recipe, "train", "--data", str(tmp_path / "nope"), "--outdir", str(tmp_path / "o"), cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.strip().splitlines() == [
            f"Error: --data {tmp_path / 'nope'}: does not exist; check the path (or use a builtin such as --data "
            "builtin:emoji)"], p.stderr
