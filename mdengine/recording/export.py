"""Export a recording for backtesting: rebuild the books with the engine's own adapters, then write
hftbacktest event arrays, tardis-style CSV or Parquet.

How the books are rebuilt (`Rebuild`): the recording's records are fed to ``get_adapter(exchange)`` the
way the feed loop would, with the recorded local time (``ts_ns``, else ``ts`` * 1e9) as ``recv_ns``:
``connect`` -> ``on_open``, ``recv`` -> ``on_frame``, ``http`` -> ``on_rest`` for the pending FetchRest
whose URL matches (same path and query, ``limit`` ignored), ``disconnect`` -> ``on_close``. Sends the adapter
asks for are not sent anywhere: the recording already holds what the exchange answered. Recorded URLs map
onto the adapter's connections by URL path (hosts differ between a simulator and the real exchange).
Two connections open on one URL at once (the feed replacing a Binance connection before its 24 h cut, or a
restart without a recorded disconnect) feed the same adapter connection, which closes only when both did:
the sync rules drop the diffs and trades it already holds, and a real discontinuity still shows as a gap.

The recording has no instrument list the adapter could subscribe from, so the symbols are discovered from
the recording itself (subscription frames, stream names, REST URLs) and subscribed as minimal
instruments; recorded instrument-list responses, when present, supply the full ones.

Level changes per message: an adapter only says "this book changed", so each `BookChanged` is diffed
against the previous state of that book (full depth, or the top `depth` levels): removed levels come out
with quantity 0, new or changed levels with their new quantity. The first book after a (re)sync is a
snapshot: "clear the side" and then every level. Gaps, checksum failures and resyncs appear as `Marker`s
and in the summary; the book after one is a fresh snapshot.

Perpetual data (layout 1.4's channels, where the recording has them) comes out as `PerpUpdate` and
`LiquidationBatch` items; the tardis formats write them as `derivative_ticker` (one row per update, every field
merged to its latest value, as Tardis does; empty where the exchange publishes nothing) and `liquidations`.
The hftbacktest export ignores them.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from ..errors import MdengineError
from ..events import (
    BookChanged,
    BookInvalid,
    CloseConnection,
    FetchRest,
    LiquidationsReceived,
    Notice,
    OpenConnection,
    PerpStatsUpdate,
    ProtocolError,
    Send,
    SubscribeFailed,
    SymbolKey,
    SymbolSynced,
    TradesReceived,
)
from ..exchanges import get_adapter, recording_rules
from ..store.layout import Side
from ..symbols import InstrumentIndex
from .reader import RecordingReader

PYARROW_MISSING = 'Parquet export needs pyarrow: pip install pyarrow (the extra "mdengine-shm[parquet]")'

# ----------------------------------------------------------------------------- hftbacktest's format
# From nkaz001/hftbacktest, py-hftbacktest/hftbacktest/types.py (defined here: we never import hftbacktest).
DEPTH_EVENT = 1
TRADE_EVENT = 2
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28
HBT_EVENT_DTYPE = np.dtype([("ev", "u8"), ("exch_ts", "i8"), ("local_ts", "i8"), ("px", "f8"), ("qty", "f8"),
                            ("order_id", "u8"), ("ival", "i8"), ("fval", "f8")], align=True)
# Ours, in hftbacktest's user-defined range and without EXCH/LOCAL flags so its processors skip it: the book was
# invalidated here (ival = index of the kind in MARKER_KINDS); a snapshot follows once resynced.
BOOK_INVALID_EVENT = 200
MARKER_KINDS = ("gap", "checksum", "reset", "crossed", "disconnect", "stale_snapshot")

FORMATS = ("hftbacktest", "tardis-csv", "parquet")


class ExportError(MdengineError):
    """The export cannot be done (unknown exchange, missing optional dependency, nothing to export)."""


# ----------------------------------------------------------------------------- what a rebuild yields
@dataclass(slots=True)
class BookUpdate:
    """Level changes of one book message. `changes`: (is_bid, price, qty) with qty 0 = level removed.
    A snapshot first clears both sides up to `clear_bid`/`clear_ask` (hftbacktest's clear-up-to prices)."""

    key: SymbolKey
    local_ns: int
    exch_ns: int
    update_id: int
    snapshot: bool
    changes: list[tuple[bool, float, float]]
    clear_bid: float = 0.0
    clear_ask: float = 0.0


@dataclass(slots=True)
class TradeBatch:
    key: SymbolKey
    local_ns: int
    trades: list[tuple[int, int, float, float, int, int, int]]  # TradesReceived tuples


@dataclass(slots=True)
class PerpUpdate:
    """Perp record fields a frame carried (PerpStatsUpdate.fields) at `local_ns`."""

    key: SymbolKey
    local_ns: int
    exch_ns: int
    fields: dict[str, float | int]


@dataclass(slots=True)
class LiquidationBatch:
    key: SymbolKey
    local_ns: int
    liquidations: list[tuple[int, int, float, float, int, int, int]]  # LiquidationsReceived tuples


@dataclass(slots=True)
class Marker:
    """The book of `key` became invalid (`kind` as in BookInvalid) at `local_ns`."""

    key: SymbolKey
    local_ns: int
    kind: str
    detail: str


Item = BookUpdate | TradeBatch | Marker | PerpUpdate | LiquidationBatch
"""What a Rebuild yields."""


@dataclass
class RebuildStats:
    records: int = 0
    frames: int = 0
    frames_unrouted: int = 0  # recv records whose URL matches no connection of the adapter
    http_used: int = 0
    http_unmatched: int = 0  # REST answers the adapter had not asked for (e.g. another client's request)
    protocol_errors: int = 0
    subscribe_failed: int = 0
    markers: Counter = field(default_factory=Counter)
    snapshots: Counter = field(default_factory=Counter)
    updates: Counter = field(default_factory=Counter)
    trades: Counter = field(default_factory=Counter)
    truncated: bool = False
    corrupt_regions: int = 0
    bad_lines: int = 0

    def as_dict(self) -> dict[str, Any]:
        def keyed(c: Counter) -> dict[str, int]:
            return {k if isinstance(k, str) else "/".join(k): v for k, v in sorted(c.items())}

        return {"records": self.records, "frames": self.frames, "frames_unrouted": self.frames_unrouted,
                "http_used": self.http_used, "http_unmatched": self.http_unmatched,
                "protocol_errors": self.protocol_errors, "subscribe_failed": self.subscribe_failed,
                "book_invalid": keyed(self.markers), "snapshots": keyed(self.snapshots),
                "updates": keyed(self.updates), "trades": keyed(self.trades), "input_truncated": self.truncated,
                "input_corrupt_regions": self.corrupt_regions, "input_bad_lines": self.bad_lines}


# ----------------------------------------------------------------------------- symbol discovery
def discover_symbols(exchange: str, records: list) -> set[SymbolKey]:
    """(market, native) pairs the recording holds: what the client subscribed (sends, stream URLs, REST requests)
    and what its frames carry, routed by their own content (``exchanges/<name>/recording.py``)."""
    return recording_rules(exchange).discover_symbols(records)


def _query_key(url: str) -> tuple[str, tuple]:
    parts = urlsplit(url)
    return parts.path, tuple(sorted((k, v) for k, v in parse_qsl(parts.query) if k != "limit"))


# ----------------------------------------------------------------------------- the rebuild
class Rebuild:
    """Iterate BookUpdate / TradeBatch / Marker items rebuilt from one recording (see the module docstring).

    Args:
        path: the recording (.jsonl, .jsonl.gz, .jsonl.zst).
        exchange: default: from the records or the file name.
        depth: levels per side to diff and export (0 = the whole book the adapter keeps).
        symbols: restrict to these native ids (default: every symbol the recording subscribed).
        adapter_options: extra keyword arguments for the adapter (default: guessed from the recording).
    """

    def __init__(self, path: str | os.PathLike[str], exchange: str | None = None, *, depth: int = 0,
                 symbols: list[str] | None = None, adapter_options: dict[str, Any] | None = None) -> None:
        self.reader = RecordingReader(path, exchange)
        self.records = list(self.reader)
        self.exchange = exchange or next((r.exchange for r in self.records if r.exchange), None) \
            or self.reader.exchange
        if not self.exchange:
            raise ExportError(f"{path}: cannot tell the exchange (no 'exchange' field, file name or known host); "
                              "pass --exchange")
        try:
            self.adapter_cls = get_adapter(self.exchange)
        except (ValueError, ImportError) as e:
            raise ExportError(f"no adapter for exchange {self.exchange!r}: {e}") from e
        self.depth = depth
        self.stats = RebuildStats(truncated=self.reader.truncated, corrupt_regions=self.reader.corrupt_regions,
                                  bad_lines=self.reader.bad_lines)
        self.rules = recording_rules(self.exchange)
        keys = self.rules.discover_symbols(self.records)
        if symbols:
            want = {s.upper() for s in symbols}
            keys = {k for k in keys if k[1].upper() in want}
        if not keys:
            raise ExportError(f"{path}: no subscribed symbols found in the recording")
        # the recording's own instrument lists where it holds them, else what the adapter derives from the ids
        self.instruments = self.rules.instruments(self.records, keys)
        if adapter_options is None:  # subscribe what was recorded: its trade stream, its book channel and depth
            opts = {**self.rules.adapter_options(self.records), **self.rules.book_config(self.records)}
        else:
            opts = adapter_options
        self.adapter = self.adapter_cls(InstrumentIndex(self.instruments), None, **opts)
        self._conn_url: dict[str, str] = {}
        self._open: dict[str, int] = {}  # adapter connection -> recorded connections open on it
        self._url_conn: dict[str, str | None] = {}
        self._pending: dict[str, tuple[str, tuple]] = {}  # request id -> (path, query key)
        self._prev: dict[SymbolKey, tuple[dict[float, float], dict[float, float]]] = {}
        self._fresh: set[SymbolKey] = set()  # next BookChanged is a snapshot
        self._place = self.rules.frame_placer(self.records)
        self._rewrite = self.rules.frame_rewriter(self.records)  # recorded book channel -> the adapter's

    # ------------------------------------------------------------------ driving the adapter
    def __iter__(self) -> Iterator[Item]:
        ad = self.adapter
        first = self.records[0].ts_ns if self.records else 0
        for inst in self.instruments:
            yield from self._handle(ad.subscribe(inst), first)
        yield from self._handle(ad.start(), first)
        for r in self.records:
            self.stats.records += 1
            ns = r.ts_ns
            if r.kind == "recv":
                data = r.data if r.data is not None else ""
                # by the frame's content where the exchange's rules can place it (one path may serve two markets:
                # Binance's /stream on spot and on an older USDⓈ-M capture), else by the recorded URL's path
                conn, data = self._conn_by_content(r.url, data)
                if conn is None:
                    conn = self._conn_for(r.url)
                if conn is None:
                    self.stats.frames_unrouted += 1
                    continue
                if conn not in self._open:  # recorded without its connect (e.g. a file started mid-session)
                    yield from self._open_conn(conn, ns)
                self.stats.frames += 1
                if self._rewrite is not None:
                    data = self._rewrite(data)
                yield from self._handle(ad.on_frame(conn, data, ns), ns)
            elif r.kind == "http":
                rid = self._match_rest(r.url)
                if rid is None:
                    self.stats.http_unmatched += 1
                    continue
                self.stats.http_used += 1
                body = r.data.encode() if isinstance(r.data, str) else (r.data or b"")
                yield from self._handle(ad.on_rest(rid, 200, body, ns), ns)
            elif r.kind == "connect":
                conn = self._conn_for(r.url)
                if conn is not None:
                    if conn in self._open:  # a second connection to the same place (see the module docstring)
                        self._open[conn] += 1
                    else:
                        yield from self._open_conn(conn, ns)
            elif r.kind == "disconnect":
                conn = self._conn_for(r.url)
                if conn is not None and conn in self._open:
                    self._open[conn] -= 1
                    if self._open[conn] <= 0:
                        yield from self._close_conn(conn, str(r.data or "disconnected"), ns)

    def _open_conn(self, conn: str, ns: int) -> Iterator:
        self._open[conn] = 1
        yield from self._handle(self.adapter.on_open(conn), ns)

    def _close_conn(self, conn: str, reason: str, ns: int) -> Iterator:
        self._open.pop(conn, None)
        yield from self._handle(self.adapter.on_close(conn, reason), ns)

    def _conn_for(self, url: str) -> str | None:
        """The adapter connection a recorded URL belongs to: same path, exact query preferred."""
        if url in self._url_conn:
            return self._url_conn[url]
        parts = urlsplit(url)
        cands = [c for c, u in self._conn_url.items() if urlsplit(u).path == parts.path]
        exact = [c for c in cands if urlsplit(self._conn_url[c]).query == parts.query]
        conn = (exact or cands or [None])[0]
        if conn is not None:
            self._url_conn[url] = conn
        return conn

    def _conn_by_content(self, url: str, data: str | bytes) -> tuple[str | None, str | bytes]:
        """The adapter connection a frame recorded elsewhere belongs to, by its content (exchanges whose rules
        know how the adapter lays its streams out), and the frame as that connection would receive it."""
        hit = self._place(url, data) if self._place is not None else None
        if hit is None:
            return None, data
        path, framed = hit
        conn = next((c for c, u in self._conn_url.items() if urlsplit(u).path == path), None)
        return conn, framed

    def _match_rest(self, url: str) -> str | None:
        want = _query_key(url)
        for rid, key in self._pending.items():
            if key == want:
                del self._pending[rid]
                return rid
        return None

    def _handle(self, events: list, ns: int) -> Iterator[Item]:
        st = self.stats
        for ev in events:
            cls = ev.__class__
            if cls is BookChanged:
                yield self._diff(ev)
            elif cls is TradesReceived:
                st.trades[ev.key] += len(ev.trades)
                yield TradeBatch(ev.key, ns, ev.trades)
            elif cls is PerpStatsUpdate:
                yield PerpUpdate(ev.key, ns, ev.exch_ts_ns, ev.fields)
            elif cls is LiquidationsReceived:
                yield LiquidationBatch(ev.key, ns, ev.liquidations)
            elif cls is OpenConnection:
                self._conn_url[ev.conn] = ev.url
            elif cls is FetchRest:
                self._pending[ev.request_id] = _query_key(ev.url)
            elif cls is BookInvalid:
                st.markers[ev.kind] += 1
                self._fresh.add(ev.key)
                yield Marker(ev.key, ns, ev.kind, ev.detail)
            elif cls is SymbolSynced:
                self._fresh.add(ev.key)
            elif cls is ProtocolError:
                st.protocol_errors += 1
            elif cls is SubscribeFailed:
                st.subscribe_failed += 1
            elif cls is CloseConnection:
                self._open.pop(ev.conn, None)  # the loop would close it; the recording shows what came next
            elif cls in (Send, Notice):
                pass

    def _levels(self, side: Any) -> dict[float, float]:
        if self.depth:
            return dict(side.top(self.depth))
        return {v[0]: v[1] for v in side.levels.values()}

    def _diff(self, ev: BookChanged) -> BookUpdate:
        key, book = ev.key, ev.book
        bids, asks = self._levels(book.bids), self._levels(book.asks)
        prev = self._prev.get(key)
        snapshot = prev is None or key in self._fresh
        self._fresh.discard(key)
        self._prev[key] = (bids, asks)
        exch = book.exch_ts_ns or ev.recv_ts_ns
        if snapshot:
            self.stats.snapshots[key] += 1
            changes = [(True, px, q) for px, q in sorted(bids.items(), reverse=True)]
            changes += [(False, px, q) for px, q in sorted(asks.items())]
            old_b, old_a = prev if prev is not None else ({}, {})
            # clear everything the consumer may hold: down to the lowest bid, up to the highest ask ever seen
            clear_bid = min([*bids, *old_b], default=0.0)
            clear_ask = max([*asks, *old_a], default=0.0)
            return BookUpdate(key, ev.recv_ts_ns, exch, book.update_id, True, changes, clear_bid, clear_ask)
        self.stats.updates[key] += 1
        changes = []
        for is_bid, new, old in ((True, bids, prev[0]), (False, asks, prev[1])):
            for px in old.keys() - new.keys():
                changes.append((is_bid, px, 0.0))
            for px, q in new.items():
                if old.get(px) != q:
                    changes.append((is_bid, px, q))
        return BookUpdate(key, ev.recv_ts_ns, exch, book.update_id, False, changes)


# ----------------------------------------------------------------------------- writers
def _side_flag(is_bid: bool) -> int:
    return BUY_EVENT if is_bid else SELL_EVENT


def hftbacktest_events(items: list) -> dict[SymbolKey, np.ndarray]:
    """One hftbacktest event array per symbol, rows in local-time order, every book/trade row flagged
    EXCH_EVENT | LOCAL_EVENT (run hftbacktest's correct_event_order if exchange times go backwards)."""
    rows: dict[SymbolKey, list[tuple]] = {}
    both = EXCH_EVENT | LOCAL_EVENT
    for it in items:
        if isinstance(it, PerpUpdate | LiquidationBatch):
            continue  # hftbacktest's event arrays have no place for them
        out = rows.setdefault(it.key, [])
        if isinstance(it, BookUpdate):
            ex, lo = it.exch_ns, it.local_ns
            if it.snapshot:
                out.append((DEPTH_CLEAR_EVENT | BUY_EVENT | both, ex, lo, it.clear_bid, 0.0, 0, 0, 0.0))
                out.append((DEPTH_CLEAR_EVENT | SELL_EVENT | both, ex, lo, it.clear_ask, 0.0, 0, 0, 0.0))
                ev = DEPTH_SNAPSHOT_EVENT
            else:
                ev = DEPTH_EVENT
            out.extend((ev | _side_flag(b) | both, ex, lo, px, q, 0, 0, 0.0) for b, px, q in it.changes)
        elif isinstance(it, TradeBatch):
            for exch, local, px, qty, tid, side, _flags in it.trades:
                sflag = BUY_EVENT if side == Side.BUY else SELL_EVENT if side == Side.SELL else 0
                out.append((TRADE_EVENT | sflag | both, exch or local, local, px, qty, 0, tid, 0.0))
        elif isinstance(it, Marker):
            code = MARKER_KINDS.index(it.kind) if it.kind in MARKER_KINDS else -1
            out.append((BOOK_INVALID_EVENT, it.local_ns, it.local_ns, 0.0, 0.0, 0, code, 0.0))
    return {k: np.array(v, dtype=HBT_EVENT_DTYPE) for k, v in rows.items()}


BOOK_COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount")
TRADE_COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount")


DERIVATIVE_TICKER_COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "funding_timestamp", "funding_rate",
                             "predicted_funding_rate", "open_interest", "last_price", "index_price", "mark_price")
