"""Shared façade for exchanges whose WebSocket sends the book snapshot itself (OKX, Bybit, Bitget).

Each subclass says how symbols map onto connections and subscription frames and decodes its own
frames; this class owns the symbol registry, the connection bookkeeping and the common verdicts
(checksum, crossed book, per-symbol resync by resubscribing) so a failure touches one symbol only.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping

from ..core.events import (
    BookChanged,
    BookInvalid,
    Event,
    Notice,
    OpenConnection,
    ProtocolError,
    SubscribeFailed,
    SymbolKey,
    SymbolSynced,
)
from ..symbols import Instrument, InstrumentIndex
from ._sync import LIVE, SymbolSync
from .base import SCRATCH_CONN, Adapter, AdapterError

_TRADE_SEEN_MAX = 2048  # trade ids remembered per symbol for de-duplication (Bitget replays)
_MAX_PENDING = 1024  # request ids remembered for attributing error replies


class WsBookAdapter(Adapter):
    #: market names this exchange serves (Instrument.market values)
    MARKETS: tuple[str, ...] = ()
    #: symbols per connection (each uses 1-2 channels; exchanges advise < 30-50 channels per connection)
    SYMBOLS_PER_CONN = 15

    def __init__(self, instruments: InstrumentIndex, endpoints: Mapping[str, str] | None = None, *,
                 book_depth: int = 50, book_mode: str = "diff", trades: bool = True, perp: bool = True,
                 perp_stale_after_s: Mapping[str, float] | None = None) -> None:
        if book_mode not in ("diff", "partial"):
            raise ValueError(f"{self.exchange}: book_mode must be 'diff' or 'partial', got {book_mode!r}")
        super().__init__(instruments, endpoints, book_depth=book_depth, book_mode=book_mode, trades=trades,
                         perp=perp, perp_stale_after_s=perp_stale_after_s)
        self.syms: dict[SymbolKey, SymbolSync] = {}
        self._conns: dict[str, bool] = {}  # conn -> open; present once requested
        self._by_conn: dict[str, dict[SymbolKey, SymbolSync]] = {}
        self._alias: dict[str, SymbolSync] = {}  # exchange-specific lookup names (see `_aliases`)
        self._reqs: dict[str, tuple[str, str, list]] = {}  # request id -> (op, conn, what it asked for)
        self._next_id = 0

    # ------------------------------------------------------------------ exchange specifics
    @abstractmethod
    def _conn_group(self, inst: Instrument) -> str:
        """Connection-name prefix for `inst` (e.g. the Bybit category); numbered when full."""

    @abstractmethod
    def _url(self, conn: str) -> str: ...

    @abstractmethod
    def _book_channel(self, inst: Instrument) -> str: ...

    def _aliases(self, sym: SymbolSync) -> list[str]:
        """Names under which frames refer to `sym` (looked up in `self._alias`)."""
        return []

    def _request_id(self, op: str, conn: str, what: list) -> str:
        """A fresh request id, remembered (boundedly) so an error reply can be traced to what was asked."""
        self._next_id += 1
        rid = str(self._next_id)
        self._reqs[rid] = (op, conn, what)
        if len(self._reqs) > _MAX_PENDING:
            del self._reqs[next(iter(self._reqs))]
        return rid

    @abstractmethod
    def _sub_frames(self, conn: str, syms: list[SymbolSync], op: str, books_only: bool = False) -> list[Event]:
        """subscribe/unsubscribe frames (`op`) for the book (and trade) channels of `syms`."""

    # ------------------------------------------------------------------ subscriptions
    def _assign_conn(self, inst: Instrument) -> str:
        group = self._conn_group(inst)
        i = 0
        while True:
            conn = f"{group}-{i}"
            if len(self._by_conn.get(conn, ())) < self.SYMBOLS_PER_CONN:
                return conn
            i += 1

    def subscribe(self, inst: Instrument) -> list[Event]:
        if inst.market not in self.MARKETS:
            raise AdapterError(f"{self.exchange}: market {inst.market!r} of {inst.native} is not one of {self.MARKETS}")
        if inst.key in self.syms:
            return []
        conn = self._assign_conn(inst)
        sym = SymbolSync(inst, conn, self._book_channel(inst))
        self.syms[inst.key] = sym
        self.books[inst.key] = sym.book
        self._by_conn.setdefault(conn, {})[inst.key] = sym
        for name in self._aliases(sym):
            self._alias[name] = sym
        if conn not in self._conns:
            self._conns[conn] = False
            return [OpenConnection(conn, self._url(conn))]
        if not self._conns[conn]:
            return []  # on_open subscribes it
        sym.process("subscribe")
        return self._sub_frames(conn, [sym], "subscribe")

    def unsubscribe(self, key: SymbolKey) -> list[Event]:
        sym = self.syms.get(key)
        if sym is None:
            return []
        self._forget(sym)
        return self._sub_frames(sym.conn, [sym], "unsubscribe") if self._conns.get(sym.conn) else []

    # ------------------------------------------------------------------ connection events
    def on_open(self, conn: str) -> list[Event]:
        if conn not in self._conns:
            raise AdapterError(f"{self.exchange}: on_open for unknown connection {conn!r}")
        self._conns[conn] = True
        syms = list(self._by_conn.get(conn, {}).values())
        for s in syms:
            s.process("subscribe")
        return self._sub_frames(conn, syms, "subscribe") if syms else []

    def on_close(self, conn: str, reason: str) -> list[Event]:
        if conn not in self._conns:
            return []
        self._conns[conn] = False
        out: list[Event] = []
        for s in self._by_conn.get(conn, {}).values():
            if s.state == LIVE:
                out.append(BookInvalid(s.key, "disconnect", f"connection {conn} closed: {reason}"))
            s.process("close")
        return out

    def on_rest(self, request_id: str, status: int, body: bytes, recv_ns: int) -> list[Event]:
        return [Notice("rest", f"unexpected REST answer {request_id!r} (status {status})")]

    def symbols_on(self, conn: str) -> list[SymbolKey]:
        return list(self._by_conn.get(conn, {}))

    def is_live(self, key: SymbolKey) -> bool:
        s = self.syms.get(key)
        return s is not None and s.state == LIVE

    # ------------------------------------------------------------------ warm-up (see Adapter.warm)
    def _scratch(self, sym: SymbolSync, seq: int) -> SymbolSync:
        """A LIVE stand-in for `sym` holding a copy of its book, at sequence position `seq` (the one a replayed
        frame follows). Its connection is never open, so `_fail` on it queues no resubscribe; its trade memory
        starts empty. Only `LIVE` symbols get one: a syncing book has nothing worth warming."""
        s = SymbolSync(sym.inst, SCRATCH_CONN, sym.channel)
        s.book = sym.book.copy()
        s.state = LIVE
        s.ever_live = True
        s.seq = seq
        return s

    # ------------------------------------------------------------------ verdicts shared by subclasses
    def _fail(self, sym: SymbolSync, kind: str, detail: str) -> list[Event]:
        """Invalidate one symbol and resubscribe its book channel to get a fresh snapshot."""
        sym.process("fail")
        out: list[Event] = [BookInvalid(sym.key, kind, detail)]
        if self._conns.get(sym.conn):
            out += self._sub_frames(sym.conn, [sym], "unsubscribe", books_only=True)
            out += self._sub_frames(sym.conn, [sym], "subscribe", books_only=True)
        return out

    def _reset(self, sym: SymbolSync, detail: str) -> Event:
        """The exchange restarted the symbol's sequence and sent a snapshot with it: count it, no resubscribe
        (the caller applies that snapshot next, which reports SymbolSynced)."""
        sym.process("fail")
        return BookInvalid(sym.key, "reset", detail)

    def _bad_book(self, sym: SymbolSync, err: Exception, snapshot: bool) -> list[Event]:
        """An unreadable book frame: a live book has now missed an update (a gap), a syncing one its snapshot."""
        out: list[Event] = [ProtocolError(sym.conn, f"bad {sym.channel} frame: {err!r}", sym.key)]
        if sym.state == LIVE or snapshot:
            out += self._fail(sym, "gap", f"unreadable {sym.channel} frame")
        return out

    def _refused(self, sym: SymbolSync | None, conn: str, message: str) -> list[Event]:
        """The exchange refused `sym`: it is dropped here as the publisher drops its slot (a later subscribe
        may try again)."""
        if sym is None:
            return [SubscribeFailed(None, conn, message)]
        sym.process("refused")
        self._forget(sym)
        return [SubscribeFailed(sym.key, conn, message)]

    def _forget(self, sym: SymbolSync) -> None:
        self.syms.pop(sym.key, None)
        self.books.pop(sym.key, None)
        self._by_conn.get(sym.conn, {}).pop(sym.key, None)
        for name in self._aliases(sym):
            self._alias.pop(name, None)

    def _publish(self, sym: SymbolSync, recv_ns: int, checksum: int = 0, snapshot: bool = False) -> list[Event]:
        """Verdict after a whole message was applied: checksum (when sent), crossed book, then publish."""
        book = sym.book
        if checksum:
            local = book.checksum(25)
            if local != checksum:
                return self._fail(sym, "checksum", f"checksum {checksum} != local {local} at seq {sym.seq}")
        if book.is_crossed():
            return self._fail(sym, "crossed", f"best bid {book.bids.best()} >= best ask {book.asks.best()}")
        if snapshot and sym.state != LIVE:
            sym.process("snapshot")
            return [SymbolSynced(sym.key), BookChanged(sym.key, book, recv_ns)]
        return [BookChanged(sym.key, book, recv_ns)]

    def _new_trades(self, sym: SymbolSync, trades: Iterable[tuple[int, str, tuple]]) -> list[tuple]:
        """Drop trades already stored: `trades` yields (ts_ms, raw_id, record), oldest first. A trade is new
        unless its id was seen or it is older than the newest stored one (snapshot replays)."""
        out = []
        seen = sym.trade_seen
        for ts, raw, rec in trades:
            if raw in seen or ts < sym.trade_last_ts:
                continue
            if len(seen) >= _TRADE_SEEN_MAX:
                seen.clear()  # ts ordering still rejects old replays
            seen.add(raw)
            sym.trade_last_ts = ts
            out.append(rec)
        return out
