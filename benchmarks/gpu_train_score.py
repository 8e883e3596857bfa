# SPDX-License-Identifier: BSD-3-Clause
"""Score what benchmarks/gpu_train.sh brought back, here on the CPU, into one JSON (benchmarks/results/gpu/train.json).

    python -m benchmarks.gpu_train_score OUT_DIR [--results benchmarks/results/gpu/train.json] [--work DIR]
                                                 [--num 50] [--pictures docs/gpu_train]

- FastGAN and DISP: the FIDs the device computed (the standard FID Inception with its weights stored in float16,
  2,000 samples against the training set), checked here: the device's Inception features of the training set
  against the package's float32 network on this CPU (largest relative difference, and the FID between the two
  feature sets, which is 0 for identical networks).
- ConSinGAN: SIFID (both layers) and diversity of ``--num`` samples of the brought-back run (its last checkpoint),
  computed here by the recipe's own ``evaluate`` with the installed Inception package, and an 8-sample grid.
- ``--pictures DIR``: the last FastGAN grid of each order, ConSinGAN's samples and DISP's grids, for the docs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "gpu" / "train.json"


def _unpack(out: Path, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for a in sorted(out.glob("gpu-train*.tar.gz")):
        with tarfile.open(a) as t:
            t.extractall(work, filter="data")


def _inception_check(work: Path, data: Path | None) -> dict | None:
    """The device's training-set features (its Inception) against this machine's package network."""
    import numpy as np

    f = work / "inception-check.npy"
    if not f.is_file() or data is None or not data.is_dir():
        return None
    from ganops.metrics.features import inception_features
    from ganops.metrics.fid import fid_from_features
    from ganops.train import open_dataset

    dev = np.load(f).astype(np.float64)
    ds = open_dataset(str(data), 256, verbose=False)
    import torch

    here = inception_features(torch.stack([ds[i] for i in range(len(ds))]))
    if here.shape != dev.shape:
        return {"error": f"shapes differ: device {dev.shape}, here {here.shape}"}
    return {"images": int(dev.shape[0]), "max_rel_diff": float(np.abs(dev - here).max() / np.abs(here).max()),
            "fid_device_vs_here": fid_from_features(dev, here)}


def _consingan(work: Path, num: int) -> dict | None:
    runs = sorted(p for p in (work / "consingan").glob("*") if (p / "latest").is_file()) \
        if (work / "consingan").is_dir() else []
    if not runs:
        return None
    run = runs[-1]
    res: dict = {"run": run.name}
    ev = run / "eval.json"
    ev.unlink(missing_ok=True)  # the device run's own evaluation (in its results.json as device_eval_20), not ours
    # the checkout first on the path, as benchmarks/steps.sh does: the scorer runs from a checkout, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    for cmd in (["evaluate", "--num", str(num)], ["generate", "--num", "8", "--out", str(run / "score-samples.png")]):
        p = subprocess.run([sys.executable, str(ROOT / "recipes" / "consingan.py"), *cmd, "--run", str(run),
                            "--device", "cpu"], capture_output=True, text=True, env=env)
        res.setdefault("log", []).append((p.stdout + p.stderr)[-2000:])
        if p.returncode != 0:
            res.setdefault("errors", []).append(f"consingan {cmd[0]} exited {p.returncode}: "
                                                + (p.stderr.strip().splitlines() or ["(no output)"])[-1])
    if ev.is_file():  # written by this evaluate only
        res["eval"] = json.loads(ev.read_text())
    return res


def _pictures(work: Path, res: dict, dst: Path) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    made = []

    def put(src: Path, name: str) -> None:
        if src.is_file():
            shutil.copyfile(src, dst / name)
            made.append(str(dst / name))

    for order, sub in (("ours", "fastgan-ours"), ("reference", "fastgan-ref")):
        r = (res["device"].get("fastgan") or {}).get(order) or {}
        for g in r.get("grids", []):
            put(work / sub / r["run"] / g, f"fastgan-{order}-{g}")
    c = res.get("consingan") or {}
    if c.get("run"):
        for name in ("score-samples.png", "samples.png", "samples_2x_width.png"):
            put(work / "consingan" / c["run"] / name, f"consingan-{name}")
    d = res["device"].get("disp") or {}
    if d.get("run"):
        for name in ("vicinal.png", "gmm.png", "reals.png"):
            put(work / "disp" / d["run"] / name, f"disp-{name}")
    return made


def score(out: Path, results: Path, work: Path, num: int = 50, pictures: Path | None = None) -> dict:
    dev = json.loads((out / "results.json").read_text())
    _unpack(out, work)
    data = Path(dev.get("data", {}).get("data", ""))
    if not data.is_dir():  # the device's path: the same set here (.gpu_train), or the one packed (dry runs)
        data = next((p for p in (work / "data", ROOT / ".gpu_train" / "faces256") if p.is_dir()), None)
    t = time.time()
    res = {"kind": "gpu_train_score", "version": 1, "scored": time.strftime("%Y-%m-%d %H:%M:%S"),
           "source": str(out), "device": dev, "inception_check": _inception_check(work, data),
           "consingan": _consingan(work, num)}
    fg = dev.get("fastgan") or {}
    o, r = fg.get("ours") or {}, fg.get("reference") or {}
    common = sorted(set(s for s, _ in o.get("fid", [])) & set(s for s, _ in r.get("fid", [])))
    res["fastgan_equal_iterations"] = [{"step": s, "ours": dict(o["fid"])[s], "reference": dict(r["fid"])[s]}
                                       for s in common]
    if pictures is not None:
        res["pictures"] = _pictures(work, res, pictures)
    res["score_seconds"] = round(time.time() - t, 1)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(res, indent=1) + "\n")
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_train_score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the folder the device call's files came back to ($OUT's copy)")
    ap.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON written [default: %(default)s]")
    ap.add_argument("--work", default=None, help="where the archives are unpacked [default: runs/gpu-train-score]")
    ap.add_argument("--num", type=int, default=50, help="ConSinGAN samples for SIFID/diversity")
    ap.add_argument("--pictures", default=None, help="copy the grids here (e.g. docs/gpu_train)")
    a = ap.parse_args(argv)
    work = Path(a.work or ROOT / "runs" / "gpu-train-score")
    res = score(Path(a.out), Path(a.results), work, a.num, Path(a.pictures) if a.pictures else None)
    c = res.get("consingan") or {}
    ev = c.get("eval") or {}
    ic = res.get("inception_check") or {}
    for err in c.get("errors", []):
        print(f"ConSinGAN scoring failed: {err} (its log: 'log' in {a.results})", file=sys.stderr)
    print(f"inception check: max rel diff {ic.get('max_rel_diff')}, FID device vs here {ic.get('fid_device_vs_here')}")
    for row in res["fastgan_equal_iterations"]:
        print(f"FastGAN step {row['step']}: FID ours {row['ours']:.2f}, reference {row['reference']:.2f}")
    if ev:
        print(f"ConSinGAN {ev.get('num')} samples: SIFID conv_4 {ev['sifid_conv_4']['mean']:.2f}, conv_2 "
              f"{ev['sifid_conv_2']['mean']:.2f}, diversity {ev['diversity']:.3f}")
    d = (res["device"].get("disp") or {}).get("eval") or {}
    if d:
        print(f"DISP FID{d.get('num')} vicinal {d.get('fid_vicinal'):.2f}, gmm {d.get('fid_gmm'):.2f}")
    print(f"wrote {a.results}")
    if c.get("errors"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
