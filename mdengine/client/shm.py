"""Shared-memory reads: the Client, its Book and TradeStream handles, wait(), following a restarted engine.

    with Client("default", max_age=3.0, rest_fallback=True) as c:
        book = c.book("binance", "BTC/USDT")       # keep the handle: reads do no lookups
        bid, bid_qty, ask, ask_qty, age_s, *_ = book.top()
        new = c.trades("binance", "BTC/USDT")      # only trades this client has not seen yet
        c.wait(1.0, [book])                        # sleep until the book changes

Every read says where the data came from (``source`` "shm" or "rest"), how old it is (``age_s``, from the
frame's local receive time) and whether it is ``stale`` (and why, ``reason``): the book's state is not live,
its connection received nothing within the feed's published stale_after_s, or its writer is dead, stopped or
silent (heartbeat older than HEARTBEAT_MISSES of its published intervals). A stale read, or one older than
`max_age` (data age only), is served from REST when `rest_fallback` is on, raises StaleBookError when `max_age`
is set, and is otherwise returned as is, flagged. Handles follow an engine that was restarted (its segment
recreated): see docs/client.md, "Freshness".

Trades follow Agrona's BroadcastReceiver: each TradeStream has its own cursor; a reader the writer lapped
gets the surviving trades and a count of the lost ones. Loss is not an error, but it is counted.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np

from .. import rest
from .. import store as _store
from ..engine.config import resolve_namespace
from ..errors import EngineNotFound, NoPerpData, StaleBookError, UnknownSymbol
from ..store import futex
from ..store import layout as L
from ..store.reader import BookReader, LiquidationReader, PerpReader, SegmentReader, TradeReader
from ..store.segment import SymbolEntry
from . import fallback
from .control import ControlClient
from .fallback import RestFallback
from .results import (
    BookBuffer,
    ClientStatistics,
    Depth,
    Liquidations,
    PerpStats,
    Top,
    Trades,
    TradeStreamStatistics,
    check_depth,
)
from .tops import BookSet

DEFAULT_HEARTBEAT_TIMEOUT_S = 3.0  # for a writer that publishes no heartbeat interval (layout before 1.3)
log = logging.getLogger(__name__)
_R = TypeVar("_R")

HEALTH_CHECK_NS = 5_000_000  # re-read the heartbeat words at most this often
PID_CHECK_NS = 500_000_000  # ask the OS whether the writer process lives at most this often (psutil is slow)
REBIND_NS = 100_000_000  # an unsubscribed handle looks for its symbol in the directory this often
FOLLOW_NS = 100_000_000  # a stale read (or wait()) asks at most this often whether the segment was recreated
RESCAN_NS = 1_000_000_000  # wait(streams=None) looks for new segments this often
REST_CACHE_S = 0.25  # a REST answer is reused this long, so a fast loop on a stale book does not hammer REST
_LIVE = L.BookState.LIVE
_NAN = math.nan
_time_ns = time.time_ns
_new_tuple = tuple.__new__
_NAMES = L.BookState.NAMES
_CONFIRMED = L.STAT_OFFSETS["confirmed_ns"]
_PERP_CONFIRMED = L.STAT_OFFSETS["perp_confirmed_ns"]  # 1.5; a 1.4 writer confirms perp data in _CONFIRMED
# recv_ts_ns, pub_ts_ns, state of a book header, at the layout's offsets (recv and pub are adjacent int64s;
# tests/test_client_package.py checks it against a packed header)
_FRESHNESS = struct.Struct(f"<{L.BOOK_RECV_TS_OFFSET}xqq{L.BOOK_STATE_OFFSET - L.BOOK_PUB_TS_OFFSET - 8}xI")
# the layout's minor version (a uint32) inside its aligned int64 word
_MINOR_WORD, _MINOR_SHIFT = L.LAYOUT_MINOR_OFFSET >> 3, (L.LAYOUT_MINOR_OFFSET & 7) * 8
# BookReader.top_full()'s tuple: the book header's fields (layout.BOOK_HEADER_DTYPE), then the first level's
TOP_FULL_FIELDS = (*L.BOOK_HEADER_DTYPE.names, "bid_px", "bid_qty", "ask_px", "ask_qty")
_UPDATE_ID, _RECV_TS, _PUB_TS, _STATE, _BID_PX, _BID_QTY, _ASK_PX, _ASK_QTY = map(
    TOP_FULL_FIELDS.index, ("update_id", "recv_ts_ns", "pub_ts_ns", "state", "bid_px", "bid_qty", "ask_px", "ask_qty"))


class _Segment:
    """One attached exchange segment and a cheap cache of its writer's health and freshness promises."""

    def __init__(self, namespace: str, exchange: str, heartbeat_timeout_s: float | None) -> None:
        self.reader = SegmentReader(namespace, exchange)
        self.exchange = exchange
        self.inode = _inode(self.reader.name)
        self.q = self.reader.view.q
        self.fixed_timeout_ns = None if heartbeat_timeout_s is None else int(heartbeat_timeout_s * 1e9)
        self.timeout_ns = self.fixed_timeout_ns or int(DEFAULT_HEARTBEAT_TIMEOUT_S * 1e9)
        self.stale_ns: float = math.inf  # the writer's stale_after (1.3); inf: it published none
        self.next_follow = 0  # monotonic ns of the next "was the segment recreated?" check
        self._rest: dict[str, str] = {}
        self.wait_mark = self.q[L.PUBLISH_COUNTER_OFFSET >> 3]
        # where blocking wait() sleeps (futex on the publish counter), 0 if it must poll instead
        self.wake_addr = futex.address_of(self.reader.view.buf, L.PUBLISH_COUNTER_OFFSET) if futex.AVAILABLE else 0
        self._next_check = 0
        self._next_pid_check = 0
        self._alive = True
        self.ok = False
        self.reason = "not checked"

    def healthy(self, now: int) -> bool:
        if now < self._next_check:
            return self.ok
        self._next_check = now + HEALTH_CHECK_NS
        q = self.q
        ws = q[L.WRITER_STATE_OFFSET >> 3]
        hb_age = now - q[L.HEARTBEAT_NS_OFFSET >> 3]
        stale_ns, interval_ns = q[L.STALE_AFTER_NS_OFFSET >> 3], q[L.HEARTBEAT_INTERVAL_NS_OFFSET >> 3]
        self.stale_ns = stale_ns if stale_ns > 0 else math.inf
        if self.fixed_timeout_ns is None and interval_ns > 0:  # the feed's own beat, never max_age
            self.timeout_ns = L.HEARTBEAT_MISSES * interval_ns
        if now >= self._next_pid_check:
            self._next_pid_check = now + PID_CHECK_NS
            self._alive = self.reader.writer_alive()
        if ws == L.WriterState.STOPPED:
            self.ok, self.reason = False, "the feed stopped"
        elif ws == L.WriterState.DEAD:
            self.ok, self.reason = False, "the feed process died (marked by its supervisor)"
        elif ws == L.WriterState.NONE:
            self.ok, self.reason = False, "no feed attached yet"
        elif not self._alive:
            self.ok, self.reason = False, "the feed process is gone"
        elif hb_age > self.timeout_ns:
            self.ok, self.reason = False, (f"feed heartbeat {hb_age / 1e9:.1f} s old (limit "
                                           f"{self.timeout_ns / 1e9:g} s: {L.HEARTBEAT_MISSES} heartbeat intervals)")
        else:
            self.ok, self.reason = True, ""
        return self.ok

    def rest_endpoints(self) -> dict[str, str]:
        """The REST base URLs the feed publishes (read until there are some)."""
        if not self._rest:
            self._rest = self.reader.view.rest_endpoints()
        return self._rest

    def wakes(self) -> bool:
        """The writer follows publishes with a futex wake (layout 1.1 and later): blocking waits may sleep."""
        return self.q[_MINOR_WORD] >> _MINOR_SHIFT & 0xFFFF_FFFF >= 1

    def replaced(self) -> bool:
        """True if the name now refers to another segment (the engine was restarted and recreated it)."""
        return _inode(self.reader.name) != self.inode

    def close(self) -> None:
        self.reader.close()