LIQUIDATION_COLUMNS = TRADE_COLUMNS


def tardis_perp_rows(exchange: str, items: list) -> tuple[list[tuple], list[tuple]]:
    """(derivative_ticker rows, liquidations rows), timestamps in µs. A derivative_ticker row carries every field's
    latest value (an update merges into the symbol's record); a field never published is None (an empty CSV cell), as
    is last_price (not part of the perp record). A liquidation's side is the liquidation order's; its id is None."""
    ticker: list[tuple] = []
    liquidations: list[tuple] = []
    merged: dict[SymbolKey, dict[str, float | int]] = {}
    for it in items:
        if isinstance(it, PerpUpdate):
            rec = merged.setdefault(it.key, {})
            rec.update(it.fields)
            funding = rec.get("next_funding_ns")
            ticker.append((tardis_exchange(exchange, it.key[0]), it.key[1], (it.exch_ns or it.local_ns) // 1000,
                           it.local_ns // 1000, funding // 1000 if funding else None, rec.get("funding_rate"),
                           rec.get("next_funding_rate"), rec.get("open_interest"), None, rec.get("index_price"),
                           rec.get("mark_price")))
        elif isinstance(it, LiquidationBatch):
            ex = tardis_exchange(exchange, it.key[0])
            for exch, local, px, qty, _id, side, _flags in it.liquidations:
                s = "buy" if side == Side.BUY else "sell" if side == Side.SELL else "unknown"
                liquidations.append((ex, it.key[1], (exch or local) // 1000, local // 1000, None, s, px, qty))
    return ticker, liquidations


def tardis_exchange(exchange: str, market: str) -> str:
    """Tardis's exchange id for one market of `exchange` (``<exchange>-<market>`` when Tardis has none)."""
    return recording_rules(exchange).TARDIS_IDS.get(market) or f"{exchange}-{market.lower()}"


def tardis_rows(exchange: str, items: list) -> tuple[list[tuple], list[tuple]]:
    """(incremental_book_L2 rows, trades rows), timestamps in µs like tardis; the `exchange` column is Tardis's own
    exchange id of the symbol's market (``binance-futures``, ``okex-swap``, ...), so spot and derivatives with the
    same native id stay apart."""
    book: list[tuple] = []
    trades: list[tuple] = []
    for it in items:
        ex = tardis_exchange(exchange, it.key[0])
        sym = it.key[1]
        if isinstance(it, BookUpdate):
            ts, local = it.exch_ns // 1000, it.local_ns // 1000
            book.extend((ex, sym, ts, local, it.snapshot, "bid" if b else "ask", px, q) for b, px, q in it.changes)
        elif isinstance(it, TradeBatch):
            for exch, local, px, qty, tid, side, _flags in it.trades:
                s = "buy" if side == Side.BUY else "sell" if side == Side.SELL else "unknown"
                trades.append((ex, sym, (exch or local) // 1000, local // 1000, tid, s, px, qty))
    return book, trades


def _write_csv(path: str, header: tuple, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow(["true" if v is True else "false" if v is False else v for v in r])


def _write_parquet(path: str, header: tuple, rows: list[tuple]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ExportError(PYARROW_MISSING) from e
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in header]
    pq.write_table(pa.table({name: list(col) for name, col in zip(header, cols, strict=True)}), path)


def export(path: str | os.PathLike[str], fmt: str, out_dir: str | os.PathLike[str], *, exchange: str | None = None,
           depth: int = 0, symbols: list[str] | None = None) -> dict[str, Any]:
    """Rebuild `path` and write `fmt` files into `out_dir` (created). Returns the summary, also written as
    ``export-summary.json``. Raises ExportError (clear message) or FileNotFoundError."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise ExportError(PYARROW_MISSING) from e
    rb = Rebuild(path, exchange, depth=depth, symbols=symbols)
    items = list(rb)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    files: list[str] = []
    if fmt == "hftbacktest":
        for (market, native), arr in sorted(hftbacktest_events(items).items()):
            f = os.path.join(out_dir, f"{rb.exchange}_{market.lower()}_{native}.npz")
            np.savez_compressed(f, data=arr)
            files.append(f)
    else:
        book, trades = tardis_rows(rb.exchange, items)
        ticker, liquidations = tardis_perp_rows(rb.exchange, items)
        ext, write = (".csv", _write_csv) if fmt == "tardis-csv" else (".parquet", _write_parquet)
        tables = [("incremental_book_L2", BOOK_COLUMNS, book), ("trades", TRADE_COLUMNS, trades)]
        if ticker or liquidations:  # a recording with perpetual data
            tables += [("derivative_ticker", DERIVATIVE_TICKER_COLUMNS, ticker),
                       ("liquidations", LIQUIDATION_COLUMNS, liquidations)]
        for name, header, rows in tables:
            f = os.path.join(out_dir, name + ext)
            write(f, header, rows)
            files.append(f)
    summary = {"input": os.fspath(path), "exchange": rb.exchange, "format": fmt, "files": files,
               "symbols": ["/".join(i.key) for i in rb.instruments],
               "instruments": [{"market": i.market, "native": i.native, "unified": i.unified,
                                "tardis_exchange": tardis_exchange(rb.exchange, i.market), "tick_size": i.tick_size,
                                "lot_size": i.lot_size, "contract_size": i.contract_value} for i in rb.instruments],
               **rb.stats.as_dict()}
    with open(os.path.join(out_dir, "export-summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


__all__ = ["BOOK_COLUMNS", "BOOK_INVALID_EVENT", "BUY_EVENT", "DEPTH_CLEAR_EVENT", "DEPTH_EVENT",
           "DERIVATIVE_TICKER_COLUMNS", "LIQUIDATION_COLUMNS", "LiquidationBatch", "PerpUpdate", "tardis_perp_rows",
           "DEPTH_SNAPSHOT_EVENT", "EXCH_EVENT", "FORMATS", "HBT_EVENT_DTYPE", "LOCAL_EVENT", "MARKER_KINDS",
           "SELL_EVENT", "TRADE_COLUMNS", "TRADE_EVENT", "BookUpdate", "ExportError", "Marker", "Rebuild",
           "RebuildStats", "TradeBatch", "discover_symbols", "export", "hftbacktest_events", "tardis_exchange",
           "tardis_rows"]
