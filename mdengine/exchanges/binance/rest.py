"""Binance REST: depth, recent-trade and perp URLs, and their parsers (pure: URL in, JSON out, values out)."""

from __future__ import annotations

from urllib.parse import urlencode

from ...core.types import MarketKind, Side
from .._rest import RestBook, RestError, RestPerp, RestSymbol, book, perp_record, short, trade_row

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


def perp_urls(base: str, sym: RestSymbol) -> list[str]:
    """GET urls of a USDⓈ-M perp record: BN-UM "Mark Price" (premiumIndex: mark, index, funding rate, next funding
    time) and "Open Interest"; each weighs 1 with a symbol."""
    if sym.kind == MarketKind.SPOT:
        raise ValueError(f"binance: spot {sym.native!r} has no perp data")
    q = urlencode({"symbol": sym.native})
    return [f"{base}/fapi/v1/premiumIndex?{q}", f"{base}/fapi/v1/openInterest?{q}"]


def parse_perp(docs: list[object]) -> RestPerp:
    """The answers of `perp_urls`, in order. lastFundingRate is the rate of the coming settlement (as ``r`` on the
    stream); a delivery contract's "" and 0 are absent. Binance announces no next rate."""
    mark, oi = (payload(d) for d in docs)
    if not isinstance(mark, dict) or not isinstance(oi, dict):
        raise RestError(f"binance: unexpected REST perp answer {short(docs)}")
    return perp_record("binance", mark.get("time"), mark_price=mark.get("markPrice"),
                       index_price=mark.get("indexPrice"), funding_rate=mark.get("lastFundingRate"),
                       next_funding_ms=mark.get("nextFundingTime"), open_interest=oi.get("openInterest"))
