"""A local order book that keeps each level's exact wire strings (for checksums) and its floats.

Pure state: no I/O, no clock. Prices are keyed by their float value, so "0.5000" and "0.5" are the
same level; the strings kept are the latest ones the exchange sent for that level, which is what
OKX's and Bitget's CRC32 checksums are computed over.

The per-frame work (applying levels, packing the top levels for the store, the checksum) runs in the C
module `mdengine._speedups` when it was built, else in the pure-Python functions below (`_py_*`): same
containers, same results (tests/test_book_speedups.py checks one against the other). `IMPLEMENTATION` says
which; MDENGINE_NO_SPEEDUPS=1 forces Python.
"""

from __future__ import annotations

import math
import os
import struct
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from functools import cache
from operator import itemgetter, neg

import crcmod.predefined

_NAN = math.nan
_INF = math.inf
_crc32 = crcmod.predefined.mkPredefinedCrcFun("crc-32")  # IEEE 802.3, same as zlib.crc32
Level = Sequence[str]  # [price, qty, ...] as sent; extra fields (OKX order counts) are ignored


# ----------------------------------------------------------------------------- the pure-Python implementation
def _py_side_update(keys: list[float], qtys: dict[float, float], raw: dict[float, str], bid: bool,
                    levels: Iterable[Level], watch: int) -> bool:
    """`BookSide.update` on a side's containers."""
    # A change at a key beyond the watch-th best key cannot move the top `watch` levels; the
    # limit can only get stricter within this call, so the first value is a safe bound.
    limit = keys[watch - 1] if 0 < watch <= len(keys) else _INF
    touched = False
    for lv in levels:
        px_s = lv[0]
        q_s = lv[1]
        q = float(q_s)
        k = -float(px_s) if bid else float(px_s)
        if q == 0.0:
            if qtys.pop(k, None) is not None:
                del keys[bisect_left(keys, k)]
                del raw[k]
                if k <= limit:
                    touched = True
            continue
        s = px_s + ":" + q_s
        if k not in qtys:
            insort(keys, k)
        qtys[k] = q
        raw[k] = s
        if k <= limit:
            touched = True
    return touched


def _py_side_replace(levels: Iterable[Level], sign: float) -> tuple[list[float], dict[float, float],
                                                                   dict[float, str]]:
    """`BookSide.replace`: the new (keys, qty, raw) of a side."""
    qtys: dict[float, float] = {}
    raw: dict[float, str] = {}
    bid = sign < 0
    for lv in levels:
        q = float(lv[1])
        if q == 0.0:
            continue
        k = -float(lv[0]) if bid else float(lv[0])
        s = lv[0] + ":" + lv[1]
        qtys[k] = q
        raw[k] = s
    return sorted(qtys), qtys, raw


@cache
def _levels_struct(n: int) -> struct.Struct:
    return struct.Struct(f"<{4 * n}d")


def _quantities(qty: dict[float, float], keys: list[float]) -> list[float]:
    if len(keys) > 1:
        return list(itemgetter(*keys)(qty))
    return [qty[k] for k in keys]


def _flat(bid_keys: list[float], bid_qty: dict[float, float], ask_keys: list[float], ask_qty: dict[float, float],
          n: int) -> tuple[list[float], int, int]:
    bk = bid_keys[:n]
    ak = ask_keys[:n]
    nb, na = len(bk), len(ak)
    flat = [_NAN, 0.0, _NAN, 0.0] * (nb if nb > na else na)
    if nb:
        flat[0:4 * nb:4] = map(neg, bk)
        flat[1:4 * nb:4] = _quantities(bid_qty, bk)
    if na:
        flat[2:4 * na:4] = ak
        flat[3:4 * na:4] = _quantities(ask_qty, ak)
    return flat, nb, na


def _py_pack_top(dst: bytearray | memoryview, offset: int, bid_keys: list[float], bid_qty: dict[float, float],
                 ask_keys: list[float], ask_qty: dict[float, float], n: int) -> tuple[int, int]:
    """`LocalBook.pack_top` on the sides' containers."""
    if n < 0 or offset < 0:
        raise ValueError("pack_top: negative offset or depth")
    flat, nb, na = _flat(bid_keys, bid_qty, ask_keys, ask_qty, n)
    rows = len(flat) >> 2
    if offset + rows * 32 > len(dst):
        raise ValueError(f"pack_top: {rows} levels at offset {offset} do not fit {len(dst)} bytes")
    if rows:
        _levels_struct(rows).pack_into(dst, offset, *flat)
    return nb, na


def _raw_top(keys: list[float], raw: dict[float, str], n: int) -> list[str]:
    ks = keys[:n]
    if len(ks) > 1:
        return list(itemgetter(*ks)(raw))
    return [raw[k] for k in ks]


def _checksum_string(bid_keys: list[float], bid_raw: dict[float, str], ask_keys: list[float],
                     ask_raw: dict[float, str], depth: int) -> str:
    b = _raw_top(bid_keys, bid_raw, depth)
    a = _raw_top(ask_keys, ask_raw, depth)
    n = min(len(b), len(a))
    parts = [""] * (2 * n)
    parts[0::2] = b[:n]
    parts[1::2] = a[:n]
    parts += b[n:] or a[n:]
    return ":".join(parts)


