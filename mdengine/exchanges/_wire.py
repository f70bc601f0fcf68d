"""Small wire-level helpers shared by the OKX, Bybit and Bitget adapters (pure functions)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from ..store.layout import TradeFlags

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


def decimals_step(places: Any) -> float:
    """10^-places, for exchanges that give precisions as a number of decimals."""
    return 10.0 ** -int(places)
