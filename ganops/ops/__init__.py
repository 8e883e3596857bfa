# SPDX-License-Identifier: BSD-3-Clause
"""Fused ops: one module per op, each with its public function, reference, and registrations."""
from .sle import sle, sle_ref

__all__ = ["sle", "sle_ref"]
