"""OKX REST: depth, recent-trade and perp URLs, and their parsers (pure: URL in, JSON out, values out)."""

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


def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of at least min(depth, 400) levels per side."""
    return f"{base}/api/v5/market/books?{urlencode({'instId': sym.native, 'sz': min(max(depth, 1), 400)})}"


def trades_url(base: str, sym: RestSymbol, limit: int = 100) -> str:
    """GET url of the most recent public trades."""
    return f"{base}/api/v5/market/trades?{urlencode({'instId': sym.native, 'limit': min(max(limit, 1), 500)})}"


def payload(doc: object) -> object:
    """The ``data`` of an OKX envelope; RestError with OKX's message unless ``code`` is "0"."""
    doc = envelope("okx", doc)
    if str(doc.get("code")) != "0":
        raise RestError(f"okx: {doc.get('msg') or 'error'} (code {doc.get('code')})")
    return doc.get("data")


def parse_depth(data: object) -> RestBook:
    """A depth payload: a one-element list; no update id, ``ts`` in ms."""
    if not isinstance(data, list) or not data:
        raise RestError("okx: REST depth has no data")
    return book("okx", data[0])


def trade_rows(data: object, recv_ts_ns: int) -> list[tuple]:
    """TRADE_DTYPE rows of a trades payload, oldest first (OKX lists newest first)."""
    if not isinstance(data, list):
        raise RestError(f"okx: unexpected REST trades {short(data)}")
    return [trade_row(t["ts"], recv_ts_ns, t["px"], t["sz"], t["tradeId"], taker_side(t["side"]))
            for t in reversed(data)]


def perp_urls(base: str, sym: RestSymbol) -> list[str]:
    """GET urls of a SWAP's perp record (OKX-DOC public data): mark price, index ticker (of the index, BTC-USDT for
    BTC-USDT-SWAP), funding rate and open interest."""
    if sym.kind == MarketKind.SPOT:
        raise ValueError(f"okx: spot {sym.native!r} has no perp data")
    inst = urlencode({"instType": "SWAP", "instId": sym.native})
    index = urlencode({"instId": sym.native.rsplit("-", 1)[0]})
    return [f"{base}/api/v5/public/mark-price?{inst}", f"{base}/api/v5/market/index-tickers?{index}",
            f"{base}/api/v5/public/funding-rate?{urlencode({'instId': sym.native})}",
            f"{base}/api/v5/public/open-interest?{inst}"]


def parse_perp(docs: list[object]) -> RestPerp:
    """The answers of `perp_urls`, in order: markPx, idxPx, fundingRate for the settlement at fundingTime,
    nextFundingRate ("" unless OKX forecasts it: then absent), oi (contracts). The time is the mark's ``ts``."""
    mark, index, funding, oi = (first_row("okx", payload(d), "perp") for d in docs)
    return perp_record("okx", mark.get("ts"), mark_price=mark.get("markPx"), index_price=index.get("idxPx"),
                       funding_rate=funding.get("fundingRate"), next_funding_rate=funding.get("nextFundingRate"),
                       next_funding_ms=funding.get("fundingTime"), open_interest=oi.get("oi"))
