"""The shared-memory layout of one mdengine segment: every offset and dtype, in one place.

Layout version 1.6 (LAYOUT_MINOR says what each minor added). `docs/layout.md` describes the same bytes
for readers in other languages; `tests/test_store_layout.py` checks the two agree. All integers are
little-endian, all floats IEEE-754 binary64, every counter an aligned 8-byte word at offset 0 of its own 64-byte line.

One segment per exchange feed, named ``mde-<namespace>-<exchange>``::

    +------------------------------+ 0
    | segment header (512 B)       |  identity, writer, heartbeat, counters
    +------------------------------+ DIRECTORY_OFFSET
    | directory: max_symbols x 128 |  which symbol lives in which slot
    +------------------------------+ slots_offset (64-aligned)
    | slot 0 | slot 1 | ...        |  one per symbol, all the same size
    +------------------------------+ text_area_offset (1.3; 0 in the header before)
    | text area (2048 B)           |  REST endpoints, whole last error (seqlocked)
    +------------------------------+ perp_area_offset (1.4; 0 in the header before)
    | perp slot 0 | perp slot 1 ...|  one per symbol slot, same index: perpetual data
    +------------------------------+ segment_size

A slot::

    +------------------------------+ 0
    | book latch line (64 B)       |  book_seq: int64 at offset 0
    | symbol stats (128 B)         |  per-symbol counters (plain words)
    | book copy 0                  |  BOOK_HEADER (64 B) + capacity x LEVEL (32 B)
    | book copy 1                  |  same
    | trade ring header (128 B)    |  tail_intent line, tail line
    | trade records                |  trade_capacity x TRADE_RECORD (64 B)
    +------------------------------+ slot_size (64-aligned)

Books use a latch (two copies, Linux ``seqcount_latch_t``): the writer bumps ``book_seq`` to odd,
writes copy 0, bumps it to even, writes copy 1. A reader reads ``copy[book_seq & 1]`` and retries
only if ``book_seq`` changed meanwhile, so it never waits on, nor returns, a half-written copy, and
a writer killed mid-write leaves the other copy complete.

Trades use a ring of fixed records (Agrona broadcast style): the writer raises ``tail_intent``,
writes the records (each carrying its own ring index), then raises ``tail``. A reader copies,
then checks its records against ``tail_intent`` and their index to detect being lapped.
"""

from __future__ import annotations

import numpy as np

# The core types are defined below the store (so the book and the adapters need not import it); their values
# are part of this layout, so they stay importable from here: layout.MarketKind, layout.Side, layout.TradeFlags.
from ..core.types import (  # noqa: F401 (re-exported)
    LEVEL_ASK_PX,
    LEVEL_ASK_QTY,
    LEVEL_BID_PX,
    LEVEL_BID_QTY,
    LEVEL_LENGTH,
    PERP_GROUPS,
    MarketKind,
    Side,
    TradeFlags,
    levels_struct,
)

CACHE_LINE = 64

MAGIC = 0x31_4D_48_53_45_44_4D  # b"MDESHM1\0" read as a little-endian uint64
LAYOUT_MAJOR = 1
# 1.1: publishes are followed by a futex wake on the publish counter; 1.2: warm_passes;
# 1.3: freshness and REST routing. The writer publishes its stale_after and heartbeat interval (header
#      words 272, 280) and, per slot, when its connection last received anything (stat `confirmed_ns`);
#      the owner may mark a dead writer (WriterState.DEAD); a text area after the slots (located by header
#      words 56, 60) holds the effective REST endpoints and the whole last error. Readers of 1.0-1.2 stay
#      correct: they read none of it (the segment only grew at its end, which they do not map past).
# 1.4: perpetual-futures data. A perp area after the text area (located by header words 288, 292, 296) holds,
#      per symbol slot, a latched perp record (mark, index, funding, open interest) and a liquidation ring. Readers
#      of 1.0-1.3 stay correct: the slots and everything they read are unchanged, the segment grew at its end.
# 1.5: a perpetual's perp data may ride another connection than its book (Binance USDⓈ-M: /market vs /public), so it
#      has its own freshness word, stat `perp_confirmed_ns` (was reserved2); `confirmed_ns` now follows the book's
#      connection only. A 1.4 reader judges perp freshness by `confirmed_ns`: as before, late for a silent /market.
# 1.6: a perp record is assembled from several channels (OKX: four), so each field group (PERP_GROUPS) has its own
#      receive time in the record (mark_recv_ns, index_recv_ns, funding_recv_ns, oi_recv_ns; were padding), and the
#      writer publishes how old each group may grow before it is stale (header words 300-312, PERP_GROUP_STALE_MS).
#      Readers of 1.4-1.5 stay correct: they read none of it (the padding was never read).
LAYOUT_MINOR = 6