def _inode(name: str) -> int:
    try:
        return os.stat(os.path.join(_store.shm.SHM_DIR, name)).st_ino
    except OSError:
        return -1


def _state_name(state: int) -> str:
    return _NAMES[state] if state < len(_NAMES) else str(state)


def _find_entry(seg: SegmentReader, symbol: str, market: str | None) -> SymbolEntry | None:
    """The directory entry `symbol` names: a unified symbol in any case, else a native id (spot if ambiguous)."""
    wanted = symbol.upper()  # unified symbols are upper-case; native ids are matched case-blind as before
    cands = [e for e in seg.symbols(active_only=False)
             if (wanted == e.unified.upper() or wanted == e.native.upper())
             and (market is None or market.lower() == e.market.lower())]
    if not cands:
        return None
    cands.sort(key=lambda e: (e.unified.upper() != wanted, not e.active, e.kind != L.MarketKind.SPOT))
    best = cands[0]
    if best.unified.upper() != wanted and len({e.unified for e in cands if e.kind == best.kind and e.active}) > 1:
        raise UnknownSymbol(f"{seg.exchange}: {symbol!r} is ambiguous: {sorted(e.unified for e in cands)}")
    return best


class _Handle:
    """What Book and TradeStream share: binding to a directory entry, possibly later, and REST naming."""

    def __init__(self, client: Client, exchange: str, symbol: str, market: str | None) -> None:
        self.client = client
        client._handles.add(self)
        self.exchange = exchange
        self.requested = symbol
        self.market = market
        self.entry: SymbolEntry | None = None
        self._seg: _Segment | None = None
        self._next_bind = 0
        self._rest_sym: rest.RestSymbol | None = None
        self._conf_i = 0  # word index of the slot's confirmed_ns
        self._fresh_until = 0  # wall ns until which the book's connection is known to be confirmed (stale_after)

    @property
    def symbol(self) -> str:
        """The unified symbol once known from the directory, else the symbol as requested."""
        return self.entry.unified if self.entry is not None else self.requested

    @property
    def bound(self) -> bool:
        """True when the symbol is in the engine's directory (the handle reads shared memory)."""
        return self._seg is not None

    def _try_bind(self, force: bool = False) -> bool:
        now = time.monotonic_ns()
        if not force and now < self._next_bind:
            return False
        self._next_bind = now + REBIND_NS
        seg = self.client._segment(self.exchange)
        if seg is None:
            return False
        entry = _find_entry(seg.reader, self.requested, self.market)
        if entry is None and now >= seg.next_follow:  # not there: maybe the engine was restarted with it
            seg.next_follow = now + FOLLOW_NS
            self.client._follow_segment(seg)
            new = self.client._segments.get(self.exchange)
            if new is not None and new is not seg:
                seg, entry = new, _find_entry(new.reader, self.requested, self.market)
        if entry is None:
            return False
        self._attach(seg, entry)
        return True

    def _attach(self, seg: _Segment, entry: SymbolEntry) -> None:
        self._seg, self.entry = seg, entry
        self._rest_sym = None
        self._conf_i = (seg.reader.view.slot_base(entry.slot) + _CONFIRMED) >> 3
        self._fresh_until = 0

    def _silent(self, now: int, recv: int) -> bool:
        """True if the book's connection received nothing for the feed's stale_after. Confirmations only move
        forward, so the answer "not silent" holds until `_fresh_until`: reads before then skip this."""
        seg = self._seg
        conf = seg.q[self._conf_i]
        self._fresh_until = (recv if recv > conf else conf) + seg.stale_ns
        return now > self._fresh_until

    def _rebind(self, seg: _Segment) -> bool:
        """Move to `seg`, the recreated segment of this handle's exchange, if it lists the symbol yet."""
        entry = _find_entry(seg.reader, self.requested, self.market)
        if entry is None:
            return False
        self._attach(seg, entry)
        return True

    def _stale_reason(self, state: int, recv: int, now: int) -> str:
        """Why a read is stale: the writer first, then the book's state, then its connection's silence."""
        seg = self._seg
        if not seg.healthy(now):
            return seg.reason
        if state != _LIVE:
            return f"book state is {_NAMES[state] if state < len(_NAMES) else state}"
        conf = seg.q[self._conf_i]
        silent = now - (recv if recv > conf else conf)
        return (f"nothing received from the exchange for {silent / 1e9:.1f} s (stale_after_s "
                f"{seg.stale_ns / 1e9:g}); the feed is replacing the connection")

    def rest_symbol(self) -> rest.RestSymbol:
        """How the REST fallback names this symbol (from the directory when bound, else derived)."""
        if self._rest_sym is None:
            self._rest_sym = fallback.rest_symbol(self.exchange, self.requested, self.market, self.entry)
        return self._rest_sym

    def _no_data(self) -> UnknownSymbol:
        return UnknownSymbol(f"{self.exchange}: {self.requested!r} is not subscribed in namespace "
                             f"{self.client.namespace!r} (subscribe it, or use rest_fallback=True)")


