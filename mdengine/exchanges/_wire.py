"""Small wire-level helpers shared by the OKX, Bybit and Bitget adapters (pure functions)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from ..core.types import TradeFlags

T = TypeVar("T")
_MASK63 = (1 << 63) - 1
_MAX_INT_ID = 1 << 63

loads = orjson.loads  # raises orjson.JSONDecodeError (a ValueError) on bad input
dumps = orjson.dumps


def dumps_str(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def trade_id(raw: Any) -> tuple[int, int]:
    """(trade_id, flags) for the store: integers as they are, anything else (UUIDs) as a stable 63-bit hash."""
    s = str(raw)
    if s.isdigit():
        v = int(s)
        if v < _MAX_INT_ID:
            return v, 0
    digest = hashlib.blake2b(s.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63, TradeFlags.ID_HASHED


def expiry_yymmdd(ms: Any) -> str:
    """A delivery time in epoch ms as the YYMMDD suffix of unified dated-future symbols."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%y%m%d")


def chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


_PLAIN_PAIR = re.compile(r"[A-Z0-9]{2,30}")


def split_pair(native: str, quotes: Sequence[str]) -> tuple[str, str] | None:
    """(base, quote) of a concatenated native id ("BTCUSDT" -> ("BTC", "USDT")) by the longest of `quotes` it ends
    with; None when it is not upper-case letters and digits, or ends with none of them."""
    if not _PLAIN_PAIR.fullmatch(native):
        return None
    for q in sorted(quotes, key=len, reverse=True):
        if native.endswith(q) and len(native) > len(q):
            return native[:-len(q)], q
    return None


def decimals_step(places: Any) -> float:
    """10^-places, for exchanges that give precisions as a number of decimals."""
    return 10.0 ** -int(places)
