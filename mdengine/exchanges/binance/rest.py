"""Binance REST: depth and recent-trade URLs, and their parsers (pure: URL in, JSON out, values out)."""

from __future__ import annotations

from urllib.parse import urlencode

from ...core.types import MarketKind, Side
from .._rest import RestBook, RestError, RestSymbol, book, short, trade_row

_USDM_DEPTHS = (5, 10, 20, 50, 100, 500, 1000)  # the only limits fapi/v1/depth takes


def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of at least min(depth, the market's maximum) levels per side."""
    if sym.kind == MarketKind.SPOT:
        return f"{base}/api/v3/depth?{urlencode({'symbol': sym.native, 'limit': min(max(depth, 1), 5000)})}"
    limit = next((a for a in _USDM_DEPTHS if a >= depth), _USDM_DEPTHS[-1])
    return f"{base}/fapi/v1/depth?{urlencode({'symbol': sym.native, 'limit': limit})}"


def trades_url(base: str, sym: RestSymbol, limit: int = 100) -> str:
    """GET url of the most recent public trades."""
    path = "/api/v3/trades" if sym.kind == MarketKind.SPOT else "/fapi/v1/trades"
    return f"{base}{path}?{urlencode({'symbol': sym.native, 'limit': min(max(limit, 1), 1000)})}"


def payload(doc: object) -> object:
    """The answer itself (Binance has no envelope); RestError with Binance's message for an error object."""
    if isinstance(doc, dict) and "code" in doc and "msg" in doc:
        raise RestError(f"binance: {doc['msg']} (code {doc['code']})")
    return doc


def parse_depth(data: object) -> RestBook:
    """A depth payload: ``lastUpdateId`` is the update id, ``E`` (USDⓈ-M only) the exchange time in ms."""
    return book("binance", data, update_id="lastUpdateId", ts="E")


def trade_rows(data: object, recv_ts_ns: int) -> list[tuple]:
    """TRADE_DTYPE rows of a trades payload, oldest first (Binance lists them so)."""
    if not isinstance(data, list):
        raise RestError(f"binance: unexpected REST trades {short(data)}")
    return [trade_row(t["time"], recv_ts_ns, t["price"], t["qty"], t["id"],
                      Side.SELL if t["isBuyerMaker"] else Side.BUY) for t in data]
