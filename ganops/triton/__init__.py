# SPDX-License-Identifier: BSD-3-Clause
"""Triton kernels, one module per op (<op>_kernels.py), launched inside Python torch.library custom ops.

Importing a kernel module requires Triton; ops import them lazily, only when the triton backend is chosen.
"""
