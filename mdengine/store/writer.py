"""The single writer of a segment: creates it (owner) or takes it over (feed), publishes books and trades.

One writer per segment. A writer that attaches bumps the generation, repairs any half-finished
latch or ring write left by a killed predecessor, and marks every book stale until it resyncs, so
readers keep their mappings across feed restarts.
"""

from __future__ import annotations

import functools
import math
import mmap
import os
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Sequence

import psutil

from .._native import speedups
from ..errors import StoreFull
from . import futex, shm
from . import layout as L
from .segment import SegmentView, SymbolEntry, check_memory_model, pack_entry

_NAN = math.nan
_BOOK_HEADER = struct.Struct(L.BOOK_HEADER_STRUCT)
_TRADE = struct.Struct(L.TRADE_STRUCT)
_PERP = struct.Struct(L.PERP_STRUCT)
_BEST_PRICES = struct.Struct("<d8xd")  # a level's bid price and ask price
_native = speedups()
_latch_publish = _native.latch_publish if _native is not None else None
_ring_append = _native.ring_append if _native is not None else None
assert _BOOK_HEADER.size == L.BOOK_HEADER_LENGTH and _TRADE.size == L.TRADE_RECORD_LENGTH
assert _PERP.size == L.PERP_RECORD_LENGTH
# The perp record's value fields, in PERP_DTYPE order (the fields `publish_perp` merges).
PERP_FIELDS = ("mark_price", "index_price", "funding_rate", "next_funding_rate", "next_funding_ns", "open_interest")
_PERP_EMPTY = (_NAN, _NAN, _NAN, _NAN, 0, _NAN)
# field -> index of its group's receive time (1.6) in PERP_GROUPS order
_PERP_FIELD_GROUP = {f: g for g, name in enumerate(L.PERP_GROUPS) for f in L.PERP_GROUP_FIELDS[name]}
_GROUP_INDEX = {name: g for g, name in enumerate(L.PERP_GROUPS)}

# A slot's publish bookkeeping in `SegmentWriter.meta` (int64 words): whether this writer published it yet, the
# book version of its last publish, then that publish's update id, timestamps, level counts and flags.
META_FIELDS = ("published", "version", "update_id", "exch_ts_ns", "recv_ts_ns", "n_bids", "n_asks", "flags")
META_WORDS = len(META_FIELDS)
META_PUBLISHED, META_VERSION, META_UPDATE_ID, META_EXCH_TS, META_RECV_TS, META_N_BIDS, META_N_ASKS, META_FLAGS = \
    range(META_WORDS)

Trade = tuple[int, int, float, float, int, int, int]
"""(exch_ts_ns, recv_ts_ns, price, qty, trade_id, side, flags) - see layout.TRADE_DTYPE. A liquidation is one with
trade_id 0."""


@functools.lru_cache(maxsize=8)
def _blank_levels(n: int) -> bytes:
    return struct.pack(f"<{4 * n}d", *([_NAN, 0.0, _NAN, 0.0] * n))


def _utf8_prefix(text: str, limit: int) -> bytes:
    """At most `limit` bytes of text's UTF-8, cut on a character boundary."""
    raw = text.encode("utf-8", "replace")
    return raw if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore").encode()


def mark_dead(name: str, pid: int) -> bool:
    """The owner's mark (1.3): the writer process `pid`, a child of the caller, has exited; if the segment still
    names it as a STARTING or RUNNING writer, set its state to DEAD so readers see it at once. Call only once the
    process is known gone (its pidfd or sentinel signalled), and never while a successor may be attaching (the
    caller spawns successors, so it can order the two). Returns True if it marked."""
    try:
        mem = shm.attach_writable(name)
    except (shm.SegmentNotFound, FileNotFoundError):
        return False
    try:
        q = mem.buf.cast("q")
        try:
            if q[L.MAGIC_OFFSET >> 3] != L.MAGIC or q[L.WRITER_PID_OFFSET >> 3] != pid or \
                    q[L.WRITER_STATE_OFFSET >> 3] not in (L.WriterState.STARTING, L.WriterState.RUNNING):
                return False
            q[L.WRITER_STATE_OFFSET >> 3] = L.WriterState.DEAD
            return True
        finally:
            q.release()
    finally:
        mem.close()


def process_start_ns(pid: int) -> int:
    """Start time of `pid` in ns (0 if it does not exist): with the pid, identifies a process."""
    try:
        return int(psutil.Process(pid).create_time() * 1e9)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def create_segment(namespace: str, exchange: str, *, max_symbols: int = 32, book_capacity: int = 50,
                   trade_capacity: int = 4096, owner_pid: int | None = None,
                   liquidation_capacity: int = L.DEFAULT_LIQUIDATION_CAPACITY) -> str:
    """Create and initialise a segment; returns its name. The caller owns it and must `shm.unlink` it.

    The magic is written last, so a reader that attaches mid-initialisation gets a clear LayoutError.
    """
    check_memory_model()
    name = shm.segment_name(namespace, exchange)
    seg = shm.create(name, L.segment_size(max_symbols, book_capacity, trade_capacity, liquidation_capacity))
    try:
        _initialise(seg.buf, namespace, exchange, max_symbols, book_capacity, trade_capacity, owner_pid,
                    liquidation_capacity)
    finally:
        seg.close()
    return name