def _py_checksum(bid_keys: list[float], bid_raw: dict[float, str], ask_keys: list[float], ask_raw: dict[float, str],
                 depth: int) -> int:
    """`LocalBook.checksum` on the sides' containers."""
    c = _crc32(_checksum_string(bid_keys, bid_raw, ask_keys, ask_raw, depth).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


PYTHON_IMPLEMENTATION = {"side_update": _py_side_update, "side_replace": _py_side_replace,
                         "pack_top": _py_pack_top, "checksum": _py_checksum}
try:
    if os.environ.get("MDENGINE_NO_SPEEDUPS"):
        raise ImportError("MDENGINE_NO_SPEEDUPS is set")
    from . import _speedups
except ImportError:
    _speedups = None
C_IMPLEMENTATION = None if _speedups is None else {name: getattr(_speedups, name) for name in PYTHON_IMPLEMENTATION}
#: "c" when the per-frame book work runs in mdengine._speedups, "python" otherwise
IMPLEMENTATION = "python" if _speedups is None else "c"
_impl = C_IMPLEMENTATION or PYTHON_IMPLEMENTATION
_side_update, _side_replace, _pack_top, _checksum = (_impl[k] for k in PYTHON_IMPLEMENTATION)


class BookSide:
    """One side, best level first. Keys are -price for bids and price for asks, kept sorted ascending.

    Quantities and the exact wire strings live in two dicts keyed like `keys`, so the hot operations
    (top-N quantities, checksum strings) are single C-level `itemgetter` calls.
    """

    __slots__ = ("is_bid", "sign", "keys", "qty", "raw")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.sign = -1.0 if is_bid else 1.0  # key = sign * price
        self.keys: list[float] = []
        self.qty: dict[float, float] = {}
        self.raw: dict[float, str] = {}  # key -> "price:qty" exactly as last received

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def levels(self) -> dict[float, tuple[float, float]]:
        """key -> (price, qty); a copy, for inspection (not used on hot paths)."""
        sign = self.sign
        return {k: (sign * k, q) for k, q in self.qty.items()}

    def clear(self) -> None:
        self.keys.clear()
        self.qty.clear()
        self.raw.clear()

    def set(self, px_str: str, qty_str: str) -> None:
        """Set a level's quantity; zero removes it (removing an absent level is harmless)."""
        self.update(((px_str, qty_str),))

    def update(self, levels: Iterable[Level], watch: int = 0) -> bool:
        """Apply level changes; returns True if any of them touched the best `watch` levels
        (any change at all when watch is 0), i.e. whether a published top-`watch` view is now out of date."""
        return _side_update(self.keys, self.qty, self.raw, self.is_bid, levels, watch)

    def replace(self, levels: Iterable[Level]) -> None:
        """Replace the whole side (a snapshot): one sort instead of an insert per level."""
        self.keys, self.qty, self.raw = _side_replace(levels, self.sign)

    def best(self) -> tuple[float, float] | None:
        if not self.keys:
            return None
        k = self.keys[0]
        return self.sign * k, self.qty[k]

    def prices(self, n: int) -> list[float]:
        ks = self.keys[:n]
        return list(map(neg, ks)) if self.is_bid else ks

    def quantities(self, keys: list[float]) -> list[float]:
        return _quantities(self.qty, keys)

    def top(self, n: int) -> list[tuple[float, float]]:
        ks = self.keys[:n]
        return list(zip(self.prices(n), self.quantities(ks), strict=True))

    def top_strings(self, n: int) -> list[tuple[str, str]]:
        raw = self.raw
        return [tuple(raw[k].split(":")) for k in self.keys[:n]]

    def raw_top(self, n: int) -> list[str]:
        return _raw_top(self.keys, self.raw, n)


class LocalBook:
    """Both sides plus the exchange's sequence position. Mutated only by the adapter that owns it."""

    __slots__ = ("bids", "asks", "update_id", "exch_ts_ns", "watch_depth", "top_dirty")

    def __init__(self) -> None:
        self.bids = BookSide(True)
        self.asks = BookSide(False)
        self.update_id = 0
        self.exch_ts_ns = 0
        # The publisher sets watch_depth to the depth it publishes and clears top_dirty after each
        # publish; updates that leave the top watch_depth levels alone keep it False, so the
        # publisher can republish just the header. watch_depth 0 means "always dirty".
        self.watch_depth = 0
        self.top_dirty = True

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.update_id = 0
        self.top_dirty = True

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.bids.replace(bids)
        self.asks.replace(asks)
        self.top_dirty = True

    def apply_update(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        w = self.watch_depth
        if self.bids.update(bids, w) | self.asks.update(asks, w):
            self.top_dirty = True

    def is_crossed(self) -> bool:
        b, a = self.bids.best(), self.asks.best()
        return b is not None and a is not None and b[0] >= a[0]

    def flat_top(self, n: int) -> tuple[list[float], int, int]:
        """The top `n` levels in the store's layout: ([bid_px, bid_qty, ask_px, ask_qty] * levels, nb, na)."""
        b, a = self.bids, self.asks
        return _flat(b.keys, b.qty, a.keys, a.qty, n)

    def pack_top(self, dst: bytearray | memoryview, offset: int, n: int) -> tuple[int, int]:
        """Write `flat_top(n)` into `dst` at `offset` as little-endian doubles (32 bytes a level); returns
        (nb, na). The store's publish path: no intermediate list on the C implementation."""
        b, a = self.bids, self.asks
        return _pack_top(dst, offset, b.keys, b.qty, a.keys, a.qty, n)

    def checksum_string(self, depth: int = 25) -> str:
        """OKX/Bitget check string: bid1px:bid1sz:ask1px:ask1sz:... over exact strings; a short side's
        missing entries are skipped."""
        b, a = self.bids, self.asks
        return _checksum_string(b.keys, b.raw, a.keys, a.raw, depth)

    def checksum(self, depth: int = 25) -> int:
        """CRC32 (IEEE) of `checksum_string`, as a signed 32-bit integer like OKX and Bitget send it."""
        b, a = self.bids, self.asks
        return _checksum(b.keys, b.raw, a.keys, a.raw, depth)