class Book(_Handle):
    """One book. Get it from `Client.book` and keep it: reads are a seqlock copy plus a freshness check."""

    def __init__(self, client: Client, exchange: str, symbol: str, market: str | None) -> None:
        super().__init__(client, exchange, symbol, market)
        self.reader: BookReader | None = None
        self._seq_i = 0
        self._mark = 0
        self._rest: tuple[int, int, rest.RestBook] | None = None  # (fetched monotonic ns, depth, book)

    def _attach(self, seg: _Segment, entry: SymbolEntry) -> None:
        super()._attach(seg, entry)
        self.reader = BookReader(seg.reader, entry)
        self._seq_i = (seg.reader.view.slot_base(entry.slot) + L.SLOT_BOOK_SEQ_OFFSET) >> 3
        self._mark = seg.q[self._seq_i]

    def _rebind(self, seg: _Segment) -> bool:
        if not super()._rebind(seg):
            return False
        self._mark = 0  # wait() reports the book at the new feed's first publish
        return True

    # ------------------------------------------------------------------ reads
    def top(self) -> Top:
        """Best bid and ask with age, state and source. Raises StaleBookError (see Client `max_age`)."""
        r = self.reader
        if r is None and not self._try_bind():
            return self._rest_top(math.inf, "empty", "not subscribed")
        t = self.reader.top_full()
        now = _time_ns()
        recv = t[_RECV_TS] or t[_PUB_TS]
        age = (now - recv) / 1e9 if recv else math.inf
        state = t[_STATE]
        seg = self._seg
        stale = state != _LIVE or not (seg.ok if now < seg._next_check else seg.healthy(now)) or \
            (now > self._fresh_until and self._silent(now, recv))
        if stale or age > self.client._max_age:
            return self._on_stale(t, age, state, stale, now, recv)
        return _new_tuple(Top, (t[_BID_PX], t[_BID_QTY], t[_ASK_PX], t[_ASK_QTY], age, "live", False,  # no __new__
                                t[_UPDATE_ID], "shm", ""))

    def _on_stale(self, t: tuple, age: float, state: int, stale: bool, now: int, recv: int) -> Top:
        reason = self._stale_reason(state, recv, now) if stale else f"older than max_age {self.client.max_age} s"
        name = _state_name(state)
        served = self._when_stale(age, name, reason, self.top, self._rest_top)
        if served is not None:
            return served
        return Top(t[_BID_PX], t[_BID_QTY], t[_ASK_PX], t[_ASK_QTY], age, name, stale, t[_UPDATE_ID], "shm", reason)

    def _when_stale(self, age: float, state: str, reason: str, again: Callable[[], _R],
                    from_rest: Callable[[float, str, str], _R]) -> _R | None:
        """The one rule for a read that is stale or older than max_age (top, snapshot and read_into use it):
        if the engine was restarted, read again on the new segment; else count it, then serve it from REST
        (rest_fallback), raise StaleBookError (max_age set), or return None: the caller returns the flagged read."""
        c = self.client
        if c._follow(self):
            return again()
        c._stale_reads += 1
        if c.rest_fallback:
            return from_rest(age, state, reason)
        if c.max_age is not None:
            raise StaleBookError(self.exchange, self.symbol, age, state, reason)
        return None

    def snapshot(self, depth: int | None = None) -> Depth:
        """A consistent copy of the top `depth` levels (default: all the segment holds) in new arrays.

        `depth` is an int >= 1 (ValueError otherwise); above the segment's book capacity it is capped there.
        """
        if depth is not None:
            depth = check_depth(depth)
        r = self.reader
        if r is None and not self._try_bind():
            return self._rest_depth(depth, math.inf, "empty", "not subscribed")
        r = self.reader
        buf = BookBuffer(min(depth or r.capacity, r.capacity))
        self.read_into(buf, _fallback=False)
        h = buf.header()
        if buf.stale or buf.age_s > self.client._max_age:
            served = self._when_stale(buf.age_s, buf.state, buf.reason, lambda: self.snapshot(depth),
                                      lambda age, state, why: self._rest_depth(depth, age, state, why))
            if served is not None:
                return served
        return Depth(self.exchange, self.symbol, buf.bids.copy(), buf.asks.copy(), h.update_id, h.exch_ts_ns,
                     h.recv_ts_ns, h.pub_ts_ns, buf.state, buf.age_s, buf.stale, "shm", buf.reason)

    def read_into(self, buffer: BookBuffer, *, _fallback: bool = True) -> BookBuffer:
        """Copy the top `buffer.depth` levels into `buffer` without allocating arrays; returns `buffer`.

        Sets buffer.n_bids/n_asks, and on a client BookBuffer also source, age_s, state and stale.
        The stale / max_age rules of `top` apply (REST fills the buffer when falling back).
        A buffer of depth < 1 raises ValueError (a client BookBuffer refuses one when made).
        """
        if not buffer.depth >= 1:
            check_depth(buffer.depth)
        r = self.reader
        if r is None and not self._try_bind():
            if not _fallback:
                raise self._no_data()
            return self._rest_into(buffer, math.inf, "empty", "not subscribed")
        self.reader.read_into(buffer)
        recv, pub, state = _FRESHNESS.unpack_from(buffer.raw, 0)
        now = _time_ns()
        recv = recv or pub
        age = (now - recv) / 1e9 if recv else math.inf
        seg = self._seg
        stale = state != _LIVE or not (seg.ok if now < seg._next_check else seg.healthy(now)) or \
            (now > self._fresh_until and self._silent(now, recv))
        buffer.source, buffer.age_s, buffer.stale = "shm", age, stale
        buffer.state = _state_name(state)
        buffer.reason = ""
        if stale or age > self.client._max_age:
            buffer.reason = (self._stale_reason(state, recv, now) if stale
                             else f"older than max_age {self.client.max_age} s")
            if not _fallback:
                return buffer
            served = self._when_stale(age, buffer.state, buffer.reason, lambda: self.read_into(buffer),
                                      lambda age, state, why: self._rest_into(buffer, age, state, why))
            if served is not None:
                return served
        return buffer

    def header(self) -> _store.BookHeader:
        """The book's header alone (update id, timestamps, state, version), from shared memory."""
        if self.reader is None and not self._try_bind():
            raise self._no_data()
        return self.reader.header()

    # ------------------------------------------------------------------ REST fallback
    def _fetch(self, depth: int | None, age: float, state: str, reason: str) -> tuple[rest.RestBook, float]:
        c = self.client
        if not c.rest_fallback:
            if self.reader is None:
                raise self._no_data()
            raise StaleBookError(self.exchange, self.symbol, age, state, reason)
        want = depth or (self.reader.capacity if self.reader else 50)
        now = time.monotonic_ns()
        cached = self._rest
        if cached is not None and now - cached[0] < REST_CACHE_S * 1e9 and cached[1] >= want:
            return cached[2], (now - cached[0]) / 1e9
        try:
            book = c._fallback.depth(self.rest_symbol, want)
        except (rest.RestError, ValueError) as e:
            if self.reader is None:
                raise
            raise StaleBookError(self.exchange, self.symbol, age, state, f"{reason}; REST fallback failed: {e}") \
                from e
        self._rest = (time.monotonic_ns(), want, book)
        return book, 0.0

    def _rest_top(self, age: float, state: str, reason: str) -> Top:
        return fallback.top_from(*self._fetch(1, age, state, reason))

    def _rest_depth(self, depth: int | None, age: float, state: str, reason: str) -> Depth:
        book, age = self._fetch(depth, age, state, reason)
        return fallback.depth_from(self.exchange, self.symbol, book, depth, age)

    def _rest_into(self, buffer: BookBuffer, age: float, state: str, reason: str) -> BookBuffer:
        return fallback.fill_from(buffer, *self._fetch(buffer.depth, age, state, reason))

    # ------------------------------------------------------------------ wait support
    def _changed(self) -> bool:
        if self._seg is None:
            return self._try_bind()
        v = self._seg.q[self._seq_i]
        return v != self._mark and not v & 1  # odd: copy 0 is being written; wait for the even value

    def _ack(self) -> None:
        if self._seg is not None:
            self._mark = self._seg.q[self._seq_i]

    def __repr__(self) -> str:
        return f"<Book {self.exchange} {self.symbol} {'shm' if self.bound else 'unbound'}>"


