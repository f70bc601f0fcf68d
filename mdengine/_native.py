"""The optional C module `mdengine._speedups`, or None: not built (no C compiler at install) or turned off with
MDENGINE_NO_SPEEDUPS=1. Its users (book.py, store/writer.py) keep a pure-Python twin of every function."""

from __future__ import annotations

import os
from types import ModuleType


def speedups() -> ModuleType | None:
    if os.environ.get("MDENGINE_NO_SPEEDUPS"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups
