"""What every exchange's REST module shares: the result types, the error type and the level reader (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.types import Side
from ..errors import MdengineError
from ..limits import perp_fields, sane, trade_numbers
from ._wire import trade_id

MAX_ERROR_TEXT = 300  # characters of an exchange's answer quoted in an error


class RestError(MdengineError, RuntimeError):
    """A REST request failed: transport error, HTTP error status or an exchange error code.

    `status` is the HTTP status (0 for a transport error); the message carries the exchange's own text.
    """

    def __init__(self, message: str, status: int = 0, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


@dataclass(frozen=True)
class RestSymbol:
    """What the REST endpoints need to name one instrument."""

    exchange: str
    rest_market: str  # key of mdengine.rest.DEFAULT_REST
    native: str
    kind: int  # MarketKind
    settle: str = ""


@dataclass(frozen=True)
class RestBook:
    """A REST depth snapshot: (n, 2) float arrays of [price, qty], best first."""

    bids: np.ndarray
    asks: np.ndarray
    update_id: int  # 0 where the exchange gives none (OKX, Bitget)
    exch_ts_ns: int  # 0 where the exchange gives none (Binance spot)


@dataclass(frozen=True)
class RestPerp:
    """A perp record read over REST: `fields` as `mdengine.limits.perp_fields` gives them (only what the answers
    carried; absent fields are left out, never zero) and the exchange's time of the answer (0 where it gives none)."""

    fields: dict
    exch_ts_ns: int


def perp_record(exchange: str, exch_ts_ms: object, **values: object) -> RestPerp:
    """A RestPerp of `values` (perp_fields' names; next_funding_ms in ms) under the feed's own range rule: a value
    out of range or not a number is a RestError, never stored."""
    try:
        return RestPerp(perp_fields(**values), as_int(exch_ts_ms) * 1_000_000)
    except (TypeError, ValueError) as e:
        raise RestError(f"{exchange}: bad perp value in REST answer: {e}") from e


def first_row(exchange: str, data: object, what: str) -> dict:
    """The first object of a REST `data` list (OKX, Bitget and Bybit answer a one-symbol query with a list)."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise RestError(f"{exchange}: REST {what} has no data: {short(data)}")
    return data[0]


def short(value: object) -> str:
    """At most MAX_ERROR_TEXT characters of a body or value, for an error message."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:MAX_ERROR_TEXT]


def envelope(exchange: str, doc: object) -> dict:
    """`doc` if it is a JSON object, else RestError (every exchange but Binance wraps answers in one)."""
    if not isinstance(doc, dict):
        raise RestError(f"{exchange}: unexpected REST answer {short(doc)}")
    return doc


def levels(exchange: str, rows: object, what: str) -> np.ndarray:
    """(n, 2) float64 from [[px, qty, ...], ...]; strings or numbers (Bitget mix sends numbers)."""
    if not isinstance(rows, list):
        raise RestError(f"{exchange}: REST depth has no {what} list")
    out = np.empty((len(rows), 2), dtype=np.float64)
    try:
        for i, row in enumerate(rows):
            out[i, 0] = float(row[0])
            out[i, 1] = float(row[1])
            if not sane(out[i, 0], out[i, 1]):  # the book's own rule (mdengine.limits)
                raise ValueError("not a valid price and quantity")
    except (TypeError, ValueError, LookupError) as e:  # LookupError: a dict (or other mapping) for a level
        raise RestError(f"{exchange}: bad {what} level {rows[i]!r} in REST depth") from e
    return out


def book(exchange: str, data: object, *, bids: str = "bids", asks: str = "asks", update_id: str = "",
         ts: str = "ts") -> RestBook:
    """A RestBook from one depth object: its `bids` and `asks` lists, `update_id` key ("": none) and ms time `ts`."""
    if not isinstance(data, dict):
        raise RestError(f"{exchange}: unexpected REST depth {short(data)}")
    uid = as_int(data.get(update_id)) if update_id else 0
    return RestBook(levels(exchange, data.get(bids), "bids"), levels(exchange, data.get(asks), "asks"), uid,
                    as_int(data.get(ts)) * 1_000_000)


def as_int(value: object) -> int:
    """`value` as an int, 0 if it is missing or not a number."""
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def trade_row(ts_ms: object, recv_ts_ns: int, price: object, qty: object, raw_id: object, side: int) -> tuple:
    """One TRADE_DTYPE row of a REST trade (`index` -1: it never was in a ring); ids map as the feed maps them."""
    tid, flags = trade_id(raw_id)
    return (int(ts_ms) * 1_000_000, recv_ts_ns, *trade_numbers(price, qty), tid, side, flags, -1)


def taker_side(text: object) -> int:
    """Side of a ``buy``/``Buy``/``sell`` field."""
    return Side.BUY if str(text).lower() == "buy" else Side.SELL