class TradeStream(_Handle):
    """A cursor over one symbol's trades: each `poll` returns only trades this stream has not returned yet.

    start: "latest" (trades from now on) or "earliest" (everything still in the ring). When the symbol is
    not in shared memory (or its feed is dead) and the client has `rest_fallback`, polls return the
    exchange's recent trades not returned before, marked source="rest".
    """

    def __init__(self, client: Client, exchange: str, symbol: str, market: str | None,
                 start: str = "latest") -> None:
        super().__init__(client, exchange, symbol, market)
        self.start = start
        self.reader: TradeReader | None = None
        self.received = 0
        self.lost = 0
        self.resets = 0
        self._reset_lost = -1  # >= 0: moved to a recreated segment; the next poll reports the reset and this loss
        self._rest_seen: deque[int] = deque(maxlen=2000)  # ids served from REST, to skip them in the ring
        self._rest_next = 0

    def _attach(self, seg: _Segment, entry: SymbolEntry) -> None:
        super()._attach(seg, entry)
        self.reader = TradeReader(seg.reader, entry, self.start)

    def _rebind(self, seg: _Segment) -> bool:
        """After an engine restart: what the old ring still held unread is lost; read the new ring from its start
        (its trades are all newer than anything the old feed published)."""
        old = self.reader
        entry = _find_entry(seg.reader, self.requested, self.market)
        if entry is None:
            return False
        _Handle._attach(self, seg, entry)
        self.reader = TradeReader(seg.reader, entry, "earliest")
        unread = max(old.tail - old.cursor, 0) if old is not None else 0
        self._reset_lost = max(self._reset_lost, 0) + unread
        self.resets += 1
        return True

    def poll(self, out: np.ndarray | None = None) -> Trades:
        """New trades, oldest first, and how many were lost since the last poll (see TradeReader.poll).

        After an engine restart (the segment was recreated) the first poll on the new segment says reset=True."""
        r = self.reader
        if r is None and not self._try_bind():
            return self._rest_poll()
        seg = self._seg
        if self.client.rest_fallback and not seg.healthy(time.time_ns()):
            if self.client._follow(self):
                return self.poll(out)
            return self._rest_poll()
        records, lost = self.reader.poll(out)
        if not len(records) and self._reset_lost < 0 and self.client._follow(self):
            records, lost = self.reader.poll(out)  # moved to a recreated segment: its ring from the start
        if self._rest_seen and len(records):
            keep = ~np.isin(records["trade_id"], np.fromiter(self._rest_seen, np.int64))
            if not keep.all():
                records = records[keep]
        reset = self._reset_lost >= 0
        if reset:
            lost += self._reset_lost
            self._reset_lost = -1
        self.received += len(records)
        self.lost += lost
        self.client._trades_lost += lost
        return Trades(records, lost, "shm", reset)

    def _rest_poll(self) -> Trades:
        c = self.client
        if not c.rest_fallback:
            raise self._no_data()
        now = time.monotonic_ns()
        if now < self._rest_next:
            return Trades(np.empty(0, L.TRADE_DTYPE), 0, "rest")
        self._rest_next = now + int(REST_CACHE_S * 1e9)
        recs = c._fallback.trades(self.rest_symbol(), 100)
        seen = set(self._rest_seen)
        first = not seen and self.start == "latest" and not self.received
        fresh = recs[[int(t) not in seen for t in recs["trade_id"]]] if len(recs) else recs
        self._rest_seen.extend(int(t) for t in fresh["trade_id"])
        if first:  # a late joiner starts at the latest trade, as in shared memory
            fresh = fresh[:0]
        self.received += len(fresh)
        return Trades(fresh, 0, "rest")

    def statistics(self) -> TradeStreamStatistics:
        r = self.reader
        return TradeStreamStatistics(r.cursor if r else 0, r.tail if r else -1, self.received, self.lost, self.resets)

    def _changed(self) -> bool:
        r = self.reader
        if r is None:
            return self._try_bind()
        return r.tail != r.cursor

    def _ack(self) -> None:
        pass  # level-triggered: a stream stays "changed" until polled

    def __repr__(self) -> str:
        return f"<TradeStream {self.exchange} {self.symbol} {'shm' if self.bound else 'unbound'}>"