def _align(n: int, to: int = CACHE_LINE) -> int:
    return (n + to - 1) // to * to


# --------------------------------------------------------------------------- segment header
# Line 0: identity, written once by the creator; MAGIC is written last as the ready signal.
MAGIC_OFFSET = 0
LAYOUT_MAJOR_OFFSET = 8  # uint32
LAYOUT_MINOR_OFFSET = 12  # uint32
SEGMENT_SIZE_OFFSET = 16  # uint64
MAX_SYMBOLS_OFFSET = 24  # uint32
BOOK_CAPACITY_OFFSET = 28  # uint32, levels per side
TRADE_CAPACITY_OFFSET = 32  # uint32, power of two
SLOT_SIZE_OFFSET = 36  # uint32
SLOTS_OFFSET_OFFSET = 40  # uint32
DIRECTORY_OFFSET_OFFSET = 44  # uint32
CREATED_NS_OFFSET = 48  # int64, wall clock
TEXT_AREA_OFFSET_OFFSET = 56  # uint32, offset of the text area (1.3; 0: the segment has none)
TEXT_AREA_LENGTH_OFFSET = 60  # uint32, its length in bytes
# Line 1: names (ASCII, NUL padded).
EXCHANGE_NAME_OFFSET = 64
EXCHANGE_NAME_LENGTH = 32
NAMESPACE_OFFSET = 96
NAMESPACE_LENGTH = 32
# Line 2: the current writer (the feed process) and the owner (the supervisor).
WRITER_PID_OFFSET = 128  # int64
WRITER_START_NS_OFFSET = 136  # int64, the writer process's start time (pid-reuse guard)
GENERATION_OFFSET = 144  # int64, bumped by every writer that attaches
WRITER_STATE_OFFSET = 152  # int64, WriterState (the owner may write DEAD, see WriterState)
HEARTBEAT_NS_OFFSET = 160  # int64, wall clock of the writer's last heartbeat
OWNER_PID_OFFSET = 168  # int64
OWNER_START_NS_OFFSET = 176  # int64
# Line 3: bumped after every book or trade publish; wait() watches this one word.
PUBLISH_COUNTER_OFFSET = 192  # int64
# Line 4: directory.
DIRECTORY_COUNT_OFFSET = 256  # int64, entries [0, count) are fully written
DIRECTORY_VERSION_OFFSET = 264  # int64, the directory's seqlock (1.3): odd while an entry is being written
# Line 4 too (1.3, 0 before): the writer's freshness promises, stored when it attaches.
STALE_AFTER_NS_OFFSET = 272  # int64, a book whose connection received nothing this long is stale
HEARTBEAT_INTERVAL_NS_OFFSET = 280  # int64, the writer's heartbeat period
# Line 4 too (1.4, 0 before): where the perp area is (0: the segment has none); written once by the creator.
PERP_AREA_OFFSET_OFFSET = 288  # uint32, offset of the perp area
PERP_SLOT_SIZE_OFFSET = 292  # uint32, bytes per perp slot (max_symbols of them)
LIQUIDATION_CAPACITY_OFFSET = 296  # uint32, records per liquidation ring, a power of two
# Line 4 too (1.6, 0 before): per perp field group (PERP_GROUPS order), the age in ms past which that group of a
# perp record is stale (the exchange's documented push cadence, with headroom); 0: no bound of its own (the group
# arrives with every frame of the record, whose freshness rules cover it). Written by the writer when it attaches.
PERP_MARK_STALE_MS_OFFSET = 300  # uint32
PERP_INDEX_STALE_MS_OFFSET = 304  # uint32
PERP_FUNDING_STALE_MS_OFFSET = 308  # uint32
PERP_OI_STALE_MS_OFFSET = 312  # uint32
PERP_GROUP_STALE_MS_FORMAT = "<4I"  # the four words above, read or written together from PERP_MARK_STALE_MS_OFFSET
HEARTBEAT_MISSES = 4  # a heartbeat older than this many intervals means the writer is silent (stuck)
# Lines 5-6: health counters, int64 each, written by the writer only.
COUNTERS_OFFSET = 320
COUNTER_NAMES = (
    "messages",  # frames received from the exchange
    "book_updates",  # book publishes
    "trades",  # trades published
    "gaps",  # sequence gaps detected
    "resyncs",  # symbol resyncs started
    "reconnects",  # WebSocket reconnects
    "checksum_failures",
    "malformed",  # frames that failed to parse
    "errors",  # any other logged error
    "rest_requests",
    "rest_failures",
    "subscribe_errors",
    "bytes_received",
    "record_errors",  # recorder write failures
    "last_latency_ns",  # wire-to-publish latency of the latest book publish
    "warm_passes",  # warm-up passes run while idle (1.2; 0 in earlier writers' segments)
)
COUNTER_OFFSETS = {name: COUNTERS_OFFSET + 8 * i for i, name in enumerate(COUNTER_NAMES)}
# Line 7: last error, for `mdengine status`.
LAST_ERROR_NS_OFFSET = 448  # int64
LAST_ERROR_TEXT_OFFSET = 456
LAST_ERROR_TEXT_LENGTH = 56
HEADER_LENGTH = 512
DIRECTORY_OFFSET = HEADER_LENGTH


