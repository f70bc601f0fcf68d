"""The strategy-side client: attach to a running engine by namespace and read books and trades lock-free.

- `shm`: the Client and its shared-memory reads (Book, TradeStream, wait, following a restarted engine);
- `fallback`: the REST fallback (where requests go, books and trades served from REST);
- `control`: subscribe/unsubscribe through the namespace's supervisor;
- `tops`: whole-market reads (every top in one numpy array) and wait() on a set of books;
- `results`: what reads return (Top, Depth, Trades, BookBuffer, statistics);
- `fmz`: an FMZ-style facade for strategies ported from the old driver.

See docs/client.md.
"""

from ..errors import EngineNotFound, NoPerpData, StaleBookError, SubscribeError, UnknownSymbol
from .results import BookBuffer, ClientStatistics, Depth, Liquidations, PerpStats, Top, Trades, TradeStreamStatistics
from .shm import Book, Client, LiquidationStream, Perp, TradeStream
from .tops import TOPS_DTYPE, BookSet

__all__ = ["Book", "BookBuffer", "BookSet", "Client", "ClientStatistics", "Depth", "EngineNotFound",
           "LiquidationStream", "Liquidations", "NoPerpData", "Perp", "PerpStats", "StaleBookError",
           "SubscribeError", "TOPS_DTYPE", "Top", "TradeStream", "TradeStreamStatistics", "Trades", "UnknownSymbol"]