class Perp(_Handle):
    """One perpetual's perp record (mark, index, funding, open interest; layout 1.4). Get it from `Client.perp_handle`
    (or call `Client.perp`) and keep it. Reads follow the books' freshness rules: a stale read (or one older than
    `max_age`, or of a symbol not subscribed) is served from the exchange's REST API when the client has
    `rest_fallback` (source "rest"), else raises StaleBookError when the client has `max_age`, else comes back
    flagged."""

    def __init__(self, client: Client, exchange: str, symbol: str, market: str | None) -> None:
        super().__init__(client, exchange, symbol, market)
        self.reader: PerpReader | None = None
        self._seq_i = 0
        self._mark = 0
        self._rest: tuple[int, rest.RestPerp] | None = None  # (fetched monotonic ns, record)
        self._groups = False  # the segment has per-group receive times (1.6)
        self._group_stale_ns: tuple[int, ...] = (0, 0, 0, 0)  # per PERP_GROUPS, 0: no bound (header, 1.6)
        self._groups_fresh_until = 0  # wall ns before which no bounded group can be stale (times only move on)

    def _attach(self, seg: _Segment, entry: SymbolEntry) -> None:
        reader = PerpReader(seg.reader, entry)  # NoPerpData for a spot symbol: before anything changes
        super()._attach(seg, entry)
        self.reader = reader
        self._seq_i = (seg.reader.perp_base(entry) + L.PERP_SEQ_OFFSET) >> 3
        minor = seg.q[_MINOR_WORD] >> _MINOR_SHIFT & 0xFFFF_FFFF
        if minor >= 5:  # freshness of the connection carrying perp data
            self._conf_i = (seg.reader.view.slot_base(entry.slot) + _PERP_CONFIRMED) >> 3
        self._groups = minor >= 6
        self._groups_fresh_until = 0
        self._mark = seg.q[self._seq_i]

    def _group_ages(self, r: tuple, now: int, age: float) -> tuple[float, float, float, tuple[str, ...], str]:
        """(index, funding, open interest ages, stale_fields, reason) of record `r` at wall time `now` (1.6)."""
        if not self._groups:  # one receive time for the whole record: every group is as old as it
            return age, age, age, (), ""
        ages = tuple((now - t) / 1e9 if t else math.inf for t in r[12:16])
        if now < self._groups_fresh_until:
            return ages[1], ages[2], ages[3], (), ""
        self._group_stale_ns = bounds = tuple(
            ms * 1_000_000 for ms in struct.unpack_from(L.PERP_GROUP_STALE_MS_FORMAT, self._seg.reader.view.buf,
                                          L.PERP_MARK_STALE_MS_OFFSET))
        stale, why, until = [], [], math.inf
        for name, t, bound, a in zip(L.PERP_GROUPS, r[12:16], bounds, ages, strict=True):
            if not bound:  # no bound of its own: it comes with every frame of the record
                continue
            if not t:  # never received (its fields are NaN: absent); once it comes, it is fresh for `bound`
                until = min(until, now + bound)
                continue
            if now - t > bound:
                stale += L.PERP_GROUP_FIELDS[name]
                why.append(f"{name} not received for {a:.1f} s (stale after {bound / 1e9:g} s)")
            elif t + bound < until:
                until = t + bound
        self._groups_fresh_until = 0 if stale else until
        return ages[1], ages[2], ages[3], tuple(stale), "; ".join(why)

    def _rebind(self, seg: _Segment) -> bool:
        entry = _find_entry(seg.reader, self.requested, self.market)
        if entry is None or entry.kind not in L.PERP_KINDS or seg.reader.view.perp_base(entry.slot) is None:
            return False
        self._attach(seg, entry)
        self._mark = 0
        return True

    def read(self) -> PerpStats:
        """The latest perp record, with age and staleness (see PerpStats)."""
        if self.reader is None and not self._try_bind():
            if self.client.rest_fallback:
                return self._rest_read(math.inf, "empty", "not subscribed")
            raise self._no_data()
        r = self.reader.read()
        now = _time_ns()
        recv = r[7] or r[8]
        mark = r[12] or recv  # age_s is the mark's (before 1.6, and before the first mark: the record's)
        age = (now - mark) / 1e9 if mark else math.inf
        state = r[9]
        seg = self._seg
        stale = state != _LIVE or not (seg.ok if now < seg._next_check else seg.healthy(now)) or \
            (now > self._fresh_until and self._silent(now, recv))
        if stale or age > self.client._max_age:
            return self._on_stale(r, age, state, stale, now, recv)
        if now < self._groups_fresh_until:  # the usual read: no group can be past its bound yet
            t = r[13]
            ia = (now - t) / 1e9 if t else math.inf
            t = r[14]
            fa = (now - t) / 1e9 if t else math.inf
            t = r[15]
            oa = (now - t) / 1e9 if t else math.inf
            return _new_tuple(PerpStats, (r[0], r[1], r[2], r[3], r[4], r[5], r[6], age, False, "live", "", "shm",
                                          ia, fa, oa, ()))
        ia, fa, oa, stale_fields, why = self._group_ages(r, now, age)
        return _new_tuple(PerpStats, (r[0], r[1], r[2], r[3], r[4], r[5], r[6], age, False, "live", why, "shm",
                                      ia, fa, oa, stale_fields))

    def _on_stale(self, r: tuple, age: float, state: int, stale: bool, now: int, recv: int) -> PerpStats:
        c = self.client
        if c._follow(self):
            return self.read()
        c._stale_reads += 1
        if not stale:
            reason = f"older than max_age {c.max_age} s"
        elif state == L.BookState.EMPTY and self._seg.healthy(now):
            reason = "no perp data published yet"
        else:
            reason = self._stale_reason(state, recv, now).replace("book state", "perp state")
        name = _state_name(state)
        if c.rest_fallback:
            return self._rest_read(age, name, reason)
        if c.max_age is not None:
            raise StaleBookError(self.exchange, self.symbol, age, name, reason)
        if state == L.BookState.EMPTY:  # never published: every field absent, not the zero-filled memory
            return PerpStats(_NAN, _NAN, _NAN, _NAN, 0, _NAN, 0, age, stale, name, reason)
        ia, fa, oa, stale_fields, why = self._group_ages(r, now, age)
        return PerpStats(r[0], r[1], r[2], r[3], r[4], r[5], r[6], age, stale, name,
                         f"{reason}; {why}" if why else reason, "shm", ia, fa, oa, stale_fields)

    def _rest_read(self, age: float, state: str, reason: str) -> PerpStats:
        """The record over REST (an answer is reused for REST_CACHE_S); if that fails, StaleBookError with both
        causes for a subscribed symbol, the REST error itself for one that is not."""
        now = time.monotonic_ns()
        cached = self._rest
        if cached is not None and now - cached[0] < REST_CACHE_S * 1e9:
            return fallback.perp_from(cached[1], (now - cached[0]) / 1e9)
        if self.reader is None and self.rest_symbol().kind == L.MarketKind.SPOT:
            raise NoPerpData(f"{self.exchange}: {self.requested!r} is spot: it has no perp data")
        try:
            record = self.client._fallback.perp(self.rest_symbol)
        except (rest.RestError, ValueError) as e:
            if self.reader is None:
                raise
            raise StaleBookError(self.exchange, self.symbol, age, state, f"{reason}; REST fallback failed: {e}") \
                from e
        self._rest = (time.monotonic_ns(), record)
        return fallback.perp_from(record, 0.0)

    def _changed(self) -> bool:
        if self._seg is None:
            return self._try_bind()
        v = self._seg.q[self._seq_i]
        return v != self._mark and not v & 1

    def _ack(self) -> None:
        if self._seg is not None:
            self._mark = self._seg.q[self._seq_i]

    def __repr__(self) -> str:
        return f"<Perp {self.exchange} {self.symbol} {'shm' if self.bound else 'unbound'}>"


