"""The one rule for a sane price and quantity from an exchange, in book levels and trades alike.

A price must lie in (0, PRICE_MAX] and a quantity in [0, QTY_MAX]; a quantity of 0 deletes a book level. Anything
else is malformed: NaN, an infinity (float("1e400") overflows to inf), a negative number, a zero price, or a
magnitude no market has. The adapters count such a frame as malformed, resync the symbol, and publish none of it.

The bounds leave wide room above real markets. The largest prices are BTC quoted in rupiah or dong (~1e9), and the
largest level quantities are meme coins with ~1e12 units on one level (their exchanges quote "1000SHIB" or
"1MBABYDOGE" above that). Prices have no lower bound but zero, because sub-satoshi tokens trade at 1e-9 and below.
Negative prices (calendar spreads) are on no market these adapters serve.

The C module (mdengine._speedups: book functions, the REST depth reader, the fast lane) reads PRICE_MAX and QTY_MAX
from this module when it loads. It keeps no copy of its own.
"""

from __future__ import annotations

PRICE_MAX = 1e12
QTY_MAX = 1e15


def sane(price: float, qty: float) -> bool:
    """True when `price` and `qty` obey the rule (a NaN fails every comparison, so it fails here too)."""
    return 0.0 < price <= PRICE_MAX and 0.0 <= qty <= QTY_MAX


def trade_numbers(price: object, qty: object) -> tuple[float, float]:
    """A trade's price and quantity as floats. Raises ValueError (as float() does for text) when they break the
    rule, so an adapter handles them like any other unreadable field."""
    p, q = float(price), float(qty)  # type: ignore[arg-type]
    if not (0.0 < p <= PRICE_MAX and 0.0 <= q <= QTY_MAX):
        raise ValueError(f"a trade of {qty!r} at {price!r} is not a valid price and quantity")
    return p, q


FUNDING_RATE_MAX = 1.0  # a funding rate is a fraction per period: 100 % would be absurd on any exchange
OPEN_INTEREST_MAX = 1e18  # contracts or base units; far above any market's

# perp field -> the closed range its value must lie in (a price must also be above 0)
_PERP_RANGES = {"mark_price": (0.0, PRICE_MAX), "index_price": (0.0, PRICE_MAX),
                "funding_rate": (-FUNDING_RATE_MAX, FUNDING_RATE_MAX),
                "next_funding_rate": (-FUNDING_RATE_MAX, FUNDING_RATE_MAX), "open_interest": (0.0, OPEN_INTEREST_MAX)}


def perp_fields(*, next_funding_ms: object = None, **values: object) -> dict[str, float | int]:
    """A perp record's fields (mark_price, index_price, funding_rate, next_funding_rate, open_interest: numbers or
    decimal text; next_funding_ms: a time in ms) for PerpStatsUpdate. A value that is None or "" is absent, left out
    (never zero); so is a next funding time of 0 (a delivery contract has none). Raises ValueError for a value
    outside its range (a price must be in (0, PRICE_MAX]), NaN included, so adapters count it as malformed."""
    out: dict[str, float | int] = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        low, high = _PERP_RANGES[name]  # KeyError: a field this rule does not know (an adapter bug)
        v = float(value)  # type: ignore[arg-type]
        if not low <= v <= high or (high == PRICE_MAX and v == 0.0):
            raise ValueError(f"{name} {value!r} is outside its range")
        out[name] = v
    if next_funding_ms is not None and next_funding_ms != "":
        ms = int(next_funding_ms)  # type: ignore[call-overload]
        if not 0 <= ms <= 10**15:
            raise ValueError(f"next funding time {next_funding_ms!r} ms is not a time")
        if ms:
            out["next_funding_ns"] = ms * 1_000_000
    return out
