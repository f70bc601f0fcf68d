"""Typed access to a mapped segment's header and directory, shared by writer and reader."""

from __future__ import annotations

import os
import platform
import struct
from dataclasses import dataclass

from ..errors import LayoutError
from . import layout as L

_WEAK_MEMORY_MACHINES = ("arm64", "aarch64", "armv7l", "ppc64le", "riscv64")


def check_memory_model(allow_weak: bool = False) -> None:
    """Refuse weakly ordered CPUs: the pure-Python seqlock relies on x86-64's TSO ordering.

    On ARM64 loads may pass loads, and CPython issues no fence between two memoryview reads, so a
    reader could accept a torn copy. See docs/layout.md ("Memory ordering").
    """
    import os

    machine = platform.machine().lower()
    if machine in _WEAK_MEMORY_MACHINES and not (allow_weak or os.environ.get("MDENGINE_ALLOW_WEAK_MEMORY")):
        raise RuntimeError(
            f"mdengine's lock-free store is only proven on x86-64 (TSO); this CPU is {machine}, "
            "whose loads and stores may be reordered. Set MDENGINE_ALLOW_WEAK_MEMORY=1 to run anyway "
            "(torn reads become possible under load)."
        )


@dataclass(frozen=True)
class SymbolEntry:
    """One directory entry: which symbol a slot holds."""

    slot: int
    state: int
    kind: int
    market: str
    native: str
    unified: str
    tick_size: float
    lot_size: float
    contract_value: float
    added_ns: int

    @property
    def active(self) -> bool:
        return self.state == L.SlotState.ACTIVE


_DIR_STRUCT = struct.Struct(f"<II{L.DIR_MARKET_LENGTH}s{L.DIR_NATIVE_LENGTH}s{L.DIR_UNIFIED_LENGTH}sdddq")
assert _DIR_STRUCT.size == L.DIR_ENTRY_LENGTH
_DIRECTORY_RETRIES = 1000


def _entry(slot: int, buf: bytes | memoryview, offset: int) -> SymbolEntry:
    state, kind, market, native, unified, tick, lot, cval, added = _DIR_STRUCT.unpack_from(buf, offset)
    return SymbolEntry(slot, state, kind, _text(market), _text(native), _text(unified), tick, lot, cval, added)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


