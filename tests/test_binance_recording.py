"""The Binance adapter on real frames (tests/data/binance-spot-2021-10-12.jsonl), replayed without sockets.

Facts checked by the recording's README: all 4 symbols sync, no gap, 172 diffs applied and 5 dropped. The final
books must equal a reference computed here from the same frames, independently of LocalBook.
"""

import json
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from mdengine.events import BookInvalid, FetchRest, OpenConnection, ProtocolError, SubscribeFailed, TradesReceived
from mdengine.exchanges.binance import LIVE, BinanceAdapter
from mdengine.store.layout import MarketKind
from mdengine.symbols import Instrument, InstrumentIndex

PAIRS = {"NKNUSDT": ("NKN", "USDT"), "BLZETH": ("BLZ", "ETH"), "LRCBTC": ("LRC", "BTC"), "RUNEEUR": ("RUNE", "EUR")}


@pytest.fixture(scope="module")
def lines(binance_recording):
    return binance_recording


def replay(lines, observe=None):
    """The recording through a BinanceAdapter (REST answers from the recording); `observe(out)` sees each
    frame's or answer's events as they come."""
    insts = [Instrument("binance", "spot", n, f"{b}/{q}", MarketKind.SPOT, b, q) for n, (b, q) in PAIRS.items()]
    a = BinanceAdapter(InstrumentIndex(insts), trade_stream="aggTrade")
    opens = [e for i in insts for e in a.subscribe(i)]
    (conn,) = {e.conn for e in opens if isinstance(e, OpenConnection)}
    a.on_open(conn)
    pending: dict[tuple[str, str], FetchRest] = {}
    events = []
    for ev in lines:
        ts_ns = int(ev["ts"] * 1e9)
        if ev["kind"] == "recv":
            out = a.on_frame(conn, ev["data"], ts_ns)
        elif ev["kind"] == "http":
            u = urlsplit(ev["url"])
            req = pending.pop((u.path, u.query))  # the adapter asked for exactly this URL
            out = a.on_rest(req.request_id, 200, ev["data"].encode(), ts_ns)
        else:
            continue
        for e in out:
            if isinstance(e, FetchRest):
                u = urlsplit(e.url)
                pending[(u.path, u.query)] = e
        if observe is not None:
            observe(out)
        events += out
    return a, events, pending


def reference_books(lines):
    """Binance's documented procedure, written plainly over Decimal-keyed dicts."""
    diffs: dict[str, list[dict]] = {s: [] for s in PAIRS}
    snaps: dict[str, dict] = {}
    for ev in lines:
        if ev["kind"] == "recv":
            msg = json.loads(ev["data"])
            if msg["stream"].endswith("@depth@100ms"):
                diffs[msg["data"]["s"]].append(msg["data"])
        elif ev["kind"] == "http":
            snaps[urlsplit(ev["url"]).query.split("symbol=")[1].split("&")[0]] = json.loads(ev["data"])
    books, applied, dropped = {}, 0, 0
    for sym, snap in snaps.items():
        last = snap["lastUpdateId"]
        bids = {Decimal(p): Decimal(q) for p, q in snap["bids"]}
        asks = {Decimal(p): Decimal(q) for p, q in snap["asks"]}
        first = True
        for d in diffs[sym]:
            if d["u"] <= last:
                dropped += 1
                continue
            assert (d["U"] <= last + 1 <= d["u"]) if first else d["U"] == last + 1
            first = False
            for side, levels in ((bids, d["b"]), (asks, d["a"])):
                for p, q in levels:
                    if Decimal(q) == 0:
                        side.pop(Decimal(p), None)
                    else:
                        side[Decimal(p)] = Decimal(q)
            last = d["u"]
            applied += 1
        books[sym] = (last, bids, asks)
    return books, applied, dropped


def test_binance_spot_recording_syncs_all_four_symbols_without_a_gap(lines):
    a, events, pending = replay(lines)
    assert not pending
    assert not [e for e in events if isinstance(e, BookInvalid | ProtocolError | SubscribeFailed)]
    assert {k[1]: s.state for k, s in a.syms.items()} == dict.fromkeys(PAIRS, LIVE)
    assert sum(s.applied for s in a.syms.values()) == 172
    assert sum(s.dropped for s in a.syms.values()) == 5
    assert sum(len(e.trades) for e in events if isinstance(e, TradesReceived)) == 2  # aggTrade


def test_binance_spot_recording_final_books_equal_the_reference(lines):
    a, _, _ = replay(lines)
    ref, applied, dropped = reference_books(lines)
    assert (applied, dropped) == (172, 5)
    for sym, (last, bids, asks) in ref.items():
        book = a.books[("spot", sym)]
        assert book.update_id == last
        got_bids = {Decimal(p): Decimal(q) for p, q in book.bids.top_strings(10_000)}
        got_asks = {Decimal(p): Decimal(q) for p, q in book.asks.top_strings(10_000)}
        assert got_bids == bids and got_asks == asks
        assert list(got_bids) == sorted(bids, reverse=True) and list(got_asks) == sorted(asks)