class WriterState:
    """Written by the writer, except DEAD: the owner (supervisor) writes DEAD once it has seen the writer
    process exit (its pid and start time still in the header, state STARTING or RUNNING), and never while
    that writer may run. A new writer overwrites it with STARTING when it attaches."""

    NONE = 0  # created, no writer attached yet
    STARTING = 1  # a writer attached and is syncing
    RUNNING = 2
    STOPPED = 3  # the writer detached cleanly
    DEAD = 4  # (1.3) the writer process exited without detaching; written by the owner

    NAMES = ("none", "starting", "running", "stopped", "dead")


# --------------------------------------------------------------------------- directory
DIR_ENTRY_LENGTH = 128
DIR_STATE_OFFSET = 0  # uint32, SlotState
DIR_KIND_OFFSET = 4  # uint32, MarketKind
DIR_MARKET_OFFSET = 8  # ASCII, e.g. "spot", "usdm", "linear", "SWAP"
DIR_MARKET_LENGTH = 16
DIR_NATIVE_OFFSET = 24  # ASCII native id, e.g. "BTCUSDT", "BTC-USDT-SWAP"
DIR_NATIVE_LENGTH = 32
DIR_UNIFIED_OFFSET = 56  # ASCII unified id, e.g. "BTC/USDT:USDT"
DIR_UNIFIED_LENGTH = 40
DIR_TICK_SIZE_OFFSET = 96  # float64
DIR_LOT_SIZE_OFFSET = 104  # float64
DIR_CONTRACT_VALUE_OFFSET = 112  # float64; 1.0 for spot, base units per contract otherwise
DIR_ADDED_NS_OFFSET = 120  # int64

DIRECTORY_DTYPE = np.dtype(
    {
        "names": ["state", "kind", "market", "native", "unified", "tick_size", "lot_size",
                  "contract_value", "added_ns"],
        "formats": ["<u4", "<u4", f"S{DIR_MARKET_LENGTH}", f"S{DIR_NATIVE_LENGTH}",
                    f"S{DIR_UNIFIED_LENGTH}", "<f8", "<f8", "<f8", "<i8"],
        "offsets": [DIR_STATE_OFFSET, DIR_KIND_OFFSET, DIR_MARKET_OFFSET, DIR_NATIVE_OFFSET,
                    DIR_UNIFIED_OFFSET, DIR_TICK_SIZE_OFFSET, DIR_LOT_SIZE_OFFSET,
                    DIR_CONTRACT_VALUE_OFFSET, DIR_ADDED_NS_OFFSET],
        "itemsize": DIR_ENTRY_LENGTH,
    }
)


