"""A local order book that keeps each level's exact wire strings (for checksums) and its floats.

Pure state: no I/O, no clock. Prices are keyed by their float value, so "0.5000" and "0.5" are the
same level; the strings kept are the latest ones the exchange sent for that level, which is what
OKX's and Bitget's CRC32 checksums are computed over. A level whose price or quantity breaks the rule of
mdengine.limits (NaN, inf, negative, absurd) raises ValueError; the levels before it in the same call are
applied, so the adapters resync that book.

The per-frame work (applying levels, packing the top levels for the store, the checksum) runs in the C
module `mdengine._speedups` when it was built, else in the pure-Python functions below (`_py_*`): same
containers, same results (tests/test_book_speedups.py checks one against the other). `IMPLEMENTATION` says
which; MDENGINE_NO_SPEEDUPS=1 forces Python.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from operator import neg

import crcmod.predefined

from ._native import speedups
from .core import types as L
from .limits import PRICE_MAX, QTY_MAX

_NAN = math.nan
_INF = math.inf
_crc32 = crcmod.predefined.mkPredefinedCrcFun("crc-32")  # IEEE 802.3, same as zlib.crc32
Level = Sequence[str]  # [price, qty, ...] as sent; extra fields (OKX order counts) are ignored
SideLists = tuple[list[float], list[float], list[str]]  # (keys, qty, raw) of one side, as BookSide keeps them
#: (lastUpdateId, "E" in ms or None, bid side, ask side): a REST depth snapshot read by `parse_depth_snapshot`
DepthSnapshot = tuple[int, int | None, SideLists, SideLists]


# ----------------------------------------------------------------------------- the pure-Python implementation
# A side is three aligned lists, best level first: keys (ascending: -price for bids, price for asks),
# quantities, and "price:qty" strings as received.
def _py_side_update(keys: list[float], qtys: list[float], raws: list[str], bid: bool, levels: Iterable[Level],
                    watch: int) -> bool:
    """`BookSide.update` on a side's lists."""
    # A change at a key beyond the watch-th best key cannot move the top `watch` levels; the
    # limit can only get stricter within this call, so the first value is a safe bound.
    limit = keys[watch - 1] if 0 < watch <= len(keys) else _INF
    touched = False
    for lv in levels:
        px_s = lv[0]
        q_s = lv[1]
        q = float(q_s)
        p = float(px_s)
        if not (0.0 < p <= PRICE_MAX and 0.0 <= q <= QTY_MAX):  # mdengine.limits; NaN fails it too
            raise ValueError(f"a book level of {q_s!r} at {px_s!r} is not a valid price and quantity")
        k = -p if bid else p
        s = px_s + ":" + q_s if q != 0.0 else ""
        i = bisect_left(keys, k)
        found = i < len(keys) and keys[i] == k
        if q == 0.0:
            if found:
                del keys[i], qtys[i], raws[i]
                if k <= limit:
                    touched = True
            continue
        if found:
            qtys[i] = q
            raws[i] = s
        else:
            keys.insert(i, k)
            qtys.insert(i, q)
            raws.insert(i, s)
        if k <= limit:
            touched = True
    return touched


def _py_side_replace(levels: Iterable[Level], sign: float) -> tuple[list[float], list[float], list[str]]:
    """`BookSide.replace`: the new (keys, qty, raw) of a side; a price sent twice keeps its last quantity (and
    the key of its first), a zero quantity is skipped."""
    seen: dict[float, tuple[float, str]] = {}
    bid = sign < 0
    for lv in levels:
        q = float(lv[1])
        if q == 0.0:
            continue
        p = float(lv[0])
        if not (0.0 < p <= PRICE_MAX and 0.0 <= q <= QTY_MAX):
            raise ValueError(f"a book level of {lv[1]!r} at {lv[0]!r} is not a valid price and quantity")
        k = -p if bid else p
        seen[k] = (q, lv[0] + ":" + lv[1])
    keys = sorted(seen)
    pairs = [seen[k] for k in keys]
    return keys, [p[0] for p in pairs], [p[1] for p in pairs]


def _flat(bid_keys: list[float], bid_qty: list[float], ask_keys: list[float], ask_qty: list[float],
          n: int) -> tuple[list[float], int, int]:
    bk = bid_keys[:n]
    ak = ask_keys[:n]
    nb, na = len(bk), len(ak)
    flat = [_NAN, 0.0, _NAN, 0.0] * (nb if nb > na else na)
    if nb:
        flat[0:4 * nb:4] = map(neg, bk)
        flat[1:4 * nb:4] = bid_qty[:nb]
    if na:
        flat[2:4 * na:4] = ak
        flat[3:4 * na:4] = ask_qty[:na]
    return flat, nb, na


def _py_pack_top(dst: bytearray | memoryview, offset: int, bid_keys: list[float], bid_qty: list[float],
                 ask_keys: list[float], ask_qty: list[float], n: int) -> tuple[int, int]:
    """`LocalBook.pack_top` on the sides' lists."""
    if n < 0 or offset < 0:
        raise ValueError("pack_top: negative offset or depth")
    flat, nb, na = _flat(bid_keys, bid_qty, ask_keys, ask_qty, n)
    rows = len(flat) >> 2
    if offset + rows * L.LEVEL_LENGTH > len(dst):
        raise ValueError(f"pack_top: {rows} levels at offset {offset} do not fit {len(dst)} bytes")
    if rows:
        L.levels_struct(rows).pack_into(dst, offset, *flat)
    return nb, na


