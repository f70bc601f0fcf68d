"""Binance's instrument lists: the spot and USDⓈ-M exchangeInfo requests, their parser, and bare native ids."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from ...core.events import Event, FetchRest, ProtocolError
from ...core.types import MarketKind
from ...symbols import Instrument, unified_symbol
from .._wire import split_pair
from ..base import AdapterError
from .endpoints import DEFAULT_ENDPOINTS, SPOT, USDM

MARKETS = (SPOT, USDM)
_loads = orjson.loads
_BAD_INPUT = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# quote assets, to split a native id no instrument list names ("BTCUSDT" -> BTC, USDT)
_QUOTES = ("USDT", "USDC", "FDUSD", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY", "DAI")


def requests(endpoints: Mapping[str, str], markets: list[str] | None = None) -> list[Event]:
    """One FetchRest of exchangeInfo per market (spot and usdm unless `markets` says)."""
    ep = {**DEFAULT_ENDPOINTS, **endpoints}
    out: list[Event] = []
    for m in markets or MARKETS:
        if m == SPOT:
            out.append(FetchRest("instruments:spot", ep["spot_rest"].rstrip("/") + "/api/v3/exchangeInfo"))
        elif m == USDM:
            out.append(FetchRest("instruments:usdm", ep["usdm_rest"].rstrip("/") + "/fapi/v1/exchangeInfo"))
        else:
            raise ValueError(f"binance has no market {m!r}; markets: {', '.join(MARKETS)}")
    return out


def parse(request_id: str, body: bytes) -> tuple[list[Instrument], list[Event]]:
    """Instruments of one exchangeInfo answer, and a ProtocolError for an unreadable one or rows skipped."""
    market = request_id.partition(":")[2]
    if market not in MARKETS:
        raise AdapterError(f"binance: {request_id!r} is not an instrument request of this adapter")
    try:
        rows = _loads(body)["symbols"]
        if not isinstance(rows, list):
            raise TypeError("'symbols' is not a list")
    except (*_BAD_INPUT, orjson.JSONDecodeError) as e:
        return [], [ProtocolError(request_id, f"bad exchangeInfo ({market}): {type(e).__name__}: {e}")]
    out: list[Instrument] = []
    bad = 0
    for row in rows:
        try:
            inst = _instrument(market, row)
        except _BAD_INPUT:
            bad += 1
            continue
        if inst is not None:
            out.append(inst)
    events: list[Event] = []
    if bad:
        events.append(ProtocolError(request_id, f"{bad} malformed symbol entries in exchangeInfo ({market})"))
    return out, events


def _instrument(market: str, row: dict) -> Instrument | None:
    if row["status"] != "TRADING":
        return None
    filters = {f["filterType"]: f for f in row.get("filters", ())}
    tick = float(filters["PRICE_FILTER"]["tickSize"]) if "PRICE_FILTER" in filters else 0.0
    lot = float(filters["LOT_SIZE"]["stepSize"]) if "LOT_SIZE" in filters else 0.0
    native, base, quote = row["symbol"], row["baseAsset"], row["quoteAsset"]
    if market == SPOT:
        return Instrument("binance", SPOT, native, unified_symbol(base, quote, MarketKind.SPOT), MarketKind.SPOT,
                          base, quote, tick_size=tick, lot_size=lot)
    settle = row.get("marginAsset") or quote
    ctype = row.get("contractType", "")
    if ctype == "PERPETUAL":
        expiry = ""
    elif "_" in native and ctype.endswith("QUARTER"):
        expiry = native.rpartition("_")[2]  # BTCUSDT_250627 -> 250627
    else:
        return None  # other contract types are not USDⓈ-M linear perps/quarterlies
    return Instrument("binance", USDM, native, unified_symbol(base, quote, MarketKind.LINEAR, settle, expiry),
                      MarketKind.LINEAR, base, quote, settle, tick, lot)


def native_instrument(native: str, market: str | None = None) -> Instrument | None:
    """Spot unless `market` is "usdm" (a perpetual; quarterlies, BTCUSDT_250627, are not guessed)."""
    m = market or SPOT
    pair = split_pair(native, _QUOTES)
    if m not in MARKETS or pair is None:
        return None
    base, quote = pair
    if m == SPOT:
        return Instrument("binance", SPOT, native, unified_symbol(base, quote, MarketKind.SPOT), MarketKind.SPOT,
                          base, quote)
    return Instrument("binance", USDM, native, unified_symbol(base, quote, MarketKind.LINEAR, quote),
                      MarketKind.LINEAR, base, quote, quote, 0.0, 0.0, 1.0)

