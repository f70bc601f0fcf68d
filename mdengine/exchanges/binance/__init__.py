"""Everything mdengine knows about Binance: the adapter (sans-I/O, `adapter.py`) and what the rest of the engine asks of
this exchange."""

from .adapter import *  # noqa: F403
from .adapter import ADAPTER as ADAPTER
