"""mdengine: exchange order books and trades in shared memory for local strategy processes.

Strategy code needs only `Client` (see docs/client.md); the engine runs as `mdengine run`.

The public names below load on first use (PEP 562), so importing a low layer such as `mdengine.book` or an
adapter does not pull in the client and the shared-memory store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = dict.fromkeys(("Book", "BookBuffer", "Client", "ClientStatistics", "Depth", "Liquidations", "PerpStats",
                          "Top", "TradeStream", "TradeStreamStatistics", "Trades"), "client")
_EXPORTS.update(dict.fromkeys(("AdapterError", "ConfigError", "ControlError", "EngineNotFound", "LayoutError",
                               "MdengineError", "NoPerpData", "ReadContention", "SegmentExists", "SegmentNotFound",
                               "StaleBookError", "StoreFull", "SubscribeError", "UnknownSymbol"), "errors"))

__all__ = ["AdapterError", "Book", "BookBuffer", "Client", "ClientStatistics", "ConfigError", "ControlError",
           "Depth", "EngineNotFound", "LayoutError", "Liquidations", "MdengineError", "NoPerpData", "PerpStats",
           "ReadContention", "SegmentExists",
           "SegmentNotFound", "StaleBookError", "StoreFull", "SubscribeError", "Top", "TradeStream",
           "TradeStreamStatistics", "Trades", "UnknownSymbol", "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mdengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .client import (
        Book,
        BookBuffer,
        Client,
        ClientStatistics,
        Depth,
        Liquidations,
        PerpStats,
        Top,
        Trades,
        TradeStream,
        TradeStreamStatistics,
    )
    from .errors import (
        AdapterError,
        ConfigError,
        ControlError,
        EngineNotFound,
        LayoutError,
        MdengineError,
        NoPerpData,
        ReadContention,
        SegmentExists,
        SegmentNotFound,
        StaleBookError,
        StoreFull,
        SubscribeError,
        UnknownSymbol,
    )
