"""Old import paths of modules that moved into packages (mdengine.engine, mdengine.recording).

Each old module (``mdengine/supervisor.py`` and the like) is a two-line shim calling `alias`: the old name
becomes the new module itself in ``sys.modules``, so every object (private names too) is the same one and a
monkeypatch through either path patches both. Importing it warns once per process (the module is cached).
The shims go in the next release.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


def alias(old: str, new: str) -> ModuleType:
    module = importlib.import_module(new)
    sys.modules[old] = module
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning,
                  stacklevel=3)
    return module
