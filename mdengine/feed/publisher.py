"""Publisher: adapter events and loop reports -> store writes, segment counters and log lines.

The loop's sink. Called on the loop thread only (the segment has one writer). Every error is logged with
exchange, connection and symbol, counted in its own counter, and `errors` + last-error text are set by
`record_error`; gaps, resyncs and reconnects are warnings with their own counters. Errors and warnings are counted
and recorded every time but logged through a RepeatLog: a repeated one once per interval, with a count. `failures`
counts them all, so the loop can tell a frame that failed (its warm-up pass never replays one).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from ..core.events import (
    BookChanged,
    BookInvalid,
    Event,
    LiquidationsReceived,
    Notice,
    PerpInvalid,
    PerpStatsUpdate,
    ProtocolError,
    SubscribeFailed,
    SymbolKey,
    SymbolSynced,
    TradesReceived,
)
from ..store import layout as L
from ..store.writer import SegmentWriter
from ..symbols import Instrument
from .logrepeat import RepeatLog

_LIVE, _SYNCING, _STALE, _RESYNCING = L.BookState.LIVE, L.BookState.SYNCING, L.BookState.STALE, L.BookState.RESYNCING
_PERP_KINDS = L.PERP_KINDS
_C = {name: off >> 3 for name, off in L.COUNTER_OFFSETS.items()}  # counter -> word index in the segment
# a value the store cannot hold: an id or a time past int64, a float id
_UNPUBLISHABLE = (OverflowError, struct.error, TypeError, ValueError)
_ERROR, _WARNING = logging.ERROR, logging.WARNING
#: a warm-up pass's scratch publisher logs nothing: its verdicts are on copies (a Logger outside the hierarchy, off)
_SILENT = logging.Logger("mdengine.feed.warm-up", logging.CRITICAL + 1)


class _Slot:
    """A subscribed symbol's slot and the word indices of its stats (resolved once, used per publish)."""

    __slots__ = ("slot", "inst", "levels_published", "messages", "book_updates", "trades", "gaps", "resyncs",
                 "checksum_failures", "last_recv_ns", "confirmed_ns", "perp_confirmed_ns")

    def __init__(self, slot: int, inst: Instrument, base: int) -> None:
        self.slot = slot
        self.inst = inst
        # True once the slot holds this book's current top levels: then an update that left them alone
        # (book.top_dirty False) republishes only the header.
        self.levels_published = False
        for name in self.__slots__[3:]:
            setattr(self, name, (base + L.STAT_OFFSETS[name]) >> 3)


