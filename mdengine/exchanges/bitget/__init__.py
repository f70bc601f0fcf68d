"""Everything mdengine knows about Bitget: the adapter (sans-I/O, `adapter.py`) and what the rest of the engine asks of
this exchange: `endpoints` (default WS and REST bases), `naming` (native ids, REST markets), `instruments` (instrument
lists: requests and parsers) and `rest` (REST fallback URLs and parsers).
`mdengine.exchanges.exchange(name)` returns this package."""

from . import endpoints as endpoints
from . import instruments as instruments
from . import naming as naming
from . import rest as rest
from .adapter import *  # noqa: F403
from .adapter import ADAPTER as ADAPTER
