"""A local order book that keeps each level's exact wire strings (for checksums) and its floats.

Pure state: no I/O, no clock. Prices are keyed by their float value, so "0.5000" and "0.5" are the
same level; the strings kept are the latest ones the exchange sent for that level, which is what
OKX's and Bitget's CRC32 checksums are computed over.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import crcmod.predefined

_NAN = math.nan
_crc32 = crcmod.predefined.mkPredefinedCrcFun("crc-32")  # IEEE 802.3, same as zlib.crc32
Level = Sequence[str]  # [price, qty, ...] as sent; extra fields (OKX order counts) are ignored


class BookSide:
    """One side, best level first. Keys are -price for bids and price for asks, kept sorted ascending."""

    __slots__ = ("is_bid", "keys", "levels")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.keys: list[float] = []
        self.levels: dict[float, tuple[float, float, str, str]] = {}  # key -> (px, qty, px_str, qty_str)

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.keys.clear()
        self.levels.clear()

    def set(self, px_str: str, qty_str: str) -> None:
        """Set a level's quantity; zero removes it (removing an absent level is harmless)."""
        px = float(px_str)
        qty = float(qty_str)
        key = -px if self.is_bid else px
        levels = self.levels
        if qty == 0.0:
            if levels.pop(key, None) is not None:
                keys = self.keys
                del keys[bisect_left(keys, key)]
            return
        if key not in levels:
            keys = self.keys
            keys.insert(bisect_left(keys, key), key)
        levels[key] = (px, qty, px_str, qty_str)

    def update(self, levels: Iterable[Level]) -> None:
        for lv in levels:
            self.set(lv[0], lv[1])

    def replace(self, levels: Iterable[Level]) -> None:
        self.clear()
        self.update(levels)

    def best(self) -> tuple[float, float] | None:
        if not self.keys:
            return None
        px, qty, _, _ = self.levels[self.keys[0]]
        return px, qty

    def top(self, n: int) -> list[tuple[float, float]]:
        lv = self.levels
        return [lv[k][:2] for k in self.keys[:n]]

    def top_strings(self, n: int) -> list[tuple[str, str]]:
        lv = self.levels
        return [lv[k][2:] for k in self.keys[:n]]


class LocalBook:
    """Both sides plus the exchange's sequence position. Mutated only by the adapter that owns it."""

    __slots__ = ("bids", "asks", "update_id", "exch_ts_ns")

    def __init__(self) -> None:
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        self.update_id = 0
        self.exch_ts_ns = 0

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.update_id = 0

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.bids.replace(bids)
        self.asks.replace(asks)

    def apply_update(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.bids.update(bids)
        self.asks.update(asks)

    def is_crossed(self) -> bool:
        b, a = self.bids.best(), self.asks.best()
        return b is not None and a is not None and b[0] >= a[0]

    def flat_top(self, n: int) -> tuple[list[float], int, int]:
        """The top `n` levels in the store's layout: ([bid_px, bid_qty, ask_px, ask_qty] * levels, nb, na)."""
        bk = self.bids.keys[:n]
        ak = self.asks.keys[:n]
        bl, al = self.bids.levels, self.asks.levels
        nb, na = len(bk), len(ak)
        flat = [_NAN, 0.0, _NAN, 0.0] * (nb if nb > na else na)
        if nb:
            b = [bl[k] for k in bk]
            flat[0:4 * nb:4] = [x[0] for x in b]
            flat[1:4 * nb:4] = [x[1] for x in b]
        if na:
            a = [al[k] for k in ak]
            flat[2:4 * na:4] = [x[0] for x in a]
            flat[3:4 * na:4] = [x[1] for x in a]
        return flat, nb, na

    def checksum_string(self, depth: int = 25) -> str:
        """OKX/Bitget check string: bid1px:bid1sz:ask1px:ask1sz:... over exact strings; a short side's
        missing entries are skipped."""
        b = self.bids.top_strings(depth)
        a = self.asks.top_strings(depth)
        parts: list[str] = []
        for i in range(max(len(b), len(a))):
            if i < len(b):
                parts += b[i]
            if i < len(a):
                parts += a[i]
        return ":".join(parts)

    def checksum(self, depth: int = 25) -> int:
        """CRC32 (IEEE) of `checksum_string`, as a signed 32-bit integer like OKX and Bitget send it."""
        c = _crc32(self.checksum_string(depth).encode())
        return c - (1 << 32) if c >= 1 << 31 else c