class SlotState:
    EMPTY = 0
    ACTIVE = 1
    REMOVED = 2  # unsubscribed; the slot keeps its last data and may be re-activated


# --------------------------------------------------------------------------- slot
SLOT_BOOK_SEQ_OFFSET = 0  # int64, the latch counter, alone on its line
SLOT_STATS_OFFSET = 64
STAT_NAMES = (
    "messages",  # frames for this symbol
    "book_updates",
    "trades",
    "gaps",
    "resyncs",
    "checksum_failures",
    "last_recv_ns",  # local receive time of the latest frame applied
    "last_latency_ns",  # publish time minus receive time of the latest book publish
    "trades_lost_upstream",  # reserved for exchanges that number trades
    "confirmed_ns",  # (1.3) wall clock of the latest frame of any kind (data, heartbeat, pong) received on the
    #                  connection carrying this symbol's book; refreshed by the writer every 50 ms tick; 0 before 1.3
    "perp_confirmed_ns",  # (1.5) the same for the connection carrying its perp data (PERP_KINDS only, else 0)
    "reserved3",
    "reserved4",
    "reserved5",
    "reserved6",
    "reserved7",
)
STATS_LENGTH = 8 * len(STAT_NAMES)  # 128
STAT_OFFSETS = {name: SLOT_STATS_OFFSET + 8 * i for i, name in enumerate(STAT_NAMES)}
SLOT_BOOK_COPIES_OFFSET = SLOT_STATS_OFFSET + STATS_LENGTH  # 192

# One book copy: a 64-byte header line, then `capacity` levels of 4 float64. Level i holds the
# i-th best bid and the i-th best ask side by side, so the top N levels are one contiguous
# N x 32-byte run and top of book sits right after the header.
BOOK_HEADER_LENGTH = 64
BOOK_UPDATE_ID_OFFSET = 0  # int64, exchange sequence / update id of this state
BOOK_EXCH_TS_OFFSET = 8  # int64 ns, exchange event time (0 if the exchange sends none)
BOOK_RECV_TS_OFFSET = 16  # int64 ns, local receive time of the frame that produced it
BOOK_PUB_TS_OFFSET = 24  # int64 ns, time the writer published it
BOOK_N_BIDS_OFFSET = 32  # uint32, valid bid levels
BOOK_N_ASKS_OFFSET = 36  # uint32, valid ask levels
BOOK_STATE_OFFSET = 40  # uint32, BookState
BOOK_FLAGS_OFFSET = 44  # uint32, BookFlags
BOOK_GENERATION_OFFSET = 48  # int64, writer generation that published it
BOOK_VERSION_OFFSET = 56  # int64, count of publishes to this slot (monotonic)
# LEVEL_LENGTH, levels_struct and LEVEL_* (a level's float64 fields) come from mdengine.core.types.

BOOK_HEADER_DTYPE = np.dtype(
    {
        "names": ["update_id", "exch_ts_ns", "recv_ts_ns", "pub_ts_ns", "n_bids", "n_asks",
                  "state", "flags", "generation", "version"],
        "formats": ["<i8", "<i8", "<i8", "<i8", "<u4", "<u4", "<u4", "<u4", "<i8", "<i8"],
        "offsets": [BOOK_UPDATE_ID_OFFSET, BOOK_EXCH_TS_OFFSET, BOOK_RECV_TS_OFFSET,
                    BOOK_PUB_TS_OFFSET, BOOK_N_BIDS_OFFSET, BOOK_N_ASKS_OFFSET, BOOK_STATE_OFFSET,
                    BOOK_FLAGS_OFFSET, BOOK_GENERATION_OFFSET, BOOK_VERSION_OFFSET],
        "itemsize": BOOK_HEADER_LENGTH,
    }
)
# "<qqqqIIIIqq" packs exactly BOOK_HEADER_DTYPE.
BOOK_HEADER_STRUCT = "<qqqqIIIIqq"


class BookState:
    EMPTY = 0  # never published
    SYNCING = 1  # subscribed, first sync in progress
    LIVE = 2  # validated and current
    STALE = 3  # the writer died or lost its stream; data is the last good state
    RESYNCING = 4  # a gap or checksum failure was detected; waiting for a fresh snapshot

    NAMES = ("empty", "syncing", "live", "stale", "resyncing")


