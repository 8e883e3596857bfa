# SPDX-License-Identifier: BSD-3-Clause
"""Target rows shared by the model-level benchmarks and the report.

A benchmark writes its figures with :func:`write_rows` to ``benchmarks/results/<name>.json``; ``python -m
benchmarks.report`` collects every file into one table. Each row says whether it was *measured* on the device it
names or *projected* (roofline model of ganops.profiling) for a device it did not run on.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

__all__ = ["Row", "write_rows", "read_rows", "RESULTS_DIR"]

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Row:
    """One figure against one target. ``higher_is_better`` decides the direction of the check."""

    target: str  # what is checked, e.g. "FastGAN 256² b8 time / iteration"
    value: float
    limit: float | None  # the target; None when the row is informational
    unit: str
    kind: str  # "measured" | "projected"
    device: str
    higher_is_better: bool = False
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.limit is None:
            return None
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


def write_rows(name: str, rows: list[Row], extra: dict | None = None) -> str:
    """Write rows to benchmarks/results/<name>.json; returns the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"name": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": [asdict(r) for r in rows],
                   "extra": extra or {}}, f, indent=1)
    return path


def read_rows(path: str) -> tuple[dict, list[Row]]:
    with open(path) as f:
        data = json.load(f)
    return data, [Row(**r) for r in data.get("rows", [])]
