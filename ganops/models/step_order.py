# SPDX-License-Identifier: BSD-3-Clause
"""The step orders a recipe's ``--step-order`` chooses from (FastGAN and ConSinGAN): the same maths either way."""
from __future__ import annotations

__all__ = ["STEP_ORDERS", "check_step_order"]

#: "ours": ganops' order (less work or memory, the same losses); "reference": the official code's order.
STEP_ORDERS = ("ours", "reference")


def check_step_order(order: str, name: str = "--step-order") -> None:
    """ValueError naming ``name`` unless ``order`` is one of :data:`STEP_ORDERS`."""
    if order not in STEP_ORDERS:
        raise ValueError(f"{name} must be one of {STEP_ORDERS}, got {order!r}")