class SegmentView:
    """A mapped segment: header fields, counters, directory and slot geometry.

    `buf` may be read-only (readers) or writable (the writer); this class only reads.
    """

    def __init__(self, buf: memoryview, name: str) -> None:
        self.name = name
        self.buf = buf
        if len(buf) < L.HEADER_LENGTH:
            raise LayoutError(f"{name}: {len(buf)} bytes is too small for an mdengine segment")
        self.q = buf.cast("q")
        magic = struct.unpack_from("<Q", buf, L.MAGIC_OFFSET)[0]
        if magic != L.MAGIC:
            self.q.release()
            raise LayoutError(f"{name}: bad magic {magic:#x} (expected {L.MAGIC:#x}); not an mdengine "
                              "segment, or its creator has not finished initialising it")
        major, minor = struct.unpack_from("<II", buf, L.LAYOUT_MAJOR_OFFSET)
        if major != L.LAYOUT_MAJOR:
            self.q.release()
            raise LayoutError(f"{name}: layout version {major}.{minor}, this mdengine reads "
                              f"{L.LAYOUT_MAJOR}.x")
        self.layout_version = (major, minor)
        (self.segment_size, self.max_symbols, self.book_capacity, self.trade_capacity, self.slot_size,
         self.slots_offset, _dir) = struct.unpack_from("<QIIIIII", buf, L.SEGMENT_SIZE_OFFSET)
        self.geometry = L.SlotGeometry(self.book_capacity, self.trade_capacity)
        if self.geometry.size != self.slot_size or self.segment_size > len(buf):
            self.q.release()
            raise LayoutError(f"{name}: header geometry is inconsistent (slot {self.slot_size} vs "
                              f"{self.geometry.size}, size {self.segment_size} vs mapped {len(buf)})")
        text_off, text_len = struct.unpack_from("<II", buf, L.TEXT_AREA_OFFSET_OFFSET)
        # a text area that does not fit (or is absent: before 1.3) is ignored
        self.text_area = text_off if text_off and text_len >= L.TEXT_AREA_LENGTH and \
            text_off + L.TEXT_AREA_LENGTH <= self.segment_size else 0
        # the perp area (1.4): ignored unless it fits, with a sane ring capacity
        perp_off, perp_slot, liq_cap = struct.unpack_from("<III", buf, L.PERP_AREA_OFFSET_OFFSET)
        sane = perp_off and 2 <= liq_cap <= L.MAX_LIQUIDATION_CAPACITY and not liq_cap & (liq_cap - 1) and \
            perp_slot == L.perp_slot_size(liq_cap) and perp_off + self.max_symbols * perp_slot <= self.segment_size
        self.perp_area = perp_off if sane else 0
        self.perp_slot_size = perp_slot if sane else 0
        self.liquidation_capacity = liq_cap if sane else 0
        self.exchange = _text(bytes(buf[L.EXCHANGE_NAME_OFFSET:L.EXCHANGE_NAME_OFFSET + L.EXCHANGE_NAME_LENGTH]))
        self.namespace = _text(bytes(buf[L.NAMESPACE_OFFSET:L.NAMESPACE_OFFSET + L.NAMESPACE_LENGTH]))

    def release(self) -> None:
        self.q.release()

    # ------------------------------------------------------------------ header words
    def word(self, offset: int) -> int:
        return self.q[offset >> 3]

    @property
    def writer_pid(self) -> int:
        return self.q[L.WRITER_PID_OFFSET >> 3]

    @property
    def writer_start_ns(self) -> int:
        return self.q[L.WRITER_START_NS_OFFSET >> 3]

    @property
    def generation(self) -> int:
        return self.q[L.GENERATION_OFFSET >> 3]

    @property
    def writer_state(self) -> int:
        return self.q[L.WRITER_STATE_OFFSET >> 3]

    @property
    def heartbeat_ns(self) -> int:
        return self.q[L.HEARTBEAT_NS_OFFSET >> 3]

    @property
    def owner_pid(self) -> int:
        return self.q[L.OWNER_PID_OFFSET >> 3]

    @property
    def owner_start_ns(self) -> int:
        return self.q[L.OWNER_START_NS_OFFSET >> 3]

    @property
    def publish_counter(self) -> int:
        return self.q[L.PUBLISH_COUNTER_OFFSET >> 3]

    @property
    def directory_count(self) -> int:
        return min(max(self.q[L.DIRECTORY_COUNT_OFFSET >> 3], 0), self.max_symbols)

    @property
    def directory_version(self) -> int:
        return self.q[L.DIRECTORY_VERSION_OFFSET >> 3]

    @property
    def stale_after_ns(self) -> int:
        """The writer's stale_after in ns (1.3; 0: not published, so no silence rule)."""
        return self.q[L.STALE_AFTER_NS_OFFSET >> 3]

    @property
    def heartbeat_interval_ns(self) -> int:
        """The writer's heartbeat period in ns (1.3; 0: not published)."""
        return self.q[L.HEARTBEAT_INTERVAL_NS_OFFSET >> 3]

    def text(self, offset: int, length: int, retries: int = 1000) -> str:
        """A text of the text area (offset relative to it), copied under its seqlock; "" if there is none."""
        if not self.text_area:
            return ""
        seq_i = (self.text_area + L.TEXT_SEQ_OFFSET) >> 3
        start = self.text_area + offset
        raw = b""
        for _ in range(retries):
            s = self.q[seq_i]
            if s & 1:
                continue
            raw = bytes(self.buf[start:start + length])
            if self.q[seq_i] == s:
                break
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    def rest_endpoints(self) -> dict[str, str]:
        """The REST base URLs the writer uses, by REST market ({} if it published none)."""
        import json

        text = self.text(L.REST_ENDPOINTS_TEXT_OFFSET, L.REST_ENDPOINTS_TEXT_LENGTH)
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            return {}
        return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(doc, dict) \
            else {}

    def counters(self) -> dict[str, int]:
        return {name: self.q[off >> 3] for name, off in L.COUNTER_OFFSETS.items()}

    def last_error(self) -> tuple[int, str]:
        """(time ns, text) of the last recorded error: the whole text from the text area when there is one."""
        off = L.LAST_ERROR_TEXT_OFFSET
        short = bytes(self.buf[off:off + L.LAST_ERROR_TEXT_LENGTH]).rstrip(b"\0").decode("utf-8", "replace")
        whole = self.text(L.LAST_ERROR_LONG_OFFSET, L.LAST_ERROR_LONG_LENGTH)
        return self.q[L.LAST_ERROR_NS_OFFSET >> 3], whole if whole.startswith(short) else short

    # ------------------------------------------------------------------ directory and slots
    def entry(self, slot: int) -> SymbolEntry:
        if not 0 <= slot < self.max_symbols:
            raise IndexError(f"{self.name}: slot {slot} outside 0..{self.max_symbols - 1}")
        return _entry(slot, self.buf, L.DIRECTORY_OFFSET + slot * L.DIR_ENTRY_LENGTH)

    def entries(self) -> list[SymbolEntry]:
        """Entries [0, count), copied between two equal, even reads of DIRECTORY_VERSION (the directory's
        seqlock, 1.3). The bytes are copied in one go and decoded afterwards, so a copy is short and a busy writer
        rarely overlaps it. After _DIRECTORY_RETRIES copies that never met the rule (a writer killed inside a
        change, until its successor attaches; an older writer, whose version parity means nothing), the last
        copy: market, native and state never tear, only the metadata of the entry being rewritten may."""
        q, v, start = self.q, L.DIRECTORY_VERSION_OFFSET >> 3, L.DIRECTORY_OFFSET
        raw, count = b"", 0
        for attempt in range(_DIRECTORY_RETRIES):
            before = q[v]
            count = self.directory_count
            raw = bytes(self.buf[start:start + count * L.DIR_ENTRY_LENGTH])
            if not before & 1 and q[v] == before:
                break
            if attempt & 15 == 15:
                os.sched_yield()  # let a writer in the middle of a change finish it
        return [_entry(i, raw, i * L.DIR_ENTRY_LENGTH) for i in range(count)]

    def slot_base(self, slot: int) -> int:
        return self.slots_offset + slot * self.slot_size

    def perp_base(self, slot: int) -> int | None:
        """Offset of `slot`'s perp slot (1.4), or None in a segment without a perp area."""
        return self.perp_area + slot * self.perp_slot_size if self.perp_area else None

    def stats(self, slot: int) -> dict[str, int]:
        base = self.slot_base(slot)
        return {name: self.q[(base + off) >> 3] for name, off in L.STAT_OFFSETS.items()
                if not name.startswith("reserved")}

    def find(self, symbol: str, market: str | None = None) -> SymbolEntry | None:
        """The entry whose unified or native id is `symbol` (and market, if given); active first."""
        found = None
        for e in self.entries():
            if (symbol == e.unified or symbol == e.native) and (market is None or market == e.market):
                if e.active:
                    return e
                found = found or e
        return found


def pack_entry(state: int, kind: int, market: str, native: str, unified: str, tick: float, lot: float,
               contract_value: float, added_ns: int) -> bytes:
    for what, text, limit in (("market", market, L.DIR_MARKET_LENGTH), ("native id", native, L.DIR_NATIVE_LENGTH),
                              ("unified symbol", unified, L.DIR_UNIFIED_LENGTH)):
        if len(text.encode("ascii")) > limit:
            raise ValueError(f"{what} {text!r} is longer than {limit} bytes")
    return _DIR_STRUCT.pack(state, kind, market.encode(), native.encode(), unified.encode(), tick, lot,
                            contract_value, added_ns)
