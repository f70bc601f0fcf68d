"""OKX v5 public market data (sans-I/O). Protocol facts: shared/notes/exchanges.md §3.

Books: `books` (400 levels, snapshot + updates) by default; `bbo-tbt` / `books5` in partial mode.
Validation of `books` updates (OKX-DOC "Sequence ID", order-book channel page of 2026-07-07):
- `prevSeqId` must equal the last `seqId`. Allowed by that rule: idle keep-alives (prevSeqId == seqId,
  empty sides) and maintenance resets (seqId < prevSeqId, prevSeqId still the last seqId; the book stays
  valid, but the reset is reported as BookInvalid "reset" + SymbolSynced so it is counted).
- a non-zero `checksum` is the legacy CRC32 over the top 25 levels' wire strings; 0 means "not sent"
  (deprecated on production 2026-06-23, OKX notice of 2026-05-21). Frames without seqId (pre-2024
  recordings) rely on the checksum alone.
On a gap or bad checksum the symbol's `books` channel alone is unsubscribed and subscribed again: the
WebSocket snapshot is OKX's only sync point (no REST snapshot carries a seqId).
Sizes on derivatives are contracts; Instrument.contract_value carries `ctVal`.
Perpetual data (SWAP and FUTURES unless perp=False; OKX-DOC public-data WebSocket pages of 2026-07): `mark-price`
(markPx), `index-tickers` on the index (the instId without its last part: BTC-USDT for BTC-USDT-SWAP; idxPx),
`funding-rate` (SWAP only: fundingRate for the settlement at fundingTime; nextFundingRate when OKX forecasts it,
"" with method current_period, then absent), `open-interest` (oi, in contracts) and `liquidation-orders` (by
instType, so every instrument's: those of other symbols are dropped; side is the liquidation order's side, bkPx its
price, sz contracts). They go in requests of their own, so a refusal names them and never touches the books; the
refused channel's symbols take no more perp pushes and their records stay stale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...core.events import (
    CloseConnection,
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
from ...core.types import Side
from ...limits import perp_fields, trade_numbers
from ...symbols import Instrument
from .._sequencing import Chain, ChainKind
from .._sync import LANE_MEMBERS, LIVE, SymbolSync
from .._wire import chunks, dumps_str, loads, trade_id
from .._wsbook import WsBookAdapter
from . import instruments as _instruments
from . import limits as _limits
from .endpoints import DEFAULT_ENDPOINTS as _DEFAULT_ENDPOINTS

_MS = 1_000_000
_PARTIAL = {"books5", "bbo-tbt"}
_INST_ID_RE = re.compile(r"instId:([A-Za-z0-9_.-]+)")
_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
_MAX_ARGS = 100  # per request; OKX's limit is 64 KB of request text
#: an update follows the last when its prevSeqId is the last seqId; its seqId may stay the same (no change) but a
#: lower one is the documented maintenance reset, applied and counted, not routine
CHAIN = Chain(ChainKind.PREV_ID, same_id_ok=True)
_PERP_MARKETS = ("SWAP", "FUTURES")
_CHANNEL_ID_RE = re.compile(r"channel:([\w-]+),\s*instId:([\w-]+)")  # in an error's msg
_PERP_CHANNELS = frozenset({"mark-price", "index-tickers", "funding-rate", "open-interest", "liquidation-orders"})
_ORDER_SIDES = {"buy": Side.BUY, "sell": Side.SELL}


class OkxAdapter(WsBookAdapter):
    exchange = "okx"
    DEFAULT_ENDPOINTS = _DEFAULT_ENDPOINTS
    PERP_PUSH_EVERY_S = _limits.PERP_PUSH_EVERY_S  # one channel per group: each can go quiet alone
    MARKETS = ("SPOT", "SWAP", "FUTURES", "OPTION")
    SYMBOLS_PER_CONN = 15  # books + trades = 30 channels, OKX's advice for 400-level books

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        #: (perp channel, instId or index) -> the symbols it feeds (an index may serve several)
        self._perp_alias: dict[tuple[str, str], list[SymbolSync]] = {}
        self._liquidation_subs: dict[str, set[str]] = {}  # conn -> instTypes subscribed to liquidation-orders
        self._perp_seen: set[SymbolKey] = set()  # symbols whose perp data arrived since their connection opened

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
        ws, rest = sim["okx"]
        return {"ws": ws, "rest": rest}

    # ------------------------------------------------------------------ connections and subscriptions
    def _conn_group(self, inst: Instrument) -> str:
        return "public"

    def _url(self, conn: str) -> str:
        return self.endpoints["ws"].rstrip("/") + "/ws/v5/public"

    def _book_channel(self, inst: Instrument) -> str:
        if self.book_mode == "partial":
            return "bbo-tbt" if self.book_depth <= 1 else "books5"
        return "books"

    def _aliases(self, sym: SymbolSync) -> list[str]:
        return [sym.inst.native]  # instIds are unique across OKX markets

    # ------------------------------------------------------------------ perpetual channels
    def _has_perp(self, sym: SymbolSync) -> bool:
        return self.perp_enabled and sym.inst.market in _PERP_MARKETS

    @staticmethod
    def _perp_channels(sym: SymbolSync) -> list[tuple[str, str]]:
        """(channel, instId) of the per-instrument perp channels of `sym`."""
        native = sym.inst.native
        out = [("mark-price", native), ("index-tickers", native.rsplit("-", 1)[0]), ("open-interest", native)]
        if sym.inst.market == "SWAP":
            out.append(("funding-rate", native))
        return out

    def subscribe(self, inst: Instrument) -> list[Event]:
        out = super().subscribe(inst)
        sym = self.syms.get(inst.key)
        if sym is not None and self._has_perp(sym):
            for key in self._perp_channels(sym):
                self._perp_alias.setdefault(key, []).append(sym)
        return out

    def _forget(self, sym: SymbolSync) -> None:
        super()._forget(sym)
        if self._has_perp(sym):
            for key in self._perp_channels(sym):
                rest = [x for x in self._perp_alias.get(key, []) if x is not sym]
                if rest:
                    self._perp_alias[key] = rest
                else:
                    self._perp_alias.pop(key, None)

    def _perp_args(self, conn: str, syms: list[SymbolSync], op: str) -> list[dict]:
        """The perp channels of `syms` to (un)subscribe on `conn`: an index or a liquidation-orders instType still
        used by another symbol of the connection stays subscribed."""
        perps = [s for s in syms if self._has_perp(s)]
        if not perps:
            return []
        others = [s for s in self._by_conn.get(conn, {}).values() if self._has_perp(s) and s not in perps]
        kept = {key for s in others for key in self._perp_channels(s)}
        args: list[dict] = []
        for s in perps:
            for channel, inst_id in self._perp_channels(s):
                arg = {"channel": channel, "instId": inst_id}
                if arg not in args and (op == "subscribe" or (channel, inst_id) not in kept):
                    args.append(arg)
        subs = self._liquidation_subs.setdefault(conn, set())
        for inst_type in dict.fromkeys(s.inst.market for s in perps):
            if op == "subscribe" and inst_type not in subs:
                subs.add(inst_type)
                args.append({"channel": "liquidation-orders", "instType": inst_type})
            elif op == "unsubscribe" and inst_type in subs and all(s.inst.market != inst_type for s in others):
                subs.discard(inst_type)
                args.append({"channel": "liquidation-orders", "instType": inst_type})
        return args

    def on_close(self, conn: str, reason: str) -> list[Event]:
        out = super().on_close(conn, reason)
        self._liquidation_subs.pop(conn, None)
        for key in self._by_conn.get(conn, {}):
            if key in self._perp_seen:
                self._perp_seen.discard(key)
                out.append(PerpInvalid(key, f"connection {conn} closed: {reason}"))
        return out

    def _perp_refused(self, channel: str, ident: str, text: str) -> list[Event]:
        """`channel` of `ident` was refused: its symbols' perp records take nothing more (a record merging the
        other channels would look live with this channel's fields frozen) and stay stale, with the reason."""
        out: list[Event] = []
        for sym in list(self._perp_alias.get((channel, ident), ())):
            for key, syms in list(self._perp_alias.items()):
                if sym in syms:
                    rest = [x for x in syms if x is not sym]
                    if rest:
                        self._perp_alias[key] = rest
                    else:
                        del self._perp_alias[key]
            self._perp_seen.discard(sym.key)
            out.append(PerpInvalid(sym.key, f"perp channel {channel} refused: {text}"))
        return out

    def _on_perp(self, conn: str, channel: str, arg: dict, rows: list, recv_ns: int) -> list[Event]:
        if channel == "liquidation-orders":
            out: list[Event] = []
            for row in rows:
                sym = self._alias.get(row["instId"])
                if sym is None or sym.conn != conn or not self._has_perp(sym):
                    continue  # another instrument's (the channel carries the whole instType)
                liqs = []
                for d in row["details"]:
                    px, sz = trade_numbers(d["bkPx"], d["sz"])
                    liqs.append((int(d["ts"]) * _MS, recv_ns, px, sz, 0, _ORDER_SIDES[d["side"]], 0))
                if liqs:
                    out.append(LiquidationsReceived(sym.key, liqs))
            return out
        syms = [s for s in self._perp_alias.get((channel, arg["instId"]), ()) if s.conn == conn]
        out = []
        for d in rows:
            if channel == "mark-price":
                fields = perp_fields(mark_price=d["markPx"])
            elif channel == "index-tickers":
                fields = perp_fields(index_price=d["idxPx"])
            elif channel == "funding-rate":
                fields = perp_fields(funding_rate=d["fundingRate"], next_funding_rate=d.get("nextFundingRate"),
                                     next_funding_ms=d["fundingTime"])
            else:
                fields = perp_fields(open_interest=d["oi"])
            ts = int(d["ts"]) * _MS
            for sym in syms:
                self._perp_seen.add(sym.key)
                out.append(PerpStatsUpdate(sym.key, fields, ts, recv_ns))
        return out

    def _sub_frames(self, conn: str, syms: list[SymbolSync], op: str, books_only: bool = False) -> list[Event]:
        args = []
        for s in syms:
            args.append({"channel": s.channel, "instId": s.inst.native})
            if self.trades_enabled and not books_only:
                args.append({"channel": "trades", "instId": s.inst.native})
        out = self._requests(conn, op, args)
        if not books_only:  # in requests of their own: a refusal of one never names a book
            out += self._requests(conn, op, self._perp_args(conn, syms, op))
        return out

    def _requests(self, conn: str, op: str, args: list[dict]) -> list[Event]:
        out: list[Event] = []
        for part in chunks(args, _MAX_ARGS):
            rid = self._request_id(op, conn, list(part))
            out.append(Send(conn, dumps_str({"id": rid, "op": op, "args": list(part)})))
        return out

    def ping_interval(self, conn: str) -> float:
        return 20.0  # OKX closes a connection after 30 s without traffic (4004)

    def ping_payload(self, conn: str) -> str | None:
        return "ping"

    def silence_timeout(self, conn: str) -> float:
        return 30.0

    def send_rate(self, conn: str) -> float:
        return 5.0

    # ------------------------------------------------------------------ frames
    def on_frame(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        if data == "pong" or data == b"pong":
            return []
        try:
            msg = loads(data)
        except (ValueError, TypeError) as e:
            return [ProtocolError(conn, f"bad JSON: {e}")]
        if type(msg) is not dict:
            return [ProtocolError(conn, f"unexpected JSON {type(msg).__name__}")]
        try:
            if "data" in msg:
                arg = msg["arg"]
                ch = arg["channel"]
                if ch in _PERP_CHANNELS:
                    try:
                        return self._on_perp(conn, ch, arg, msg["data"], recv_ns)
                    except _PARSE_ERRORS as e:  # nothing of the frame is published
                        sym = self._alias.get(arg.get("instId", ""))
                        return [ProtocolError(conn, f"bad {ch} frame: {e!r}", sym.key if sym else None)]
                sym = self._alias.get(arg["instId"])
                if sym is None:
                    return []  # a symbol we just unsubscribed
                if ch == "books":
                    try:
                        return self._on_books(sym, msg, recv_ns)
                    except _PARSE_ERRORS as e:  # the book may be half-applied: resync unless already resyncing
                        return self._bad_book(sym, e, msg.get("action") == "snapshot")
                if ch == "trades":
                    try:
                        return self._on_trades(sym, msg["data"], recv_ns)
                    except _PARSE_ERRORS as e:  # nothing of the frame is published
                        return [ProtocolError(conn, f"bad trades frame: {e!r}", sym.key)]
                if ch in _PARTIAL:
                    try:
                        return self._on_partial(sym, msg["data"][0], recv_ns)
                    except _PARSE_ERRORS as e:
                        return self._bad_book(sym, e, True)
                return []
            return self._on_event(conn, msg)
        except _PARSE_ERRORS as e:
            return [ProtocolError(conn, f"unexpected OKX frame: {e!r}")]

    def warm(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        try:
            msg = loads(data)
            arg = msg["arg"]
            d = msg["data"][0]
            sym = self._alias.get(arg["instId"])
            if sym is None or sym.state != LIVE:
                return []
            ch = arg["channel"]
            if ch == "books":
                seq, prev = d.get("seqId"), d.get("prevSeqId")
                if seq is not None and seq != sym.seq:
                    return []  # not the update that made the current book: nothing to replay
                # replayed as the update that follows the copy's seqId
                prior = CHAIN.predecessor(seq, prev=prev)
                return self._on_books(self._scratch(sym, sym.seq if prior is None else prior), msg, recv_ns)
            if ch == "trades":
                return self._on_trades(self._scratch(sym, sym.seq), msg["data"], recv_ns)
            if ch in _PARTIAL:
                return self._on_partial(self._scratch(sym, sym.seq), d, recv_ns)
            return []
        except _PARSE_ERRORS:
            return []

    def lane_spec(self) -> dict[str, Any]:
        """See Adapter.lane_spec: the lane reads `_alias` as on_frame does, takes `books` updates on a LIVE book
        whose prevSeqId is the last seqId (or that carry no seqId) and `trades`, and hands a failed checksum or a
        crossed book to `_publish`, the Python verdict."""
        return {"exchange": "okx", "routes": self._alias, "live": LIVE, "kinds": None, "chains": (CHAIN,),
                "symbol": SymbolSync, "members": LANE_MEMBERS, "verdict": self._publish}

    def _on_event(self, conn: str, msg: dict) -> list[Event]:
        ev = msg.get("event")
        if ev in ("subscribe", "unsubscribe", "channel-conn-count"):
            return []
        if ev == "error":
            text = f"OKX error {msg.get('code')}: {msg.get('msg')}"
            req = self._reqs.get(str(msg.get("id")))
            if req is not None and req[0] == "unsubscribe":
                return [Notice(conn, text)]
            if req is not None and req[2] and all(a.get("channel") in _PERP_CHANNELS for a in req[2]):
                out: list[Event] = [SubscribeFailed(None, conn, f"{text} (perp channels; the books are not affected)")]
                m = _CHANNEL_ID_RE.search(str(msg.get("msg", "")))
                return out + (self._perp_refused(m.group(1), m.group(2), text) if m else [])
            m = _INST_ID_RE.search(str(msg.get("msg", "")))
            return self._refused(self._alias.get(m.group(1)) if m else None, conn, text)
        if ev == "notice":  # 64008: service upgrade, the server closes in ~60 s
            return [CloseConnection(conn, f"OKX notice {msg.get('code')}: {msg.get('msg')}", reconnect=True)]
        return [ProtocolError(conn, f"unexpected OKX message: {str(msg)[:120]}", malformed=False)]

    def _on_books(self, sym: SymbolSync, msg: dict, recv_ns: int) -> list[Event]:
        d = msg["data"][0]
        bids, asks = d["bids"], d["asks"]
        seq = d.get("seqId")
        if seq is not None and type(seq) is not int:
            raise TypeError(f"seqId {seq!r}")
        ts_ns = int(d["ts"]) * _MS
        checksum = int(d.get("checksum") or 0)
        book = sym.book
        if msg.get("action") == "snapshot":
            book.apply_snapshot(bids, asks)
            sym.seq = seq if seq is not None else -1
            book.update_id, book.exch_ts_ns = sym.seq, ts_ns
            return self._publish(sym, recv_ns, checksum, snapshot=True)
        if sym.state != LIVE:
            return []  # in flight before the fresh snapshot
        out: list[Event] = []
        if seq is not None:
            prev, last = d["prevSeqId"], sym.seq
            if not CHAIN.follows(last, seq, prev=prev):
                if prev != last:
                    if seq == last:
                        return []  # the same message twice
                    kind = "reset" if seq < last and prev < last else "gap"
                    return self._fail(sym, kind, f"prevSeqId {prev} != last seqId {last} (seqId {seq})")
                # seqId below prevSeqId: the documented maintenance reset; the chain holds, so the book stays
                # valid; count it
                out.append(self._reset(sym, f"seqId restarted at {seq} (prevSeqId {prev})"))
        book.apply_update(bids, asks)
        if seq is not None:
            sym.seq = seq
        book.update_id, book.exch_ts_ns = max(sym.seq, 0), ts_ns
        if out:
            return out + self._publish(sym, recv_ns, checksum, snapshot=True)
        return self._publish(sym, recv_ns, checksum)

    def _on_partial(self, sym: SymbolSync, d: dict, recv_ns: int) -> list[Event]:
        ts_ns = int(d["ts"]) * _MS
        seq = d.get("seqId", sym.seq)
        if type(seq) is not int:
            raise TypeError(f"seqId {seq!r}")
        sym.book.apply_snapshot(d["bids"], d["asks"])
        sym.seq = seq
        sym.book.update_id, sym.book.exch_ts_ns = max(sym.seq, 0), ts_ns
        return self._publish(sym, recv_ns, snapshot=True)

    def _on_trades(self, sym: SymbolSync, rows: list, recv_ns: int) -> list[Event]:
        trades = []
        for t in rows:
            tid, flags = trade_id(t["tradeId"])
            side = Side.BUY if t["side"] == "buy" else Side.SELL if t["side"] == "sell" else Side.UNKNOWN
            px, sz = trade_numbers(t["px"], t["sz"])
            trades.append((int(t["ts"]) * _MS, recv_ns, px, sz, tid, side, flags))
        return [TradesReceived(sym.key, trades)] if trades else []


ADAPTER = OkxAdapter
