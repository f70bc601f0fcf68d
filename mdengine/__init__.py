"""mdengine: exchange order books and trades in shared memory for local strategy processes.

Strategy code needs only `Client` (see docs/client.md); the engine runs as `mdengine run`.
"""

from .client import (
                     Book,
                     BookBuffer,
                     Client,
                     ClientStatistics,
                     Depth,
                     EngineNotFound,
                     StaleBookError,
                     SubscribeError,
                     Top,
                     Trades,
                     TradeStream,
                     TradeStreamStatistics,
                     UnknownSymbol,
)

__version__ = "0.1.0"

__all__ = ["Book", "BookBuffer", "Client", "ClientStatistics", "Depth", "EngineNotFound", "StaleBookError",
           "SubscribeError", "Top", "TradeStream", "TradeStreamStatistics", "Trades", "UnknownSymbol",
           "__version__"]
