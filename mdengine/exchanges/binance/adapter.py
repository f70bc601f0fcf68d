"""Binance spot and USDⓈ-M futures (sans-I/O): combined streams, REST snapshots, diff-depth sync rules.

Facts from shared/notes/exchanges.md §1-2 (BN-SPOT HEAD a5e0bc3d of 2026-07-21, local-book procedure as
corrected 2025-11-12; BN-UM pages; BN-ANN "USDⓈ-M WebSocket URL architecture", early 2026).

Three layers, like wsproto: `on_frame` decodes a frame and routes it by stream name; `SymbolSync` keeps one
symbol's sync state machine (the transition table below) and its LocalBook; `BinanceAdapter` owns the
connections, stream names and subscription requests. Wire keys are renamed where they are read
(U/u/pu -> first/last/prev update id); nothing exchange-shaped leaves this module.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ...book import DepthSnapshot, LocalBook, SideLists, parse_depth_snapshot
from ...core.events import (
    BookChanged,
    BookInvalid,
    CloseConnection,
    Event,
    FetchRest,
    LiquidationsReceived,
    Notice,
    OpenConnection,
    PerpInvalid,
    PerpStatsUpdate,
    ProtocolError,
    Send,
    SubscribeFailed,
    SymbolKey,
    SymbolSynced,
    TradesReceived,
)
from ...core.types import Side
from ...limits import perp_fields, trade_numbers
from ...symbols import Instrument, InstrumentIndex
from .._sequencing import Chain, ChainKind
from ..base import PERP_STALE_SLACK_S, SCRATCH_CONN, Adapter, AdapterError
from . import instruments as _instruments
from . import limits as _limits
from .endpoints import DEFAULT_ENDPOINTS as _DEFAULT_ENDPOINTS
from .endpoints import SPOT, USDM
from .instruments import MARKETS

_loads = orjson.loads
_Requester = Callable[["SymbolSync"], FetchRest]  # makes the symbol's next snapshot request
_MS = 1_000_000
_BAD_INPUT = (KeyError, TypeError, ValueError, AttributeError, IndexError)

# ----------------------------------------------------------------------------- per-market rules
# connection groups: (market, route) -> URL path on the market's WS base. USDⓈ-M routes depth to /public and
# aggTrade to /market since 2026 (legacy URLs retired 2026-04-23), hence two connections there.
_GROUPS = {SPOT: ((SPOT, "/stream"),), USDM: (("usdm-public", "/public/stream"), ("usdm-market", "/market/stream"))}
_MAX_STREAMS = {SPOT: 1024, USDM: 200}  # per connection
_SEND_RATE = {SPOT: 4.0, USDM: 9.0}  # incoming msg/s limits are 5 and 10, pings and pongs included
# The server pings every 20 s (spot) / 3 min (USDⓈ-M); any frame resets the watchdog, so allow ~3 / ~1 pings.
_SILENCE = {SPOT: 60.0, USDM: 200.0}
_SUBSCRIBE_CHUNK = 200  # streams per SUBSCRIBE request
_BUFFER_MAX = 5000  # diffs buffered per symbol while its snapshot is in flight
# Binance closes every connection 24 h after it opened; a successor is opened well before and takes over once
# each of its depth streams has delivered (or _TAKEOVER_NS after its first frame: a quiet symbol's diffs then
# chain on the book or show a gap, which resyncs only that symbol).
ROTATE_AFTER_S = 23.5 * 3600
# Open interest is REST-only on Binance (weight 1 per request); polling may use at most this much of the IP's
# 2400-per-minute weight budget, so depth snapshots (weight 20 at limit 1000) keep the rest.
OPEN_INTEREST_WEIGHT_PER_MIN = 240
_TAKEOVER_NS = 30 * 1_000_000_000
# The chain rule of a LIVE book (exchanges.md §1-2): a spot diff's first id U is the last u plus one; a USDⓈ-M
# diff names the one before it in pu (U is not contiguous there).
SPOT_CHAIN = Chain(ChainKind.NEXT_ID)
USDM_CHAIN = Chain(ChainKind.PREV_ID)


# ----------------------------------------------------------------------------- the sync state machine
# Two rules, as in h11's _state.py:
# 1. A symbol's state changes only through `SymbolSync._to`, along an edge of _TRANSITIONS; any other move is a
#    bug in this module (AdapterError naming symbol, state and input), never the exchange's fault.
# 2. Bad exchange data is an input ("gap", "invalid"), not an exception: it moves that one symbol back to
#    AWAITING_SNAPSHOT and leaves every other symbol alone.
UNSYNCED = "UNSYNCED"  # subscribed; no diff seen yet (or the connection was lost)
AWAITING_SNAPSHOT = "AWAITING_SNAPSHOT"  # diffs are buffered while the REST snapshot is in flight
BRIDGING = "BRIDGING"  # snapshot applied, newer than every buffered diff: the next diff must bridge it
LIVE = "LIVE"  # synced and validated; every diff chains on the previous one

_TRANSITIONS: dict[tuple[str, str], str] = {
    (UNSYNCED, "diff"): AWAITING_SNAPSHOT,  # first diff: buffer it, fetch the snapshot
    (UNSYNCED, "partial"): LIVE,  # partial depth: every message is a whole top-N book
    (UNSYNCED, "close"): UNSYNCED,
    (AWAITING_SNAPSHOT, "diff"): AWAITING_SNAPSHOT,
    (AWAITING_SNAPSHOT, "stale_snapshot"): AWAITING_SNAPSHOT,  # older than the buffered stream: fetch on next diff
    (AWAITING_SNAPSHOT, "bridged"): LIVE,
    (AWAITING_SNAPSHOT, "ahead"): BRIDGING,
    (AWAITING_SNAPSHOT, "gap"): AWAITING_SNAPSHOT,  # the buffered diffs themselves break the chain
    (AWAITING_SNAPSHOT, "bad_snapshot"): UNSYNCED,  # the next diff fetches again (no tight refetch loop)
    (AWAITING_SNAPSHOT, "close"): UNSYNCED,
    (BRIDGING, "bridged"): LIVE,
    (BRIDGING, "gap"): AWAITING_SNAPSHOT,
    (BRIDGING, "invalid"): AWAITING_SNAPSHOT,
    (BRIDGING, "close"): UNSYNCED,
    (LIVE, "gap"): AWAITING_SNAPSHOT,
    (LIVE, "invalid"): AWAITING_SNAPSHOT,  # crossed book, malformed levels
    (LIVE, "partial"): LIVE,
    (LIVE, "bad_partial"): UNSYNCED,
    (UNSYNCED, "bad_partial"): UNSYNCED,
    (LIVE, "close"): UNSYNCED,
}


#: SymbolSync's members the feed's C fast lane reads or writes, by role (lane_spec()["members"])
_LANE_MEMBERS = {"state": "state", "book": "book", "applied": "applied", "last_trade": "last_trade", "chain": "chain"}


class SymbolSync:
    """One symbol's book and sync state. Spot: drop u <= last; bridge U <= last+1 <= u; chain U == last+1.
    USDⓈ-M: drop u < last; bridge U <= last <= u; chain pu == last (U is not contiguous there)."""

    __slots__ = ("key", "inst", "book", "futures", "chain", "state", "buffer", "request_id", "applied", "dropped",
                 "conn", "synced_once", "last_trade")

    def __init__(self, inst: Instrument, book: LocalBook, conn: str) -> None:
        self.key = inst.key
        self.inst = inst
        self.book = book
        self.futures = inst.market == USDM
        self.chain = USDM_CHAIN if self.futures else SPOT_CHAIN
        self.state = UNSYNCED
        self.buffer: deque[dict] = deque(maxlen=_BUFFER_MAX)
        self.request_id: str | None = None  # the snapshot request whose answer we wait for
        self.applied = 0  # diffs applied to the book
        self.dropped = 0  # diffs discarded as older than the book
        self.conn = conn  # the connection carrying its depth stream
        self.synced_once = False
        self.last_trade = -1  # id of the newest trade passed on: a rotation overlaps two connections' streams

    def _to(self, what: str) -> None:
        nxt = _TRANSITIONS.get((self.state, what))
        if nxt is None:
            raise AdapterError(f"binance {self.key}: no transition from {self.state} on {what!r}")
        self.state = nxt

    # -- sequencing predicates (the documented rules, in one place)
    def _old(self, d: dict, last: int) -> bool:
        return d["u"] < last if self.futures else d["u"] <= last

    def _bridges(self, d: dict, last: int) -> bool:
        if self.futures:
            return d["U"] <= last <= d["u"]
        return d["U"] <= last + 1 <= d["u"]

    def _chains(self, d: dict, last: int) -> bool:
        """`self.chain` for diff `d`: it comes right after `last`."""
        return self.chain.follows(last, d["u"], *_links(self.chain, d))

    def predecessor(self, d: dict) -> int | None:
        """The update id diff `d` follows, by `self.chain`."""
        return self.chain.predecessor(d["u"], *_links(self.chain, d))

    # -- inputs
    def on_diff(self, d: dict, recv_ns: int, make_request: _Requester) -> list[Event]:
        state = self.state
        if state is LIVE:
            book = self.book
            last = book.update_id
            u = d["u"]
            if u <= last:  # a duplicate or an event the book already holds
                if u.__class__ is not int:
                    raise TypeError(f"update id u={u!r}")
                self.dropped += 1
                return []
            if not self._chains(d, last):
                rule = (f"pu == {last}, got pu={d['pu']}" if self.chain.kind is ChainKind.PREV_ID
                        else f"U == {last + 1}, got U={d['U']}")
                return self._gap(d, f"expected {rule} (u={u})", make_request)
            return self._apply(d, recv_ns, make_request)
        if state is AWAITING_SNAPSHOT or state is UNSYNCED:
            if d["u"].__class__ is not int or d["U"].__class__ is not int:
                raise TypeError(f"update ids U={d['U']!r} u={d['u']!r}")
            self.buffer.append(d)
            self._to("diff")
            # First diff, or the last snapshot was stale: fetch now. Refetching on a diff, not on the stale
            # answer, bounds the REST rate by the stream's (weight 50 per spot snapshot).
            return [make_request(self)] if self.request_id is None else []
        # BRIDGING: the snapshot is newer than anything buffered
        last = self.book.update_id
        if self._old(d, last):
            self.dropped += 1
            return []
        if not self._bridges(d, last):
            return self._gap(d, f"snapshot {last} is older than the stream (U={d['U']})", make_request,
                             kind="stale_snapshot")
        return self._apply(d, recv_ns, make_request, bridge=True)

    def _apply(self, d: dict, recv_ns: int, make_request: _Requester, bridge: bool = False) -> list[Event]:
        book = self.book
        try:
            book.apply_update(d["b"], d["a"])
        except _BAD_INPUT as e:  # levels half-applied: the book is unusable until resynced
            return self._invalidate("malformed", f"bad levels in diff u={d.get('u')}: {e}", make_request)
        book.update_id = d["u"]
        book.exch_ts_ns = d["E"] * _MS
        self.applied += 1
        if book.is_crossed():
            return self.crossed(make_request)
        if bridge:
            self._to("bridged")
            return self._synced(recv_ns)
        return [BookChanged(self.key, book, recv_ns)]

    def crossed(self, make_request: _Requester) -> list[Event]:
        """The verdict on a diff that left the book crossed (already applied, at book.update_id)."""
        book = self.book
        return self._invalidate("crossed", f"best bid {book.bids.best()} >= best ask {book.asks.best()} "
                                           f"after u={book.update_id}", make_request)

    def _synced(self, recv_ns: int) -> list[Event]:
        self.synced_once = True
        return [SymbolSynced(self.key), BookChanged(self.key, self.book, recv_ns)]

    def _gap(self, d: dict, detail: str, make_request: _Requester, kind: str = "gap") -> list[Event]:
        self._to("gap")
        self.book.clear()
        self.buffer.clear()
        self.buffer.append(d)  # the diff that broke the chain starts the new buffer
        return [BookInvalid(self.key, kind, detail), make_request(self)]

    def _invalidate(self, kind: str, detail: str, make_request: _Requester) -> list[Event]:
        self._to("invalid")
        self.book.clear()
        self.buffer.clear()
        return [BookInvalid(self.key, kind, detail), make_request(self)]

    def on_snapshot(self, snap: Any, recv_ns: int, make_request: _Requester) -> list[Event]:
        """Apply a REST depth snapshot, as orjson parsed it, plus the buffered diffs (Binance's local-book
        procedure). Raises TypeError (or KeyError) for a snapshot of the wrong shape, before the book is touched."""
        last = snap["lastUpdateId"]
        bids, asks = snap["bids"], snap["asks"]
        if last.__class__ is not int or not isinstance(bids, list) or not isinstance(asks, list):
            raise TypeError(f"snapshot lastUpdateId={last!r}, bids/asks of types {type(bids).__name__}/"
                            f"{type(asks).__name__}")
        ts = snap.get("E")
        return self._snapshot(last, ts if ts.__class__ is int else None, bids, asks, False, recv_ns, make_request)

    def on_snapshot_sides(self, snap: DepthSnapshot, recv_ns: int, make_request: _Requester) -> list[Event]:
        """`on_snapshot` for a snapshot whose sides `parse_depth_snapshot` has already built."""
        last, ts, bids, asks = snap
        return self._snapshot(last, ts, bids, asks, True, recv_ns, make_request)

    def _snapshot(self, last: int, ts: int | None, bids: list | SideLists, asks: list | SideLists, built: bool,
                  recv_ns: int, make_request: _Requester) -> list[Event]:
        """Both paths of `on_snapshot` from here on; `built`: bids and asks are finished (keys, qty, raw) sides,
        else orjson's levels. ts is the snapshot's "E" (USDⓈ-M), None when absent or not an int."""
        buffered = [d for d in self.buffer if not self._old(d, last)]
        self.dropped += len(self.buffer) - len(buffered)
        if buffered and not self._bridges(buffered[0], last):
            # The snapshot predates the first diff we still hold: the diffs cannot be chained onto it.
            self.buffer = deque(buffered, maxlen=_BUFFER_MAX)
            self._to("stale_snapshot")  # the next diff fetches again
            return [BookInvalid(self.key, "stale_snapshot", f"snapshot {last} < first buffered U={buffered[0]['U']}")]
        book = self.book
        try:
            book.clear()
            if built:
                book.set_sides(bids, asks)
            else:
                book.apply_snapshot(bids, asks)
        except _BAD_INPUT as e:
            return self.on_bad_snapshot(f"bad snapshot levels: {e}")
        book.update_id = last
        if ts is not None:
            book.exch_ts_ns = ts * _MS
        self.buffer.clear()
        prev = None
        for i, d in enumerate(buffered):
            if prev is not None and not self._chains(d, prev):
                self._to("gap")
                book.clear()
                self.buffer.extend(buffered[i:])
                return [BookInvalid(self.key, "gap", f"buffered diff U={d['U']} does not follow u={prev}"),
                        make_request(self)]
            try:
                book.apply_update(d["b"], d["a"])
            except _BAD_INPUT as e:
                self._to("gap")
                book.clear()
                return [BookInvalid(self.key, "malformed", f"bad levels in buffered diff: {e}"), make_request(self)]
            book.update_id = prev = d["u"]
            book.exch_ts_ns = d["E"] * _MS
            self.applied += 1
        if prev is None:
            self._to("ahead")
            return []
        if book.is_crossed():
            self._to("gap")
            book.clear()
            return [BookInvalid(self.key, "crossed", "crossed after snapshot + buffered diffs"), make_request(self)]
        self._to("bridged")
        return self._synced(recv_ns)

    def on_partial(self, bids: list, asks: list, last: int, ts_ms: int, recv_ns: int) -> list[Event]:
        """A partial-depth message: the whole top-N book, applied as a snapshot if newer than the current one."""
        book = self.book
        if last.__class__ is not int:
            raise TypeError(f"partial depth update id {last!r}")
        if self.state is LIVE and last < book.update_id:
            self.dropped += 1
            return []
        try:
            book.apply_snapshot(bids, asks)
        except _BAD_INPUT as e:
            book.clear()
            self._to("bad_partial")
            return [ProtocolError(self.conn, f"bad partial depth levels: {e}", key=self.key)]
        book.update_id = last
        if ts_ms.__class__ is int:
            book.exch_ts_ns = ts_ms * _MS
        self.applied += 1
        first = self.state is not LIVE
        self._to("partial")
        if first:
            return self._synced(recv_ns)
        return [BookChanged(self.key, book, recv_ns)]

    def on_bad_snapshot(self, detail: str) -> list[Event]:
        self._to("bad_snapshot")
        self.book.clear()
        self.buffer.clear()
        return [ProtocolError(self.conn, detail, key=self.key)]

    def on_close(self, reason: str) -> list[Event]:
        was = self.state
        self._to("close")
        self.buffer.clear()
        self.request_id = None
        self.book.clear()
        if was is UNSYNCED:
            return []
        return [BookInvalid(self.key, "disconnect", reason)]


# ----------------------------------------------------------------------------- connections and routing
class _Conn:
    __slots__ = ("name", "url", "market", "slot", "streams", "open", "pending", "successor", "predecessor",
                 "unseen", "first_ns")

    def __init__(self, name: str, url: str, market: str, slot: tuple[str, int]) -> None:
        self.name = name
        self.url = url
        self.market = market
        self.slot = slot  # (group, index): the place this connection fills; a rotation hands it to a successor
        # stream name -> (symbol, _DEPTH/_PARTIAL/_TRADE), in subscription order. Per connection: spot and
        # USDⓈ-M use the same stream names ("btcusdt@depth@100ms").
        self.streams: dict[str, tuple[SymbolSync, int]] = {}
        self.open = False
        self.pending: dict[int, tuple[str, list[str]]] = {}  # request id -> (method, streams)
        # rotation (Binance cuts every connection after 24 h): the old connection points to its successor,
        # which takes over once each depth stream has spoken on it (`unseen` empty) or after _TAKEOVER_NS
        self.successor: str | None = None
        self.predecessor: str | None = None
        self.unseen: set[str] = set()
        self.first_ns = 0


class BinanceAdapter(Adapter):
    """Binance spot ("spot") and USDⓈ-M ("usdm"). USDⓈ-M symbols also get `<s>@markPrice@1s` (mark, index, funding
    rate, next funding time) and `<s>@forceOrder` (liquidations) on the /market route unless perp=False; open
    interest is polled over REST (open_interest_interval_s). Options: trade_stream ("trade" or "aggTrade", spot only),
    max_streams (streams per connection, to force splitting), snapshot_limit (REST depth levels; lighter in a
    start-up or resync storm, see limits.snapshot_limit), storm_weight (the weight per budget window a storm's
    snapshots may take; default limits.storm_weight, 20 % of the market's limit),
    rotate_after_s (replace a connection this long after it opened, before Binance's 24 h cut; 0: never)."""

    exchange = "binance"
    DEFAULT_ENDPOINTS: Mapping[str, str] = _DEFAULT_ENDPOINTS
    PERP_PUSH_EVERY_S = _limits.PERP_PUSH_EVERY_S  # markPrice@1s; open interest: see perp_stale_after

    def __init__(self, instruments: InstrumentIndex, endpoints: Mapping[str, str] | None = None, *,
                 book_depth: int = 50, book_mode: str = "diff", trades: bool = True, trade_stream: str = "trade",
                 max_streams: int | None = None, snapshot_limit: int = 1000, storm_weight: float | None = None,
                 rotate_after_s: float = ROTATE_AFTER_S, perp: bool = True,
                 open_interest_interval_s: float = 30.0, perp_stale_after_s: Mapping[str, float] | None = None) -> None:
        super().__init__(instruments, endpoints, book_depth=book_depth, book_mode=book_mode, trades=trades,
                         perp=perp, perp_stale_after_s=perp_stale_after_s)
        if book_mode not in ("diff", "partial"):
            raise ValueError(f"binance book_mode must be 'diff' or 'partial', not {book_mode!r}")
        if trade_stream not in ("trade", "aggTrade"):
            raise ValueError(f"binance trade_stream must be 'trade' or 'aggTrade', not {trade_stream!r}")
        if isinstance(rotate_after_s, bool) or not isinstance(rotate_after_s, int | float) or rotate_after_s < 0:
            raise ValueError(f"binance rotate_after_s must be a number of seconds >= 0 (0: never), not "
                             f"{rotate_after_s!r}")
        if isinstance(open_interest_interval_s, bool) or not isinstance(open_interest_interval_s, int | float) or \
                open_interest_interval_s < 0:
            raise ValueError(f"binance open_interest_interval_s must be a number of seconds >= 0 (0: never), not "
                             f"{open_interest_interval_s!r}")
        self.open_interest_interval_s = float(open_interest_interval_s)
        self._oi_next = 0.0  # monotonic s of the next open interest request
        self._oi_turn = 0  # which USDⓈ-M symbol is next
        self._oi_requests: dict[str, SymbolKey] = {}  # request id -> symbol
        self.trade_stream = trade_stream
        self.max_streams = max_streams
        self.rotate_after_s = float(rotate_after_s)
        self.snapshot_limit = snapshot_limit
        if storm_weight is not None and (isinstance(storm_weight, bool) or not isinstance(storm_weight, int | float)
                                         or not storm_weight > 0):
            raise ValueError(f"binance storm_weight must be a weight > 0, not {storm_weight!r}")
        self.storm_weight = None if storm_weight is None else float(storm_weight)
        self.partial_levels = 5 if book_depth <= 5 else 10 if book_depth <= 10 else 20
        self.syms: dict[SymbolKey, SymbolSync] = {}
        self._conns: dict[str, _Conn] = {}
        self._slots: dict[tuple[str, int], str] = {}  # (group, index) -> the connection filling it now
        self._rotating: set[str] = set()  # successors that have not taken over yet
        self.rotations = 0
        self._routes: dict[str, dict[str, tuple[SymbolSync, int]]] = {}  # conn -> its streams (_Conn.streams)
        self._streams_of: dict[SymbolKey, list[tuple[str, str]]] = {}  # symbol -> [(conn, stream)]
        self._next_id = 0
        self._requests: dict[str, SymbolSync] = {}  # snapshot request id -> symbol
        self._last_liquidation: dict[SymbolKey, tuple] = {}  # the latest forceOrder passed on, per symbol
        # symbols whose markPrice stream delivered since its connection opened: open interest merges into these only
        self._mark_live: set[SymbolKey] = set()

    # ------------------------------------------------------------------ instruments (instruments.py)
    @classmethod
    def instrument_requests(cls, endpoints: Mapping[str, str], markets: list[str] | None = None) -> list[Event]:
        return _instruments.requests(endpoints, markets)

    @classmethod
    def parse_instruments(cls, request_id: str, body: bytes) -> tuple[list[Instrument], list[Event]]:
        return _instruments.parse(request_id, body)

    @classmethod
    def native_instrument(cls, native: str, market: str | None = None) -> Instrument | None:
        return _instruments.native_instrument(native, market)

    @classmethod
    def sim_endpoints(cls, sim: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        out = {}
        if "binance-spot" in sim:
            out["spot_ws"], out["spot_rest"] = sim["binance-spot"]
        if "binance-usdm" in sim:
            out["usdm_ws"], out["usdm_rest"] = sim["binance-usdm"]
        return out

    # ------------------------------------------------------------------ subscriptions
    def _market_of(self, conn: str) -> str:
        return USDM if conn.startswith("usdm") else SPOT

    def _conn_for(self, group: str, path: str, market: str) -> _Conn:
        limit = self.max_streams or _MAX_STREAMS[market]
        i = 0
        while True:
            c = self._conns.get(self._slots.get((group, i), ""))  # during a rotation: the successor
            if c is None:
                name = f"{group}/{i}"
                base = self.endpoints[f"{market}_ws"].rstrip("/")
                c = self._conns[name] = _Conn(name, base + path, market, (group, i))
                self._routes[name] = c.streams
                self._slots[(group, i)] = name
                return c
            if len(c.streams) + 1 <= limit:
                return c
            i += 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _request(self, c: _Conn, method: str, streams: list[str]) -> list[Event]:
        out: list[Event] = []
        for i in range(0, len(streams), _SUBSCRIBE_CHUNK):
            chunk = streams[i:i + _SUBSCRIBE_CHUNK]
            rid = self._new_id()
            c.pending[rid] = (method, chunk)
            out.append(Send(c.name, orjson.dumps({"method": method, "params": chunk, "id": rid}).decode()))
        return out

    def subscribe(self, inst: Instrument) -> list[Event]:
        if inst.exchange != "binance" or inst.market not in MARKETS:
            raise AdapterError(f"binance cannot subscribe {inst.exchange} {inst.market} {inst.native}")
        if inst.key in self.syms:
            return []
        lower = inst.native.lower()
        groups = _GROUPS[inst.market]
        wanted: list[tuple[tuple[str, str], str, int]] = []
        if self.book_mode == "partial":
            wanted.append((groups[0], f"{lower}@depth{self.partial_levels}@100ms", _PARTIAL))
        else:
            wanted.append((groups[0], f"{lower}@depth@100ms", _DEPTH))
        if self.trades_enabled:
            stream = f"{lower}@{self.trade_stream if inst.market == SPOT else 'aggTrade'}"
            wanted.append((groups[-1], stream, _TRADE))
        if self.perp_enabled and inst.market == USDM:  # both on /market (exchanges.md §2.1)
            wanted.append((groups[-1], f"{lower}@markPrice@1s", _MARK))
            wanted.append((groups[-1], f"{lower}@forceOrder", _LIQUIDATION))
        book = self.books[inst.key] = LocalBook()
        sym: SymbolSync | None = None
        placed: list[tuple[str, str]] = []
        by_conn: dict[str, list[str]] = {}
        for (group, path), stream, kind in wanted:
            c = self._conn_for(group, path, inst.market)
            if sym is None:
                sym = self.syms[inst.key] = SymbolSync(inst, book, c.name)
            c.streams[stream] = (sym, kind)
            placed.append((c.name, stream))
            by_conn.setdefault(c.name, []).append(stream)
        self._streams_of[inst.key] = placed
        out: list[Event] = []
        for name, streams in by_conn.items():  # one request per connection: the rate limit counts messages
            c = self._conns[name]
            if c.open:
                out += self._request(c, "SUBSCRIBE", streams)
            elif len(c.streams) == len(streams):  # a new connection; on_open subscribes what it carries
                out.append(OpenConnection(c.name, c.url))
        return out

    def unsubscribe(self, key: SymbolKey) -> list[Event]:
        sym = self.syms.pop(key, None)
        if sym is None:
            return []
        self.books.pop(key, None)
        if sym.request_id is not None:
            self._requests.pop(sym.request_id, None)
        by_conn: dict[str, list[str]] = {}
        for conn, stream in self._streams_of.pop(key, []):
            by_conn.setdefault(conn, []).append(stream)
        out: list[Event] = []
        for conn, streams in by_conn.items():
            c = self._conns.get(conn)
            if c is None:
                continue
            for stream in streams:
                c.streams.pop(stream, None)
                c.unseen.discard(stream)
            if not c.streams:
                self._drop_conn(c)
                out.append(CloseConnection(conn, "no streams left", reconnect=False))
            elif c.open:
                out += self._request(c, "UNSUBSCRIBE", streams)
        return out

    def _drop_conn(self, c: _Conn) -> None:
        self._conns.pop(c.name, None)
        self._routes.pop(c.name, None)
        self._rotating.discard(c.name)
        self._rotation_routing()
        if self._slots.get(c.slot) == c.name:
            if c.predecessor is not None and c.predecessor in self._conns:
                self._slots[c.slot] = c.predecessor
            else:
                del self._slots[c.slot]
        for other in (c.successor, c.predecessor):
            partner = self._conns.get(other) if other is not None else None
            if partner is not None:
                if partner.successor == c.name:
                    partner.successor = None
                if partner.predecessor == c.name:
                    partner.predecessor = None
                    self._rotating.discard(partner.name)
                    self._rotation_routing()

    def _snapshot_request(self, sym: SymbolSync) -> FetchRest:
        if sym.request_id is not None:
            self._requests.pop(sym.request_id, None)
        market = sym.inst.market
        rid = f"depth:{market}:{sym.inst.native}:{self._new_id()}"
        sym.request_id = rid
        self._requests[rid] = sym
        base = self.endpoints[market + "_rest"].rstrip("/") + ("/api/v3/depth" if market == SPOT else "/fapi/v1/depth")
        # every book of this market still waiting for its snapshot is part of the storm, asked for or not yet
        storm = sum(1 for s in self.syms.values() if s.state is not LIVE and s.inst.market == market)
        limit = _limits.snapshot_limit(market, self.snapshot_limit, self.book_depth, max(storm, 1), self.storm_weight)
        url = f"{base}?symbol={sym.inst.native}&limit={limit}"
        return FetchRest(rid, url, sym.key)

    # ------------------------------------------------------------------ connection events
    def on_open(self, conn: str) -> list[Event]:
        c = self._conns.get(conn)
        if c is None:
            return [CloseConnection(conn, "connection no longer used", reconnect=False)]
        c.open = True
        c.pending.clear()
        return self._request(c, "SUBSCRIBE", list(c.streams)) if c.streams else []

    def on_close(self, conn: str, reason: str) -> list[Event]:
        c = self._conns.get(conn)
        if c is None:
            return []
        c.open = False
        c.pending.clear()
        if c.successor is not None or c.predecessor is not None:
            return self._rotation_lost(c, reason)
        out: list[Event] = []
        for sym, kind in c.streams.values():
            if kind in (_DEPTH, _PARTIAL):
                if sym.request_id is not None:
                    self._requests.pop(sym.request_id, None)
                out += sym.on_close(reason)
            elif kind == _MARK:
                self._mark_live.discard(sym.key)
                out.append(PerpInvalid(sym.key, f"{conn} closed: {reason}"))
        return out

    def _on_frame_rotating(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        """`on_frame` while a successor has not taken over (installed on the instance, so the usual path pays
        nothing for rotations)."""
        events = BinanceAdapter.on_frame(self, conn, data, recv_ns)
        if conn in self._rotating:
            return events + self._maybe_take_over(conn, data, recv_ns)
        return events

    def _rotation_routing(self) -> None:
        if self._rotating:
            self.on_frame = self._on_frame_rotating  # type: ignore[method-assign]
        else:
            self.__dict__.pop("on_frame", None)

    def on_frame(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        try:
            obj = _loads(data)
        except orjson.JSONDecodeError as e:
            return [ProtocolError(conn, f"invalid JSON ({e}): {_excerpt(data)}")]
        key = None
        try:
            if obj.__class__ is dict:
                stream = obj.get("stream")
                if stream is not None:
                    routes = self._routes.get(conn)
                    route = routes.get(stream) if routes is not None else None
                    if route is None:
                        if stream == "!serverShutdown":
                            return _shutdown(conn)
                        return []  # not (or no longer) subscribed: Binance sends a few after UNSUBSCRIBE
                    sym, kind = route
                    key = sym.key
                    d = obj["data"]
                    if kind == _DEPTH:
                        return sym.on_diff(d, recv_ns, self._snapshot_request)
                    if kind == _TRADE:
                        return self._on_trade(sym, d, recv_ns)
                    if kind == _MARK:
                        events = _on_mark_price(key, d, recv_ns)
                        self._mark_live.add(key)
                        return events
                    if kind == _LIQUIDATION:
                        return self._on_force_order(sym.key, d, recv_ns)
                    if sym.futures:
                        return sym.on_partial(d["b"], d["a"], d["u"], d.get("E"), recv_ns)
                    return sym.on_partial(d["bids"], d["asks"], d["lastUpdateId"], None, recv_ns)
                if "id" in obj or "code" in obj:
                    return self._on_control(conn, obj)
                if obj.get("e") == "serverShutdown":
                    return _shutdown(conn)
            return [ProtocolError(conn, f"unexpected frame: {_excerpt(data)}")]
        except _BAD_INPUT as e:
            return [ProtocolError(conn, f"{type(e).__name__}: {e} in {_excerpt(data)}", key=key)]

    def warm(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        try:
            obj = _loads(data)
            sym, kind = self._routes[conn][obj["stream"]]
            if sym.state is not LIVE or kind in (_MARK, _LIQUIDATION):  # books and trades only
                return []
            d = obj["data"]
            # A LIVE stand-in holding a copy of the book; its snapshot requests go nowhere (see _no_request).
            scratch = SymbolSync(sym.inst, sym.book.copy(), SCRATCH_CONN)
            scratch.state = LIVE
            if kind == _DEPTH:
                if d["u"] != sym.book.update_id:
                    return []  # not the diff that made the current book (a duplicate, say): nothing to replay
                prior = sym.predecessor(d)
                if prior is None:
                    return []
                scratch.book.update_id = prior  # as the diff after the copy's id
                return scratch.on_diff(d, recv_ns, _no_request)
            if kind == _TRADE:
                return self._on_trade(scratch, d, recv_ns)
            if sym.futures:
                return scratch.on_partial(d["b"], d["a"], d["u"], d.get("E"), recv_ns)
            return scratch.on_partial(d["bids"], d["asks"], d["lastUpdateId"], None, recv_ns)
        except _BAD_INPUT:  # orjson's JSONDecodeError is a ValueError
            return []

    def lane_spec(self) -> dict[str, Any]:
        """See Adapter.lane_spec: the lane reads `_routes` as on_frame does, takes LIVE diffs that chain and trades
        newer than `last_trade`, and hands a crossed book to SymbolSync.crossed."""
        return {"exchange": "binance", "routes": self._routes, "live": LIVE, "kinds": (_DEPTH, _TRADE),
                "chains": (SPOT_CHAIN, USDM_CHAIN),
                "symbol": SymbolSync, "members": _LANE_MEMBERS,
                "verdict": lambda sym, recv_ns, checksum: sym.crossed(self._snapshot_request)}

    def _on_trade(self, sym: SymbolSync, d: dict, recv_ns: int) -> list[Event]:
        e = d["e"]
        if e == "trade":
            tid = d["t"]
        elif e == "aggTrade":
            tid = d["a"]
        else:
            raise ValueError(f"unexpected trade event {e!r}")
        if tid.__class__ is not int:
            raise TypeError(f"trade id {tid!r}")
        if tid <= sym.last_trade:  # already passed on (both connections carry it during a rotation)
            return []
        px, qty = trade_numbers(d["p"], d["q"])  # a bad number raises before the trade counts as passed on
        sym.last_trade = tid
        side = Side.SELL if d["m"] else Side.BUY  # m: the buyer was the maker, so the taker sold
        return [TradesReceived(sym.key, [(d["T"] * _MS, recv_ns, px, qty, tid, side, 0)])]

    def _on_force_order(self, key: SymbolKey, d: dict, recv_ns: int) -> list[Event]:
        """A forceOrder (BN-UM "Liquidation Order Streams"): o.S the liquidation order's side, o.p its price, o.q
        its quantity, o.T its time in ms. Binance pushes at most the latest one per symbol per 1000 ms. One that is
        not newer than the last passed on (both connections carry it during a rotation) is dropped."""
        if d["e"] != "forceOrder":
            raise ValueError(f"unexpected liquidation event {d['e']!r}")
        o = d["o"]
        px, qty = trade_numbers(o["p"], o["q"])
        ts, side = o["T"] * _MS, _LIQUIDATION_SIDES[o["S"]]
        record = (ts, recv_ns, px, qty, 0, side, 0)
        last = self._last_liquidation.get(key)
        if last is not None and (ts < last[0] or (ts, px, qty, side) == last):
            return []
        self._last_liquidation[key] = (ts, px, qty, side)
        return [LiquidationsReceived(key, [record])]

    def _on_control(self, conn: str, obj: dict) -> list[Event]:
        c = self._conns.get(conn)
        rid = obj.get("id")
        req = c.pending.pop(rid, None) if c is not None and rid.__class__ is int else None
        if "code" not in obj:
            result = obj.get("result")
            if result is not None:
                return [Notice(conn, f"reply to request {rid}", {"result": result})]
            return []  # {"result": null, "id": n}: an ack
        message = f"code {obj['code']}: {obj.get('msg')}"
        if req is None:
            return [SubscribeFailed(None, conn, message)]
        method, streams = req
        if method != "SUBSCRIBE":
            return [Notice(conn, f"{method} {streams} failed: {message}")]
        keys = list(dict.fromkeys(c.streams[s][0].key for s in streams if s in c.streams))
        if len(keys) > 1:  # one bad symbol refuses the whole request: ask again one symbol at a time
            out: list[Event] = [Notice(conn, f"SUBSCRIBE of {len(keys)} symbols refused ({message}); retrying "
                                             "one by one")]
            for k in keys:
                out += self._request(c, "SUBSCRIBE", [s for s in streams if s in c.streams
                                                      and c.streams[s][0].key == k])
            return out
        perp = [s for s in streams if s in c.streams and c.streams[s][1] in (_MARK, _LIQUIDATION)]
        if perp and len(perp) < len(streams):  # perp streams refused with trades: ask for each part on its own
            rest = [s for s in streams if s in c.streams and s not in perp]
            return [Notice(conn, f"SUBSCRIBE {streams} refused ({message}); retrying the perp streams apart"),
                    *self._request(c, "SUBSCRIBE", rest), *self._request(c, "SUBSCRIBE", perp)]
        if perp:  # only the perp streams are refused: the books and trades stay; the perp record stays absent
            for s in perp:
                c.streams.pop(s, None)
                c.unseen.discard(s)
            out = [SubscribeFailed(None, conn, f"perp streams {', '.join(perp)} refused ({message}); books kept")]
            for k in keys:
                self._streams_of[k] = [(n, s) for n, s in self._streams_of.get(k, []) if s not in perp]
                self._mark_live.discard(k)
                out.append(PerpInvalid(k, f"perp streams refused: {message}"))
            return out
        out = []
        for k in keys:
            out.append(SubscribeFailed(k, conn, message))
            out += self.unsubscribe(k)
        return out or [SubscribeFailed(None, conn, message)]

    # ------------------------------------------------------------------ open interest (REST only on Binance)
    def open_interest_period(self, n_symbols: int) -> float:
        """Seconds between two polls of one symbol's open interest with n_symbols USDⓈ-M symbols (0: never)."""
        if self.open_interest_interval_s <= 0:
            return 0.0
        return max(self.open_interest_interval_s, max(n_symbols, 1) * 60.0 / OPEN_INTEREST_WEIGHT_PER_MIN)

    def perp_stale_after(self, n_symbols: int = 1) -> dict[str, float]:
        """The markPrice groups as documented, and open interest after two poll periods (layout 1.6)."""
        out = super().perp_stale_after(n_symbols)
        period = self.open_interest_period(n_symbols)
        if period and "open_interest" not in self.perp_stale_after_override:
            out["open_interest"] = 2 * period + PERP_STALE_SLACK_S
        return out

    def poll(self, now: float) -> list[Event]:
        """One open interest request when due, the USDⓈ-M symbols taking turns: each symbol every
        open_interest_interval_s, or less often when that would exceed OPEN_INTEREST_WEIGHT_PER_MIN."""
        if not self.perp_enabled or self.open_interest_interval_s <= 0 or now < self._oi_next:
            return []
        perps = [sym for key, sym in self.syms.items() if key[0] == USDM]
        if not perps:
            self._oi_next = now + 1.0
            return []
        per_request = max(self.open_interest_interval_s / len(perps), 60.0 / OPEN_INTEREST_WEIGHT_PER_MIN)
        self._oi_next = now + per_request
        sym = perps[self._oi_turn % len(perps)]
        self._oi_turn += 1
        if len(self._oi_requests) >= len(perps):  # answers are outstanding (a slow or failing REST): wait
            return []
        rid = f"oi:{sym.inst.native}:{self._new_id()}"
        self._oi_requests[rid] = sym.key
        url = f"{self.endpoints[USDM + '_rest'].rstrip('/')}/fapi/v1/openInterest?symbol={sym.inst.native}"
        return [FetchRest(rid, url, sym.key)]

    def _on_open_interest(self, key: SymbolKey, status: int, body: bytes, recv_ns: int) -> list[Event]:
        """{"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011} (BN-UM "Open Interest")."""
        if key not in self.syms or key not in self._mark_live:
            return []  # unsubscribed meanwhile, or its markPrice stream is not live: the record stays stale
        if status != 200:
            text = body[:200].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:200]
            return [Notice("rest", f"open interest of {key[1]}: HTTP {status}: {text}")]
        try:
            d = _loads(body)
            if d["symbol"] != key[1]:
                raise ValueError(f"answer for {d['symbol']!r}")
            fields = perp_fields(open_interest=d["openInterest"])
            # no times of its own: the record's age stays the markPrice stream's, so its silence still shows; the
            # open interest group alone is dated by the answer (layout 1.6), so a failing poll shows too
            return [PerpStatsUpdate(key, fields, 0, 0, group_recv_ns=recv_ns)]
        except (*_BAD_INPUT, orjson.JSONDecodeError) as e:
            return [ProtocolError("rest", f"bad open interest answer: {type(e).__name__}: {e}: {_excerpt(body)}",
                                  key=key)]

    def on_rest(self, request_id: str, status: int, body: bytes, recv_ns: int) -> list[Event]:
        oi_key = self._oi_requests.pop(request_id, None)
        if oi_key is not None:
            return self._on_open_interest(oi_key, status, body, recv_ns)
        sym = self._requests.pop(request_id, None)
        if sym is None or sym.request_id != request_id:
            return []  # answer to a request superseded by a newer one, or for a symbol since dropped
        sym.request_id = None
        if status != 200:
            text = body[:200].decode("utf-8", "replace") if isinstance(body, bytes) else str(body)[:200]
            out: list[Event] = [SubscribeFailed(sym.key, sym.conn, f"depth snapshot HTTP {status}: {text}")]
            return out + self.unsubscribe(sym.key)
        if sym.state is not AWAITING_SNAPSHOT:
            return []
        try:
            # The C reader first (several times cheaper: no per-level lists, no sort); None means "not the plain
            # shape", and orjson's path then decides, errors included.
            snap = parse_depth_snapshot(body)
            if snap is not None:
                return sym.on_snapshot_sides(snap, recv_ns, self._snapshot_request)
            return sym.on_snapshot(_loads(body), recv_ns, self._snapshot_request)
        except (*_BAD_INPUT, orjson.JSONDecodeError) as e:  # raised before the book was touched
            return sym.on_bad_snapshot(f"bad depth snapshot: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ rotation (the 24 h limit)
    def rotate_after(self, conn: str) -> float:
        c = self._conns.get(conn)
        return self.rotate_after_s if c is not None and c.successor is None and c.predecessor is None else 0.0

    def on_rotate(self, conn: str) -> list[Event]:
        """Open a successor with the same streams. Depth diffs arriving on both are applied once (the sync
        rules drop u <= last), trades once (by id); the old connection is closed when the successor has taken
        over. If either connection drops meanwhile, the other carries on (see `_rotation_lost`)."""
        c = self._conns.get(conn)
        if c is None or not c.open or c.successor is not None or c.predecessor is not None or not c.streams:
            return []
        self.rotations += 1
        name = f"{c.slot[0]}/{c.slot[1]}.{self.rotations}"
        new = _Conn(name, c.url, c.market, c.slot)
        new.streams.update(c.streams)
        new.predecessor, c.successor = conn, name
        # the book streams (a quiet symbol's forceOrder may stay silent for hours; trades are deduplicated by id)
        new.unseen = {stream for stream, (_, kind) in c.streams.items() if kind in (_DEPTH, _PARTIAL)}
        self._conns[name] = new
        self._routes[name] = new.streams
        self._slots[c.slot] = name
        self._rotating.add(name)
        self._rotation_routing()
        for placed in self._streams_of.values():
            placed += [(name, stream) for cn, stream in placed if cn == conn]
        return [Notice(conn, f"opening {name} to replace this connection before Binance's 24 h limit"),
                OpenConnection(name, new.url)]

    def _maybe_take_over(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        new = self._conns[conn]
        if not new.first_ns:
            new.first_ns = recv_ns
        if new.unseen:  # parsed a second time, but only on a successor and only until it takes over
            try:
                obj = _loads(data)
                new.unseen.discard(obj.get("stream") if obj.__class__ is dict else None)
            except orjson.JSONDecodeError:
                pass
        if new.unseen and recv_ns - new.first_ns < _TAKEOVER_NS:
            return []
        return self._take_over(new)

    def _take_over(self, new: _Conn) -> list[Event]:
        """The successor carries everything: forget the old connection and close it."""
        old_name = new.predecessor
        new.predecessor = None
        new.unseen.clear()
        self._rotating.discard(new.name)
        self._rotation_routing()
        old = self._conns.pop(old_name, None) if old_name is not None else None
        self._routes.pop(old_name, None)
        for sym, _ in new.streams.values():
            if sym.conn == old_name:
                sym.conn = new.name
        for placed in self._streams_of.values():
            placed[:] = [(cn, stream) for cn, stream in placed if cn != old_name]
        if old is None:
            return []
        return [Notice(new.name, f"took over from {old_name}"),
                CloseConnection(old_name, "replaced by a fresh connection (24 h limit)", reconnect=False)]

    def _rotation_lost(self, c: _Conn, reason: str) -> list[Event]:
        """A connection in the middle of a rotation dropped: the other one carries on alone."""
        if c.successor is not None:  # the old one: the successor takes over now if it is up
            new = self._conns.get(c.successor)
            if new is not None and new.open:
                return self._take_over(new)
            if new is not None:  # the successor is not up yet: give it up, reconnect the old one as usual
                self._fold_back(new, c)
                out: list[Event] = [CloseConnection(new.name, "rotation abandoned", reconnect=False)]
                return out + self.on_close(c.name, reason)
            c.successor = None
            return self.on_close(c.name, reason)
        # the successor dropped before it took over: the old connection carries on with every stream
        old = self._conns.get(c.predecessor) if c.predecessor is not None else None
        moved = self._fold_back(c, old) if old is not None else []
        out = [Notice(c.name, f"rotation abandoned ({reason}); the old connection carries on"),
               CloseConnection(c.name, "rotation abandoned", reconnect=False)]
        if old is not None and old.open and moved:
            out += self._request(old, "SUBSCRIBE", moved)
        return out

    def _fold_back(self, new: _Conn, old: _Conn) -> list[str]:
        """Abandon successor `new`: streams subscribed on it alone (during the rotation) move to `old`.
        Returns the streams moved."""
        moved = [stream for stream in new.streams if stream not in old.streams]
        for stream in moved:
            old.streams[stream] = new.streams[stream]
            new.streams[stream][0].conn = old.name
        for placed in self._streams_of.values():
            placed[:] = list(dict.fromkeys((old.name if cn == new.name else cn, stream) for cn, stream in placed))
        self._drop_conn(new)
        old.successor = None
        self._slots[old.slot] = old.name
        return moved

    # ------------------------------------------------------------------ heartbeats, limits, introspection
    def silence_timeout(self, conn: str) -> float:
        return _SILENCE[self._market_of(conn)]

    def send_rate(self, conn: str) -> float:
        return _SEND_RATE[self._market_of(conn)]

    def symbols_on(self, conn: str) -> list[SymbolKey]:
        c = self._conns.get(conn)
        return list(dict.fromkeys(sym.key for sym, _ in c.streams.values())) if c is not None else []

    def freshness_on(self, conn: str) -> tuple[list[SymbolKey], list[SymbolKey]]:
        """USDⓈ-M books ride /public, perp data /market: each connection confirms only what it carries."""
        c = self._conns.get(conn)
        if c is None:
            return [], []
        books = [sym.key for sym, kind in c.streams.values() if kind in (_DEPTH, _PARTIAL)]
        perps = [sym.key for sym, kind in c.streams.values() if kind in (_MARK, _LIQUIDATION)]
        return books, perps

    def is_live(self, key: SymbolKey) -> bool:
        sym = self.syms.get(key)
        return sym is not None and sym.state is LIVE


_DEPTH, _PARTIAL, _TRADE, _MARK, _LIQUIDATION = 0, 1, 2, 3, 4
_LIQUIDATION_SIDES = {"BUY": Side.BUY, "SELL": Side.SELL}


def _on_mark_price(key: SymbolKey, d: dict, recv_ns: int) -> list[Event]:
    """A markPriceUpdate (exchanges.md §2; BN-UM "Mark Price Stream"): p mark, i index, r funding rate ("" for a
    delivery contract), T next funding time in ms (0 for a delivery contract), E event time. Binance announces no
    next rate; P, the estimated settle price, is not kept."""
    if d["e"] != "markPriceUpdate":
        raise ValueError(f"unexpected mark price event {d['e']!r}")
    fields = perp_fields(mark_price=d["p"], index_price=d.get("i"), funding_rate=d.get("r"),
                         next_funding_ms=d.get("T"))
    return [PerpStatsUpdate(key, fields, d["E"] * _MS, recv_ns)]




def _links(chain: Chain, d: dict) -> tuple[int | None, int | None]:
    """The ids by which diff `d` names its place in `chain`: (U, None) for NEXT_ID, (None, pu) for PREV_ID."""
    return (d["U"], None) if chain.kind is ChainKind.NEXT_ID else (None, d["pu"])


def _no_request(sym: SymbolSync) -> FetchRest:
    """A scratch symbol's snapshot request: an event like the real one, but no request id is remembered."""
    return FetchRest(SCRATCH_CONN, "", sym.key)


def _shutdown(conn: str) -> list[Event]:
    return [Notice(conn, "serverShutdown: reconnecting"), CloseConnection(conn, "serverShutdown", reconnect=True)]


def _excerpt(data: Any, n: int = 120) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data[:n]).decode("utf-8", "replace")
    s = data if isinstance(data, str) else repr(data)
    return s if len(s) <= n else s[:n] + "..."


ADAPTER = BinanceAdapter