def _initialise(buf: memoryview, namespace: str, exchange: str, max_symbols: int, book_capacity: int,
                trade_capacity: int, owner_pid: int | None,
                liquidation_capacity: int = L.DEFAULT_LIQUIDATION_CAPACITY) -> None:
    size = L.segment_size(max_symbols, book_capacity, trade_capacity, liquidation_capacity)
    geometry = L.SlotGeometry(book_capacity, trade_capacity)
    struct.pack_into("<IIQIIIIIIq", buf, L.LAYOUT_MAJOR_OFFSET, L.LAYOUT_MAJOR, L.LAYOUT_MINOR, size,
                     max_symbols, book_capacity, trade_capacity, geometry.size, L.slots_offset(max_symbols),
                     L.DIRECTORY_OFFSET, time.time_ns())
    buf[L.EXCHANGE_NAME_OFFSET:L.EXCHANGE_NAME_OFFSET + len(exchange)] = exchange.encode()
    buf[L.NAMESPACE_OFFSET:L.NAMESPACE_OFFSET + len(namespace)] = namespace.encode()
    struct.pack_into("<II", buf, L.TEXT_AREA_OFFSET_OFFSET,
                     L.text_area_offset(max_symbols, book_capacity, trade_capacity), L.TEXT_AREA_LENGTH)
    struct.pack_into("<III", buf, L.PERP_AREA_OFFSET_OFFSET, L.perp_area_offset(max_symbols, book_capacity,
                     trade_capacity), L.perp_slot_size(liquidation_capacity), liquidation_capacity)
    pid = os.getpid() if owner_pid is None else owner_pid
    struct.pack_into("<qq", buf, L.OWNER_PID_OFFSET, pid, process_start_ns(pid))
    struct.pack_into("<Q", buf, L.MAGIC_OFFSET, L.MAGIC)


class _PrivateMemory:
    """Anonymous memory of this process only: what `SegmentWriter.private` writes into."""

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, size)
        self.buf = memoryview(self._map)

    def close(self) -> None:
        self.buf.release()
        self._map.close()