def _checksum_string(bid_raw: list[str], ask_raw: list[str], depth: int) -> str:
    b = bid_raw[:depth]
    a = ask_raw[:depth]
    n = min(len(b), len(a))
    parts = [""] * (2 * n)
    parts[0::2] = b[:n]
    parts[1::2] = a[:n]
    parts += b[n:] or a[n:]
    return ":".join(parts)


def _py_checksum(bid_raw: list[str], ask_raw: list[str], depth: int) -> int:
    """`LocalBook.checksum` on the sides' strings."""
    c = _crc32(_checksum_string(bid_raw, ask_raw, depth).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


PYTHON_IMPLEMENTATION = {"side_update": _py_side_update, "side_replace": _py_side_replace,
                         "pack_top": _py_pack_top, "checksum": _py_checksum}
_speedups = speedups()
C_IMPLEMENTATION = None if _speedups is None else {name: getattr(_speedups, name) for name in PYTHON_IMPLEMENTATION}
#: "c" when the per-frame book work runs in mdengine._speedups, "python" otherwise
IMPLEMENTATION = "python" if _speedups is None else "c"
_impl = C_IMPLEMENTATION or PYTHON_IMPLEMENTATION
_side_update, _side_replace, _pack_top, _checksum = (_impl[k] for k in PYTHON_IMPLEMENTATION)
_depth_snapshot = None if _speedups is None else _speedups.depth_snapshot


def parse_depth_snapshot(body: bytes | str) -> DepthSnapshot | None:
    """A REST depth snapshot body (`{"lastUpdateId": N, "bids": [[px, qty], ...], "asks": [...], "E": ms}`,
    keys in any order, others skipped) read straight into the book's side lists, with no per-level objects in
    between: the sides are what `BookSide.replace` makes of orjson's levels, ready for `LocalBook.set_sides`.

    Returns None when the C module is not built, or when the body is not of that plain shape (JSON that is not
    strict ASCII, an escape, an exponent or a non-plain decimal in a level, a key twice, "E" not an integer,
    a key missing, invalid JSON): the caller then parses it with orjson, whose errors it reports as before.
    """
    return None if _depth_snapshot is None else _depth_snapshot(body)


class BookSide:
    """One side, best level first: three aligned lists. `keys` are -price for bids and price for asks, sorted
    ascending; `qty` the quantities; `raw` each level's "price:qty" exactly as last received.

    Lists, not dicts: a level is found by bisecting `keys` (no float hashing), and the hot reads (top-N
    quantities, checksum strings) are slices.
    """

    __slots__ = ("is_bid", "sign", "keys", "qty", "raw")

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.sign = -1.0 if is_bid else 1.0  # key = sign * price
        self.keys: list[float] = []
        self.qty: list[float] = []
        self.raw: list[str] = []

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def levels(self) -> dict[float, tuple[float, float]]:
        """key -> (price, qty); a copy, for inspection (not used on hot paths)."""
        sign = self.sign
        return {k: (sign * k, q) for k, q in zip(self.keys, self.qty, strict=True)}

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

    def copy(self) -> BookSide:
        """An independent side with the same levels (the lists are copied, their floats and strings shared)."""
        c = BookSide(self.is_bid)
        c.keys, c.qty, c.raw = self.keys[:], self.qty[:], self.raw[:]
        return c

    def best(self) -> tuple[float, float] | None:
        if not self.keys:
            return None
        return self.sign * self.keys[0], self.qty[0]

    def prices(self, n: int) -> list[float]:
        ks = self.keys[:n]
        return list(map(neg, ks)) if self.is_bid else ks

    def top(self, n: int) -> list[tuple[float, float]]:
        return list(zip(self.prices(n), self.qty[:n], strict=True))

    def top_strings(self, n: int) -> list[tuple[str, str]]:
        return [tuple(r.split(":")) for r in self.raw[:n]]

    def raw_top(self, n: int) -> list[str]:
        return self.raw[:n]


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

    def copy(self) -> LocalBook:
        """An independent book in the same state (the feed's warm-up pass replays frames on one)."""
        c = LocalBook()
        c.bids, c.asks = self.bids.copy(), self.asks.copy()
        c.update_id, c.exch_ts_ns, c.watch_depth, c.top_dirty = (self.update_id, self.exch_ts_ns, self.watch_depth,
                                                                  self.top_dirty)
        return c

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.bids.replace(bids)
        self.asks.replace(asks)
        self.top_dirty = True

    def set_sides(self, bids: SideLists, asks: SideLists) -> None:
        """Install sides built elsewhere (`parse_depth_snapshot`): the lists are taken, not copied, and must be
        as BookSide keeps them (aligned, keys strictly ascending); a snapshot without `apply_snapshot`'s parse."""
        b, a = self.bids, self.asks
        b.keys, b.qty, b.raw = bids
        a.keys, a.qty, a.raw = asks
        self.top_dirty = True

    def apply_update(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        w, b, a = self.watch_depth, self.bids, self.asks  # BookSide.update twice, without its two calls
        if _side_update(b.keys, b.qty, b.raw, True, bids, w) | _side_update(a.keys, a.qty, a.raw, False, asks, w):
            self.top_dirty = True

    def is_crossed(self) -> bool:
        bk, ak = self.bids.keys, self.asks.keys
        return bool(bk) and bool(ak) and -bk[0] >= ak[0]

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
        return _checksum_string(self.bids.raw, self.asks.raw, depth)

    def checksum(self, depth: int = 25) -> int:
        """CRC32 (IEEE) of `checksum_string`, as a signed 32-bit integer like OKX and Bitget send it."""
        return _checksum(self.bids.raw, self.asks.raw, depth)
