"""`mdengine bridge publish`: read a namespace's shared memory like any strategy and send it on the bus.

It only reads (the feed never waits for it). Each round it looks at the segment's publish counter; when that
moved it sends the book of every symbol whose version changed (a compact snapshot of its published levels)
and the trades each ring gained. Every few hundred ms a status message per exchange carries each symbol's
state, version and freshness; a full snapshot per symbol goes to the KV store periodically and whenever the
book's state changes (a resync).

What travels is keyed on what the exchange gave (update ids, trade ids), and every message names its source
(`--source-id`), so two engines on two hosts, each with its own publisher on one bus namespace (`--bus-namespace`),
back each other up: the mirror takes each update from whichever delivers it first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from ..store import layout as L
from ..store.reader import BookBuffer, BookReader, SegmentReader, TradeReader, attach_all
from . import wire
from .transport import Transport

log = logging.getLogger("mdengine.bridge.publish")
RECENT_TRADES = 512  # trades kept in each KV snapshot, so a receiver can fill a trade gap
_CONFIRMED = L.STAT_OFFSETS["confirmed_ns"]


@dataclass
class _Symbol:
    exchange: str
    book: BookReader
    trades: TradeReader
    buf: BookBuffer
    sym: list
    key: str
    book_subject: str
    trades_subject: str
    sent_version: int = 0  # the engine's version of the last book sent (what changed is told by the version)
    sent_u: int = 0  # the exchange update id of the last live book sent (the next message's `pu`)
    sent_state: int = -1
    last_trade_id: int | None = None  # the exchange id of the last trade sent (the next batch's `pt`)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))


@dataclass
class PublishStats:
    books: int = 0
    trades: int = 0
    trade_messages: int = 0
    snapshots: int = 0
    statuses: int = 0
    lost_trades: int = 0  # lapped in the engine's ring before this publisher read them


class BridgePublisher:
    def __init__(self, transport: Transport, namespace: str, *, exchanges: list[str] | None = None,
                 symbols: list[str] | None = None, poll_s: float = 0.0005, status_s: float = 0.25,
                 snapshot_s: float = 5.0, source_id: str | None = None, bus_namespace: str | None = None) -> None:
        self.transport = transport
        self.namespace = namespace  # the local engine's, read
        self.bus_namespace = bus_namespace or namespace  # the subjects', shared by every engine backing it up
        self.source_id = source_id or wire.default_source_id(namespace)
        self.exchanges = exchanges
        self.symbols = set(symbols) if symbols else None
        self.poll_s = poll_s
        self.status_s = status_s
        self.snapshot_s = snapshot_s
        self.stats = PublishStats()
        self._segments: dict[str, SegmentReader] = {}
        self._counters: dict[str, int] = {}
        self._syms: dict[str, dict[int, _Symbol]] = {}
        self._stop = asyncio.Event()

    @property
    def failed(self) -> int:
        return self.transport.failed

    def stop(self) -> None:
        """Stop soon: what the transport still holds for sending gets its short grace (`stop_grace_s`)."""
        self._stop.set()
        self.transport.begin_close()

    # ------------------------------------------------------------------ discovery
    def _discover(self) -> None:
        """Attach to new segments, and bind symbols added since the last look."""
        for exchange, seg in attach_all(self.namespace).items():
            if (self.exchanges and exchange not in self.exchanges) or exchange in self._segments:
                seg.close()
                continue
            self._segments[exchange] = seg
            self._counters[exchange] = -1
            self._syms[exchange] = {}
            log.info("bridge publish: attached %s", seg.name)
        for exchange, seg in self._segments.items():
            bound = self._syms[exchange]
            for e in seg.symbols():
                if e.slot in bound or (self.symbols and e.unified not in self.symbols and e.native not in
                                       self.symbols):
                    continue
                g = seg.view.geometry
                bound[e.slot] = _Symbol(
                    exchange, BookReader(seg, e), TradeReader(seg, e, "latest"), BookBuffer(g.book_capacity),
                    [e.market, e.native, e.unified, e.kind, e.tick_size, e.lot_size, e.contract_value,
                     seg.view.max_symbols, g.book_capacity, g.trade_capacity],
                    wire.kv_key(exchange, e.unified, self.source_id),
                    wire.book_subject(self.bus_namespace, exchange, e.unified),
                    wire.trades_subject(self.bus_namespace, exchange, e.unified))

    # ------------------------------------------------------------------ messages
    def _book_body(self, s: _Symbol) -> dict:
        s.book.read_into(s.buf)
        h = s.buf.header()
        nb, na = s.buf.n_bids, s.buf.n_asks
        lv = s.buf.levels
        return {"x": s.exchange, "sym": s.sym, "src": self.source_id, "v": h.version, "pu": s.sent_u,
                "u": h.update_id,
                "st": h.state, "fl": h.flags, "et": h.exch_ts_ns, "rt": h.recv_ts_ns, "pt": h.pub_ts_ns,
                "b": lv[:nb, 0:2].ravel().tolist(), "a": lv[:na, 2:4].ravel().tolist(), "sent": time.time_ns()}

    async def _send_book(self, s: _Symbol, version: int, state: int) -> None:
        body = self._book_body(s)
        live = body["st"] == L.BookState.LIVE
        msg_id = wire.book_msg_id(s.exchange, s.sym[2], body["u"], body["et"]) if live else \
            wire.state_msg_id(s.exchange, s.sym[2], self.source_id, body["v"])
        await self.transport.publish(s.book_subject, wire.encode(body), msg_id)
        s.sent_version = body["v"]
        if live:
            s.sent_u = body["u"]
        self.stats.books += 1
        if body["st"] != s.sent_state:  # a resync (or its end), a stale or live turn: the snapshot follows
            s.sent_state = body["st"]
            await self._snapshot(s, body)

    async def _send_trades(self, s: _Symbol) -> None:
        got, lost = s.trades.poll()
        self.stats.lost_trades += lost
        if not len(got):
            return
        first = int(got["index"][0])
        rows = got.tolist()  # tuples in TRADE_DTYPE's field order, the ring index last
        s.recent.extend(rows)
        # `pt`: a receiver that holds this trade got what this publisher sent before, whoever delivered it
        body = {"x": s.exchange, "sym": s.sym, "src": self.source_id, "i": first, "pt": s.last_trade_id, "t": rows,
                "sent": time.time_ns()}
        s.last_trade_id = rows[-1][4]
        await self.transport.publish(s.trades_subject, wire.encode(body),
                                     wire.trades_msg_id(s.exchange, s.sym[2], rows[0][4], rows[-1][4]))
        self.stats.trades += len(rows)
        self.stats.trade_messages += 1

    async def _snapshot(self, s: _Symbol, body: dict | None = None) -> None:
        body = dict(body or self._book_body(s))
        body["recent"] = list(s.recent)
        body["ti"] = s.trades.cursor  # the ring index the next trade will have
        await self.transport.put_snapshot(s.key, wire.encode(body))
        self.stats.snapshots += 1

    async def _send_status(self, exchange: str, seg: SegmentReader) -> None:
        v, q, now = seg.view, seg.view.q, time.time_ns()
        healthy = v.writer_state == L.WriterState.RUNNING and seg.writer_alive() and \
            now - v.heartbeat_ns < L.HEARTBEAT_MISSES * max(v.heartbeat_interval_ns, 1)
        syms = {}
        for slot, s in self._syms[exchange].items():  # what was sent, so a receiver can tell what it missed
            if not s.sent_version:
                continue
            confirmed = q[(v.slot_base(slot) + _CONFIRMED) >> 3]
            syms[s.sym[2]] = [s.sent_u, s.sent_state, now - confirmed if confirmed else -1, s.trades.cursor,
                              s.last_trade_id]
        body = {"x": exchange, "src": self.source_id, "ok": healthy, "ws": v.writer_state, "sa": v.stale_after_ns,
                "hi": v.heartbeat_interval_ns, "syms": syms, "sent": now}
        await self.transport.publish(wire.status_subject(self.bus_namespace, exchange), wire.encode(body),
                                     wire.status_msg_id(exchange, self.source_id, now))
        self.stats.statuses += 1

    # ------------------------------------------------------------------ loop
    def _all(self) -> list[_Symbol]:
        return [s for syms in self._syms.values() for s in syms.values()]

    async def poll_once(self) -> int:
        """Send what changed since the last round; returns how many symbols had news."""
        news = 0
        for exchange, seg in self._segments.items():
            counter = seg.publish_counter
            if counter == self._counters[exchange]:
                continue
            self._counters[exchange] = counter
            for s in self._syms[exchange].values():
                h = s.book.top_full()
                if h[9] != s.sent_version and h[6] != L.BookState.EMPTY:
                    await self._send_book(s, h[9], h[6])
                    news += 1
                if s.trades.tail != s.trades.cursor:
                    await self._send_trades(s)
                    news += 1
        return news

    async def run(self, seconds: float | None = None) -> None:
        await self.transport.connect()
        self._discover()
        end = time.monotonic() + seconds if seconds else None
        next_status = next_snapshot = next_discover = 0.0
        troubles_seen = (0, 0)
        while not self._stop.is_set() and (end is None or time.monotonic() < end):
            now = time.monotonic()
            troubles = (self.transport.failed, getattr(self.transport, "retried", 0))
            if troubles != troubles_seen and getattr(self.transport, "connected", True):
                # something was lost on the way (a cut, a full buffer), or sent again (it may reach the stream
                # after later messages): the snapshots go first, so a receiver that sees the gap finds the missed
                # trades (and the current book) there
                troubles_seen = troubles
                next_snapshot = 0.0
                for s in self._all():
                    if s.sent_version and not self._stop.is_set():
                        await self._snapshot(s)
            if now >= next_discover:
                self._discover()
                next_discover = now + 1.0
            news = await self.poll_once()
            if now >= next_status:
                for exchange, seg in self._segments.items():
                    await self._send_status(exchange, seg)
                next_status = now + self.status_s
            if now >= next_snapshot:
                for s in self._all():
                    if s.sent_version and not self._stop.is_set():
                        await self._snapshot(s)
                next_snapshot = now + self.snapshot_s
            await asyncio.sleep(0 if news else self.poll_s)
        await self.transport.close()
        for seg in self._segments.values():
            seg.close()
