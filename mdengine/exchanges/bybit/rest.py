"""Bybit v5 REST: depth and recent-trade URLs, and their parsers (pure: URL in, JSON out, values out)."""

from __future__ import annotations

from urllib.parse import urlencode

from ...core.types import MarketKind
from .._rest import RestBook, RestError, RestSymbol, book, envelope, short, taker_side, trade_row
from .naming import CATEGORY


def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of at least min(depth, 200) levels per side."""
    q = {"category": CATEGORY[sym.kind], "symbol": sym.native, "limit": min(max(depth, 1), 200)}
    return f"{base}/v5/market/orderbook?{urlencode(q)}"


def trades_url(base: str, sym: RestSymbol, limit: int = 100) -> str:
    """GET url of the most recent public trades (spot gives at most 60)."""
    cap = 60 if sym.kind == MarketKind.SPOT else 1000
    q = {"category": CATEGORY[sym.kind], "symbol": sym.native, "limit": min(max(limit, 1), cap)}
    return f"{base}/v5/market/recent-trade?{urlencode(q)}"


def payload(doc: object) -> object:
    """The ``result`` of a Bybit envelope; RestError with Bybit's message unless ``retCode`` is 0."""
    doc = envelope("bybit", doc)
    if doc.get("retCode") != 0:
        raise RestError(f"bybit: {doc.get('retMsg') or 'error'} (retCode {doc.get('retCode')})")
    return doc.get("result")


def parse_depth(data: object) -> RestBook:
    """A depth payload: ``b``/``a`` levels, ``u`` update id, ``ts`` in ms."""
    return book("bybit", data, bids="b", asks="a", update_id="u")


def trade_rows(data: object, recv_ts_ns: int) -> list[tuple]:
    """TRADE_DTYPE rows of a trades payload (``list``), oldest first (Bybit lists newest first)."""
    trades = data.get("list") if isinstance(data, dict) else None
    if not isinstance(trades, list):
        raise RestError(f"bybit: unexpected REST trades {short(trades)}")
    return [trade_row(t["time"], recv_ts_ns, t["price"], t["size"], t["execId"], taker_side(t["side"]))
            for t in reversed(trades)]