class BookFlags:
    CROSSED = 1  # best bid >= best ask at publish time (exchange data, published as is)
    TRUNCATED = 2  # the exchange book has more levels than the slot's capacity


def book_copy_length(capacity: int) -> int:
    return BOOK_HEADER_LENGTH + capacity * LEVEL_LENGTH


# --------------------------------------------------------------------------- trade ring
RING_TAIL_INTENT_OFFSET = 0  # int64, raised before records are written
RING_TAIL_OFFSET = 64  # int64, raised after records are written
RING_HEADER_LENGTH = 128
TRADE_RECORD_LENGTH = 64
TRADE_DTYPE = np.dtype(
    {
        "names": ["exch_ts_ns", "recv_ts_ns", "price", "qty", "trade_id", "side", "flags", "index"],
        "formats": ["<i8", "<i8", "<f8", "<f8", "<i8", "i1", "u1", "<i8"],
        "offsets": [0, 8, 16, 24, 32, 40, 41, 48],
        "itemsize": TRADE_RECORD_LENGTH,
    }
)
# "<qqddqbB6xq8x" packs exactly TRADE_DTYPE.
TRADE_STRUCT = "<qqddqbB6xq8x"
TRADE_INDEX_OFFSET = 48  # int64, the ring index (0, 1, 2, ...) the record was written as


# --------------------------------------------------------------------------- whole slot/segment
class SlotGeometry:
    """Offsets inside one slot, derived from the segment's capacities."""

    __slots__ = ("book_capacity", "trade_capacity", "copy_length", "copy0", "copy1", "ring",
                 "records", "size")

    def __init__(self, book_capacity: int, trade_capacity: int) -> None:
        check_capacities(book_capacity, trade_capacity)
        self.book_capacity = book_capacity
        self.trade_capacity = trade_capacity
        self.copy_length = book_copy_length(book_capacity)
        self.copy0 = SLOT_BOOK_COPIES_OFFSET
        self.copy1 = self.copy0 + _align(self.copy_length)
        self.ring = self.copy1 + _align(self.copy_length)
        self.records = self.ring + RING_HEADER_LENGTH
        self.size = _align(self.records + trade_capacity * TRADE_RECORD_LENGTH)


MAX_BOOK_CAPACITY = 5000
MAX_TRADE_CAPACITY = 1 << 20
MAX_SYMBOLS = 4096


# --------------------------------------------------------------------------- text area (1.3)
# After the last slot; located by TEXT_AREA_OFFSET_OFFSET. The writer changes its texts under a seqlock:
# TEXT_SEQ goes odd, the texts are written, it goes even; a reader copies a text between two even, equal
# reads of TEXT_SEQ. Texts are UTF-8, NUL-padded.
TEXT_SEQ_OFFSET = 0  # int64, relative to the text area
REST_ENDPOINTS_TEXT_OFFSET = 64  # JSON object {REST market: base URL} the feed uses, e.g. {"okx": "https://..."}
REST_ENDPOINTS_TEXT_LENGTH = 960
LAST_ERROR_LONG_OFFSET = 1024  # the whole last error (LAST_ERROR_TEXT_OFFSET keeps its first 56 bytes)
LAST_ERROR_LONG_LENGTH = 1024
TEXT_AREA_LENGTH = 2048