class LiquidationStream(_Handle):
    """A cursor over one perpetual's liquidations (layout 1.4): each `poll` returns only records not returned yet,
    and how many the writer overwrote before this stream read them. After an engine restart the stream reads the
    new ring from its start and counts what the old one still held unread as lost."""

    def __init__(self, client: Client, exchange: str, symbol: str, market: str | None,
                 start: str = "latest") -> None:
        super().__init__(client, exchange, symbol, market)
        self.start = start
        self.reader: LiquidationReader | None = None
        self.received = self.lost = 0
        self._carry = 0  # unread records lost across a restart, reported by the next poll

    def _attach(self, seg: _Segment, entry: SymbolEntry) -> None:
        reader = LiquidationReader(seg.reader, entry, self.start)  # NoPerpData for a spot symbol
        super()._attach(seg, entry)
        self.reader = reader

    def _rebind(self, seg: _Segment) -> bool:
        old = self.reader
        entry = _find_entry(seg.reader, self.requested, self.market)
        if entry is None or entry.kind not in L.PERP_KINDS or seg.reader.view.perp_base(entry.slot) is None:
            return False
        _Handle._attach(self, seg, entry)
        self.reader = LiquidationReader(seg.reader, entry, "earliest")
        self._carry += max(old.tail - old.cursor, 0) if old is not None else 0
        return True

    def poll(self, out: np.ndarray | None = None) -> Liquidations:
        if self.reader is None and not self._try_bind():
            raise self._no_data()
        records, lost = self.reader.poll(out)
        if not len(records) and self.client._follow(self):
            records, lost = self.reader.poll(out)
        lost += self._carry
        self._carry = 0
        self.received += len(records)
        self.lost += lost
        return Liquidations(records, lost, "shm")

    def _changed(self) -> bool:
        r = self.reader
        if r is None:
            return self._try_bind()
        return r.tail != r.cursor

    def _ack(self) -> None:
        pass  # level-triggered, as TradeStream

    def __repr__(self) -> str:
        return f"<LiquidationStream {self.exchange} {self.symbol} {'shm' if self.bound else 'unbound'}>"


