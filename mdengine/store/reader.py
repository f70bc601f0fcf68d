"""Lock-free readers of a segment: books through the latch, trades through the ring.

Readers map the segment read-only and never write. Every book read copies one contiguous run of
bytes between two reads of the latch counter and retries if the counter moved; the data is only
interpreted after the copy validated. See layout.py for the protocol.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from functools import partial

import numpy as np
import psutil

from ..errors import NoPerpData, ReadContention, UnknownSymbol
from . import layout as L
from . import shm
from .segment import SegmentView, SymbolEntry, check_memory_model

_HEADER = struct.Struct(L.BOOK_HEADER_STRUCT)
_U32 = struct.Struct("<I")
_TOP = struct.Struct("<4d")
_HEADER_AND_TOP = struct.Struct(L.BOOK_HEADER_STRUCT + "4d")
_PERP = struct.Struct(L.PERP_STRUCT)
DEFAULT_RETRY_LIMIT = 100_000


def _latch_retry(owner, q, i: int, c0: int, c1: int, limit: int, copy, error):
    """The slow path of a latch read whose first copy tore (each reader's fast path inlines that first attempt).

    `contended(*args)` makes the remaining `limit - 1` attempts of `copy(offset of the copy the counter q[i]
    selects, *args)`, each valid only if q[i] did not move; every torn copy, the first one included, adds 1 to
    `owner.retries`. When all `limit` tore it raises `error()`.
    """

    def contended(*args):
        for _ in range(limit - 1):  # the caller made the first of `limit` attempts
            owner.retries += 1
            s = q[i]
            r = copy(c1 if s & 1 else c0, *args)
            if q[i] == s:
                return r
        owner.retries += 1
        raise error()

    return contended


@dataclass(frozen=True)
class BookHeader:
    update_id: int
    exch_ts_ns: int
    recv_ts_ns: int
    pub_ts_ns: int
    n_bids: int
    n_asks: int
    state: int
    flags: int
    generation: int
    version: int

    @property
    def state_name(self) -> str:
        return L.BookState.NAMES[self.state] if self.state < len(L.BookState.NAMES) else f"state{self.state}"


@dataclass(frozen=True)
class BookSnapshot:
    """A consistent copy of a book: bids and asks are (n, 2) arrays of [price, qty], best first."""

    symbol: str
    bids: np.ndarray
    asks: np.ndarray
    header: BookHeader

    @property
    def update_id(self) -> int:
        return self.header.update_id

    @property
    def state(self) -> int:
        return self.header.state


class BookBuffer:
    """A caller-owned destination for `BookReader.read_into`: reuse it to read without allocating.

    `levels` is a (depth, 4) float64 view: columns bid_px, bid_qty, ask_px, ask_qty. Only the first
    `n_bids` / `n_asks` rows of each side are valid after a read (the rest are NaN / 0 or leftovers).
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.raw = bytearray(L.book_copy_length(depth))
        self.mv = memoryview(self.raw)
        self.levels = np.ndarray((depth, 4), dtype="<f8", buffer=self.raw, offset=L.BOOK_HEADER_LENGTH)

    # The counts live in the copied header; they are decoded (and clamped, since they index `levels`) only
    # when asked for, which keeps them off the read path.
    @property
    def n_bids(self) -> int:
        return min(_U32.unpack_from(self.raw, L.BOOK_N_BIDS_OFFSET)[0], self.depth)

    @n_bids.setter
    def n_bids(self, n: int) -> None:
        _U32.pack_into(self.raw, L.BOOK_N_BIDS_OFFSET, n)

    @property
    def n_asks(self) -> int:
        return min(_U32.unpack_from(self.raw, L.BOOK_N_ASKS_OFFSET)[0], self.depth)

    @n_asks.setter
    def n_asks(self, n: int) -> None:
        _U32.pack_into(self.raw, L.BOOK_N_ASKS_OFFSET, n)

    def header(self) -> BookHeader:
        return BookHeader(*_HEADER.unpack_from(self.raw, 0))

    @property
    def bids(self) -> np.ndarray:
        return self.levels[: self.n_bids, 0:2]

    @property
    def asks(self) -> np.ndarray:
        return self.levels[: self.n_asks, 2:4]


class SegmentReader:
    """A read-only attachment to ``mde-<namespace>-<exchange>``.

    Raises SegmentNotFound if no engine created it, LayoutError if it is not a readable layout.
    """

    def __init__(self, namespace: str, exchange: str, *, retry_limit: int = DEFAULT_RETRY_LIMIT) -> None:
        check_memory_model()
        if retry_limit < 1:  # every read makes at least one attempt
            raise ValueError(f"retry_limit must be at least 1, not {retry_limit!r}")
        self.name = shm.segment_name(namespace, exchange)
        self.exchange = exchange
        self.namespace = namespace
        self.retry_limit = retry_limit
        self._mapping = shm.ReadOnlyMapping(self.name)
        try:
            self.view = SegmentView(self._mapping.buf, self.name)
        except Exception:
            self._mapping.close()
            raise

    def close(self) -> None:
        if self._mapping is not None:
            self.view.release()
            self._mapping.close()
            self._mapping = None

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ directory and health
    def symbols(self, active_only: bool = True) -> list[SymbolEntry]:
        return [e for e in self.view.entries() if e.active or not active_only]

    def entry(self, symbol: str, market: str | None = None) -> SymbolEntry:
        e = self.view.find(symbol, market)
        if e is None:
            known = ", ".join(sorted({x.unified for x in self.view.entries()})) or "none"
            raise UnknownSymbol(f"{self.exchange}: no symbol {symbol!r}"
                                f"{' in market ' + repr(market) if market else ''} in {self.name} (has: {known})")
        return e

    def book(self, symbol: str, market: str | None = None) -> BookReader:
        return BookReader(self, self.entry(symbol, market))

    def trades(self, symbol: str, market: str | None = None, start: str | int = "latest") -> TradeReader:
        return TradeReader(self, self.entry(symbol, market), start)

    def perp(self, symbol: str, market: str | None = None) -> PerpReader:
        """The symbol's perp record (1.4); NoPerpData for a spot symbol or a segment without a perp area."""
        return PerpReader(self, self.entry(symbol, market))

    def liquidations(self, symbol: str, market: str | None = None, start: str | int = "latest") -> LiquidationReader:
        """A cursor over the symbol's liquidation ring (1.4); NoPerpData as `perp`."""
        return LiquidationReader(self, self.entry(symbol, market), start)

    def perp_base(self, entry: SymbolEntry) -> int:
        """Offset of the entry's perp slot; raises NoPerpData when it has none."""
        base = self.view.perp_base(entry.slot)
        if base is None:
            raise NoPerpData(f"{self.exchange} {entry.unified}: segment {self.name} has no perpetual data (its "
                             f"writer's layout is {self.view.layout_version[0]}.{self.view.layout_version[1]}, "
                             "perpetual data came in 1.4)")
        if entry.kind not in L.PERP_KINDS:
            raise NoPerpData(f"{self.exchange} {entry.unified}: not a perpetual (market {entry.market!r}, kind "
                             f"{entry.kind}); only perpetuals and futures have mark, funding and liquidations")
        return base

    def heartbeat_age_ns(self, now_ns: int | None = None) -> int:
        return (time.time_ns() if now_ns is None else now_ns) - self.view.heartbeat_ns

    def writer_alive(self) -> bool:
        """True if the process recorded as writer exists and is the same process (pid and start time)."""
        pid = self.view.writer_pid
        if pid <= 0:
            return False
        try:
            return int(psutil.Process(pid).create_time() * 1e9) == self.view.writer_start_ns
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    @property
    def publish_counter(self) -> int:
        return self.view.q[L.PUBLISH_COUNTER_OFFSET >> 3]


class BookReader:
    """Reads one symbol's book. Keep it: construction resolves offsets so reads do no lookups."""

    def __init__(self, seg: SegmentReader, entry: SymbolEntry) -> None:
        self.segment = seg
        self.entry = entry
        self.symbol = entry.unified
        g = seg.view.geometry
        base = seg.view.slot_base(entry.slot)
        self.capacity = g.book_capacity
        self.retry_limit = seg.retry_limit
        self._q = seg.view.q
        self._buf = seg.view.buf
        self._seq_i = (base + L.SLOT_BOOK_SEQ_OFFSET) >> 3
        self._copies = (base + g.copy0, base + g.copy1)
        self.retries = 0  # torn copies discarded so far (for benchmarks and diagnostics)

        # The hot paths are closures over locals: attribute and global lookups cost more than the copy.
        self.top = self._make_top()
        self.top_full = self._make_top_full()
        self.read_into = self._make_read_into()

    def _contended(self) -> ReadContention:
        return ReadContention(f"{self.segment.exchange} {self.symbol}: the book changed during each of "
                              f"{self.retry_limit} reads; is the writer looping?")

    def _make_top(self):
        return self._make_unpack("top", _TOP, L.BOOK_HEADER_LENGTH, "(bid_px, bid_qty, ask_px, ask_qty); NaN price and "
                                 "0 qty for an empty side.")

    def _make_top_full(self):
        return self._make_unpack("top_full", _HEADER_AND_TOP, 0, "Header fields then top of book: (update_id, "
                                 "exch_ts_ns, recv_ts_ns, pub_ts_ns, n_bids, n_asks, state, flags, generation, "
                                 "version, bid_px, bid_qty, ask_px, ask_qty).")

    def _make_unpack(self, name: str, fmt: struct.Struct, skip: int, doc: str):
        """A read of `fmt` at `skip` bytes into the copy the latch counter selects (top, top_full)."""
        q, i, buf, (c0, c1), unpack = self._q, self._seq_i, self._buf, self._copies, fmt.unpack_from
        c0 += skip
        c1 += skip
        contended = _latch_retry(self, q, i, c0, c1, self.retry_limit, partial(unpack, buf), self._contended)

        def read() -> tuple:
            s = q[i]
            r = unpack(buf, c1 if s & 1 else c0)  # values are only trusted once s is re-checked
            if q[i] == s:  # the usual read: one copy, without setting up the retry loop
                return r
            return contended()

        read.__name__, read.__doc__ = name, doc
        return read

    def _make_read_into(self):
        q, i, buf, (c0, c1), capacity = self._q, self._seq_i, self._buf, self._copies, self.capacity
        header, level = L.BOOK_HEADER_LENGTH, L.LEVEL_LENGTH

        def copy(c: int, out: BookBuffer, dst: memoryview, length: int) -> BookBuffer:
            dst[:length] = buf[c:c + length]
            return out

        contended = _latch_retry(self, q, i, c0, c1, self.retry_limit, copy, self._contended)

        def read_into(out: BookBuffer) -> BookBuffer:
            """Copy the top `out.depth` levels into `out` consistently (out.n_bids / n_asks then say how many
            rows of each side are valid)."""
            depth = out.depth if out.depth < capacity else capacity
            length = header + depth * level
            dst = out.mv
            s = q[i]
            c = c1 if s & 1 else c0
            dst[:length] = buf[c:c + length]
            if q[i] == s:  # the usual read: one copy, without setting up the retry loop
                return out
            return contended(out, dst, length)

        return read_into

    def header(self) -> BookHeader:
        """A consistent header alone (update id, timestamps, state)."""
        return BookHeader(*self.top_full()[:10])

    def snapshot(self, depth: int | None = None) -> BookSnapshot:
        """A consistent copy of the top `depth` levels (default: all) in freshly allocated arrays."""
        buf = BookBuffer(min(depth or self.capacity, self.capacity))
        self.read_into(buf)
        return BookSnapshot(self.symbol, buf.bids.copy(), buf.asks.copy(), buf.header())


class PerpReader:
    """Reads one symbol's perp record (mark, index, funding, open interest) through its latch."""

    def __init__(self, seg: SegmentReader, entry: SymbolEntry) -> None:
        base = seg.perp_base(entry)
        self.segment = seg
        self.entry = entry
        self.symbol = entry.unified
        self.retries = 0
        self.read = self._make_read(seg.view.q, (base + L.PERP_SEQ_OFFSET) >> 3, seg.view.buf,
                                    base + L.PERP_COPY0_OFFSET, base + L.PERP_COPY1_OFFSET, seg.retry_limit)

    def _make_read(self, q, i, buf, c0, c1, limit):
        unpack = _PERP.unpack_from

        def read() -> tuple:
            """The record's fields in PERP_DTYPE order: (mark_price, index_price, funding_rate, next_funding_rate,
            next_funding_ns, open_interest, exch_ts_ns, recv_ts_ns, pub_ts_ns, state, generation, version,
            mark_recv_ns, index_recv_ns, funding_recv_ns, oi_recv_ns); the last four are 0 before layout 1.6."""
            s = q[i]
            r = unpack(buf, c1 if s & 1 else c0)  # trusted only once s is re-checked
            if q[i] == s:  # the usual read: one copy, without setting up the retry loop (~60 ns of ~300)
                return r
            return contended()

        seg_name = f"{self.segment.exchange} {self.symbol}"
        contended = _latch_retry(self, q, i, c0, c1, limit, partial(unpack, buf), lambda: ReadContention(
            f"{seg_name}: the perp record changed during each of {limit} reads"))
        return read


class TradeReader:
    """A cursor over one symbol's trade ring; each `poll` returns only trades not seen before.

    start: "latest" (only trades written from now on), "earliest" (everything still in the ring),
    or an absolute ring index (e.g. a cursor saved earlier).
    """

    def __init__(self, seg: SegmentReader, entry: SymbolEntry, start: str | int = "latest") -> None:
        self.segment = seg
        self.entry = entry
        self.symbol = entry.unified
        ring, self.capacity = self._ring(seg, entry)
        self._mask = self.capacity - 1
        self._q = seg.view.q
        self._buf = seg.view.buf
        self._tail_i = (ring + L.RING_TAIL_OFFSET) >> 3
        self._intent_i = (ring + L.RING_TAIL_INTENT_OFFSET) >> 3
        self._records = ring + L.RING_HEADER_LENGTH
        tail = self._q[self._tail_i]
        if start == "latest":
            self.cursor = tail
        elif start == "earliest":
            self.cursor = max(0, tail - self.capacity)
        elif isinstance(start, int) and start >= 0:
            self.cursor = start
        else:
            raise ValueError(f"start must be 'latest', 'earliest' or a ring index >= 0, not {start!r}")
        self.lost = 0  # trades overwritten before this reader saw them, in total

    @staticmethod
    def _ring(seg: SegmentReader, entry: SymbolEntry) -> tuple[int, int]:
        """(offset of the ring header, capacity)."""
        g = seg.view.geometry
        return seg.view.slot_base(entry.slot) + g.ring, g.trade_capacity

    @property
    def tail(self) -> int:
        return self._q[self._tail_i]

    def new_buffer(self, n: int | None = None) -> np.ndarray:
        return np.zeros(n or self.capacity, dtype=L.TRADE_DTYPE)

    def poll(self, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Return (trades, lost): the trades after the cursor, oldest first, and how many were lost.

        With `out` (a TRADE_DTYPE array) no memory is allocated and at most len(out) trades are
        returned; the rest wait for the next poll. `lost` > 0 means the writer lapped this reader:
        those trades were overwritten before they could be read.
        """
        q = self._q
        tail = q[self._tail_i]
        cursor = self.cursor
        if tail <= cursor:
            if tail < cursor:  # a segment recreated under us; follow the new ring
                self.cursor = tail
            return (out[:0] if out is not None else np.empty(0, dtype=L.TRADE_DTYPE)), 0
        cap = self.capacity
        start = tail - cap if tail - cap > cursor else cursor
        lost = start - cursor
        n = tail - start
        if out is None:
            out = np.empty(n, dtype=L.TRADE_DTYPE)
        elif len(out) < n:
            n = len(out)
        dst = out.view(np.uint8).reshape(-1)
        rec, size, buf = self._records, L.TRADE_RECORD_LENGTH, self._buf
        first = start & self._mask
        k1 = min(n, cap - first)
        dst[: k1 * size] = buf[rec + first * size: rec + (first + k1) * size]
        if n > k1:
            dst[k1 * size: n * size] = buf[rec: rec + (n - k1) * size]
        # Validate after copying: records below tail_intent - capacity may have been overwritten.
        oldest_valid = q[self._intent_i] - cap
        skip = oldest_valid - start if oldest_valid > start else 0
        if skip > n:
            skip = n
        got = out[skip:n]
        expected = np.arange(start + skip, start + n, dtype=np.int64)
        if not np.array_equal(got["index"], expected):  # torn by a writer killed mid-batch
            good = got["index"] == expected
            got = got[good]
            skip += int((~good).sum())
        lost += skip
        self.cursor = start + n
        self.lost += lost
        return got, lost


class LiquidationReader(TradeReader):
    """A cursor over one perpetual's liquidation ring (1.4): the trade ring's protocol and records (trade_id 0)."""

    @staticmethod
    def _ring(seg: SegmentReader, entry: SymbolEntry) -> tuple[int, int]:
        return seg.perp_base(entry) + L.PERP_RING_OFFSET, seg.view.liquidation_capacity


def attach_all(namespace: str) -> dict[str, SegmentReader]:
    """Readers for every segment of `namespace` present on this machine, by exchange."""
    out = {}
    prefix = f"{shm.NAME_PREFIX}{namespace}-"
    for name in shm.list_names(namespace):
        exchange = name[len(prefix):]
        try:
            out[exchange] = SegmentReader(namespace, exchange)
        except (shm.SegmentNotFound, RuntimeError):
            continue
    return out


__all__ = ["BookBuffer", "BookHeader", "BookReader", "BookSnapshot", "LiquidationReader", "NoPerpData",
           "PerpReader", "ReadContention", "SegmentReader", "TradeReader", "UnknownSymbol", "attach_all"]
