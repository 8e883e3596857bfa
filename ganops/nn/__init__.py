# SPDX-License-Identifier: BSD-3-Clause
"""Modules built on the fused ops."""
from .sle import SLE

__all__ = ["SLE"]
