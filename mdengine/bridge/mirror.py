"""`mdengine bridge mirror`: rebuild the books and trades from the bus into local shared memory.

The segments have the engine's layout and are written with the engine's `SegmentWriter`, so an unchanged
`Client(namespace)` reads them. Each symbol keeps the version the engine gave it (a state the mirror sets itself,
stale after a silence or a restart, keeps the version of the book it marks), its update id, state and freshness.

Sequencing: a book message carries its version and the version its publisher sent before (`pv`). The mirror
applies a version once, from whichever publisher delivers it first (JetStream already drops a repeated
`Nats-Msg-Id`; older or equal versions are dropped here). A message whose `pv` is newer than what the mirror
holds means one was missed: a gap, counted. Book messages are whole snapshots of the published levels, so the
message itself repairs the book; a gap the mirror learns of from a status message (the missed message was the
symbol's last) and every trade gap are repaired from the symbol's KV snapshot (which keeps its recent trades).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from dataclasses import dataclass

from ..store import layout as L
from ..store.writer import META_VERSION, META_WORDS, SegmentWriter
from . import wire
from .transport import Transport

log = logging.getLogger("mdengine.bridge.mirror")
_TRADE = struct.Struct(L.TRADE_STRUCT)
REPLAY_MARGIN_NS = 1_000_000_000  # replay from this long before the oldest snapshot (publisher clock vs bus's)


@dataclass
class _Mirrored:
    slot: int
    version: int = 0  # the source version the slot holds (0: none yet)
    state: int = L.BookState.EMPTY
    next_trade: int = -1  # the source ring index of the next trade expected (-1: not known yet)
    silenced: bool = False  # marked stale by the mirror (the bus went quiet), not by the source
    gap_upto: int = 0  # the newest missed version already counted (a status and the next message both tell)
    resume: tuple | None = None  # the last trade an earlier mirror wrote to this slot, until the replay passes it


@dataclass
class MirrorStats:
    books: int = 0
    trades: int = 0
    duplicates: int = 0  # messages (or trades) already applied, from another publisher or a redelivery
    gaps: int = 0  # book messages missed
    trade_gaps: int = 0
    repairs: int = 0  # gaps repaired from a KV snapshot
    trades_unrepaired: int = 0  # trades missed that the KV snapshot no longer held
    snapshots: int = 0  # KV snapshots applied
    malformed: int = 0
    silences: int = 0  # times the bus went quiet and the books were marked stale


class BridgeMirror:
    def __init__(self, transport: Transport, namespace: str, *, source_namespace: str | None = None,
                 silence_s: float = 1.5, repair_wait_s: float = 3.0) -> None:
        self.transport = transport
        self.repair_wait_s = repair_wait_s
        self.namespace = namespace
        self.source = source_namespace or getattr(transport, "namespace", namespace)
        self.silence_s = silence_s
        self.stats = MirrorStats()
        self.writers: dict[str, SegmentWriter] = {}
        self._books: dict[tuple[str, str], _Mirrored] = {}
        self._heard: dict[str, float] = {}  # exchange -> monotonic time of its last message
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once the KV snapshots are applied

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ local segments
    def _writer(self, exchange: str, sym: list) -> SegmentWriter:
        w = self.writers.get(exchange)
        if w is None:
            max_symbols, book_capacity, trade_capacity = sym[7], sym[8], sym[9]
            w = SegmentWriter(self.namespace, exchange, create=True, max_symbols=max_symbols,
                              book_capacity=book_capacity, trade_capacity=trade_capacity)
            w.set_running()
            self.writers[exchange] = w
            log.info("bridge mirror: writing %s", w.name)
        return w

    def _mirrored(self, exchange: str, sym: list) -> tuple[SegmentWriter, _Mirrored]:
        w = self._writer(exchange, sym)
        m = self._books.get((exchange, sym[2]))
        if m is None:
            slot = w.add_symbol(sym[0], sym[1], sym[2], kind=sym[3], tick_size=sym[4], lot_size=sym[5],
                                contract_value=sym[6])
            m = self._books[(exchange, sym[2])] = _Mirrored(slot)
            if not w.created:
                self._resume(w, m)
        return w, m

    @staticmethod
    def _resume(w: SegmentWriter, m: _Mirrored) -> None:
        """A slot an earlier mirror wrote (restart): carry on from what it holds. Its version is the source's
        plus the stale republish this writer's take-over made; its last trade tells where the replay resumes."""
        prev = w.last_book(m.slot)
        if prev is not None:  # the take-over republished it stale, one version up: that state keeps the old number
            meta = memoryview(w.meta).cast("q")
            meta[m.slot * META_WORDS + META_VERSION] -= 1
            m.version, m.state, m.silenced = meta[m.slot * META_WORDS + META_VERSION], L.BookState.STALE, True
            meta.release()
        base = w.view.slot_base(m.slot)
        g = w.view.geometry
        tail = w.q[(base + g.ring + L.RING_TAIL_OFFSET) >> 3]
        if tail > 0:
            rec = _TRADE.unpack_from(w.buf, base + g.records + ((tail - 1) & (g.trade_capacity - 1)) *
                                     L.TRADE_RECORD_LENGTH)
            m.resume = rec[:7]

    @staticmethod
    def _align_version(w: SegmentWriter, slot: int, version: int) -> None:
        """Make the writer's next publish in `slot` carry the source's version (never going backwards)."""
        meta = memoryview(w.meta).cast("q")
        i = slot * META_WORDS + META_VERSION
        if meta[i] < version - 1:
            meta[i] = version - 1
        meta.release()

    # ------------------------------------------------------------------ applying
    def _apply_book(self, body: dict) -> None:
        w, m = self._mirrored(body["x"], body["sym"])
        b, a = body["b"], body["a"]
        cap = w.capacity
        nb, na = min(len(b) // 2, cap), min(len(a) // 2, cap)
        n = max(nb, na)
        flat = [math.nan, 0.0, math.nan, 0.0] * n
        flat[0:4 * nb:4] = b[0:2 * nb:2]
        flat[1:4 * nb:4] = b[1:2 * nb:2]
        flat[2:4 * na:4] = a[0:2 * na:2]
        flat[3:4 * na:4] = a[1:2 * na:2]
        self._align_version(w, m.slot, body["v"])
        w.publish_levels(m.slot, flat, nb, na, update_id=body["u"], exch_ts_ns=body["et"], recv_ts_ns=body["rt"],
                         state=body["st"], truncated=bool(body["fl"] & L.BookFlags.TRUNCATED))
        m.version, m.state, m.silenced = body["v"], body["st"], False
        w.wake_readers()
        self.stats.books += 1

    def _on_book(self, body: dict) -> None:
        w, m = self._mirrored(body["x"], body["sym"])
        if body["v"] <= m.version:
            self.stats.duplicates += 1
            return
        if m.version and body["pv"] > max(m.version, m.gap_upto):  # a message between the two never arrived
            self._count_gap(w, m.slot, "gaps")
        self._apply_book(body)

    def _count_gap(self, w: SegmentWriter, slot: int, kind: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        w.count("gaps")
        w.stat(slot, "gaps")

    @staticmethod
    def _past_resume(m: _Mirrored, rows: list) -> list:
        """The rows after the trade an earlier mirror wrote last. Receive times never go down in a ring, so what
        was received before it, and what shares its receive time up to it, is already in the ring."""
        r = m.resume
        out = []
        matched = False
        for row in rows:
            if m.resume is None:
                out.append(row)
            elif tuple(row[:7]) == r:
                matched = True
            elif row[1] < r[1] or (row[1] == r[1] and not matched):
                continue
            else:
                m.resume = None
                out.append(row)
        if matched:
            m.resume = None
        if m.resume is None and rows:
            m.next_trade = rows[-1][7] + 1
        return out

    def _append(self, w: SegmentWriter, m: _Mirrored, rows: list) -> None:
        if m.resume is not None:
            fresh = self._past_resume(m, rows)
        else:
            fresh = [r for r in rows if r[7] >= m.next_trade] if m.next_trade >= 0 else rows
        self.stats.duplicates += len(rows) - len(fresh)
        if fresh:
            w.append_trades(m.slot, [tuple(r[:7]) for r in fresh])
            m.next_trade = fresh[-1][7] + 1
            self.stats.trades += len(fresh)
            w.wake_readers()

    async def _on_trades(self, body: dict) -> None:
        w, m = self._mirrored(body["x"], body["sym"])
        first = body["i"]
        if m.resume is None and m.next_trade >= 0 and first > m.next_trade:  # [next_trade, first) never arrived
            self._count_gap(w, m.slot, "trade_gaps")
            await self._repair_trades(body["x"], body["sym"][2], w, m, first)
        self._append(w, m, body["t"])

    async def _repair_trades(self, exchange: str, sym: str, w: SegmentWriter, m: _Mirrored, upto: int) -> None:
        """Fill trades [next_trade, upto) from the KV snapshot. A publisher refreshes it once it learns a
        publish failed, which can be after the mirror saw the gap: ask again for up to repair_wait_s. Messages
        wait meanwhile (they are handled one at a time), so readers get the trades late but in order."""
        want = m.next_trade
        end = time.monotonic() + self.repair_wait_s
        while True:
            raw = await self.transport.get_snapshot(wire.kv_key(exchange, sym))
            rows = [r for r in (wire.decode(raw).get("recent", []) if raw else []) if want <= r[7] < upto]
            if len(rows) == upto - want or time.monotonic() >= end:
                break
            self._heard[exchange] = time.monotonic()  # waiting on the bus is not a silence of the bus
            await asyncio.sleep(0.1)
        if rows and rows[0][7] == want:
            self.stats.repairs += 1
        self.stats.trades_unrepaired += (upto - want) - len(rows)
        if upto - want > len(rows):
            w.stat(m.slot, "trades_lost_upstream", (upto - want) - len(rows))
        self._append(w, m, rows)
        m.next_trade = max(m.next_trade, upto)

    async def _apply_snapshot(self, body: dict) -> bool:
        """Apply a KV snapshot if it is newer than what the mirror holds; True if it was."""
        w, m = self._mirrored(body["x"], body["sym"])
        if m.next_trade < 0 and m.resume is None:
            m.next_trade = body.get("ti", -1)
        if body["v"] <= m.version:
            return False
        self._apply_book(body)
        self.stats.snapshots += 1
        return True

    async def _repair_book(self, exchange: str, sym: str) -> None:
        raw = await self.transport.get_snapshot(wire.kv_key(exchange, sym))
        if raw is not None and await self._apply_snapshot(wire.decode(raw)):
            self.stats.repairs += 1

    async def _on_status(self, body: dict) -> None:
        exchange = body["x"]
        w = self.writers.get(exchange)
        if w is None:
            return
        w.set_freshness(body["sa"] / 1e9, body["hi"] / 1e9)
        now = time.time_ns()
        for sym, (version, state, confirmed_age, *rest) in body["syms"].items():
            m = self._books.get((exchange, sym))
            if m is None:
                continue
            if rest and m.resume is None and 0 <= m.next_trade < rest[0]:  # the last trades sent never arrived
                self._count_gap(w, m.slot, "trade_gaps")
                await self._repair_trades(exchange, sym, w, m, rest[0])
            if version > max(m.version, m.gap_upto):  # the publisher sent a version the mirror never got
                m.gap_upto = version
                self._count_gap(w, m.slot, "gaps")
                await self._repair_book(exchange, sym)
            elif version == m.version and m.silenced and body["ok"] and state != m.state:
                self._set_state(w, m, state)  # back from a silence or a dead feed, with nothing new to send
                m.silenced = False
            if confirmed_age >= 0:
                w.confirm(m.slot, now - confirmed_age)
        if body["ok"]:
            w.heartbeat(now)
            w.set_running()
        else:  # the engine's feed is dead, stopped or silent: its books are not live, here either
            for (x, _), m in self._books.items():
                if x == exchange and m.state == L.BookState.LIVE:
                    self._set_state(w, m, L.BookState.STALE)
                    m.silenced = True

    def _set_state(self, w: SegmentWriter, m: _Mirrored, state: int) -> None:
        """A state of the mirror's own (stale after a silence, back): the same source version, another state, so
        the next source version still lands on its own number."""
        meta = memoryview(w.meta).cast("q")
        meta[m.slot * META_WORDS + META_VERSION] -= 1
        meta.release()
        w.publish_state(m.slot, state)
        m.state = state
        w.wake_readers()

    async def _on_message(self, subject: str, raw: bytes) -> None:
        try:
            body = wire.decode(raw)
            self._heard[body["x"]] = time.monotonic()
            if subject.endswith(".book"):
                self._on_book(body)
            elif subject.endswith(".trades"):
                await self._on_trades(body)
            elif subject.endswith("._status"):
                await self._on_status(body)
        except Exception as e:  # noqa: BLE001 - one bad message costs itself, never the mirror
            self.stats.malformed += 1
            if self.stats.malformed in (1, 10, 100, 1000):
                log.warning("bridge mirror: bad message on %s (%d so far): %s: %s", subject, self.stats.malformed,
                            type(e).__name__, e)

    def _watch(self) -> None:
        """Books of an exchange the bus has been quiet about for silence_s are marked stale."""
        now = time.monotonic()
        for exchange, heard in self._heard.items():
            if now - heard < self.silence_s:
                continue
            w = self.writers.get(exchange)
            marked = False
            for (x, _), m in self._books.items():
                if x == exchange and w is not None and not m.silenced and m.state == L.BookState.LIVE:
                    self._set_state(w, m, L.BookState.STALE)
                    m.silenced = marked = True
            if marked:
                self.stats.silences += 1
                log.warning("bridge mirror: nothing from %s for %.1f s: its books are stale", exchange, now - heard)

    async def run(self, seconds: float | None = None) -> None:
        """Start from the KV snapshots (late join, restart), then replay the stream from the oldest of them on:
        what is older than a snapshot is dropped as already applied, the trades after it are appended."""
        await self.transport.connect()
        since = None
        for raw in (await self.transport.snapshots()).values():
            try:
                body = wire.decode(raw)
                await self._apply_snapshot(body)
                since = body["sent"] if since is None else min(since, body["sent"])
            except Exception as e:  # noqa: BLE001
                self.stats.malformed += 1
                log.warning("bridge mirror: bad snapshot: %s: %s", type(e).__name__, e)
        await self.transport.subscribe(f"{wire.subject_root(self.source)}.>", self._on_message,
                                       None if since is None else since - REPLAY_MARGIN_NS)
        self.ready.set()
        end = time.monotonic() + seconds if seconds else None
        while not self._stop.is_set() and (end is None or time.monotonic() < end):
            self._watch()
            try:
                await asyncio.wait_for(self._stop.wait(), 0.1)
            except TimeoutError:
                pass
        await self.transport.close()
        self.close()

    def close(self) -> None:
        for w in self.writers.values():
            w.close(clean=True)
        self.writers.clear()
