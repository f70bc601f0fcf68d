"""Bybit's instrument lists: the v5 instruments-info requests (paged), their parser, and bare native ids."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, quote, urlsplit

from ...core.events import Event, FetchRest, ProtocolError
from ...core.types import MarketKind
from ...symbols import Instrument, unified_symbol
from .._wire import expiry_yymmdd, loads, split_pair
from .endpoints import DEFAULT_ENDPOINTS
from .naming import CATEGORY

MARKETS = ("spot", "linear", "inverse")  # v5 categories the feed serves
_KINDS = {category: kind for kind, category in CATEGORY.items()}
_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
_QUOTES = ("USDT", "USDC", "USD", "BTC", "ETH", "EUR", "BRL", "DAI")  # to split a native id no list names


def requests(endpoints: Mapping[str, str], markets: list[str] | None = None) -> list[Event]:
    """One FetchRest of instruments-info per category (spot, linear, inverse unless `markets` says)."""
    rest = {**DEFAULT_ENDPOINTS, **endpoints}["rest"].rstrip("/")
    out: list[Event] = []
    for cat in markets or MARKETS:
        url = f"{rest}/v5/market/instruments-info?category={cat}" + ("" if cat == "spot" else "&limit=1000")
        out.append(FetchRest(url, url))  # the id is the first page's URL: later pages append a cursor
    return out


def parse(request_id: str, body: bytes) -> tuple[list[Instrument], list[Event]]:
    """Instruments of one page, and the request of the next page while there is a cursor."""
    try:
        cat = parse_qs(urlsplit(request_id).query)["category"][0]
        msg = loads(body)
        if msg.get("retCode") != 0:
            return [], [ProtocolError("rest", f"{request_id}: Bybit error {msg.get('retCode')}: "
                                              f"{msg.get('retMsg')}", malformed=False)]
        result = msg["result"]
        rows = result["list"]
    except _PARSE_ERRORS as e:
        return [], [ProtocolError("rest", f"{request_id}: bad instrument list: {e!r}")]
    out: list[Instrument] = []
    bad = 0
    for row in rows:
        try:
            out.append(_instrument(cat, row))
        except _PARSE_ERRORS:
            bad += 1
    events: list[Event] = [ProtocolError("rest", f"{request_id}: {bad} instrument rows skipped")] if bad else []
    cursor = result.get("nextPageCursor")
    if cursor:
        events.append(FetchRest(request_id, f"{request_id}&cursor={quote(str(cursor), safe='')}"))
    return out, events


def _instrument(cat: str, row: dict) -> Instrument:
    native, base, quote_ = row["symbol"], row["baseCoin"], row["quoteCoin"]
    tick = float(row["priceFilter"]["tickSize"])
    lots = row["lotSizeFilter"]
    kind = _KINDS[cat]
    if cat == "spot":
        return Instrument("bybit", cat, native, unified_symbol(base, quote_, kind), kind, base, quote_, "", tick,
                          float(lots["basePrecision"]), 1.0)
    settle = row.get("settleCoin") or (base if kind == MarketKind.INVERSE else quote_)
    dated = str(row.get("contractType", "")).endswith("Futures") and int(row.get("deliveryTime") or 0) > 0
    expiry = expiry_yymmdd(row["deliveryTime"]) if dated else ""
    return Instrument("bybit", cat, native, unified_symbol(base, quote_, kind, settle, expiry), kind, base, quote_,
                      settle, tick, float(lots["qtyStep"]), 1.0)


def native_instrument(native: str, market: str | None = None) -> Instrument | None:
    """Symbols are BASEQUOTE in every category (spot unless `market` says linear or inverse); dated futures
    (BTCUSDT-27JUN25) are not guessed."""
    cat = market or "spot"
    pair = split_pair(native, _QUOTES)
    if cat not in _KINDS or pair is None:
        return None
    base, quote_ = pair
    kind = _KINDS[cat]
    if cat == "spot":
        return Instrument("bybit", cat, native, unified_symbol(base, quote_, kind), kind, base, quote_, "", 0.0,
                          0.0, 1.0)
    settle = base if kind == MarketKind.INVERSE else quote_
    return Instrument("bybit", cat, native, unified_symbol(base, quote_, kind, settle), kind, base, quote_,
                      settle, 0.0, 0.0, 1.0)

