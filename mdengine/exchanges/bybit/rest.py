"""Bybit v5 REST: depth, recent-trade and perp URLs, and their parsers (pure: URL in, JSON out, values out)."""

from __future__ import annotations

from urllib.parse import urlencode

from ...core.types import MarketKind
from .._rest import (
    RestBook,
    RestError,
    RestPerp,
    RestSymbol,
    book,
    envelope,
    perp_record,
    short,
    taker_side,
    trade_row,
)
from .naming import CATEGORY

# The largest `limit` /v5/market/orderbook takes, per category (BY-DOC market/orderbook.mdx, HEAD 072c197d,
# 2026-07-24: spot [1, 1000], linear & inverse [1, 1000]; its table said 200 and 500 until 2026-05-18). Option
# ([1, 25]) has no REST fallback here.
DEPTH_LIMIT = {MarketKind.SPOT: 1000, MarketKind.LINEAR: 1000, MarketKind.INVERSE: 1000}


def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of min(depth, the category's maximum) levels per side."""
    q = {"category": CATEGORY[sym.kind], "symbol": sym.native, "limit": min(max(depth, 1), DEPTH_LIMIT[sym.kind])}
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


def perp_urls(base: str, sym: RestSymbol) -> list[str]:
    """GET url of a linear or inverse contract's ticker (BY-DOC market/tickers), which carries its perp record."""
    if sym.kind == MarketKind.SPOT:
        raise ValueError(f"bybit: spot {sym.native!r} has no perp data")
    return [f"{base}/v5/market/tickers?{urlencode({'category': CATEGORY[sym.kind], 'symbol': sym.native})}"]


def parse_perp(docs: list[object]) -> RestPerp:
    """The whole answer of `perp_urls` (its envelope's ``time`` is the only time it gives): markPrice, indexPrice,
    fundingRate, nextFundingTime, openInterest. Bybit announces no next rate; a dated future's "" rate is absent."""
    (doc,) = docs
    rows = payload(doc)
    rows = rows.get("list") if isinstance(rows, dict) else None
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        raise RestError(f"bybit: REST ticker has no data: {short(doc)}")
    t = rows[0]
    return perp_record("bybit", envelope("bybit", doc).get("time"), mark_price=t.get("markPrice"),
                       index_price=t.get("indexPrice"), funding_rate=t.get("fundingRate"),
                       next_funding_ms=t.get("nextFundingTime"), open_interest=t.get("openInterest"))
