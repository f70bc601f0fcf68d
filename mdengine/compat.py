"""Deprecated home of the FMZ-style facade: it is `mdengine.client.fmz` now. Importing this warns once."""

import warnings

from .client.fmz import *  # noqa: F403
from .client.fmz import __all__  # noqa: F401

warnings.warn("mdengine.compat is deprecated; import Exchange from mdengine.client.fmz", DeprecationWarning,
              stacklevel=2)