class SegmentWriter:
    """Publishes into one segment. Not thread-safe: call it from the feed's single I/O thread."""

    def __init__(self, namespace: str, exchange: str, *, create: bool = False, native: bool = True,
                 **capacities: int) -> None:
        """Attach as the writer of ``mde-<namespace>-<exchange>`` (create it first if `create`).

        native=False writes books and trades with the pure-Python code even where the C module is built (both
        write the same bytes; the tests compare them)."""
        check_memory_model()
        self.name = shm.segment_name(namespace, exchange)
        self.created = False
        if create:
            try:
                create_segment(namespace, exchange, **capacities)
                self.created = True
            except shm.SegmentExists:
                pass
        self._attach(shm.attach_writable(self.name), native)

    @classmethod
    def private(cls, exchange: str, *, max_symbols: int = 1, book_capacity: int = 50, trade_capacity: int = 16,
                native: bool = True) -> SegmentWriter:
        """A writer of a segment in this process's own anonymous memory: the same layout and the same publish
        code, but no name, so no reader can ever see it (the feed's warm-up pass writes there)."""
        check_memory_model()
        memory = _PrivateMemory(L.segment_size(max_symbols, book_capacity, trade_capacity))
        _initialise(memory.buf, "", exchange, max_symbols, book_capacity, trade_capacity, None)
        self = cls.__new__(cls)
        self.name = f"(private {exchange})"
        self.created = True
        self._attach(memory, native)
        return self

    def _attach(self, memory: shm.shared_memory.SharedMemory | _PrivateMemory, native: bool) -> None:
        self._shm = memory
        self.view = SegmentView(self._shm.buf, self.name)
        self.buf = self._shm.buf
        self.q = self.view.q
        g = self.view.geometry
        self.capacity = g.book_capacity
        self._ring_mask = g.trade_capacity - 1
        self._stage: list[bytearray | None] = [None] * self.view.max_symbols
        # Per slot, what this writer last published (META_WORDS int64 words, see META_*): plain memory the C fast
        # lane (mdengine.feed.fastlane) updates too, so either may publish the next book.
        self.meta = bytearray(self.view.max_symbols * META_WORDS * 8)
        self._meta = memoryview(self.meta).cast("q")
        self._latch = _latch_publish if native else None
        self._latch_offsets: list[tuple[int, ...] | None] = [None] * self.view.max_symbols
        self._ring_append = _ring_append if native else None
        self._ring_offsets: list[tuple[int, ...] | None] = [None] * self.view.max_symbols
        # per slot, the perp record as this writer last published it: [values (PERP_FIELDS order, merged by
        # publish_perp), version, exch_ts_ns, recv_ts_ns, group receive times (PERP_GROUPS order, 1.6)]
        self._perp: list[list | None] = [None] * self.view.max_symbols
        self._liq_offsets: list[tuple[int, ...] | None] = [None] * self.view.max_symbols
        self._wake_addr = futex.address_of(self.buf, L.PUBLISH_COUNTER_OFFSET) if futex.AVAILABLE else 0
        self._woken = self.q[L.PUBLISH_COUNTER_OFFSET >> 3]
        self._take_over()

    # ------------------------------------------------------------------ lifecycle
    def _take_over(self) -> None:
        q, v = self.q, self.view
        pid = os.getpid()
        generation = v.generation + 1
        struct.pack_into("<qqqq", self.buf, L.WRITER_PID_OFFSET, pid, process_start_ns(pid), generation,
                         L.WriterState.STARTING)
        # the writer's protocol is the segment's: 1.1 means "publishes are followed by a futex wake"
        struct.pack_into("<I", self.buf, L.LAYOUT_MINOR_OFFSET, L.LAYOUT_MINOR)
        self.generation = generation
        if q[L.DIRECTORY_VERSION_OFFSET >> 3] & 1:  # killed inside a directory change: its entry is whole again
            q[L.DIRECTORY_VERSION_OFFSET >> 3] += 1  # below (add_symbol rewrites it), so let readers in
        for e in v.entries():
            self._repair_slot(e.slot)
        q[L.HEARTBEAT_NS_OFFSET >> 3] = time.time_ns()

    def _repair_slot(self, slot: int) -> None:
        """Finish what a killed writer left: a latch stuck odd, a ring with tail_intent ahead of tail."""
        base = self.view.slot_base(slot)
        g = self.view.geometry
        seq_i = (base + L.SLOT_BOOK_SEQ_OFFSET) >> 3
        s = self.q[seq_i]
        c0, c1 = base + g.copy0, base + g.copy1
        if s & 1:
            # Killed while writing copy 0: readers are on copy 1, which is complete. Restore copy 0
            # from it before letting the counter go even (which sends readers to copy 0).
            self.buf[c0:c0 + g.copy_length] = self.buf[c1:c1 + g.copy_length]
            self.q[seq_i] = s + 1
        # Readers are on copy 0 now. Copy 1 may be half-written (killed after the even store), and the
        # republish below sends readers to it while it rewrites copy 0: make it whole first.
        self.buf[c1:c1 + g.copy_length] = self.buf[c0:c0 + g.copy_length]
        stage = self._staging(slot)
        stage[:] = self.buf[c0:c0 + g.copy_length]
        hdr = _BOOK_HEADER.unpack_from(stage, 0)
        self._meta[slot * META_WORDS + META_VERSION] = hdr[9]
        ring = base + g.ring
        tail = self.q[(ring + L.RING_TAIL_OFFSET) >> 3]
        intent_i = (ring + L.RING_TAIL_INTENT_OFFSET) >> 3
        # An unfinished batch wrote slots for indices [tail, intent). A record cut mid-write can keep its
        # old, valid-looking index, so stamp those slots invalid (index -1) while readers still reject
        # them through the old intent, and only then lower the intent back to tail.
        records = ring + L.RING_HEADER_LENGTH
        mask = g.trade_capacity - 1
        for idx in range(tail, min(self.q[intent_i], tail + g.trade_capacity)):
            off = records + (idx & mask) * L.TRADE_RECORD_LENGTH + L.TRADE_INDEX_OFFSET
            self.q[off >> 3] = -1
        self.q[intent_i] = tail
        if hdr[6] != L.BookState.EMPTY:
            n = max(min(hdr[4], self.capacity), min(hdr[5], self.capacity))
            self._write_latched(slot, hdr[0], hdr[1], hdr[2], min(hdr[4], self.capacity),
                                min(hdr[5], self.capacity), L.BookState.STALE, hdr[7], n)
        self._repair_perp(slot)

    def _repair_perp(self, slot: int) -> None:
        """The perp slot's half of `_repair_slot` (1.4): the same latch and ring repairs, then the record, if any,
        republished STALE until this writer publishes it again."""
        base = self.view.perp_base(slot)
        if base is None:
            return
        seq_i = (base + L.PERP_SEQ_OFFSET) >> 3
        c0, c1, n = base + L.PERP_COPY0_OFFSET, base + L.PERP_COPY1_OFFSET, L.PERP_RECORD_LENGTH
        s = self.q[seq_i]
        if s & 1:
            self.buf[c0:c0 + n] = self.buf[c1:c1 + n]
            self.q[seq_i] = s + 1
        self.buf[c1:c1 + n] = self.buf[c0:c0 + n]
        ring = base + L.PERP_RING_OFFSET
        tail = self.q[(ring + L.RING_TAIL_OFFSET) >> 3]
        intent_i = (ring + L.RING_TAIL_INTENT_OFFSET) >> 3
        cap = self.view.liquidation_capacity
        for idx in range(tail, min(self.q[intent_i], tail + cap)):
            off = ring + L.RING_HEADER_LENGTH + (idx & (cap - 1)) * L.TRADE_RECORD_LENGTH + L.TRADE_INDEX_OFFSET
            self.q[off >> 3] = -1
        self.q[intent_i] = tail
        rec = _PERP.unpack_from(self.buf, c0)
        if rec[9] != L.BookState.EMPTY:
            self._perp[slot] = [list(rec[:6]), rec[11], rec[6], rec[7], list(rec[12:16])]
            self._latch_perp(slot, rec[6], rec[7], L.BookState.STALE)

    def close(self, clean: bool = True) -> None:
        """Detach. Never unlinks: the owner (supervisor or `mdengine clean`) does that."""
        if self._shm is None:
            return
        if clean:
            self.q[L.WRITER_STATE_OFFSET >> 3] = L.WriterState.STOPPED
            self.q[L.HEARTBEAT_NS_OFFSET >> 3] = time.time_ns()
        if self._wake_addr:
            futex.wake(self._wake_addr)  # sleeping readers look again (and see the stopped state)
            self._wake_addr = 0
        self._stage = []
        self._meta.release()
        self.view.release()
        self._shm.close()
        self._shm = None

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_running(self) -> None:
        self.q[L.WRITER_STATE_OFFSET >> 3] = L.WriterState.RUNNING

    def heartbeat(self, now_ns: int | None = None) -> None:
        self.q[L.HEARTBEAT_NS_OFFSET >> 3] = time.time_ns() if now_ns is None else now_ns

    def set_freshness(self, stale_after_s: float, heartbeat_interval_s: float) -> None:
        """Publish this writer's promises (1.3): readers call a book stale when its connection received nothing
        for stale_after_s, and the writer silent after HEARTBEAT_MISSES heartbeat intervals."""
        self.q[L.STALE_AFTER_NS_OFFSET >> 3] = int(stale_after_s * 1e9)
        self.q[L.HEARTBEAT_INTERVAL_NS_OFFSET >> 3] = int(heartbeat_interval_s * 1e9)

    def set_perp_freshness(self, stale_after_s: dict[str, float]) -> None:
        """Publish, per perp field group (1.6; names from PERP_GROUPS, absent or 0: no bound of its own), the age past
        which readers call that group of a perp record stale."""
        unknown = set(stale_after_s) - set(L.PERP_GROUPS)
        if unknown:
            raise ValueError(f"unknown perp field groups {sorted(unknown)}; the groups are {L.PERP_GROUPS}")
        ms = [min(round(stale_after_s.get(g, 0) * 1e3), 0xFFFF_FFFF) for g in L.PERP_GROUPS]
        if min(ms) < 0:
            raise ValueError(f"a perp group's stale age must be >= 0 s, not {stale_after_s}")
        struct.pack_into(L.PERP_GROUP_STALE_MS_FORMAT, self.buf, L.PERP_MARK_STALE_MS_OFFSET, *ms)

    def confirm(self, slot: int, recv_ns: int) -> None:
        """The connection carrying `slot`'s book received something (of any kind) at wall time recv_ns."""
        i = (self.view.slot_base(slot) + L.STAT_OFFSETS["confirmed_ns"]) >> 3
        if recv_ns > self.q[i]:
            self.q[i] = recv_ns

    def confirm_perp(self, slot: int, recv_ns: int) -> None:
        """The connection carrying `slot`'s perp data received something at wall time recv_ns (1.5)."""
        i = (self.view.slot_base(slot) + L.STAT_OFFSETS["perp_confirmed_ns"]) >> 3
        if recv_ns > self.q[i]:
            self.q[i] = recv_ns

    def set_rest_endpoints(self, endpoints: dict[str, str]) -> None:
        """Publish the REST base URLs this feed uses, by REST market (clients' REST fallback goes there)."""
        import json

        raw = json.dumps(endpoints, sort_keys=True, separators=(",", ":")).encode()
        if len(raw) > L.REST_ENDPOINTS_TEXT_LENGTH:
            raise ValueError(f"{self.name}: REST endpoints take {len(raw)} bytes, the layout holds "
                             f"{L.REST_ENDPOINTS_TEXT_LENGTH}: {raw[:100]!r}...")
        self._write_text(L.REST_ENDPOINTS_TEXT_OFFSET, L.REST_ENDPOINTS_TEXT_LENGTH, raw)

    def _write_text(self, offset: int, length: int, raw: bytes) -> None:
        """Write one text of the text area under its seqlock (no-op in a segment without one)."""
        area = self.view.text_area
        if not area:
            return
        seq_i = (area + L.TEXT_SEQ_OFFSET) >> 3
        s = self.q[seq_i]
        s += s & 1  # a predecessor killed mid-write left it odd
        self.q[seq_i] = s + 1
        self.buf[area + offset:area + offset + length] = raw[:length].ljust(length, b"\0")
        self.q[seq_i] = s + 2

    # ------------------------------------------------------------------ counters
    def count(self, counter: str, n: int = 1) -> None:
        i = L.COUNTER_OFFSETS[counter] >> 3
        self.q[i] += n

    def set_counter(self, counter: str, value: int) -> None:
        self.q[L.COUNTER_OFFSETS[counter] >> 3] = value

    def stat(self, slot: int, name: str, n: int = 1) -> None:
        i = (self.view.slot_base(slot) + L.STAT_OFFSETS[name]) >> 3
        self.q[i] += n

    def set_stat(self, slot: int, name: str, value: int) -> None:
        self.q[(self.view.slot_base(slot) + L.STAT_OFFSETS[name]) >> 3] = value

    def record_error(self, text: str) -> None:
        """Count an error and keep its text for `mdengine status`."""
        self.count("errors")
        whole = _utf8_prefix(text, L.LAST_ERROR_LONG_LENGTH)
        self._write_text(L.LAST_ERROR_LONG_OFFSET, L.LAST_ERROR_LONG_LENGTH, whole)
        raw = _utf8_prefix(text, L.LAST_ERROR_TEXT_LENGTH)  # the header keeps the start, for 1.0-1.2 readers
        off = L.LAST_ERROR_TEXT_OFFSET
        self.buf[off:off + L.LAST_ERROR_TEXT_LENGTH] = raw.ljust(L.LAST_ERROR_TEXT_LENGTH, b"\0")
        self.q[L.LAST_ERROR_NS_OFFSET >> 3] = time.time_ns()

    # ------------------------------------------------------------------ directory
    def add_symbol(self, market: str, native: str, unified: str, *, kind: int = L.MarketKind.SPOT,
                   tick_size: float = 0.0, lot_size: float = 0.0, contract_value: float = 1.0) -> int:
        """Give (market, native) a slot, reusing its old one if it had one; returns the slot index.

        Every directory change is a seqlock write (1.3): DIRECTORY_VERSION goes odd, the entry is written
        (and, for a new slot, the count raised), the version goes even; a reader keeps a copy taken between
        two equal, even reads of it. Raises StoreFull when every slot is taken.
        """
        v = self.view
        for e in v.entries():
            if e.market == market and e.native == native:
                self._write_entry(e.slot, L.SlotState.ACTIVE, kind, market, native, unified, tick_size, lot_size,
                                  contract_value)
                return e.slot
        slot = v.directory_count
        if slot >= v.max_symbols:
            raise StoreFull(f"{self.name}: all {v.max_symbols} symbol slots are in use; "
                            f"recreate the namespace with a larger max_symbols")
        self._write_entry(slot, L.SlotState.ACTIVE, kind, market, native, unified, tick_size, lot_size,
                          contract_value, new=True)
        return slot

    def _write_entry(self, slot: int, state: int, kind: int, market: str, native: str, unified: str,
                     tick: float, lot: float, cval: float, new: bool = False) -> None:
        entry = pack_entry(state, kind, market, native, unified, tick, lot, cval, time.time_ns())  # may raise
        off = L.DIRECTORY_OFFSET + slot * L.DIR_ENTRY_LENGTH
        version = L.DIRECTORY_VERSION_OFFSET >> 3
        self.q[version] += 1  # odd: a change is under way
        self.buf[off:off + L.DIR_ENTRY_LENGTH] = entry
        if new:
            self.q[L.DIRECTORY_COUNT_OFFSET >> 3] = slot + 1
        self.q[version] += 1  # even: the directory is whole again

    def remove_symbol(self, slot: int) -> None:
        """Mark a slot unsubscribed: its book goes stale, readers see the entry as removed."""
        self.view.entry(slot)  # raises IndexError for a bad slot
        self.publish_state(slot, L.BookState.STALE)
        self.publish_perp_state(slot, L.BookState.STALE)
        off = L.DIRECTORY_OFFSET + slot * L.DIR_ENTRY_LENGTH
        version = L.DIRECTORY_VERSION_OFFSET >> 3
        self.q[version] += 1
        struct.pack_into("<I", self.buf, off + L.DIR_STATE_OFFSET, L.SlotState.REMOVED)
        self.q[version] += 1

    def entries(self) -> list[SymbolEntry]:
        return self.view.entries()

    # ------------------------------------------------------------------ books
    def _staging(self, slot: int) -> bytearray:
        """The slot's private copy of its next state, built before the latch window opens."""
        raw = self._stage[slot]
        if raw is None:
            raw = self._stage[slot] = bytearray(self.view.geometry.copy_length)
            raw[L.BOOK_HEADER_LENGTH:] = _blank_levels(self.capacity)
        return raw

    def publish_book(self, slot: int, bids: Sequence[Sequence[float]], asks: Sequence[Sequence[float]], *,
                     update_id: int, exch_ts_ns: int = 0, recv_ts_ns: int = 0,
                     state: int = L.BookState.LIVE) -> None:
        """Publish a book from (price, qty) pairs, best first; levels beyond capacity are cut."""
        cap = self.capacity
        nb, na = min(len(bids), cap), min(len(asks), cap)
        n = max(nb, na)
        flat = [_NAN, 0.0, _NAN, 0.0] * n
        flat[0:4 * nb:4] = [lv[0] for lv in bids[:nb]]
        flat[1:4 * nb:4] = [lv[1] for lv in bids[:nb]]
        flat[2:4 * na:4] = [lv[0] for lv in asks[:na]]
        flat[3:4 * na:4] = [lv[1] for lv in asks[:na]]
        truncated = len(bids) > cap or len(asks) > cap
        self.publish_levels(slot, flat, nb, na, update_id=update_id, exch_ts_ns=exch_ts_ns, recv_ts_ns=recv_ts_ns,
                            state=state, truncated=truncated)

    def publish_levels(self, slot: int, flat: list[float], n_bids: int, n_asks: int, *, update_id: int,
                       exch_ts_ns: int = 0, recv_ts_ns: int = 0, state: int = L.BookState.LIVE,
                       truncated: bool = False) -> None:
        """Publish a book given as the slot's level layout: `flat` is [bid_px, bid_qty, ask_px, ask_qty]
        per level, best first, max(n_bids, n_asks) <= capacity levels, NaN/0 where a side has no level.

        One struct pack, two copies; readers switch to it atomically.
        """
        raw = self._staging(slot)
        n = len(flat) >> 2
        if n > self.capacity or n_bids > n or n_asks > n:
            raise ValueError(f"{self.name} slot {slot}: {n} levels ({n_bids} bids, {n_asks} asks) do not fit "
                             f"capacity {self.capacity}")
        if n:
            L.levels_struct(n).pack_into(raw, L.BOOK_HEADER_LENGTH, *flat)
        self._publish_staged(slot, raw, n, n_bids, n_asks, update_id, exch_ts_ns, recv_ts_ns, state, truncated)

    def publish_top(self, slot: int, pack: Callable[[bytearray, int, int], tuple[int, int]], depth: int, *,
                    update_id: int, exch_ts_ns: int = 0, recv_ts_ns: int = 0, state: int = L.BookState.LIVE,
                    truncated: bool = False) -> None:
        """Publish a book that writes its own levels: `pack(dst, offset, n)` puts its best n levels per side at
        `offset` in the slot's level layout (as `publish_levels` describes) and returns (n_bids, n_asks);
        `LocalBook.pack_top` is one. The fast path: the book packs straight into the staging copy."""
        raw = self._staging(slot)
        nb, na = pack(raw, L.BOOK_HEADER_LENGTH, min(depth, self.capacity))
        self._publish_staged(slot, raw, max(nb, na), nb, na, update_id, exch_ts_ns, recv_ts_ns, state, truncated)

    def _publish_staged(self, slot: int, raw: bytearray, n: int, nb: int, na: int, update_id: int,
                        exch_ts_ns: int, recv_ts_ns: int, state: int, truncated: bool) -> None:
        """The staging copy holds n fresh levels: blank what a deeper previous book left, set the flags, latch."""
        prev = self.last_book(slot)
        old_n = max(prev[3], prev[4]) if prev else 0
        if old_n > n:  # blank the levels the previous, deeper book left behind
            raw[L.BOOK_HEADER_LENGTH + n * L.LEVEL_LENGTH:L.BOOK_HEADER_LENGTH + old_n * L.LEVEL_LENGTH] = \
                _blank_levels(old_n - n)
        flags = L.BookFlags.TRUNCATED if truncated else 0
        if nb and na:
            best_bid, best_ask = _BEST_PRICES.unpack_from(raw, L.BOOK_HEADER_LENGTH)
            if best_bid >= best_ask:
                flags |= L.BookFlags.CROSSED
        self._write_latched(slot, update_id, exch_ts_ns, recv_ts_ns, nb, na, state, flags, max(n, old_n))

    def publish_header(self, slot: int, *, update_id: int, exch_ts_ns: int = 0, recv_ts_ns: int = 0,
                       state: int = L.BookState.LIVE) -> None:
        """Publish a new update id / timestamps / state over the slot's current levels (which the caller
        knows did not change): two 64-byte copies instead of a full book."""
        prev = self.last_book(slot)
        if prev is None:
            raise ValueError(f"{self.name} slot {slot}: publish_header before any book was published")
        _, _, _, nb, na, flags = prev
        self._write_latched(slot, update_id, exch_ts_ns, recv_ts_ns, nb, na, state, flags, 0)

    def publish_state(self, slot: int, state: int) -> None:
        """Republish the slot's last book with a new state (e.g. RESYNCING after a gap)."""
        prev = self.last_book(slot)
        self._staging(slot)
        if prev is None:
            self._write_latched(slot, 0, 0, 0, 0, 0, state, 0, 0)
        else:
            uid, exch, recv, nb, na, flags = prev
            self._write_latched(slot, uid, exch, recv, nb, na, state, flags, max(nb, na))

    def _write_latched(self, slot: int, update_id: int, exch_ts_ns: int, recv_ts_ns: int, nb: int, na: int,
                       state: int, flags: int, n_levels: int) -> None:
        raw = self._stage[slot]
        m, i = self._meta, slot * META_WORDS
        version = m[i + META_VERSION] + 1
        if not m[i + META_PUBLISHED]:  # this writer's first publish: blank the zero-filled levels too
            n_levels = self.capacity
        # Built first: a value that does not fit the header's int64 (OverflowError) stops the publish before any
        # store, and the bookkeeping changes only once the book is out.
        row = array("q", (1, version, update_id, exch_ts_ns, recv_ts_ns, nb, na, flags))
        length = L.BOOK_HEADER_LENGTH + n_levels * L.LEVEL_LENGTH
        if self._latch is not None:  # the same stores in C
            offsets = self._latch_offsets[slot] or self._latch_offsets_of(slot)
            self._latch(self.buf, raw, offsets, length, update_id, exch_ts_ns, recv_ts_ns, nb, na, state, flags,
                        self.generation, version)
        else:
            self._latch_python(slot, raw, length, update_id, exch_ts_ns, recv_ts_ns, nb, na, state, flags, version)
        m[i:i + META_WORDS] = row

    def _latch_python(self, slot: int, raw: bytearray, length: int, update_id: int, exch_ts_ns: int,
                      recv_ts_ns: int, nb: int, na: int, state: int, flags: int, version: int) -> None:
        """`_speedups.latch_publish`'s stores in Python: header into the staging copy, then the two-copy latch."""
        pub = time.time_ns()
        _BOOK_HEADER.pack_into(raw, 0, update_id, exch_ts_ns, recv_ts_ns, pub, nb, na, state, flags,
                               self.generation, version)
        base = self.view.slot_base(slot)
        g = self.view.geometry
        c0 = base + g.copy0
        c1 = base + g.copy1
        q, buf = self.q, self.buf
        src = memoryview(raw)[:length]
        seq_i = (base + L.SLOT_BOOK_SEQ_OFFSET) >> 3
        s = q[seq_i]
        q[seq_i] = s + 1  # odd: readers use copy 1 (previous state) while copy 0 is rewritten
        buf[c0:c0 + length] = src
        q[seq_i] = s + 2  # even: readers use copy 0 (new state) while copy 1 catches up
        buf[c1:c1 + length] = src
        src.release()
        q[L.PUBLISH_COUNTER_OFFSET >> 3] += 1
        if recv_ts_ns:
            q[(base + L.STAT_OFFSETS["last_latency_ns"]) >> 3] = pub - recv_ts_ns
            q[L.COUNTER_OFFSETS["last_latency_ns"] >> 3] = pub - recv_ts_ns

    def last_book(self, slot: int) -> tuple[int, int, int, int, int, int] | None:
        """(update_id, exch_ts_ns, recv_ts_ns, n_bids, n_asks, flags) of this writer's last publish in `slot`, or
        None before its first."""
        m, i = self._meta, slot * META_WORDS
        return tuple(m[i + META_UPDATE_ID:i + META_WORDS]) if m[i + META_PUBLISHED] else None

    @property
    def writes_natively(self) -> bool:
        """True when the C module makes this writer's latch and ring stores, so a C writer sharing its slots (the
        feed's fast lane, mdengine.feed.fastlane) makes the very same ones."""
        return self._latch is not None

    def slot_stores(self, slot: int) -> dict[str, object]:
        """Where a C writer sharing this writer's slots publishes `slot`, as this writer does: "stage" (the slot's
        staging copy), "latch" (the offsets `_speedups.latch_publish` takes), "ring" (those of `ring_append`) and
        "ring_mask". Such a writer also keeps the slot's row of `meta` (META_FIELDS, int64 each) as this one does,
        so either can publish next."""
        return {"stage": self._staging(slot), "latch": self._latch_offsets_of(slot),
                "ring": self._ring_offsets_of(slot), "ring_mask": self._ring_mask}

    def _latch_offsets_of(self, slot: int) -> tuple[int, ...]:
        """The byte offsets `_speedups.latch_publish` writes for `slot`: its latch counter, its two copies, the
        publish counter, its last-latency stat and the segment's."""
        base = self.view.slot_base(slot)
        g = self.view.geometry
        offsets = self._latch_offsets[slot] = (base + L.SLOT_BOOK_SEQ_OFFSET, base + g.copy0, base + g.copy1,
                                               L.PUBLISH_COUNTER_OFFSET, base + L.STAT_OFFSETS["last_latency_ns"],
                                               L.COUNTER_OFFSETS["last_latency_ns"])
        return offsets

    def wake_readers(self) -> None:
        """Wake readers sleeping on the publish counter (`Client.wait()` without spin) if anything was published
        since the last call. The feed loop calls this once per round of socket reads, so a burst of frames
        costs one system call (~0.5 µs), not one per publish."""
        c = self.q[L.PUBLISH_COUNTER_OFFSET >> 3]
        if c != self._woken:
            self._woken = c
            if self._wake_addr:
                futex.wake(self._wake_addr)

    # ------------------------------------------------------------------ trades
    def append_trades(self, slot: int, trades: Iterable[Trade]) -> int:
        """Append trades to the slot's ring, oldest first; returns how many were written.

        A batch larger than the ring writes only its newest `trade_capacity` trades; the ring index
        still advances past the others, so every reader reports them as lost.
        """
        if self._ring_append is not None:  # the same stores in C
            offsets = self._ring_offsets[slot] or self._ring_offsets_of(slot)
            return self._ring_append(self.buf, offsets, self._ring_mask, trades)
        offsets = self._ring_offsets[slot] or self._ring_offsets_of(slot)
        return self._append_python(offsets, self._ring_mask, trades)

    def _append_python(self, offsets: tuple[int, ...], mask: int, trades: Iterable[Trade]) -> int:
        """`_speedups.ring_append`'s stores in Python, on the ring at `offsets` (see `_ring_offsets_of`)."""
        batch = list(trades)
        m = len(batch)
        if not m:
            return 0
        cap = mask + 1
        skipped = m - cap if m > cap else 0
        if skipped:  # the oldest ones are never written; the tail still passes them so readers count them lost
            batch = batch[skipped:]
        intent_off, tail_off, records, _ = offsets
        q, buf = self.q, self.buf
        tail_i = tail_off >> 3
        n = q[tail_i] + skipped
        # every record packed before the first store, as the C writer reads every trade first: a bad one
        # (struct.error) leaves the ring untouched
        packed = [_TRADE.pack(t[0], t[1], t[2], t[3], t[4], t[5], t[6], n + j) for j, t in enumerate(batch)]
        q[intent_off >> 3] = n + len(batch)
        for j, rec in enumerate(packed):
            off = records + ((n + j) & mask) * L.TRADE_RECORD_LENGTH
            buf[off:off + L.TRADE_RECORD_LENGTH] = rec
        q[tail_i] = n + len(batch)
        q[L.PUBLISH_COUNTER_OFFSET >> 3] += 1
        return len(batch)

    def _ring_offsets_of(self, slot: int) -> tuple[int, ...]:
        """The byte offsets `_speedups.ring_append` writes for `slot`: tail_intent, tail, the first record and
        the publish counter."""
        ring = self.view.slot_base(slot) + self.view.geometry.ring
        offsets = self._ring_offsets[slot] = (ring + L.RING_TAIL_INTENT_OFFSET, ring + L.RING_TAIL_OFFSET,
                                              ring + L.RING_HEADER_LENGTH, L.PUBLISH_COUNTER_OFFSET)
        return offsets

    # ------------------------------------------------------------------ perpetual data (1.4)
    def has_perp(self, slot: int) -> bool:
        """True if `slot` holds a perpetual (or future) and the segment has a perp area."""
        return self.view.perp_base(slot) is not None and self.view.entry(slot).kind in L.PERP_KINDS

    def _perp_base(self, slot: int) -> int:
        base = self.view.perp_base(slot)
        if base is None:
            raise ValueError(f"{self.name}: the segment has no perp area (created by a writer before layout 1.4)")
        kind = self.view.entry(slot).kind
        if kind not in L.PERP_KINDS:
            raise ValueError(f"{self.name} slot {slot}: {self.view.entry(slot).unified} is not a perpetual "
                             f"(kind {kind}); it has no perp record")
        return base

    def publish_perp(self, slot: int, *, exch_ts_ns: int = 0, recv_ts_ns: int = 0, state: int = L.BookState.LIVE,
                     confirms: tuple[str, ...] = (), group_recv_ns: int = 0, **fields: float | int | None) -> None:
        """Merge `fields` (names from PERP_FIELDS; None or absent: keep the last value) into the slot's perp record
        and publish it through its latch: readers see the whole old record or the whole new one. A timestamp of 0
        keeps the record's last one.

        The receive time of each field group (1.6, PERP_GROUPS) that has a field in `fields`, or is named in
        `confirms` (a frame that vouches for values it does not repeat: a delta that omits what did not change),
        becomes `group_recv_ns or recv_ts_ns`; group_recv_ns serves an update that must not move the record's own
        recv_ts_ns (Binance's polled open interest)."""
        self._perp_base(slot)
        unknown = set(fields) - set(PERP_FIELDS)
        if unknown:
            raise TypeError(f"publish_perp: unknown perp fields {sorted(unknown)}")
        cur = self._perp[slot]
        values = list(cur[0]) if cur else list(_PERP_EMPTY)
        groups = list(cur[4]) if cur else [0, 0, 0, 0]
        g_recv = group_recv_ns or recv_ts_ns
        for i, name in enumerate(PERP_FIELDS):
            v = fields.get(name)
            if v is not None:
                values[i] = int(v) if name == "next_funding_ns" else float(v)
                if g_recv:
                    groups[_PERP_FIELD_GROUP[name]] = g_recv
        if g_recv:
            for name in confirms:
                groups[_GROUP_INDEX[name]] = g_recv  # KeyError: not a group (a bug upstream)
        if cur:  # 0: this update carries no time of its own; the record keeps its latest
            exch_ts_ns, recv_ts_ns = exch_ts_ns or cur[2], recv_ts_ns or cur[3]
        version = cur[1] if cur else self._perp_version(slot)
        _PERP.pack(*values, exch_ts_ns, recv_ts_ns, 0, state, self.generation, version + 1, *groups)  # may raise
        self._perp[slot] = [values, version, exch_ts_ns, recv_ts_ns, groups]
        self._latch_perp(slot, exch_ts_ns, recv_ts_ns, state)

    def publish_perp_state(self, slot: int, state: int) -> None:
        """Republish the slot's perp record, if it has one, with a new state (e.g. STALE when its stream is lost)."""
        cur = self._perp[slot]
        if cur is not None:
            self._latch_perp(slot, cur[2], cur[3], state)

    def _perp_version(self, slot: int) -> int:
        base = self._perp_base(slot)
        return _PERP.unpack_from(self.buf, base + L.PERP_COPY0_OFFSET)[11]

    def _latch_perp(self, slot: int, exch_ts_ns: int, recv_ts_ns: int, state: int) -> None:
        """The books' two-copy latch, on the perp record (a 128-byte record: Python stores are enough)."""
        base = self.view.perp_base(slot)
        cur = self._perp[slot]
        version = cur[1] + 1
        raw = _PERP.pack(*cur[0], exch_ts_ns, recv_ts_ns, time.time_ns(), state, self.generation, version, *cur[4])
        q, buf, n = self.q, self.buf, L.PERP_RECORD_LENGTH
        c0, c1 = base + L.PERP_COPY0_OFFSET, base + L.PERP_COPY1_OFFSET
        seq_i = (base + L.PERP_SEQ_OFFSET) >> 3
        s = q[seq_i]
        q[seq_i] = s + 1  # odd: readers use copy 1 while copy 0 is rewritten
        buf[c0:c0 + n] = raw
        q[seq_i] = s + 2  # even: readers use copy 0 while copy 1 catches up
        buf[c1:c1 + n] = raw
        q[L.PUBLISH_COUNTER_OFFSET >> 3] += 1
        cur[1:4] = version, exch_ts_ns, recv_ts_ns

    def last_perp(self, slot: int) -> dict[str, float | int] | None:
        """This writer's current perp values for `slot` (PERP_FIELDS), or None before any."""
        cur = self._perp[slot]
        return dict(zip(PERP_FIELDS, cur[0], strict=True)) if cur else None

    def append_liquidations(self, slot: int, liquidations: Iterable[Trade]) -> int:
        """Append liquidations (Trade tuples, trade_id 0) to the slot's liquidation ring, oldest first; returns how
        many were written. The trade ring's rules: an oversized batch keeps its newest records, readers count the
        rest lost."""
        offsets = self._liq_offsets[slot]
        if offsets is None:
            ring = self._perp_base(slot) + L.PERP_RING_OFFSET
            offsets = self._liq_offsets[slot] = (ring + L.RING_TAIL_INTENT_OFFSET, ring + L.RING_TAIL_OFFSET,
                                                 ring + L.RING_HEADER_LENGTH, L.PUBLISH_COUNTER_OFFSET)
        mask = self.view.liquidation_capacity - 1
        if self._ring_append is not None:
            return self._ring_append(self.buf, offsets, mask, liquidations)
        return self._append_python(offsets, mask, liquidations)
