"""The client's REST fallback: where its REST requests go, and a book, trades or perp record served from REST.

Used when a read is stale or older than `max_age`, or the symbol is not subscribed yet, and the Client was made
with ``rest_fallback=True``. The requests themselves (URLs, parsing) are `mdengine.rest`'s.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable, Mapping

import numpy as np

from .. import rest
from ..store import layout as L
from ..store.segment import SymbolEntry
from .control import ControlClient
from .results import BookBuffer, Depth, PerpStats, Top

_HEADER = struct.Struct(L.BOOK_HEADER_STRUCT)
# The market names a caller may pass, by the kind of instrument they hold (to name a symbol not in the directory).
def rest_symbol(exchange: str, requested: str, market: str | None, entry: SymbolEntry | None) -> rest.RestSymbol:
    """How REST names a symbol: from its directory entry when the engine lists it, else derived from the request."""
    if entry is not None:
        return rest.resolve(exchange, entry.unified, entry.kind, entry.native)
    kind = rest.market_kind(exchange, market) if market else None
    unified = "/" in requested  # unified symbols are case-blind; a native id keeps its case
    return rest.resolve(exchange, requested.upper() if unified else requested, kind)


class RestFallback:
    """One client's REST requests: their base URLs and the counts of reads and failures.

    endpoints: given by the caller (they win), else the URL the engine's feed publishes in its segment
    (`published(exchange)`), else the simulator's the supervisor names, else the exchange's public host.
    """

    def __init__(self, control: ControlClient, endpoints: Mapping[str, str | tuple[str, str]] | None,
                 timeout: float, published: Callable[[str], Mapping[str, str]]) -> None:
        self.timeout = timeout
        self.reads = 0
        self.failures = 0
        self._control = control
        self._published = published
        self._given = endpoints is not None
        self._bases = None if endpoints is None else rest.rest_endpoints(endpoints)

    def base(self, sym: rest.RestSymbol) -> str:
        """The base URL of `sym`'s REST market."""
        if not self._given:
            url = self._published(sym.exchange).get(sym.rest_market)
            if url:
                return url.rstrip("/")
        if self._bases is None:
            self._bases = rest.rest_endpoints(self._discover())
        return self._bases[sym.rest_market]

    def _discover(self) -> Mapping[str, str | tuple[str, str]]:
        """With no `endpoints` given: a supervisor running on the simulator must not send us to real exchanges."""
        sim = self._control.sim_endpoints()
        if sim is None:
            return {}
        if not sim:
            raise rest.RestError(f"the engine in namespace {self._control.namespace!r} runs on the simulator and "
                                 "does not say where its REST server is; pass Client(endpoints=sim.endpoints())")
        return sim

    def depth(self, symbol: Callable[[], rest.RestSymbol], depth: int) -> rest.RestBook:
        """A depth snapshot of `symbol()`; RestError or ValueError (counted as failures) if there is none."""
        try:
            sym = symbol()
            book = rest.fetch_depth(self.base(sym), sym, depth, self.timeout)
        except (rest.RestError, ValueError):
            self.failures += 1
            raise
        self.reads += 1
        return book

    def perp(self, symbol: Callable[[], rest.RestSymbol]) -> rest.RestPerp:
        """The perp record of `symbol()` over REST; RestError or ValueError (counted as failures) if there is none."""
        try:
            sym = symbol()
            record = rest.fetch_perp(self.base(sym), sym, self.timeout)
        except (rest.RestError, ValueError):
            self.failures += 1
            raise
        self.reads += 1
        return record

    def trades(self, sym: rest.RestSymbol, limit: int) -> np.ndarray:
        """The exchange's last `limit` trades of `sym` (layout.TRADE_DTYPE records, oldest first)."""
        try:
            recs = rest.fetch_trades(self.base(sym), sym, limit, self.timeout, time.time_ns())
        except rest.RestError:
            self.failures += 1
            raise
        self.reads += 1
        return recs


def top_from(book: rest.RestBook, age: float) -> Top:
    bid, bq = (book.bids[0, 0], book.bids[0, 1]) if len(book.bids) else (math.nan, 0.0)
    ask, aq = (book.asks[0, 0], book.asks[0, 1]) if len(book.asks) else (math.nan, 0.0)
    return Top(float(bid), float(bq), float(ask), float(aq), age, "rest", False, book.update_id, "rest")


def depth_from(exchange: str, symbol: str, book: rest.RestBook, depth: int | None, age: float) -> Depth:
    n = depth or max(len(book.bids), len(book.asks))
    now = time.time_ns()
    return Depth(exchange, symbol, book.bids[:n].copy(), book.asks[:n].copy(), book.update_id, book.exch_ts_ns,
                 now, now, "rest", age, False, "rest")


def fill_from(buffer: BookBuffer, book: rest.RestBook, age: float) -> BookBuffer:
    """`buffer` holding `book`'s top levels, as if read from shared memory (header included)."""
    nb, na = min(len(book.bids), buffer.depth), min(len(book.asks), buffer.depth)
    lv = buffer.levels
    lv[:, 0::2] = math.nan
    lv[:, 1::2] = 0.0
    lv[:nb, 0:2] = book.bids[:nb]
    lv[:na, 2:4] = book.asks[:na]
    now = time.time_ns()
    _HEADER.pack_into(buffer.raw, 0, book.update_id, book.exch_ts_ns, now, now, nb, na, L.BookState.LIVE, 0, 0, 0)
    buffer.n_bids, buffer.n_asks = nb, na
    buffer.source, buffer.age_s, buffer.state, buffer.stale, buffer.reason = "rest", age, "rest", False, ""
    return buffer


def perp_from(record: rest.RestPerp, age: float) -> PerpStats:
    """A PerpStats of a REST perp record; a field the answers did not carry is NaN (next funding time 0)."""
    f, nan = record.fields, math.nan
    return PerpStats(f.get("mark_price", nan), f.get("index_price", nan), f.get("funding_rate", nan),
                     f.get("next_funding_rate", nan), int(f.get("next_funding_ns", 0)), f.get("open_interest", nan),
                     record.exch_ts_ns, age, False, "rest", "", "rest", age, age, age)
