"""Bitget v2 public market data (sans-I/O). Protocol facts: shared/notes/exchanges.md §5.

Markets are v2 instTypes: "SPOT", "USDT-FUTURES", "COIN-FUTURES", "USDC-FUTURES", all on `/v2/ws/public`.
Books: `books` (snapshot + updates) by default, `books1/5/15` (a snapshot per push) in partial mode.
Integrity of `books`: the signed CRC32 checksum of the top 25 interleaved levels' wire strings,
checked after the whole message is applied, on snapshots too; 0 means "not sent".
`pseq`: sources disagree. BG-DOC v2 depth-channel pages (as summarised in exchanges.md, read 2024-2026)
show `seq` and no `pseq`; `pseq` belongs to the separate v3 UTA stream. A docs-corpus search in this
project (2026) found no v2 page with `pseq`. Decision: if an update carries `pseq` it must equal the
previous `seq` (a gap otherwise); without it, `seq` must increase (equal = duplicate, dropped; lower =
a reset, resynced) and the checksum proves contiguity.
Trades: `trade`, newest first (reversed here); the first push after subscribing is a snapshot of
recent trades, so ids already stored are dropped (also across resubscribes and reconnects).
Perpetual data (futures markets unless perp=False): the `ticker` channel carries markPrice, indexPrice, fundingRate,
nextFundingTime and holdingAmount (open interest, in base coin) in every push. Bitget announces no next rate, and
its v2 public API has no liquidation channel (docs/exchanges.md): liquidations are absent, not made up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...core.events import (
    Event,
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
from .endpoints import DEFAULT_ENDPOINTS as _DEFAULT_ENDPOINTS

_MS = 1_000_000
_ARG_RE = re.compile(r"instType:([\w-]+),channel:([\w-]+),instId:([\w-]+)")
_PARSE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)
_MAX_ARGS = 20
_PARTIAL = ("books1", "books5", "books15")
#: a `books` update follows the last when its pseq (if sent) is the last seq and its seq is newer (see above)
CHAIN = Chain(ChainKind.PREV_ID, prev_optional=True)


class BitgetAdapter(WsBookAdapter):
    exchange = "bitget"
    DEFAULT_ENDPOINTS = _DEFAULT_ENDPOINTS
    MARKETS = _instruments.MARKETS
    SYMBOLS_PER_CONN = 16  # books + trade + ticker: Bitget advises < 50 channels per connection

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._perp_seen: set[SymbolKey] = set()  # symbols whose ticker arrived since their connection opened

    def _has_perp(self, sym: SymbolSync) -> bool:
        return self.perp_enabled and sym.inst.market.endswith("-FUTURES")

    def on_close(self, conn: str, reason: str) -> list[Event]:
        out = super().on_close(conn, reason)
        for key in self._by_conn.get(conn, {}):
            if key in self._perp_seen:
                self._perp_seen.discard(key)
                out.append(PerpInvalid(key, f"connection {conn} closed: {reason}"))
        return out

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
        ws, rest = sim["bitget"]
        return {"ws": ws, "rest": rest}

    # ------------------------------------------------------------------ connections and subscriptions
    def _conn_group(self, inst: Instrument) -> str:
        return "public"

    def _url(self, conn: str) -> str:
        return self.endpoints["ws"].rstrip("/") + "/v2/ws/public"

    def _book_channel(self, inst: Instrument) -> str:
        if self.book_mode == "partial":
            return "books1" if self.book_depth <= 1 else "books5" if self.book_depth <= 5 else "books15"
        return "books"

    def _sub_frames(self, conn: str, syms: list[SymbolSync], op: str, books_only: bool = False) -> list[Event]:
        args = []
        for s in syms:
            it, native = s.key
            args.append({"instType": it, "channel": s.channel, "instId": native})
            if self.trades_enabled and not books_only:
                args.append({"instType": it, "channel": "trade", "instId": native})
            if self._has_perp(s) and not books_only:
                args.append({"instType": it, "channel": "ticker", "instId": native})
        return [Send(conn, dumps_str({"op": op, "args": list(part)})) for part in chunks(args, _MAX_ARGS)]

    def ping_interval(self, conn: str) -> float:
        return 25.0  # Bitget asks for a ping every 30 s and cuts the connection after 2 min without one

    def ping_payload(self, conn: str) -> str | None:
        return "ping"

    def silence_timeout(self, conn: str) -> float:
        return 30.0

    def send_rate(self, conn: str) -> float:
        return 8.0  # Bitget allows 10 messages/s per connection, pings included

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
                sym = self.syms.get((arg["instType"], arg["instId"]))
                if sym is None:
                    return []  # unsubscribed meanwhile
                ch = arg["channel"]
                if ch == "trade":
                    try:
                        return self._on_trades(sym, msg["data"], recv_ns)
                    except _PARSE_ERRORS as e:  # nothing of the frame is published
                        return [ProtocolError(conn, f"bad trade frame: {e!r}", sym.key)]
                if ch == "ticker" and self._has_perp(sym):
                    try:
                        return self._on_ticker(sym, msg["data"], recv_ns)
                    except _PARSE_ERRORS as e:  # nothing of the frame is published
                        return [ProtocolError(conn, f"bad ticker frame: {e!r}", sym.key)]
                if ch == sym.channel:
                    try:
                        return self._on_book(sym, msg, recv_ns)
                    except _PARSE_ERRORS as e:
                        return self._bad_book(sym, e, msg.get("action") == "snapshot" or ch != "books")
                return []
            return self._on_event(conn, msg)
        except _PARSE_ERRORS as e:
            return [ProtocolError(conn, f"unexpected Bitget frame: {e!r}")]

    def warm(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        try:
            msg = loads(data)
            arg = msg["arg"]
            d = msg["data"][0]
            sym = self.syms.get((arg["instType"], arg["instId"]))
            if sym is None or sym.state != LIVE:
                return []
            ch = arg["channel"]
            if ch == "trade":
                return self._on_trades(self._scratch(sym, sym.seq), msg["data"], recv_ns)
            if ch != sym.channel:
                return []
            pseq, seq = d.get("pseq"), d.get("seq")
            if seq is not None and seq != sym.seq:
                return []  # not the update that made the current book: nothing to replay
            # replayed as the update that follows the copy's seq
            prior = CHAIN.predecessor(seq, prev=pseq) if seq is not None else None
            return self._on_book(self._scratch(sym, sym.seq if prior is None else prior), msg, recv_ns)
        except _PARSE_ERRORS:
            return []

    def lane_spec(self) -> dict[str, Any]:
        """See Adapter.lane_spec: the lane reads `syms` ((instType, instId)) as on_frame does, takes `books` updates on
        a LIVE book whose seq moves forward (and pseq, when sent, is the last seq), and hands a failed checksum or a
        crossed book to `_publish`, the Python verdict. Trades stay with the adapter (it drops replayed ids)."""
        return {"exchange": "bitget", "routes": self.syms, "live": LIVE, "kinds": None, "chains": (CHAIN,),
                "symbol": SymbolSync, "members": LANE_MEMBERS, "verdict": self._publish}

    def _on_event(self, conn: str, msg: dict) -> list[Event]:
        ev = msg.get("event")
        if ev in ("subscribe", "unsubscribe"):
            return []
        if ev == "error":
            text = f"Bitget error {msg.get('code')}: {msg.get('msg')}"
            arg = msg.get("arg")
            if isinstance(arg, dict):
                it, ch, native = arg.get("instType"), arg.get("channel"), arg.get("instId")
            else:
                m = _ARG_RE.search(str(msg.get("msg", "")))
                it, ch, native = m.groups() if m else (None, None, None)
            if ch is None:
                return [Notice(conn, text)]  # e.g. 30007 over limit: the server closes, the loop reconnects
            if ch == "ticker":  # the perp data only: the books stay
                return [SubscribeFailed(None, conn, f"{text} (perp ticker of {native}; the books are not affected)")]
            return self._refused(self.syms.get((it, native)), conn, text)
        return [ProtocolError(conn, f"unexpected Bitget message: {str(msg)[:120]}", malformed=False)]

    def _on_book(self, sym: SymbolSync, msg: dict, recv_ns: int) -> list[Event]:
        d = msg["data"][0]
        seq = d.get("seq")
        if seq is not None and type(seq) is not int:
            raise TypeError(f"seq {seq!r}")
        ts_ns = int(d["ts"]) * _MS
        checksum = int(d.get("checksum") or 0)
        book = sym.book
        if msg.get("action") != "update" or sym.channel != "books":  # books1/5/15 are snapshots on every push
            out: list[Event] = []
            if sym.channel == "books" and sym.state == LIVE and seq is not None and seq < sym.seq:
                out.append(self._reset(sym, f"seq restarted at {seq} (was {sym.seq})"))
            book.apply_snapshot(d["bids"], d["asks"])
            sym.seq = seq if seq is not None else -1
            book.update_id, book.exch_ts_ns = max(sym.seq, 0), ts_ns
            res = self._publish(sym, recv_ns, checksum, snapshot=True)
            return out + res if out else res
        if sym.state != LIVE:
            return []  # in flight before the fresh snapshot
        if seq is not None:
            last = sym.seq
            pseq = d.get("pseq")
            if not CHAIN.follows(last, seq, prev=pseq):
                if pseq is not None and pseq != last:
                    return self._fail(sym, "gap", f"pseq {pseq} != last seq {last}")
                if seq == last:
                    return []  # the same message twice
                return self._fail(sym, "reset", f"seq went back from {last} to {seq}")
        book.apply_update(d["bids"], d["asks"])
        if seq is not None:
            sym.seq = seq
        book.update_id, book.exch_ts_ns = max(sym.seq, 0), ts_ns
        return self._publish(sym, recv_ns, checksum)

    def _on_ticker(self, sym: SymbolSync, rows: list, recv_ns: int) -> list[Event]:
        out: list[Event] = []
        for d in rows:
            fields = perp_fields(mark_price=d["markPrice"], index_price=d.get("indexPrice"),
                                 funding_rate=d.get("fundingRate"), next_funding_ms=d.get("nextFundingTime"),
                                 open_interest=d.get("holdingAmount"))
            self._perp_seen.add(sym.key)
            out.append(PerpStatsUpdate(sym.key, fields, int(d["ts"]) * _MS, recv_ns))
        return out

    def _on_trades(self, sym: SymbolSync, rows: list, recv_ns: int) -> list[Event]:
        parsed = []
        for t in reversed(rows):  # Bitget sends newest first
            raw = str(t["tradeId"])
            ts = int(t["ts"])
            tid, flags = trade_id(raw)
            s = t["side"]
            side = Side.BUY if s == "buy" else Side.SELL if s == "sell" else Side.UNKNOWN
            px, size = trade_numbers(t["price"], t["size"])
            parsed.append((ts, raw, (ts * _MS, recv_ns, px, size, tid, side, flags)))
        trades = self._new_trades(sym, parsed)
        return [TradesReceived(sym.key, trades)] if trades else []


ADAPTER = BitgetAdapter
