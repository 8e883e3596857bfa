# SPDX-License-Identifier: BSD-3-Clause
"""Refresh the generated parts of README.md: the backend table and the target table (`python tools/update_readme.py`).

The backend table is `python -m ganops info`'s op x backend table; the target table is `python -m benchmarks.report
--markdown` over the results in benchmarks/results/ (refresh them first with `python -m benchmarks.report --run`).
Each part sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers; everything else is left alone.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _run(*args: str) -> str:
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    return r.stdout


def backend_table() -> str:
    lines = _run("-m", "ganops", "info").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("op "))
    rows = [ln for ln in lines[start:] if ln.strip() and not ln.startswith("---")]
    header, body = rows[0].split(), rows[1:]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ln in body:
        if ln.startswith("auto picks"):
            break
        cells = re.split(r"\s{2,}", ln.strip())
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n\n(`python -m ganops info` on the development machine: x86-64, 2 cores, no GPU, " \
                            "CUDA 13.0 toolkit.)"


def target_table() -> str:
    md = _run("-m", "benchmarks.report", "--markdown").rstrip()
    summary = md.splitlines()[-1]
    table = "\n".join(ln for ln in md.splitlines() if ln.startswith("|"))
    if "(median of " in table:  # `--run --repeat N`: the spread across runs
        method = ("An op ratio is the median over several runs (`python -m benchmarks.report --run --repeat N`) of "
                  "each run's median per-round ratio, its providers timed in interleaved rounds (A B C A B C ...), "
                  "with the runs' range in its note; `noisy` marks a row whose half range is wider than its margin "
                  "to the target. The CPU model-level rows (ConSinGAN, GMM) are one run each.")
    elif "(median " in table:  # op rows from the interleaved harness carry their spread in the note
        method = ("An op ratio is the median of the per-round ratios of its providers timed in interleaved rounds "
                  "(A B C A B C ...), with the quartiles in its note; `noisy` marks a row whose half spread is wider "
                  "than its margin to the target.")
    else:
        method = ("Op ratios: each provider's minimum over its own block of rounds (results from before the "
                  "interleaved harness; rerun `python -m benchmarks.report --run` for medians with their spread).")
    return (f"Generated {time.strftime('%Y-%m-%d')} by `python tools/update_readme.py` from `benchmarks/results/` "
            f"({summary.strip()}). Machine: 2-core x86-64 CPU shared with other jobs, no GPU, so every GPU row is "
            f"a roofline projection (`projected`) and CPU rows are noisy. {method}\n\n" + table)


def replace(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"README.md has no <!-- {name}:begin/end --> markers")
    return pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    with open(README) as f:
        text = f.read()
    text = replace(text, "BACKENDS", backend_table())
    text = replace(text, "TARGETS", target_table())
    with open(README, "w") as f:
        f.write(text)
    print("README.md updated")


if __name__ == "__main__":
    main()
