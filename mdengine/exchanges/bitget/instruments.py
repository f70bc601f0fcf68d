"""Bitget's instrument lists: the v2 spot symbols and mix contracts requests, their parser, and bare native ids."""

from __future__ import annotations

from collections.abc import Mapping

from ...core.events import Event, FetchRest, ProtocolError
from ...core.types import MarketKind
from ...symbols import Instrument, unified_symbol
from .._wire import decimals_step, expiry_yymmdd, loads, split_pair
from .endpoints import DEFAULT_ENDPOINTS

_FUTURES = ("USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES")
MARKETS = ("SPOT",) + _FUTURES  # instTypes / product types the feed serves
_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
_QUOTES = ("USDT", "USDC", "USD", "BTC", "ETH", "EUR", "BRL")  # to split a native id no list names


def requests(endpoints: Mapping[str, str], markets: list[str] | None = None) -> list[Event]:
    """One FetchRest per market: spot symbols, or the contracts of a futures product type."""
    rest = {**DEFAULT_ENDPOINTS, **endpoints}["rest"].rstrip("/")
    out: list[Event] = []
    for m in markets or ("SPOT", "USDT-FUTURES", "COIN-FUTURES"):
        url = (f"{rest}/api/v2/spot/public/symbols" if m == "SPOT"
               else f"{rest}/api/v2/mix/market/contracts?productType={m}")
        out.append(FetchRest(f"instruments:{m}", url))
    return out


def parse(request_id: str, body: bytes) -> tuple[list[Instrument], list[Event]]:
    """Instruments of one answer, and a ProtocolError for an error envelope or rows skipped."""
    market = request_id.rsplit(":", 1)[-1]
    try:
        msg = loads(body)
        if str(msg.get("code")) != "00000":
            return [], [ProtocolError("rest", f"{request_id}: Bitget error {msg.get('code')}: {msg.get('msg')}",
                                      malformed=False)]
        rows = msg["data"]
    except _PARSE_ERRORS as e:
        return [], [ProtocolError("rest", f"{request_id}: bad instrument list: {e!r}")]
    out: list[Instrument] = []
    bad = 0
    for row in rows:
        try:
            out.append(_spot(row) if market == "SPOT" else _contract(market, row))
        except _PARSE_ERRORS:
            bad += 1
    return out, ([ProtocolError("rest", f"{request_id}: {bad} instrument rows skipped")] if bad else [])


def _spot(row: dict) -> Instrument:
    base, quote = row["baseCoin"], row["quoteCoin"]
    return Instrument("bitget", "SPOT", row["symbol"], unified_symbol(base, quote, MarketKind.SPOT),
                      MarketKind.SPOT, base, quote, "", decimals_step(row["pricePrecision"]),
                      decimals_step(row["quantityPrecision"]), 1.0)


def _contract(market: str, row: dict) -> Instrument:
    base, quote = row["baseCoin"], row["quoteCoin"]
    kind = MarketKind.INVERSE if market == "COIN-FUTURES" else MarketKind.LINEAR
    settle = base if kind == MarketKind.INVERSE else quote
    tick = float(row.get("priceEndStep") or 1) * decimals_step(row["pricePlace"])
    dated = row.get("symbolType") == "delivery" and int(row.get("deliveryTime") or 0) > 0
    expiry = expiry_yymmdd(row["deliveryTime"]) if dated else ""
    return Instrument("bitget", market, row["symbol"], unified_symbol(base, quote, kind, settle, expiry), kind,
                      base, quote, settle, tick, float(row["sizeMultiplier"]), 1.0)


def native_instrument(native: str, market: str | None = None) -> Instrument | None:
    """Symbols are BASEQUOTE in every instType (SPOT unless `market` names a futures product type)."""
    it = market or "SPOT"
    pair = split_pair(native, _QUOTES)
    if it not in MARKETS or pair is None:
        return None
    base, quote = pair
    if it == "SPOT":
        return Instrument("bitget", it, native, unified_symbol(base, quote, MarketKind.SPOT), MarketKind.SPOT,
                          base, quote, "", 0.0, 0.0, 1.0)
    kind = MarketKind.INVERSE if it == "COIN-FUTURES" else MarketKind.LINEAR
    settle = base if kind == MarketKind.INVERSE else quote
    return Instrument("bitget", it, native, unified_symbol(base, quote, kind, settle), kind, base, quote, settle,
                      0.0, 0.0, 1.0)

