# SPDX-License-Identifier: BSD-3-Clause
"""`python -m ganops info`: versions, how the extension was built, and the op x backend table."""
from __future__ import annotations

import sys

from .info import main

if __name__ == "__main__":
    sys.exit(main())