class Publisher:
    def __init__(self, writer: SegmentWriter, exchange: str, *, depth: int,
                 log: logging.Logger | None = None) -> None:
        self.w = writer
        self.q = writer.q
        #: the feed loop calls this after every round of reads (futex wake-up of blocked readers)
        self.wake_readers = writer.wake_readers
        self.exchange = exchange
        self.depth = min(depth, writer.capacity)
        self.log = log or logging.getLogger(f"mdengine.feed.{exchange}")
        #: errors and warnings go through this: a repeated one is logged once per interval, with a count
        self.repeats = RepeatLog(self.log)
        #: errors and warnings so far (each occurrence, logged or held back)
        self.failures = 0
        self.slots: dict[SymbolKey, _Slot] = {}
        #: called with (key, message) when the exchange refuses a symbol (the process answers control callers)
        self.on_subscribe_failed: Callable[[SymbolKey | None, str], None] | None = None
        #: called with the key when a symbol's book first goes live (after a subscribe or a resync)
        self.on_synced: Callable[[SymbolKey], None] | None = None
        self._scratch: Publisher | None = None  # warm-up passes publish into it (see `warm`)
        #: the C fast lane publishing through this publisher's slots, if any (mdengine.feed.fastlane.attach)
        self.lane = None
        self._handlers: dict[type, Callable] = {
            BookChanged: self._book, TradesReceived: self._trades, BookInvalid: self._invalid,
            SymbolSynced: self._synced, SubscribeFailed: self._refused, ProtocolError: self._protocol,
            Notice: self._notice, PerpStatsUpdate: self._perp, LiquidationsReceived: self._liquidations,
            PerpInvalid: self._perp_invalid,
        }

    # ------------------------------------------------------------------ symbols
    def add(self, inst: Instrument) -> int:
        """Give `inst` a slot (its old one if it had one) and mark its book SYNCING."""
        slot = self.w.add_symbol(inst.market, inst.native, inst.unified, kind=inst.kind, tick_size=inst.tick_size,
                                 lot_size=inst.lot_size, contract_value=inst.contract_value)
        self.slots[inst.key] = _Slot(slot, inst, self.w.view.slot_base(slot))
        if self.lane is not None:
            self.lane.forget()  # its cached slot records are stale now
        self.w.publish_state(slot, _SYNCING)
        return slot

    def remove(self, key: SymbolKey) -> None:
        s = self.slots.pop(key, None)
        if s is not None:
            if self.lane is not None:
                self.lane.forget()
            self.w.remove_symbol(s.slot)

    def name(self, key: SymbolKey | None) -> str:
        s = self.slots.get(key) if key is not None else None
        return s.inst.unified if s is not None else ("-" if key is None else f"{key[1]}({key[0]})")

    def _failed(self, level: int, key: object, msg: str, *args: object) -> None:
        """Count a failure and log it (once per interval and key, see RepeatLog)."""
        self.failures += 1
        self.repeats(level, key, msg, *args)

    # ------------------------------------------------------------------ adapter events
    def on_event(self, ev: Event) -> None:
        self._handlers[ev.__class__](ev)

    def _book(self, ev: BookChanged) -> None:
        s = self.slots.get(ev.key)
        if s is None:
            return  # unsubscribed meanwhile
        book, depth, q = ev.book, self.depth, self.q
        try:
            if book.top_dirty or not s.levels_published or book.watch_depth != depth:
                self.w.publish_top(s.slot, book.pack_top, depth, update_id=book.update_id,
                                   exch_ts_ns=book.exch_ts_ns, recv_ts_ns=ev.recv_ts_ns, state=_LIVE,
                                   truncated=len(book.bids.keys) > depth or len(book.asks.keys) > depth)
                book.watch_depth = depth
                book.top_dirty = False
                s.levels_published = True
            else:  # only levels below the published depth changed
                self.w.publish_header(s.slot, update_id=book.update_id, exch_ts_ns=book.exch_ts_ns,
                                      recv_ts_ns=ev.recv_ts_ns, state=_LIVE)
        except _UNPUBLISHABLE as e:
            self._unpublishable(s, f"book u={book.update_id} ts={book.exch_ts_ns}", e)
            return
        q[_C["book_updates"]] += 1
        q[s.book_updates] += 1
        q[s.messages] += 1
        q[s.last_recv_ns] = ev.recv_ts_ns

    def _trades(self, ev: TradesReceived) -> None:
        s = self.slots.get(ev.key)
        if s is None:
            return
        try:
            n = self.w.append_trades(s.slot, ev.trades)
        except _UNPUBLISHABLE as e:
            self._unpublishable(s, f"{len(ev.trades)} trades", e)
            return
        q = self.q
        q[_C["trades"]] += n
        q[s.trades] += n
        q[s.messages] += 1

    def _perp(self, ev: PerpStatsUpdate) -> None:
        s = self.slots.get(ev.key)
        if s is None:
            return
        try:
            self.w.publish_perp(s.slot, exch_ts_ns=ev.exch_ts_ns, recv_ts_ns=ev.recv_ts_ns, confirms=ev.confirms,
                                group_recv_ns=ev.group_recv_ns, **ev.fields)
        except _UNPUBLISHABLE as e:  # includes a symbol without a perp record (a bug upstream: said, not hidden)
            self._unpublishable(s, f"perp stats {ev.fields}", e)
            return
        self.q[s.messages] += 1

    def _liquidations(self, ev: LiquidationsReceived) -> None:
        s = self.slots.get(ev.key)
        if s is None:
            return
        try:
            self.w.append_liquidations(s.slot, ev.liquidations)
        except _UNPUBLISHABLE as e:
            self._unpublishable(s, f"{len(ev.liquidations)} liquidations", e)
            return
        self.q[s.messages] += 1

    def _perp_invalid(self, ev: PerpInvalid) -> None:
        s = self.slots.get(ev.key)
        if s is not None and self.w.has_perp(s.slot):
            self.w.publish_perp_state(s.slot, _STALE)
            self.log.info("symbol=%s perp stream lost (%s); its record is stale until the next update",
                          s.inst.unified, ev.detail)

    def _unpublishable(self, s: _Slot, what: str, err: Exception) -> None:
        """Exchange data the store cannot hold (an id or a time past int64, a float id): nothing of it was written;
        counted as malformed and logged. A book stays as it is (its next update publishes it whole); the trades are
        lost."""
        self.q[_C["malformed"]] += 1
        self.w.record_error(f"{s.inst.unified} unpublishable {what}: {err}")
        self._failed(_ERROR, ("unpublishable", s.slot), "symbol=%s unpublishable %s: %s: %s", s.inst.unified, what,
                     type(err).__name__, err)

    def _invalid(self, ev: BookInvalid) -> None:
        s = self.slots.get(ev.key)
        q = self.q
        q[_C["resyncs"]] += 1
        counter = {"gap": "gaps", "checksum": "checksum_failures"}.get(ev.kind)
        if counter:
            q[_C[counter]] += 1
        elif ev.kind == "malformed":  # bad levels (mdengine.limits): a malformed frame as much as bad JSON is
            q[_C["malformed"]] += 1
        if s is not None:
            self.w.publish_state(s.slot, _RESYNCING)
            s.levels_published = False
            q[s.resyncs] += 1
            if counter:
                q[getattr(s, counter)] += 1
        if ev.kind in ("malformed", "crossed"):
            self.w.record_error(f"{self.name(ev.key)} {ev.kind}: {ev.detail}")
        self._failed(_WARNING, ("invalid", ev.key, ev.kind), "symbol=%s book invalid (%s): %s; resyncing",
                     self.name(ev.key), ev.kind, ev.detail)

    def _synced(self, ev: SymbolSynced) -> None:
        self.log.info("symbol=%s synced", self.name(ev.key))
        if self.on_synced is not None:
            self.on_synced(ev.key)

    def _refused(self, ev: SubscribeFailed) -> None:
        self.q[_C["subscribe_errors"]] += 1
        self.w.record_error(f"subscribe {self.name(ev.key)}: {ev.message}")
        self._failed(_ERROR, ("refused", ev.conn, ev.key), "conn=%s symbol=%s subscription failed: %s", ev.conn,
                     self.name(ev.key), ev.message)
        if ev.key is not None:
            self.remove(ev.key)
        if self.on_subscribe_failed is not None:
            self.on_subscribe_failed(ev.key, ev.message)

    def _protocol(self, ev: ProtocolError) -> None:
        if ev.malformed:
            self.q[_C["malformed"]] += 1
        self.w.record_error(f"{ev.conn}: {ev.message}")
        self._failed(_ERROR, ("protocol", ev.conn, ev.key), "conn=%s symbol=%s bad frame: %s", ev.conn,
                     self.name(ev.key), ev.message)

    def _notice(self, ev: Notice) -> None:
        self.log.info("conn=%s %s%s", ev.conn, ev.message, f" {ev.extra}" if ev.extra else "")

    # ------------------------------------------------------------------ warm-up
    def warm(self, events: list[Event]) -> bool:
        """One warm-up pass (FeedLoop, docs/feed.md "Warm-up"): its book and trade events go through the same
        publish code into a private one-slot segment. This feed's segment sees only the `warm_passes` count.
        Returns False when the pass met a verdict (a replayed gap, say) or a failure: the frame is not routine,
        and the loop stops replaying it."""
        self.q[_C["warm_passes"]] += 1
        scratch = self._scratch
        if scratch is None:
            writer = SegmentWriter.private(self.exchange, book_capacity=self.w.capacity)
            scratch = self._scratch = Publisher(writer, self.exchange, depth=self.depth, log=_SILENT)
        failures, clean = scratch.failures, True
        for ev in events:
            cls = ev.__class__
            if cls is not BookChanged and cls is not TradesReceived:
                clean = False  # verdicts on a scratch copy are nobody's business, and nothing worth warming
                continue
            if ev.key not in scratch.slots:  # every symbol shares the private segment's one slot
                s = self.slots.get(ev.key)
                if s is None:
                    continue
                if not scratch.slots:
                    scratch.add(s.inst)
                scratch.slots[ev.key] = _Slot(0, s.inst, scratch.w.view.slot_base(0))
            scratch.on_event(ev)
        return clean and scratch.failures == failures

    # ------------------------------------------------------------------ loop reports
    def received(self, frames: int, nbytes: int) -> None:
        q = self.q
        q[_C["messages"]] += frames
        q[_C["bytes_received"]] += nbytes

    def connected(self, conn: str, url: str, reconnect: bool) -> None:
        if reconnect:
            self.q[_C["reconnects"]] += 1
        self.log.info("conn=%s %s %s", conn, "reconnected to" if reconnect else "connected to", url)

    def connection_lost(self, conn: str, url: str, reason: str, requested: bool, symbols: list) -> None:
        names = ",".join(self.name(k) for k in symbols) or "-"
        if requested:
            self.log.info("conn=%s symbols=%s closed: %s", conn, names, reason)
            return
        self.w.record_error(f"{conn} lost: {reason}")
        self._failed(_WARNING, ("lost", conn), "conn=%s symbols=%s connection lost: %s", conn, names, reason)

    def connect_failed(self, conn: str, url: str, error: str, retry_in: float) -> None:
        self.w.record_error(f"{conn} connect: {error}")
        self._failed(_WARNING, ("connect", conn), "conn=%s connect to %s failed: %s; retrying in %.2fs", conn, url,
                     error, retry_in)

    def rest_done(self, url: str, status: int, error: str | None, retry_in: float | None) -> None:
        q = self.q
        q[_C["rest_requests"]] += 1
        if status == 200:
            return
        q[_C["rest_failures"]] += 1
        self.w.record_error(f"GET {status}: {error or ''}")
        then = f"retrying in {retry_in:.2f}s" if retry_in is not None else "not retried"
        self._failed(_WARNING, ("rest", url.partition("?")[0], status), "GET %s failed: HTTP %s %s; %s", url,
                     status or "(transport)", error, then)

    def subscribe_error(self, text: str) -> None:
        """A symbol we could not subscribe (unknown, no room): counted, logged, kept as the last error."""
        self.q[_C["subscribe_errors"]] += 1
        self.w.record_error(text)
        self._failed(_ERROR, ("subscribe", text), "%s", text)

    def record_failed(self, text: str) -> None:
        """The recorder could not write (call on the loop thread)."""
        self.q[_C["record_errors"]] += 1
        self.w.record_error(f"recorder: {text}")
        self._failed(_ERROR, "recorder", "recorder: %s", text)

    def heartbeat(self) -> None:
        self.w.heartbeat()
        self.repeats.flush()  # the counts of repeated lines whose interval is over

    def confirm(self, keys: list, recv_ns: int, perp_keys: list = ()) -> None:
        """A connection carrying the books of `keys` and the perp data of `perp_keys` received something at recv_ns
        (the loop's tick): readers' freshness, one word each, so one connection's silence stales only its data."""
        q, slots = self.q, self.slots
        for key in keys:
            s = slots.get(key)
            if s is not None and recv_ns > q[s.confirmed_ns]:  # never back (a symbol may change connection)
                q[s.confirmed_ns] = recv_ns
        for key in perp_keys:
            s = slots.get(key)
            if s is not None and s.inst.kind in _PERP_KINDS and recv_ns > q[s.perp_confirmed_ns]:
                q[s.perp_confirmed_ns] = recv_ns

    def error(self, text: str, key: object = None) -> None:
        """A feed error: recorded whole as the segment's last error, counted, logged (once per interval for each
        `key`, by default the text up to its second colon: where and what, without the details)."""
        self.w.record_error(text)
        self._failed(_ERROR, ("error", key if key is not None else ":".join(text.split(":", 2)[:2])), "%s", text)

    def close_lane(self) -> None:
        """Detach the fast lane (it releases the segment; the adapter then gets every frame)."""
        if self.lane is not None:
            self.lane.close()
            self.lane = None

    def close(self) -> None:
        """Every book this feed published goes STALE: nobody keeps it current any more."""
        self.close_lane()  # before the writer closes: the lane holds the segment's buffer
        for s in self.slots.values():
            self.w.publish_state(s.slot, _STALE)
            self.w.publish_perp_state(s.slot, _STALE)
        if self._scratch is not None:
            self._scratch.w.close()
            self._scratch = None
