"""Bybit v5 public market data (sans-I/O). Protocol facts: shared/notes/exchanges.md §4.

One connection per category (`/v5/public/spot|linear|inverse`; markets "spot", "linear", "inverse").
Books: `orderbook.{50,200,1000}.{symbol}` by depth, `orderbook.1` in partial mode (snapshot-only).
Any snapshot replaces the book; `u == 1` means the service restarted (overwrite, even on a delta).
Deltas must carry `u == last u + 1` (BY-DOC topic docs say the id is "normally continuous", reset only
by a `u = 1` restart; the 2026-07-24 docs promise +1 explicitly only for orderbook.full): a jump is a
gap and that topic alone is unsubscribed and subscribed again for a fresh snapshot. A delta with
`u <= last` is a duplicate and is dropped.
Trades: `publicTrade.{symbol}`; ids are numeric on spot (stored as is) and UUIDs on derivatives
(stored as a 63-bit hash with TradeFlags.ID_HASHED).
Perpetual data (linear and inverse, unless perp=False; BY-DOC `websocket/public/ticker.mdx`, `all-liquidation.mdx`):
`tickers.{symbol}` gives mark, index, funding rate, next funding time and open interest, a snapshot then deltas that
carry only what changed (the store merges them into the record); Bybit announces no next rate.
`allLiquidation.{symbol}` gives liquidations; its `S` is the liquidated position's side (Buy: a long), so the
liquidation order, which we store, is the other side. Neither topic is in `_alias`: the fast lane never sees them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ...core.events import (
    Event,
    LiquidationsReceived,
    Notice,
    PerpInvalid,
    PerpStatsUpdate,
    ProtocolError,
    Send,
    SubscribeFailed,
    SymbolKey,
    TradesReceived,
)
from ...core.types import PERP_GROUPS as _PERP_GROUPS
from ...core.types import Side
from ...limits import perp_fields, trade_numbers
from ...symbols import Instrument
from .._sequencing import Chain, ChainKind
from .._sync import LANE_MEMBERS, LIVE, SymbolSync
from .._wire import chunks, dumps_str, loads, trade_id
from .._wsbook import WsBookAdapter
from . import instruments as _instruments
from .endpoints import DEFAULT_ENDPOINTS as _DEFAULT_ENDPOINTS

_MS = 1_000_000
_MAX_ARGS = 10  # spot's per-request limit; used for every category
_TOPIC_RE = re.compile(r"\[([^\]]+)\]")
_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
#: a delta follows the last when its `u` is the last plus one (`u` is both its first and its new id)
CHAIN = Chain(ChainKind.NEXT_ID)
_PERP_MARKETS = ("linear", "inverse")
#: allLiquidation's S is the liquidated position's side; the liquidation order is the opposite
_LIQUIDATION_ORDER_SIDE = {"Buy": Side.SELL, "Sell": Side.BUY}


class BybitAdapter(WsBookAdapter):
    exchange = "bybit"
    DEFAULT_ENDPOINTS = _DEFAULT_ENDPOINTS
    MARKETS = _instruments.MARKETS
    SYMBOLS_PER_CONN = 50

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        #: "<category>|<perp topic>" -> symbol: apart from `_alias`, which the fast lane reads
        self._perp_alias: dict[str, SymbolSync] = {}
        self._perp_seen: set[SymbolKey] = set()  # symbols whose ticker data arrived since their connection opened

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
        ws, rest = sim["bybit"]
        return {"ws": ws, "rest": rest}

    # ------------------------------------------------------------------ connections and subscriptions
    def _conn_group(self, inst: Instrument) -> str:
        return inst.market

    def _url(self, conn: str) -> str:
        return f"{self.endpoints['ws'].rstrip('/')}/v5/public/{_category(conn)}"

    def _book_channel(self, inst: Instrument) -> str:
        if self.book_mode == "partial":
            depth = 1
        else:
            depth = 50 if self.book_depth <= 50 else 200 if self.book_depth <= 200 else 1000
        return f"orderbook.{depth}.{inst.native}"

    def _aliases(self, sym: SymbolSync) -> list[str]:
        market, native = sym.key  # topics repeat across categories: "<category>|<topic>"
        return [f"{market}|{sym.channel}", f"{market}|publicTrade.{native}"]

    def _perp_topics(self, sym: SymbolSync) -> list[str]:
        if not self.perp_enabled or sym.inst.market not in _PERP_MARKETS:
            return []
        return [f"tickers.{sym.inst.native}", f"allLiquidation.{sym.inst.native}"]

    def subscribe(self, inst: Instrument) -> list[Event]:
        out = super().subscribe(inst)
        sym = self.syms.get(inst.key)
        if sym is not None:
            for topic in self._perp_topics(sym):
                self._perp_alias[f"{inst.market}|{topic}"] = sym
        return out

    def _forget(self, sym: SymbolSync) -> None:
        super()._forget(sym)
        for topic in self._perp_topics(sym):
            self._perp_alias.pop(f"{sym.inst.market}|{topic}", None)

    def on_close(self, conn: str, reason: str) -> list[Event]:
        out = super().on_close(conn, reason)
        for key in self._by_conn.get(conn, {}):
            if key in self._perp_seen:
                self._perp_seen.discard(key)
                out.append(PerpInvalid(key, f"connection {conn} closed: {reason}"))
        return out

    def _sub_frames(self, conn: str, syms: list[SymbolSync], op: str, books_only: bool = False) -> list[Event]:
        topics = []
        for s in syms:
            topics.append(s.channel)
            if self.trades_enabled and not books_only:
                topics.append(f"publicTrade.{s.inst.native}")
            if not books_only:
                topics += self._perp_topics(s)
        return [self._request(conn, op, list(part)) for part in chunks(topics, _MAX_ARGS)]

    def _request(self, conn: str, op: str, topics: list[str]) -> Send:
        rid = self._request_id(op, conn, topics)
        return Send(conn, dumps_str({"req_id": rid, "op": op, "args": topics}))

    def ping_interval(self, conn: str) -> float:
        return 20.0

    def ping_payload(self, conn: str) -> str | None:
        return '{"op":"ping"}'

    def silence_timeout(self, conn: str) -> float:
        return 30.0  # the 20 s pings are answered, so a quiet book alone never trips this

    def send_rate(self, conn: str) -> float:
        return 5.0

    # ------------------------------------------------------------------ frames
    def on_frame(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        try:
            msg = loads(data)
        except (ValueError, TypeError) as e:
            return [ProtocolError(conn, f"bad JSON: {e}")]
        if type(msg) is not dict:
            return [ProtocolError(conn, f"unexpected JSON {type(msg).__name__}")]
        try:
            topic = msg.get("topic")
            if topic is not None:
                sym = self._alias.get(f"{_category(conn)}|{topic}")
                if sym is None:
                    perp = self._perp_alias.get(f"{_category(conn)}|{topic}")
                    if perp is not None:
                        try:
                            return self._on_perp(perp, topic, msg, recv_ns)
                        except _PARSE_ERRORS as e:  # nothing of the frame is published
                            return [ProtocolError(conn, f"bad {topic.split('.')[0]} frame: {e!r}", perp.key)]
                    return []  # unsubscribed meanwhile, or a topic we never asked for
                if topic[0] == "o":
                    try:
                        return self._on_book(sym, msg, recv_ns)
                    except _PARSE_ERRORS as e:
                        return self._bad_book(sym, e, msg.get("type") == "snapshot")
                try:
                    return self._on_trades(sym, msg["data"], recv_ns)
                except _PARSE_ERRORS as e:  # nothing of the frame is published
                    return [ProtocolError(conn, f"bad publicTrade frame: {e!r}", sym.key)]
            return self._on_op(conn, msg)
        except _PARSE_ERRORS as e:
            return [ProtocolError(conn, f"unexpected Bybit frame: {e!r}")]

    def warm(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        try:
            msg = loads(data)
            topic = msg["topic"]
            sym = self._alias.get(f"{_category(conn)}|{topic}")
            if sym is None or sym.state != LIVE:
                return []
            if topic[0] == "o":
                u = msg["data"]["u"]
                if u != sym.seq:
                    return []  # not the update that made the current book (a duplicate, say): nothing to replay
                prior = CHAIN.predecessor(u, first=u)
                if prior is None:
                    return []
                return self._on_book(self._scratch(sym, prior), msg, recv_ns)  # as the delta after the copy's id
            return self._on_trades(self._scratch(sym, sym.seq), msg["data"], recv_ns)
        except _PARSE_ERRORS:
            return []

    def lane_spec(self) -> dict[str, Any]:
        """See Adapter.lane_spec: the lane reads `_alias` ("<category>|<topic>") as on_frame does, takes deltas on a
        LIVE book whose `u` is the last plus one and trades with numeric ids, and hands a crossed book to `_publish`,
        the Python verdict."""
        return {"exchange": "bybit", "routes": self._alias, "live": LIVE, "kinds": None, "chains": (CHAIN,),
                "symbol": SymbolSync, "members": LANE_MEMBERS, "verdict": self._publish}

    def _on_op(self, conn: str, msg: dict) -> list[Event]:
        op = msg.get("op")
        if op in ("ping", "pong"):
            return []
        if msg.get("success") is True:
            return []
        if msg.get("success") is not False:
            return [ProtocolError(conn, f"unexpected Bybit message: {str(msg)[:120]}", malformed=False)]
        text = f"Bybit refused {op}: {msg.get('ret_msg')}"
        req = self._reqs.pop(str(msg.get("req_id")), None)
        if req is None or req[0] != "subscribe" or "already" in str(msg.get("ret_msg")):
            return [Notice(conn, text)]
        _, rconn, topics = req
        cat = _category(rconn)
        named = [t for t in _TOPIC_RE.findall(str(msg.get("ret_msg"))) if t in topics]
        if not named and len(topics) == 1:
            named = topics
        out: list[Event] = []
        if named:  # refuse the named topics' symbols; Bybit rejected the whole request, so resend the rest
            perp = [t for t in named if f"{cat}|{t}" in self._perp_alias]  # a perp topic alone: the books stay
            bad = {self._alias.get(f"{cat}|{t}") for t in named if t not in perp}
            rest = [t for t in topics if t not in perp
                    and (self._alias.get(f"{cat}|{t}") or self._perp_alias.get(f"{cat}|{t}")) not in bad]
            for s in bad:
                out += self._refused(s, conn, text)
            if perp:
                out.append(SubscribeFailed(None, conn, f"{text} (perp topics {', '.join(perp)}; books kept)"))
            if rest:
                out.append(self._request(rconn, "subscribe", rest))
        else:  # nothing names the culprit: retry one topic per request to find it
            out += [self._request(rconn, "subscribe", [t]) for t in topics]
        return out

    def _on_book(self, sym: SymbolSync, msg: dict, recv_ns: int) -> list[Event]:
        d = msg["data"]
        u = d["u"]
        if type(u) is not int:
            raise TypeError(f"u {u!r}")
        ts_ns = int(msg.get("cts") or msg["ts"]) * _MS
        book = sym.book
        if msg["type"] == "snapshot" or u == 1:
            out: list[Event] = []
            if sym.state == LIVE and u < sym.seq:
                out.append(self._reset(sym, f"update id restarted at {u} (was {sym.seq})"))
            book.apply_snapshot(d["b"], d["a"])
            sym.seq = u
            book.update_id, book.exch_ts_ns = u, ts_ns
            res = self._publish(sym, recv_ns, snapshot=True)
            return out + res if out else res
        if sym.state != LIVE:
            return []  # in flight before the fresh snapshot
        last = sym.seq
        if u <= last:
            return []  # duplicate or stale
        if not CHAIN.follows(last, u, first=u):
            return self._fail(sym, "gap", f"u {u} after {last}")
        book.apply_update(d["b"], d["a"])
        sym.seq = u
        book.update_id, book.exch_ts_ns = u, ts_ns
        return self._publish(sym, recv_ns)

    def _on_perp(self, sym: SymbolSync, topic: str, msg: dict, recv_ns: int) -> list[Event]:
        if topic[0] == "t":  # tickers: a snapshot, or a delta with only the fields that changed
            d = msg["data"]
            fields = perp_fields(mark_price=d.get("markPrice"), index_price=d.get("indexPrice"),
                                 funding_rate=d.get("fundingRate"), next_funding_ms=d.get("nextFundingTime"),
                                 open_interest=d.get("openInterest"))
            if not fields:
                return []
            self._perp_seen.add(sym.key)
            # a delta leaves out what did not change ("If a response param is not found in the message, then its
            # value has not changed"): every frame vouches for every group, so none goes quiet alone (layout 1.6)
            return [PerpStatsUpdate(sym.key, fields, int(msg["ts"]) * _MS, recv_ns, confirms=_PERP_GROUPS)]
        rows = []
        for r in msg["data"]:
            px, qty = trade_numbers(r["p"], r["v"])
            rows.append((int(r["T"]) * _MS, recv_ns, px, qty, 0, _LIQUIDATION_ORDER_SIDE[r["S"]], 0))
        return [LiquidationsReceived(sym.key, rows)] if rows else []

    def _on_trades(self, sym: SymbolSync, rows: list, recv_ns: int) -> list[Event]:
        trades = []
        for t in rows:
            tid, flags = trade_id(t["i"])
            s = t["S"]
            side = Side.BUY if s == "Buy" else Side.SELL if s == "Sell" else Side.UNKNOWN
            px, qty = trade_numbers(t["p"], t["v"])
            trades.append((int(t["T"]) * _MS, recv_ns, px, qty, tid, side, flags))
        return [TradesReceived(sym.key, trades)] if trades else []


@lru_cache(maxsize=64)
def _category(conn: str) -> str:
    """"linear-0" -> "linear": connections are named after their category."""
    return conn.rsplit("-", 1)[0]


ADAPTER = BybitAdapter
