"""`mdengine bridge mirror`: rebuild the books and trades from the bus into local shared memory.

The segments have the engine's layout and are written with the engine's `SegmentWriter`, so an unchanged
`Client(namespace)` reads them. The mirror keeps its own monotone version per symbol; the update id, receive
time and levels are the source's.

Several sources (publishers of independent engines reading the same exchange) can feed one mirror. What it
applies is keyed on what the exchange gave, which is equal across engines:
- books by the exchange update id `u`: a live book is applied when its `u` is newer than the one held, from
  whichever source delivers it first (JetStream already drops a repeated `Nats-Msg-Id`). A message's `pu` (the
  live `u` its source sent before) newer than the held `u` means one was missed by every source: a gap, counted;
  the message, a whole snapshot, repairs the book. An exchange that restarts its sequence (Bybit: `u` = 1 after a
  service restart) shows as a source whose `u` falls below half its own `pu`: the mirror follows it, and ignores
  other sources' books until their own sequence restarts too, or the new sequence passes where they were (their
  older books are not newer for having larger ids). A smaller step back is an older book, dropped. A book with
  no `pu` to compare (a KV snapshot, a just-started publisher's first book) is placed by its exchange time: far
  below the held `u` but later is the restart; far above it but earlier is from before the restart (a dead
  source's snapshot left in the bucket, an engine still on the old ids): its source is behind, the book dropped.
- trades by exchange trade id: a bounded set of recent ids per symbol (and anything older than the set reaches)
  is dropped; each source's batches are numbered by its own engine's ring, so a batch a source never delivered
  is found and taken from that source's KV snapshot. That repair runs as its own task and holds back only that
  source's later trades of that symbol (in order, behind it): every other symbol, the symbol's books and the
  other sources' trades go on meanwhile (and another source delivering the missed trades ends the repair).
- state: a symbol is live while any healthy source (status ok and heard within `silence_s`) has it live; else
  resyncing if one is resyncing, else stale. The segment heartbeats while any source of the exchange is healthy.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..store import layout as L
from ..store.writer import SegmentWriter
from . import wire
from .transport import Transport

log = logging.getLogger("mdengine.bridge.mirror")
REPLAY_MARGIN_NS = 1_000_000_000  # replay from this long before the oldest snapshot (publisher clock vs bus's)
RECENT_IDS = 8192  # trade ids remembered per symbol to drop a second source's copies (and a replay's)
HELD_MAX = 10_000  # a source's trade messages held behind its repair of one symbol; beyond, the repair stops waiting


@dataclass
class _FromSource:
    """What one source said about one symbol."""

    state: int = L.BookState.EMPTY
    u: int = 0  # the last live update id it sent
    next_trade: int = -1  # its engine's ring index of the next trade expected (-1: not known yet)
    behind: int = 0  # still on an exchange sequence the mirror saw restart, at this u: its ids are not comparable
    held: deque = field(default_factory=deque)  # its trade messages (and status checks) waiting behind a repair
    repairing: asyncio.Task | None = None  # the task repairing its trades, then applying what `held` gathered
    hurry: bool = False  # `held` overflowed: the repair takes what the KV snapshot has now


@dataclass
class _Mirrored:
    slot: int
    u: int = 0  # the exchange update id of the live book held (0: none)
    et: int = 0  # its exchange time (0: not known)
    has_book: bool = False
    state: int = L.BookState.EMPTY  # the state published in the mirror
    gap_upto: int = 0  # the newest missed update id already counted (a status and the next message both tell)
    sources: dict[str, _FromSource] = field(default_factory=dict)
    book_repair: asyncio.Task | None = None  # a KV snapshot being fetched for the book
    ids: set = field(default_factory=set)  # recent trade ids written
    order: deque = field(default_factory=deque)  # (trade id, exch_ts) in the order written
    horizon_ns: int = 0  # trades older than this left `ids`: anything older is taken as written


@dataclass
class _Source:
    ok: bool = True  # its last status said the engine's feed is healthy (until one says otherwise: heard is enough)
    heard: float = -math.inf  # monotonic time of its last message


@dataclass
class MirrorStats:
    books: int = 0
    trades: int = 0
    duplicates: int = 0  # messages (or trades) already applied, from another source or a redelivery
    gaps: int = 0  # live books every source missed
    trade_gaps: int = 0  # trade batches a source's stream missed
    repairs: int = 0  # gaps repaired from a KV snapshot (or, for trades, by another source meanwhile)
    trades_unrepaired: int = 0  # trades a source missed that its KV snapshot no longer held (or could not be read)
    repair_errors: int = 0  # trade repairs whose KV snapshot could not be read (the bus away): their trades lost
    held: int = 0  # trade messages that waited behind their source's repair of the symbol
    repairs_cut: int = 0  # repairs that stopped waiting for the KV snapshot because too much was held behind them
    snapshots: int = 0  # KV snapshots applied
    resets: int = 0  # exchange update id sequences seen restarting
    malformed: int = 0
    silences: int = 0  # times every source of an exchange went quiet or unhealthy and its books went stale
    sources: dict = field(default_factory=dict)  # books applied per source


class BridgeMirror:
    def __init__(self, transport: Transport, namespace: str, *, source_namespace: str | None = None,
                 silence_s: float = 1.5, repair_wait_s: float = 3.0, held_max: int = HELD_MAX) -> None:
        self.transport = transport
        self.repair_wait_s = repair_wait_s
        self.held_max = held_max  # messages held behind one repair before it stops waiting (HELD_MAX)
        self.namespace = namespace
        self.source = source_namespace or getattr(transport, "namespace", namespace)
        self.silence_s = silence_s
        self.stats = MirrorStats()
        self.writers: dict[str, SegmentWriter] = {}
        self._books: dict[tuple[str, str], _Mirrored] = {}
        self._sources: dict[tuple[str, str], _Source] = {}  # (exchange, source id) -> health
        self._healthy_before: dict[str, bool] = {}
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

    def _resume(self, w: SegmentWriter, m: _Mirrored) -> None:
        """A slot an earlier mirror wrote (restart): its book stays (stale, as the take-over republished it) until
        a newer one comes; its last trades' ids are remembered, so the stream's replay does not write them again."""
        prev = w.last_book(m.slot)
        if prev is not None:
            m.has_book, m.state = True, L.BookState.STALE
        base = w.view.slot_base(m.slot)
        g = w.view.geometry
        tail = int(w.q[(base + g.ring + L.RING_TAIL_OFFSET) >> 3])
        ring = np.frombuffer(w.buf, dtype=L.TRADE_DTYPE, count=g.trade_capacity, offset=base + g.records)
        last = ring[np.arange(max(0, tail - min(g.trade_capacity, RECENT_IDS)), tail) & (g.trade_capacity - 1)]
        for trade_id, exch_ts in zip(last["trade_id"].tolist(), last["exch_ts_ns"].tolist(), strict=True):
            self._remember(m, trade_id, exch_ts)

    # ------------------------------------------------------------------ sources and state
    def _healthy(self, exchange: str, source: str, now: float) -> bool:
        s = self._sources.get((exchange, source))
        return s is not None and s.ok and now - s.heard < self.silence_s

    def _wanted_state(self, exchange: str, m: _Mirrored, now: float) -> int:
        """Live while a healthy source has the symbol live; else resyncing if one resyncs; else stale."""
        states = {fs.state for src, fs in m.sources.items() if not self._is_behind(m, fs)
                  and self._healthy(exchange, src, now)}
        if L.BookState.LIVE in states and m.u:
            return L.BookState.LIVE
        for st in (L.BookState.RESYNCING, L.BookState.SYNCING):
            if st in states:
                return st
        return L.BookState.STALE if m.has_book else L.BookState.EMPTY

    def _refresh(self, exchange: str, w: SegmentWriter, m: _Mirrored, now: float) -> None:
        want = self._wanted_state(exchange, m, now)
        if m.has_book and want != m.state and want != L.BookState.EMPTY:
            w.publish_state(m.slot, want)
            m.state = want
            w.wake_readers()

    def _from(self, m: _Mirrored, body: dict) -> _FromSource:
        src = body.get("src", "")
        fs = m.sources.get(src)
        if fs is None:
            fs = m.sources[src] = _FromSource()
        return fs

    # ------------------------------------------------------------------ books
    def _apply_book(self, exchange: str, w: SegmentWriter, m: _Mirrored, body: dict) -> None:
        b, a = body["b"], body["a"]
        cap = w.capacity
        nb, na = min(len(b) // 2, cap), min(len(a) // 2, cap)
        n = max(nb, na)
        flat = [math.nan, 0.0, math.nan, 0.0] * n
        flat[0:4 * nb:4] = b[0:2 * nb:2]
        flat[1:4 * nb:4] = b[1:2 * nb:2]
        flat[2:4 * na:4] = a[0:2 * na:2]
        flat[3:4 * na:4] = a[1:2 * na:2]
        if body["st"] == L.BookState.LIVE:
            m.u, m.et = body["u"], body["et"]
        m.has_book = True
        state = self._wanted_state(exchange, m, time.monotonic())
        if state == L.BookState.EMPTY:
            state = body["st"]
        w.publish_levels(m.slot, flat, nb, na, update_id=body["u"], exch_ts_ns=body["et"], recv_ts_ns=body["rt"],
                         state=state, truncated=bool(body["fl"] & L.BookFlags.TRUNCATED))
        m.state = state
        w.wake_readers()
        self.stats.books += 1
        src = body.get("src", "")
        self.stats.sources[src] = self.stats.sources.get(src, 0) + 1

    def _restart_sequence(self, m: _Mirrored, source: str, u: int) -> None:
        """`source`'s exchange sequence restarted at `u`: follow it; sources still ahead of it are behind."""
        self.stats.resets += 1
        log.warning("bridge mirror: %s restarted its update ids at %d (held %d)", source, u, m.u)
        m.u = m.gap_upto = 0
        for src, fs in m.sources.items():
            if src != source and fs.u > u:
                fs.behind = fs.u

    @staticmethod
    def _across_restart(m: _Mirrored, u: int, et: int) -> int:
        """For a live book with no `pu`: 1 if it is the exchange's restarted sequence (`u` far below the held one, a
        later exchange time), -1 if it is from before a restart the mirror followed (`u` far above, an earlier
        time), else 0 (the ids compare as they are; also when either exchange time is unknown)."""
        if not (m.u and et and m.et):
            return 0
        if u < m.u // 2 and et > m.et:
            return 1
        if m.u < u // 2 and et < m.et:
            return -1
        return 0

    @staticmethod
    def _is_behind(m: _Mirrored, fs: _FromSource) -> bool:
        """Still on the old sequence, unless the new one has passed where it was (then ids compare again)."""
        if fs.behind and m.u > fs.behind:
            fs.behind = 0
        return bool(fs.behind)

    def _on_book(self, body: dict) -> None:
        exchange = body["x"]
        w, m = self._mirrored(exchange, body["sym"])
        fs = self._from(m, body)
        u, pu, live = body["u"], body["pu"], body["st"] == L.BookState.LIVE
        fs.state = body["st"]
        if live:
            if not pu and not fs.behind and self._across_restart(m, u, body["et"]) < 0:
                fs.behind = u  # a publisher just started, its engine still on the ids the exchange restarted
            # this source's sequence went far back (or, for a publisher just started, far below the mirror's): the
            # exchange restarted its ids. A source left behind is on the new ids once its u falls far below where
            # it was, whether or not its own first book of them came (JetStream keeps the copy delivered first)
            if fs.behind and u < fs.behind // 2:
                fs.behind = 0
            elif (pu and u < pu // 2) or (not pu and u < m.u // 2):
                if u <= m.u:
                    self._restart_sequence(m, body.get("src", ""), u)
            elif fs.behind:
                fs.behind = max(fs.behind, u)  # still on the old sequence, further along it
            fs.u = u
            if self._is_behind(m, fs) or u <= m.u:
                self.stats.duplicates += 1
            else:
                if m.u and pu > max(m.u, m.gap_upto):  # a live book between the two reached no one
                    self._count_gap(w, m.slot, "gaps")
                self._apply_book(exchange, w, m, body)
                return
        elif not m.has_book:  # nothing better to show yet
            self._apply_book(exchange, w, m, body)
            return
        self._refresh(exchange, w, m, time.monotonic())

    def _count_gap(self, w: SegmentWriter, slot: int, kind: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        w.count("gaps")
        w.stat(slot, "gaps")

    # ------------------------------------------------------------------ trades
    def _remember(self, m: _Mirrored, trade_id: int, exch_ts: int) -> None:
        m.ids.add(trade_id)
        m.order.append((trade_id, exch_ts))
        if len(m.order) > RECENT_IDS:
            old_id, old_ts = m.order.popleft()
            m.ids.discard(old_id)
            m.horizon_ns = max(m.horizon_ns, old_ts)

    def _append(self, w: SegmentWriter, m: _Mirrored, rows: list) -> None:
        if rows and rows[0][0] >= m.horizon_ns and m.ids.isdisjoint([r[4] for r in rows]) and \
                len({r[4] for r in rows}) == len(rows):  # the usual case, all new: remembered at once
            m.ids.update(r[4] for r in rows)
            m.order.extend((r[4], r[0]) for r in rows)
            while len(m.order) > RECENT_IDS:
                old_id, old_ts = m.order.popleft()
                m.ids.discard(old_id)
                m.horizon_ns = max(m.horizon_ns, old_ts)
            fresh = [tuple(r[:7]) for r in rows]
        else:
            fresh = []
            for r in rows:
                if r[4] in m.ids or r[0] < m.horizon_ns:
                    continue
                self._remember(m, r[4], r[0])
                fresh.append(tuple(r[:7]))
        self.stats.duplicates += len(rows) - len(fresh)
        if fresh:
            w.append_trades(m.slot, fresh)
            self.stats.trades += len(fresh)
            w.wake_readers()

    def _on_trades(self, body: dict) -> None:
        w, m = self._mirrored(body["x"], body["sym"])
        self._take(body["x"], body["sym"][2], body.get("src", ""), w, m, self._from(m, body), ("t", body))

    def _take(self, exchange: str, sym: str, source: str, w: SegmentWriter, m: _Mirrored, fs: _FromSource,
              item: tuple) -> None:
        """Apply a source's trade message ("t", body), or check a status's word on what it sent ("s", its ring
        cursor, its last trade id), now; unless it waits behind that source's repair of the symbol, or reveals
        trades of the source that never came and starts one."""
        if fs.repairing is not None:
            fs.held.append(item)
            if item[0] == "t":
                self.stats.held += 1
            if len(fs.held) > self.held_max and not fs.hurry:
                fs.hurry = True
                self.stats.repairs_cut += 1
                log.warning("bridge mirror: %d messages of %s %s from %s wait behind its repair: it stops waiting",
                            len(fs.held), exchange, sym, source)
            return
        if self._missed(m, fs, item) is None:
            self._apply_trades(w, m, fs, item)
            return
        fs.held.append(item)
        fs.repairing = asyncio.get_running_loop().create_task(self._repair_then_apply(exchange, sym, source, w, m,
                                                                                      fs))

    @staticmethod
    def _missed(m: _Mirrored, fs: _FromSource, item: tuple) -> int | None:
        """The ring index up to which the source's trades since `next_trade` never came (from it or any other
        source), else None."""
        first, last_id = (item[1]["i"], item[1].get("pt")) if item[0] == "t" else item[1:]
        if fs.next_trade < 0 or first <= fs.next_trade:
            return None
        if last_id is not None and last_id in m.ids:  # another source delivered them (JetStream kept its batch)
            fs.next_trade = first
            return None
        return first

    def _apply_trades(self, w: SegmentWriter, m: _Mirrored, fs: _FromSource, item: tuple) -> None:
        if item[0] == "t":
            rows = item[1]["t"]
            self._append(w, m, rows)
            if rows:
                fs.next_trade = max(fs.next_trade, rows[-1][7] + 1)

    async def _repair_then_apply(self, exchange: str, sym: str, source: str, w: SegmentWriter, m: _Mirrored,
                                 fs: _FromSource) -> None:
        """The source's messages of this symbol, in order, from the one that revealed the gap: each gap repaired
        first, then the message applied. Runs until none is left waiting."""
        try:
            while fs.held:
                item = fs.held.popleft()
                try:
                    upto = self._missed(m, fs, item)
                    if upto is not None:
                        last_id = item[1].get("pt") if item[0] == "t" else item[2]
                        await self._repair_trades(exchange, sym, source, w, m, fs, upto, last_id)
                    self._apply_trades(w, m, fs, item)
                except Exception as e:  # noqa: BLE001 - one bad message costs itself, never the others
                    self._malformed(f"{exchange} {sym} trades", e)
        finally:
            fs.repairing = None
            fs.hurry = False

    async def _repair_trades(self, exchange: str, sym: str, source: str, w: SegmentWriter, m: _Mirrored,
                             fs: _FromSource, upto: int, last_id: int | None) -> None:
        """Fill the source's trades [next_trade, upto) from its KV snapshot. A publisher refreshes it once it
        learns a publish failed, which can be after the mirror saw the gap: ask again for up to repair_wait_s,
        unless another source delivers them meanwhile (the trade `last_id` arrives) or too much waits behind.
        Only this source's later trades of this symbol wait (`_take`), so readers get them late but in order."""
        want = fs.next_trade
        self._count_gap(w, m.slot, "trade_gaps")
        end = time.monotonic() + self.repair_wait_s
        rows: list = []
        while True:
            if last_id is not None and last_id in m.ids:  # another source delivered them while this one waited
                self.stats.repairs += 1
                fs.next_trade = max(fs.next_trade, upto)
                return
            try:
                raw = await self.transport.get_snapshot(wire.kv_key(exchange, sym, source))
            except Exception as e:  # noqa: BLE001 - the bus is away (a cut): what is missing counts as lost, and
                # the message that revealed the gap is still applied after this
                self._repair_failed(f"{exchange} {sym} from {source}", e)
                break
            rows = [r for r in (wire.decode(raw).get("recent", []) if raw else []) if want <= r[7] < upto]
            if len(rows) == upto - want or time.monotonic() >= end or fs.hurry:
                break
            await asyncio.sleep(0.1)
        if rows and rows[0][7] == want:
            self.stats.repairs += 1
        missing = (upto - want) - len(rows)
        if missing > 0:  # another source may have delivered them: counted as this source's loss
            self.stats.trades_unrepaired += missing
            w.stat(m.slot, "trades_lost_upstream", missing)
        self._append(w, m, rows)
        fs.next_trade = max(fs.next_trade, upto)

    # ------------------------------------------------------------------ snapshots and statuses
    async def _apply_snapshot(self, body: dict) -> bool:
        """Apply a KV snapshot if it is a live book newer than the one held (or the mirror holds none)."""
        exchange = body["x"]
        w, m = self._mirrored(exchange, body["sym"])
        fs = self._from(m, body)
        # fs.next_trade stays unknown: the stream is replayed from before the snapshot, and its first batch of
        # this source tells where the source's numbering is (its trades are told apart by id, not by index)
        live = body["st"] == L.BookState.LIVE
        if live:
            across = self._across_restart(m, body["u"], body["et"])
            if across < 0:  # from before the restart the held book shows (a KV snapshot lags its source's stream
                # by up to snapshot_s): dropped; its source counts as behind until its books or status say otherwise
                fs.behind = max(fs.behind, body["u"])
                return False
            if across > 0:  # the restarted sequence: followed (or, for a source left behind, it has seen it too)
                if fs.behind:
                    fs.behind = 0
                else:
                    self._restart_sequence(m, body.get("src", ""), body["u"])
            if across or not fs.u:  # a restart, or the first word of this source (so a restart marks it behind)
                fs.u = body["u"]
        if (live and body["u"] > m.u and not self._is_behind(m, fs)) or not m.has_book:
            self._apply_book(exchange, w, m, body)
            self.stats.snapshots += 1
            return True
        return False

    async def _repair_book(self, exchange: str, sym: str, source: str) -> None:
        try:
            raw = await self.transport.get_snapshot(wire.kv_key(exchange, sym, source))
            if raw is not None and await self._apply_snapshot(wire.decode(raw)):
                self.stats.repairs += 1
        except Exception as e:  # noqa: BLE001 - the next status asks again
            self._malformed(f"{exchange} {sym} snapshot", e)

    async def _on_status(self, body: dict) -> None:
        exchange, source = body["x"], body.get("src", "")
        health = self._sources.get((exchange, source))
        if health is None:
            health = self._sources[(exchange, source)] = _Source()
        health.ok = bool(body["ok"])
        w = self.writers.get(exchange)
        if w is None:
            return
        now_ns, now = time.time_ns(), time.monotonic()
        if body["ok"]:
            w.set_freshness(body["sa"] / 1e9, body["hi"] / 1e9)
        for sym, (sent_u, state, confirmed_age, *rest) in body["syms"].items():
            m = self._books.get((exchange, sym))
            if m is None:
                continue
            fs = m.sources.setdefault(source, _FromSource())
            fs.state = state
            if sent_u:  # its own books may never arrive (the stream dropped them as another's): the status tells
                if fs.behind and sent_u < fs.behind // 2:
                    fs.behind = 0  # it has seen the exchange restart its ids too
                elif fs.behind:
                    fs.behind = max(fs.behind, sent_u)
                fs.u = sent_u
            if rest:  # did the last trades this source sent come (from it or another)? checked in its order
                self._take(exchange, sym, source, w, m, fs, ("s", rest[0], rest[1] if len(rest) > 1 else None))
            if state == L.BookState.LIVE and not self._is_behind(m, fs) and sent_u > max(m.u, m.gap_upto):
                m.gap_upto = sent_u  # this source sent a live book the mirror never got, and none newer came
                self._count_gap(w, m.slot, "gaps")
                if m.book_repair is None or m.book_repair.done():  # fetched aside: nothing waits on the KV
                    m.book_repair = asyncio.get_running_loop().create_task(self._repair_book(exchange, sym, source))
            if confirmed_age >= 0 and body["ok"]:
                w.confirm(m.slot, now_ns - confirmed_age)
            self._refresh(exchange, w, m, now)
        if any(self._healthy(exchange, src, now) for (x, src) in self._sources if x == exchange):
            w.heartbeat(now_ns)
            w.set_running()

    async def _on_message(self, subject: str, raw: bytes) -> None:
        try:
            body = wire.decode(raw)
            health = self._sources.get((body["x"], body.get("src", "")))
            if health is None:
                health = self._sources[(body["x"], body.get("src", ""))] = _Source()
            health.heard = time.monotonic()
            if subject.endswith(".book"):
                self._on_book(body)
            elif subject.endswith(".trades"):
                self._on_trades(body)
            elif subject.endswith("._status"):
                await self._on_status(body)
        except Exception as e:  # noqa: BLE001 - one bad message costs itself, never the mirror
            self._malformed(subject, e)

    def _repair_failed(self, where: str, e: Exception) -> None:
        self.stats.repair_errors += 1
        if self.stats.repair_errors in (1, 10, 100, 1000):
            log.warning("bridge mirror: the KV snapshot for a trade repair of %s could not be read (%d so far): "
                        "%s: %s", where, self.stats.repair_errors, type(e).__name__, e)

    def _malformed(self, where: str, e: Exception) -> None:
        self.stats.malformed += 1
        if self.stats.malformed in (1, 10, 100, 1000):
            log.warning("bridge mirror: bad message on %s (%d so far): %s: %s", where, self.stats.malformed,
                        type(e).__name__, e)

    def _watch(self) -> None:
        """Books whose every source went quiet (silence_s) or unhealthy are marked stale (or resyncing)."""
        now = time.monotonic()
        for exchange, w in self.writers.items():
            healthy = any(self._healthy(exchange, src, now) for (x, src) in self._sources if x == exchange)
            if self._healthy_before.get(exchange) and not healthy:
                self.stats.silences += 1
                log.warning("bridge mirror: no healthy source of %s left: its books are stale", exchange)
            self._healthy_before[exchange] = healthy
            for (x, _), m in self._books.items():
                if x == exchange:
                    self._refresh(exchange, w, m, now)

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
        tasks = [t for m in self._books.values() for t in (m.book_repair, *(fs.repairing for fs in m.sources.values()))
                 if t is not None and not t.done()]
        for t in tasks:  # what waits behind a repair is still in the stream: a restarted mirror replays it
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.transport.close()
        self.close()

    def close(self) -> None:
        for w in self.writers.values():
            w.close(clean=True)
        self.writers.clear()
