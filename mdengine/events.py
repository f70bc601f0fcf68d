"""The normalized events now live in `mdengine.core.events`; this module re-exports them for old imports."""

from .core.events import *  # noqa: F403
from .core.events import __all__  # noqa: F401