# --------------------------------------------------------------------------- perp area (1.4)
# After the text area; located by PERP_AREA_OFFSET_OFFSET. Perp slot i belongs to symbol slot i, and holds data
# only if that symbol's directory kind is in PERP_KINDS (a spot symbol's perp slot stays zero and is never read).
PERP_SEQ_OFFSET = 0  # int64, the perp record's latch counter, alone on its line
PERP_RECORD_LENGTH = 128
PERP_COPY0_OFFSET = 64
PERP_COPY1_OFFSET = PERP_COPY0_OFFSET + PERP_RECORD_LENGTH  # 192
PERP_RING_OFFSET = PERP_COPY1_OFFSET + PERP_RECORD_LENGTH  # 320, a ring header as the trade ring's
PERP_RECORDS_OFFSET = PERP_RING_OFFSET + RING_HEADER_LENGTH  # 448, TRADE_DTYPE records (trade_id 0)
# A perp record: a field the exchange does not publish is NaN (prices, rates, open interest) or 0 (times).
# recv_ts_ns: the latest frame merged in (any group); the *_recv_ns (1.6; 0 before, and for a group never received):
# when a frame carrying (or, on an exchange that sends deltas, confirming) that group was last received.
PERP_DTYPE = np.dtype(
    {
        "names": ["mark_price", "index_price", "funding_rate", "next_funding_rate", "next_funding_ns",
                  "open_interest", "exch_ts_ns", "recv_ts_ns", "pub_ts_ns", "state", "generation", "version",
                  "mark_recv_ns", "index_recv_ns", "funding_recv_ns", "oi_recv_ns"],
        "formats": ["<f8", "<f8", "<f8", "<f8", "<i8", "<f8", "<i8", "<i8", "<i8", "<u4", "<i8", "<i8",
                    "<i8", "<i8", "<i8", "<i8"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120],
        "itemsize": PERP_RECORD_LENGTH,
    }
)
# "<ddddqdqqqI4xqqqqqq" packs exactly PERP_DTYPE; state is a BookState (EMPTY before the first publish).
PERP_STRUCT = "<ddddqdqqqI4xqqqqqq"
# The perp record's field groups (1.6, core.types.PERP_GROUPS), in the order of their receive times (mark_recv_ns ...)
# and of the header's PERP_GROUP_STALE_MS words: each group is what one exchange channel delivers together.
PERP_GROUP_FIELDS = {"mark": ("mark_price",), "index": ("index_price",),
                     "funding": ("funding_rate", "next_funding_rate", "next_funding_ns"),
                     "open_interest": ("open_interest",)}
DEFAULT_LIQUIDATION_CAPACITY = 256
MAX_LIQUIDATION_CAPACITY = 1 << 16
# Kinds that have a perp record: perpetuals (and dated futures, whose funding fields stay absent).
PERP_KINDS = (MarketKind.LINEAR, MarketKind.INVERSE)


def perp_slot_size(liquidation_capacity: int) -> int:
    check_liquidation_capacity(liquidation_capacity)
    return _align(PERP_RECORDS_OFFSET + liquidation_capacity * TRADE_RECORD_LENGTH)


def check_liquidation_capacity(capacity: int) -> None:
    if capacity < 2 or capacity > MAX_LIQUIDATION_CAPACITY or capacity & (capacity - 1):
        raise ValueError(f"liquidation capacity {capacity} must be a power of two in 2..{MAX_LIQUIDATION_CAPACITY}")


def check_capacities(book_capacity: int, trade_capacity: int) -> None:
    if not 1 <= book_capacity <= MAX_BOOK_CAPACITY:
        raise ValueError(f"book capacity {book_capacity} is outside 1..{MAX_BOOK_CAPACITY}")
    if trade_capacity < 2 or trade_capacity > MAX_TRADE_CAPACITY or trade_capacity & (trade_capacity - 1):
        raise ValueError(f"trade capacity {trade_capacity} must be a power of two in 2..{MAX_TRADE_CAPACITY}")


def slots_offset(max_symbols: int) -> int:
    return _align(DIRECTORY_OFFSET + max_symbols * DIR_ENTRY_LENGTH)


def text_area_offset(max_symbols: int, book_capacity: int, trade_capacity: int) -> int:
    if not 1 <= max_symbols <= MAX_SYMBOLS:
        raise ValueError(f"max_symbols {max_symbols} is outside 1..{MAX_SYMBOLS}")
    return slots_offset(max_symbols) + max_symbols * SlotGeometry(book_capacity, trade_capacity).size


def perp_area_offset(max_symbols: int, book_capacity: int, trade_capacity: int) -> int:
    return text_area_offset(max_symbols, book_capacity, trade_capacity) + TEXT_AREA_LENGTH


def segment_size(max_symbols: int, book_capacity: int, trade_capacity: int,
                 liquidation_capacity: int = DEFAULT_LIQUIDATION_CAPACITY) -> int:
    return perp_area_offset(max_symbols, book_capacity, trade_capacity) + \
        max_symbols * perp_slot_size(liquidation_capacity)