class Client:
    """Attach to the engine running in `namespace` (default: $MDENGINE_NAMESPACE, else "default").

    An empty or malformed namespace raises ValueError.

    max_age: seconds; a read whose data is older, or stale, raises StaleBookError (or uses REST).
    rest_fallback: serve stale or not-yet-subscribed symbols from the exchange's REST API, marked
        source="rest". endpoints: REST base URLs by market ("binance-spot", "binance-usdm", "okx",
        "bybit", "bitget"), or a Simulator's `endpoints()`; the real exchanges by default.
    heartbeat_timeout: a feed whose heartbeat is older is silent (default: HEARTBEAT_MISSES of the heartbeat
        interval the feed publishes in its segment, 3 s for a feed that publishes none). Never `max_age`.

    Raises EngineNotFound if the namespace has no segment at all.
    """

    def __init__(self, namespace: str | None = None, *, max_age: float | None = None,
                 rest_fallback: bool = False, endpoints: Mapping[str, str | tuple[str, str]] | None = None,
                 heartbeat_timeout: float | None = None, rest_timeout: float = 2.0,
                 max_sleep: float = 0.001) -> None:
        self.namespace = namespace = resolve_namespace(namespace)
        self.max_age = max_age
        self._max_age = math.inf if max_age is None else max_age
        self.rest_fallback = rest_fallback
        self.max_sleep = max_sleep
        self._futex = futex.AVAILABLE
        self.heartbeat_timeout = heartbeat_timeout  # None: each feed's own published interval
        self._control = ControlClient(namespace)
        self._fallback = RestFallback(self._control, endpoints, rest_timeout, self._published_endpoints)
        self._segments: dict[str, _Segment] = {}
        self._books: dict[tuple[str, str, str | None], Book] = {}
        self._streams: dict[tuple[str, str, str | None], TradeStream] = {}
        self._perps: dict[tuple[str, str, str | None], Perp] = {}
        self._liquidations: dict[tuple[str, str, str | None], LiquidationStream] = {}
        self._book_sets: dict[tuple[str, str | None], BookSet] = {}
        self._stale_reads = self._trades_lost = self._rescans = 0
        self._follows = 0
        self._next_follow = 0
        self._next_rescan = 0
        self._retired: list[_Segment] = []  # replaced segments some handle still reads
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()  # every Book and TradeStream made
        self._rescan()
        if not self._segments:
            raise EngineNotFound(f"no mdengine engine runs in namespace {namespace!r} (no segment "
                                 f"{_store.shm.NAME_PREFIX}{namespace}-* in {_store.shm.SHM_DIR}); start one with "
                                 f"`mdengine run --namespace {namespace}`")

    # ------------------------------------------------------------------ segments
    def _rescan(self) -> None:
        self._rescans += 1
        self._next_rescan = time.monotonic_ns() + RESCAN_NS
        prefix = f"{_store.shm.NAME_PREFIX}{self.namespace}-"
        for name in _store.shm.list_names(self.namespace):
            exchange = name[len(prefix):]
            if exchange in self._segments:
                continue
            try:
                self._segments[exchange] = _Segment(self.namespace, exchange, self.heartbeat_timeout)
            except (_store.SegmentNotFound, _store.LayoutError, ValueError):
                continue  # vanished or still being initialised: the next scan retries

    def _segment(self, exchange: str) -> _Segment | None:
        seg = self._segments.get(exchange)
        if seg is None:
            self._rescan()
            seg = self._segments.get(exchange)
        return seg

    def _follow(self, h: _Handle) -> bool:
        """On a stale read of `h` (at most every FOLLOW_NS per segment): if the engine recreated the segment
        (restart: unlinked and created again), attach the new one and move every handle that finds its symbol
        there. True if `h` moved."""
        seg = h._seg
        now = time.monotonic_ns()
        if seg is None or now < seg.next_follow:
            return False
        seg.next_follow = now + FOLLOW_NS
        return self._follow_segment(seg, h)

    def _follow_segment(self, seg: _Segment, h: _Handle | None = None) -> bool:
        cur = self._segments.get(seg.exchange)
        if cur is seg:
            if not seg.replaced():
                return False
            try:
                cur = _Segment(self.namespace, seg.exchange, self.heartbeat_timeout)
            except (_store.SegmentNotFound, _store.LayoutError, ValueError):
                return False  # not there yet, or being initialised: the next check retries
            self._segments[seg.exchange] = cur
            self._retired.append(seg)
            self._follows += 1
            log.info("%s: the engine recreated segment %s; following it", seg.exchange, seg.reader.name)
        elif cur is None:
            return False
        moved = False
        for x in list(self._handles):
            if x._seg is seg and x._rebind(cur):
                moved = moved or x is h
        self._close_retired()
        return moved

    def _close_retired(self) -> None:
        """Unmap replaced segments no handle reads any more."""
        used = {id(x._seg) for x in list(self._handles)}
        for seg in [s for s in self._retired if id(s) not in used]:
            self._retired.remove(seg)
            seg.close()

    def _follow_all(self) -> None:
        """wait()'s slow path: follow every recreated segment (one stat() per segment per FOLLOW_NS)."""
        now = time.monotonic_ns()
        for seg in [*self._segments.values(), *self._retired]:
            if now >= seg.next_follow:
                seg.next_follow = now + FOLLOW_NS
                self._follow_segment(seg)

    @property
    def exchanges(self) -> list[str]:
        """Exchanges with a segment in this namespace (scans for new ones)."""
        self._rescan()
        return sorted(self._segments)

    def symbols(self, exchange: str) -> list[SymbolEntry]:
        """The active directory entries of `exchange` (unified, native, market, ...)."""
        seg = self._segment(exchange)
        if seg is None:
            raise UnknownSymbol(f"no segment for exchange {exchange!r} in namespace {self.namespace!r} "
                                f"(has: {', '.join(sorted(self._segments)) or 'none'})")
        return seg.reader.symbols()

    @property
    def rest_timeout(self) -> float:
        """Seconds a REST fallback request may take."""
        return self._fallback.timeout

    @rest_timeout.setter
    def rest_timeout(self, seconds: float) -> None:
        self._fallback.timeout = seconds

    def _published_endpoints(self, exchange: str) -> dict[str, str]:
        """The REST base URLs the engine's feed for `exchange` publishes ({} without a segment)."""
        seg = self._segments.get(exchange)
        return seg.rest_endpoints() if seg is not None else {}

    # ------------------------------------------------------------------ handles
    def book(self, exchange: str, symbol: str, market: str | None = None) -> Book:
        """The handle of one book, by unified symbol ("BTC/USDT:USDT") or native id (spot if ambiguous).

        Raises UnknownSymbol if the symbol is not in the engine's directory, unless `rest_fallback` (the
        handle then serves REST and switches to shared memory once the symbol is subscribed).
        """
        key = (exchange, symbol, market)
        b = self._books.get(key)
        if b is None:
            b = Book(self, exchange, symbol, market)
            self._bind_or_raise(b)
            self._books[key] = b
        return b

    def trade_stream(self, exchange: str, symbol: str, market: str | None = None,
                     start: str = "latest") -> TradeStream:
        """A new, independent trade cursor (each has its own position and lost count)."""
        s = TradeStream(self, exchange, symbol, market, start)
        self._bind_or_raise(s)
        return s

    def perp_handle(self, exchange: str, symbol: str, market: str | None = None) -> Perp:
        """The handle of one perpetual's perp record. Raises UnknownSymbol if the symbol is not subscribed (unless
        `rest_fallback`: its reads then come from REST), NoPerpData if it is spot (or its feed predates layout 1.4)."""
        key = (exchange, symbol, market)
        h = self._perps.get(key)
        if h is None:
            h = Perp(self, exchange, symbol, market)
            self._bind_or_raise(h)
            self._perps[key] = h
        return h

    def liquidation_stream(self, exchange: str, symbol: str, market: str | None = None,
                           start: str = "latest") -> LiquidationStream:
        """A new, independent liquidation cursor (its own position and lost count)."""
        s = LiquidationStream(self, exchange, symbol, market, start)
        self._bind_or_raise(s, rest=False)
        return s

    def _bind_or_raise(self, h: _Handle, rest: bool = True) -> None:
        if h._try_bind(force=True) or (rest and self.rest_fallback):
            return
        seg = self._segments.get(h.exchange)
        if seg is None:
            raise UnknownSymbol(f"no segment for exchange {h.exchange!r} in namespace {self.namespace!r} "
                                f"(has: {', '.join(sorted(self._segments)) or 'none'})")
        seg.reader.entry(h.requested, h.market)  # raises UnknownSymbol listing what the segment has
        raise h._no_data()

    def book_set(self, exchange: str, market: str | None = None, symbols: Iterable[str] | None = None) -> BookSet:
        """Books of `exchange` read and waited on as one: every active one, one market's, or `symbols` (unified
        or native ids). `wait([book_set])` wakes when any of them changes (see mdengine.client.tops)."""
        bs = BookSet(self, exchange, market, symbols)
        if not bs._try_bind():
            raise UnknownSymbol(f"no segment for exchange {exchange!r} in namespace {self.namespace!r} "
                                f"(has: {', '.join(sorted(self._segments)) or 'none'})")
        return bs

    def tops(self, exchange: str, market: str | None = None) -> np.ndarray:
        """Every top of `exchange` (or of one market) at once: a numpy structured array, one row per symbol
        (symbol, market, bid, ask, bid_qty, ask_qty, age, state, live, update_id, ...), each row read under its
        own latch. Rows that are stale are flagged (live False), not served from REST."""
        key = (exchange, market)
        bs = self._book_sets.get(key)
        if bs is None:
            bs = self._book_sets[key] = self.book_set(exchange, market)
        return bs.tops()

    # ------------------------------------------------------------------ one-call reads
    def top(self, exchange: str, symbol: str, market: str | None = None) -> Top:
        return self.book(exchange, symbol, market).top()

    def snapshot(self, exchange: str, symbol: str, depth: int | None = None, market: str | None = None) -> Depth:
        return self.book(exchange, symbol, market).snapshot(depth)

    def trades(self, exchange: str, symbol: str, market: str | None = None) -> Trades:
        """Trades of `symbol` this client has not returned before (one cursor per symbol, from the first call)."""
        key = (exchange, symbol, market)
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = self.trade_stream(exchange, symbol, market)
        return s.poll()

    def perp(self, exchange: str, symbol: str, market: str | None = None) -> PerpStats:
        """Mark, index, funding and open interest of a perpetual, with age and staleness (see PerpStats)."""
        return self.perp_handle(exchange, symbol, market).read()

    def liquidations(self, exchange: str, symbol: str, market: str | None = None) -> Liquidations:
        """Liquidations of `symbol` this client has not returned before (one cursor per symbol, from the first
        call), and how many were lost."""
        key = (exchange, symbol, market)
        s = self._liquidations.get(key)
        if s is None:
            s = self._liquidations[key] = self.liquidation_stream(exchange, symbol, market)
        return s.poll()

    def recent_trades(self, exchange: str, symbol: str, limit: int = 100, market: str | None = None) -> Trades:
        """The last `limit` trades (whether seen before or not), from the ring, or REST if not subscribed."""
        probe = TradeStream(self, exchange, symbol, market, "earliest")
        if not probe._try_bind(force=True) or (self.rest_fallback and not probe._seg.healthy(time.time_ns())):
            if not self.rest_fallback:
                self._bind_or_raise(probe)
            recs = self._fallback.trades(probe.rest_symbol(), limit)
            return Trades(recs[-limit:], 0, "rest")
        r = probe.reader
        r.cursor = max(r.cursor, r.tail - limit)
        records, lost = r.poll()
        return Trades(records, lost, "shm")

    # ------------------------------------------------------------------ waiting
    def wait(self, timeout: float | None = None,
             streams: Iterable[Book | TradeStream | Perp | LiquidationStream] | None = None, *,
             spin: bool = False) -> list:
        """Block until a book or trade stream updates; returns what changed, [] on timeout.

        streams: Book / TradeStream / Perp / LiquidationStream handles; returns those that changed since the last
        wait reported them (a TradeStream or LiquidationStream counts as changed while it has unread records).
        With streams=None it wakes on any
        publish in any segment of the namespace and returns the exchange names that published.
        spin=False sleeps in the kernel (a futex on the segments' publish counters) until a feed publishes:
        no CPU while idle, woken within tens of µs; where futexes are unavailable it polls the counters with
        sleeps backing off to `max_sleep`. spin=True polls without sleeping (lowest latency, one core busy).
        """
        handles = None if streams is None else list(streams)
        clock, sleep_fn, max_sleep, pc = time.monotonic_ns, time.sleep, self.max_sleep, L.PUBLISH_COUNTER_OFFSET >> 3
        now = clock()
        deadline = math.inf if timeout is None else now + timeout * 1e9
        next_slow = now + REBIND_NS
        if now >= self._next_follow:  # a busy other segment must not keep us from following a recreated one
            self._next_follow = now + FOLLOW_NS
            self._follow_all()
        while True:
            if handles is None:
                segs = list(self._segments.values())
                words = [(s.q, pc, s.wait_mark) for s in segs]
            else:
                segs = list({id(h._seg): h._seg for h in handles if h._seg is not None}.values())
                words = [(s.q, pc, s.q[pc]) for s in segs]  # marks first, then the handles: no lost wake-up
                hit = [h for h in handles if h._changed()]
                if hit:
                    for h in hit:
                        h._ack()
                    return hit
            if not spin and segs and self._futex and all(seg.wake_addr and seg.wakes() for seg in segs):
                moved = self._sleep(segs, words, deadline, clock, next_slow)
            else:
                moved = self._poll(words, deadline, spin, 5e-5, max_sleep, sleep_fn, clock, next_slow)
            if moved is None:  # deadline
                return []
            if moved and handles is None:
                for k in moved:
                    segs[k].wait_mark = segs[k].q[pc]
                return [segs[k].exchange for k in moved]
            if moved:  # the usual wake-up: look at the handles before rebuilding the marks (a few µs sooner)
                hit = [h for h in handles if h._changed()]
                if hit:
                    for h in hit:
                        h._ack()
                    return hit
            if not moved:  # periodic slow path: new segments; handles bind in _changed once subscribed
                next_slow = clock() + REBIND_NS
                if clock() >= self._next_follow:  # recreated segments (engine restart): handles move over
                    self._next_follow = clock() + FOLLOW_NS
                    self._follow_all()
                if handles is None and clock() >= self._next_rescan:
                    self._rescan()

    def _sleep(self, segs: list[_Segment], words: list, deadline: float, clock, next_slow: int) -> list[int] | None:
        """`_poll` without spinning: sleep on the writers' futex wake-ups (one call for any number of segments)."""
        targets = [(seg.wake_addr, mark) for seg, (_q, _i, mark) in zip(segs, words, strict=True)]
        while True:
            moved = [k for k, (q, i, mark) in enumerate(words) if q[i] != mark]
            if moved:
                return moved
            now = clock()
            if now >= deadline:
                return None
            if now >= next_slow:
                return []
            until = min(deadline, next_slow)
            try:
                if len(targets) == 1:
                    futex.wait(targets[0][0], targets[0][1], (until - now) / 1e9)
                elif futex.WAITV_AVAILABLE:
                    futex.wait_any(targets, int(until))
                else:
                    return self._poll(words, deadline, False, 5e-5, self.max_sleep, time.sleep, clock, next_slow)
            except OSError as e:  # e.g. a seccomp filter: poll from now on
                log.warning("futex wait failed (%s); wait() polls from now on", e)
                self._futex = False
                return self._poll(words, deadline, False, 5e-5, self.max_sleep, time.sleep, clock, next_slow)

    @staticmethod
    def _poll(words: list, deadline: float, spin: bool, sleep: float, max_sleep: float, sleep_fn, clock,
              next_slow: int) -> list[int] | None:
        """Poll the words until one differs from its mark ([indices]), the slow-path time ([]) or the deadline."""
        if len(words) == 1 and spin:  # the lowest-latency case: one word, no list building
            q, i, mark = words[0]
            while True:
                for _ in range(512):
                    if q[i] != mark:
                        return [0]
                now = clock()
                if now >= deadline:
                    return None
                if now >= next_slow:
                    return []
        while True:
            for k, (q, i, mark) in enumerate(words):
                if q[i] != mark:
                    return [k for k, (q, i, mark) in enumerate(words) if q[i] != mark]
            now = clock()
            if now >= deadline:
                return None
            if now >= next_slow:
                return []
            if not spin:
                left = (deadline - now) / 1e9
                sleep_fn(sleep if sleep < left else left)
                sleep = sleep * 2 if sleep * 2 < max_sleep else max_sleep

    # ------------------------------------------------------------------ supervisor
    def subscribe(self, exchange: str, symbol: str, market: str | None = None, timeout: float = 5.0) -> dict:
        """Ask the supervisor to subscribe `symbol`; returns its answer (unified symbol, market, native, live).

        A new symbol's answer waits up to timeout/2 for its first book ("live": True) or the exchange's refusal.
        Raises SubscribeError with the reason if refused (unknown symbol, or refused by the exchange), and
        mdengine.engine.control.ControlError if no supervisor runs in the namespace.
        """
        answer = self._control.subscribe(exchange, symbol, market, timeout)
        self._rescan()
        return answer

    def unsubscribe(self, exchange: str, symbol: str, market: str | None = None, timeout: float = 5.0) -> dict:
        answer = self._control.unsubscribe(exchange, symbol, market, timeout)
        self._rescan()
        return answer

    # ------------------------------------------------------------------ lifecycle
    def statistics(self) -> ClientStatistics:
        books = self._books.values()
        return ClientStatistics(tuple(sorted(self._segments)), len(self._books), len(self._streams),
                                self._stale_reads, self._fallback.reads, self._fallback.failures, self._trades_lost,
                                sum(b.reader.retries for b in books if b.reader is not None), self._rescans,
                                self._follows)

    def close(self) -> None:
        """Detach from every segment; handles must not be used afterwards."""
        for h in list(self._handles):
            if isinstance(h, BookSet):
                h.close()  # its views of the mapping must go before the segment is unmapped
            h.reader = None
            h._seg = None
        self._books.clear()
        self._book_sets.clear()
        self._streams.clear()
        self._perps.clear()
        self._liquidations.clear()
        for seg in [*self._segments.values(), *self._retired]:
            seg.close()
        self._segments.clear()
        self._retired.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Book", "BookSet", "Client", "LiquidationStream", "Perp", "TradeStream"]
