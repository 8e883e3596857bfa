# SPDX-License-Identifier: BSD-3-Clause
"""ganops benchmarks: `pytest benchmarks/ --benchmark-only` (ops) and `python -m benchmarks.report` (targets)."""
