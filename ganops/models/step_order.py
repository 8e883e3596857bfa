# SPDX-License-Identifier: BSD-3-Clause
"""The step orders a recipe's ``--step-order`` chooses from (FastGAN and ConSinGAN): the same maths either way."""
from __future__ import annotations

__all__ = ["STEP_ORDERS"]

#: "ours": ganops' order (less work or memory, the same losses); "reference": the official code's order.
STEP_ORDERS = ("ours", "reference")
