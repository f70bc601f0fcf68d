"""OKX's instrument lists: the public/instruments requests, their parser, and instruments named by a bare instId."""

from __future__ import annotations

from collections.abc import Mapping

from ...core.events import Event, FetchRest, ProtocolError
from ...core.types import MarketKind
from ...symbols import Instrument, unified_symbol
from .._wire import loads
from .endpoints import DEFAULT_ENDPOINTS

_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


def requests(endpoints: Mapping[str, str], markets: list[str] | None = None) -> list[Event]:
    """One FetchRest per instType (SPOT, SWAP, FUTURES unless `markets` says)."""
    rest = {**DEFAULT_ENDPOINTS, **endpoints}["rest"].rstrip("/")
    return [FetchRest(f"instruments:{m}", f"{rest}/api/v5/public/instruments?instType={m}")
            for m in (markets or ("SPOT", "SWAP", "FUTURES"))]


def parse(request_id: str, body: bytes) -> tuple[list[Instrument], list[Event]]:
    """Instruments of one answer, and a ProtocolError for an error envelope or rows skipped."""
    try:
        msg = loads(body)
        if str(msg.get("code")) != "0":
            return [], [ProtocolError("rest", f"{request_id}: OKX error {msg.get('code')}: {msg.get('msg')}",
                                      malformed=False)]
        rows = msg["data"]
    except _PARSE_ERRORS as e:
        return [], [ProtocolError("rest", f"{request_id}: bad instrument list: {e!r}")]
    out: list[Instrument] = []
    bad = 0
    for row in rows:
        try:
            out.append(_instrument(row))
        except _PARSE_ERRORS:
            bad += 1
    return out, ([ProtocolError("rest", f"{request_id}: {bad} instrument rows skipped")] if bad else [])


def _instrument(row: dict) -> Instrument:
    it, native = row["instType"], row["instId"]
    tick, lot = float(row["tickSz"]), float(row["lotSz"])
    if it in ("SPOT", "MARGIN"):
        base, quote = row["baseCcy"], row["quoteCcy"]
        return Instrument("okx", "SPOT", native, unified_symbol(base, quote, MarketKind.SPOT), MarketKind.SPOT,
                          base, quote, "", tick, lot, 1.0)
    family = row.get("instFamily") or row.get("uly") or native
    base, quote = family.split("-")[:2]
    settle = row.get("settleCcy") or ""
    ct_val = float(row.get("ctVal") or 1.0)
    parts = native.split("-")
    if it == "OPTION":  # BTC-USD-250627-50000-C -> BTC/USD:BTC-250627-50000-C (ccxt style)
        unified = f"{base}/{quote}:{settle or base}-{'-'.join(parts[2:])}"
        return Instrument("okx", it, native, unified, MarketKind.OPTION, base, quote, settle or base, tick, lot,
                          ct_val)
    kind = MarketKind.INVERSE if row.get("ctType") == "inverse" else MarketKind.LINEAR
    expiry = parts[2] if it == "FUTURES" and len(parts) > 2 else ""
    unified = unified_symbol(base, quote, kind, settle, expiry)
    return Instrument("okx", it, native, unified, kind, base, quote, settle, tick, lot, ct_val)


def native_instrument(native: str, market: str | None = None) -> Instrument | None:
    """instIds spell their market: BASE-QUOTE (SPOT), BASE-QUOTE-SWAP, BASE-QUOTE-YYMMDD (FUTURES); a -USD
    quote is inverse (settled in the base). Options are not guessed."""
    parts = native.split("-")
    if not 2 <= len(parts) <= 3 or not all(p.isalnum() and p == p.upper() for p in parts):
        return None
    base, quote = parts[:2]
    it = "SPOT" if len(parts) == 2 else "SWAP" if parts[2] == "SWAP" else "FUTURES" if (
        len(parts[2]) == 6 and parts[2].isdigit()) else None
    if it is None or market not in (None, it):
        return None
    if it == "SPOT":
        return Instrument("okx", it, native, unified_symbol(base, quote, MarketKind.SPOT), MarketKind.SPOT, base,
                          quote, "", 0.0, 0.0, 1.0)
    kind = MarketKind.INVERSE if quote == "USD" else MarketKind.LINEAR
    settle = base if kind == MarketKind.INVERSE else quote
    expiry = parts[2] if it == "FUTURES" else ""
    return Instrument("okx", it, native, unified_symbol(base, quote, kind, settle, expiry), kind, base, quote,
                      settle, 0.0, 0.0, 0.0)

