"""Bitget v2 REST: depth, recent-trade and perp URLs, and their parsers (pure: URL in, JSON out, values out)."""

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
    first_row,
    perp_record,
    short,
    taker_side,
    trade_row,
)
from .naming import product_type

_MIX_DEPTHS = ("1", "5", "15", "50")  # merge-depth's limits below "max"


def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of at least min(depth, the market's maximum) levels per side."""
    if sym.kind == MarketKind.SPOT:
        q = {"symbol": sym.native, "type": "step0", "limit": min(max(depth, 1), 150)}
        return f"{base}/api/v2/spot/market/orderbook?{urlencode(q)}"
    limit = next((a for a in _MIX_DEPTHS if int(a) >= depth), "max")
    q = {"symbol": sym.native, "productType": product_type(sym.kind, sym.settle), "precision": "scale0",
         "limit": limit}
    return f"{base}/api/v2/mix/market/merge-depth?{urlencode(q)}"


def trades_url(base: str, sym: RestSymbol, limit: int = 100) -> str:
    """GET url of the most recent public trades."""
    if sym.kind == MarketKind.SPOT:
        return f"{base}/api/v2/spot/market/fills?{urlencode({'symbol': sym.native, 'limit': min(limit, 500)})}"
    q = {"symbol": sym.native, "productType": product_type(sym.kind, sym.settle), "limit": min(max(limit, 1), 100)}
    return f"{base}/api/v2/mix/market/fills?{urlencode(q)}"


def payload(doc: object) -> object:
    """The ``data`` of a Bitget envelope; RestError with Bitget's message unless ``code`` is "00000"."""
    doc = envelope("bitget", doc)
    if str(doc.get("code")) != "00000":
        raise RestError(f"bitget: {doc.get('msg') or 'error'} (code {doc.get('code')})")
    return doc.get("data")


def parse_depth(data: object) -> RestBook:
    """A depth payload: no update id, ``ts`` in ms; levels are strings (spot) or numbers (mix)."""
    return book("bitget", data)


def trade_rows(data: object, recv_ts_ns: int) -> list[tuple]:
    """TRADE_DTYPE rows of a trades payload, oldest first (Bitget lists newest first)."""
    if not isinstance(data, list):
        raise RestError(f"bitget: unexpected REST trades {short(data)}")
    return [trade_row(t["ts"], recv_ts_ns, t["price"], t["size"], t["tradeId"], taker_side(t["side"]))
            for t in reversed(data)]


def perp_urls(base: str, sym: RestSymbol) -> list[str]:
    """GET urls of a futures contract's perp record: the v2 mix ticker (mark, index, funding rate, holdingAmount)
    and, as that ticker has no next funding time, "Get Next Funding Time"."""
    if sym.kind == MarketKind.SPOT:
        raise ValueError(f"bitget: spot {sym.native!r} has no perp data")
    q = urlencode({"symbol": sym.native, "productType": product_type(sym.kind, sym.settle)})
    return [f"{base}/api/v2/mix/market/ticker?{q}", f"{base}/api/v2/mix/market/funding-time?{q}"]


def parse_perp(docs: list[object]) -> RestPerp:
    """The answers of `perp_urls`, in order. holdingAmount is the open interest in base coin, as on the stream;
    Bitget announces no next rate."""
    ticker, funding = (first_row("bitget", payload(d), "perp") for d in docs)
    return perp_record("bitget", ticker.get("ts"), mark_price=ticker.get("markPrice"),
                       index_price=ticker.get("indexPrice"), funding_rate=ticker.get("fundingRate"),
                       next_funding_ms=funding.get("nextFundingTime"), open_interest=ticker.get("holdingAmount"))
