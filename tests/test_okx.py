"""OKX adapter, frame level: bytes in, events out (no sockets). Feed-process tests: test_okx_sim.py."""

from __future__ import annotations

import json
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdengine.book import LocalBook
from mdengine.events import (
    BookChanged,
    BookInvalid,
    CloseConnection,
    LiquidationsReceived,
    Notice,
    OpenConnection,
    PerpInvalid,
    PerpStatsUpdate,
    ProtocolError,
    Send,
    SubscribeFailed,
    SymbolSynced,
    TradesReceived,
)
from mdengine.exchanges import get_adapter
from mdengine.exchanges.okx import OkxAdapter
from mdengine.store.layout import MarketKind, Side
from mdengine.symbols import InstrumentIndex

CONN = "public-0"
INSTRUMENTS_BODY = {"code": "0", "msg": "", "data": [
    {"instType": "SPOT", "instId": "BTC-USDT", "baseCcy": "BTC", "quoteCcy": "USDT", "settleCcy": "", "ctVal": "",
     "ctType": "", "tickSz": "0.1", "lotSz": "0.00000001", "instFamily": "", "uly": "", "state": "live"},
    {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "instFamily": "BTC-USDT", "uly": "BTC-USDT", "settleCcy": "USDT",
     "ctVal": "0.01", "ctType": "linear", "tickSz": "0.1", "lotSz": "0.01", "baseCcy": "", "quoteCcy": ""},
    {"instType": "SWAP", "instId": "BTC-USD-SWAP", "instFamily": "BTC-USD", "uly": "BTC-USD", "settleCcy": "BTC",
     "ctVal": "100", "ctType": "inverse", "tickSz": "0.1", "lotSz": "1", "baseCcy": "", "quoteCcy": ""},
    {"instType": "SWAP", "instId": "UNI-USD-SWAP", "instFamily": "UNI-USD", "settleCcy": "UNI",
     "ctVal": "10", "ctType": "inverse", "tickSz": "0.001", "lotSz": "1"},
    {"instType": "FUTURES", "instId": "BTC-USD-220527", "instFamily": "BTC-USD", "settleCcy": "BTC",
     "ctVal": "100", "ctType": "inverse", "tickSz": "0.1", "lotSz": "1"},
    {"instType": "FUTURES", "instId": "BTC-USDT-250627", "instFamily": "BTC-USDT", "settleCcy": "USDT",
     "ctVal": "0.01", "ctType": "linear", "tickSz": "0.1", "lotSz": "1"},
]}


def _index() -> InstrumentIndex:
    insts, events = OkxAdapter.parse_instruments("instruments:ALL", orjson.dumps(INSTRUMENTS_BODY))
    assert events == []
    return InstrumentIndex(insts)


def _adapter(*natives: str, **kw) -> OkxAdapter:
    idx = _index()
    a = OkxAdapter(idx, **kw)
    for n in natives or ("BTC-USDT", "BTC-USDT-SWAP"):
        a.subscribe(idx.resolve(n))
    a.on_open(CONN)
    return a


def _books(inst: str, action: str, bids, asks, prev=None, seq=None, checksum=0, ts="1597026383085") -> str:
    d = {"asks": asks, "bids": bids, "ts": ts, "checksum": checksum}
    if seq is not None:
        d.update({"prevSeqId": prev, "seqId": seq})
    return json.dumps({"arg": {"channel": "books", "instId": inst}, "action": action, "data": [d]})


def _kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


# --------------------------------------------------------------------------- instruments and naming
def test_parse_instruments_unified_names_and_contract_values():
    idx = _index()
    assert idx.resolve("BTC/USDT").native == "BTC-USDT"
    swap = idx.resolve("BTC/USDT:USDT")
    assert (swap.native, swap.market, swap.kind, swap.contract_value) == ("BTC-USDT-SWAP", "SWAP",
                                                                          MarketKind.LINEAR, 0.01)
    inv = idx.resolve("BTC/USD:BTC")
    assert (inv.native, inv.kind, inv.contract_value, inv.lot_size) == ("BTC-USD-SWAP", MarketKind.INVERSE, 100.0, 1.0)
    assert idx.resolve("BTC/USDT:USDT-250627").native == "BTC-USDT-250627"
    assert idx.resolve("BTC-USD-220527").unified == "BTC/USD:BTC-220527"


def test_instrument_requests_and_errors():
    reqs = OkxAdapter.instrument_requests({"rest": "http://127.0.0.1:9"}, ["SPOT", "SWAP"])
    assert [r.url for r in reqs] == ["http://127.0.0.1:9/api/v5/public/instruments?instType=SPOT",
                                     "http://127.0.0.1:9/api/v5/public/instruments?instType=SWAP"]
    insts, events = OkxAdapter.parse_instruments("x", b'{"code":"51000","msg":"Parameter instType error","data":[]}')
    assert insts == [] and isinstance(events[0], ProtocolError) and "51000" in events[0].message
    insts, events = OkxAdapter.parse_instruments("x", b"<html>")
    assert insts == [] and isinstance(events[0], ProtocolError)


def test_registry_and_sim_endpoints():
    assert get_adapter("okx") is OkxAdapter
    assert OkxAdapter.sim_endpoints({"okx": ("ws://h:1", "http://h:1")}) == {"ws": "ws://h:1", "rest": "http://h:1"}


# --------------------------------------------------------------------------- subscriptions
def test_subscribe_opens_connection_then_subscribes_on_open():
    idx = _index()
    a = OkxAdapter(idx, endpoints={"ws": "ws://127.0.0.1:5"}, perp=False)  # perp channels: below
    assert a.subscribe(idx.resolve("BTC/USDT")) == [OpenConnection(CONN, "ws://127.0.0.1:5/ws/v5/public")]
    assert a.subscribe(idx.resolve("BTC/USDT:USDT")) == []  # same connection, not open yet
    (send,) = a.on_open(CONN)
    args = json.loads(send.payload)["args"]
    assert args == [{"channel": "books", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "BTC-USDT"},
                    {"channel": "books", "instId": "BTC-USDT-SWAP"}, {"channel": "trades", "instId": "BTC-USDT-SWAP"}]
    (late,) = a.subscribe(idx.resolve("BTC/USD:BTC"))
    assert json.loads(late.payload)["op"] == "subscribe" and "BTC-USD-SWAP" in late.payload
    (unsub,) = a.unsubscribe(("SWAP", "BTC-USD-SWAP"))
    assert json.loads(unsub.payload)["op"] == "unsubscribe"
    assert ("SWAP", "BTC-USD-SWAP") not in a.books


@pytest.mark.parametrize(("mode", "depth", "channel"), [("partial", 5, "books5"), ("partial", 1, "bbo-tbt"),
                                                       ("diff", 50, "books")])
def test_book_channel_by_mode(mode, depth, channel):
    a = _adapter("BTC-USDT", book_mode=mode, book_depth=depth, trades=False)
    assert a.syms[("SPOT", "BTC-USDT")].channel == channel


# --------------------------------------------------------------------------- checksums
@pytest.mark.parametrize(("bids", "asks", "expected"), [
    ([["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]], [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]],
     -1881014294),
    ([["3366.1", "7", "0", "3"]], [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"], ["3372", "8", "3", "4"]],
     831078360),
])
def test_checksum_worked_examples(bids, asks, expected):
    book = LocalBook()
    book.apply_snapshot(bids, asks)
    assert book.checksum() == expected
    a = _adapter("BTC-USDT")
    events = a.on_frame(CONN, _books("BTC-USDT", "snapshot", bids, asks, checksum=expected), 1)
    assert _kinds(events) == ["SymbolSynced", "BookChanged"]
    b = _adapter("BTC-USDT")
    events = b.on_frame(CONN, _books("BTC-USDT", "snapshot", bids, asks, checksum=expected + 1), 1)
    assert isinstance(events[0], BookInvalid) and events[0].kind == "checksum"
    assert not b.is_live(("SPOT", "BTC-USDT"))


def _recording(recordings_dir) -> list[str]:
    path = os.path.join(recordings_dir, "okx-2022-05-13.jsonl")
    frames = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec["kind"] == "recv":
                frames.append(rec["data"])
    return frames


REC_SYMBOLS = ("BTC-USD-220527", "UNI-USD-SWAP", "BTC-USDT")


def test_recording_all_290_checksums_validate(recordings_dir):
    a = _adapter(*REC_SYMBOLS)
    changed = synced = trades = checked = 0
    for frame in _recording(recordings_dir):
        is_book = '"channel":"books"' in frame and '"data"' in frame
        events = a.on_frame(CONN, frame, 1)
        assert not any(isinstance(e, (BookInvalid, ProtocolError)) for e in events), events
        changed += sum(isinstance(e, BookChanged) for e in events)
        synced += sum(isinstance(e, SymbolSynced) for e in events)
        trades += sum(len(e.trades) for e in events if isinstance(e, TradesReceived))
        if is_book:
            assert json.loads(frame)["data"][0]["checksum"] != 0  # so every one of them was checked
            checked += 1
    assert (checked, changed, synced, trades) == (290, 290, 3, 74)
    assert all(a.is_live(k) for k in a.syms)


def test_recording_flipped_digit_is_caught_on_that_update_only_for_that_symbol(recordings_dir):
    frames = _recording(recordings_dir)
    a = _adapter(*REC_SYMBOLS)
    key = ("SPOT", "BTC-USDT")
    target = None
    for i, frame in enumerate(frames):
        msg = json.loads(frame)
        if (target is None and msg.get("action") == "update" and msg["arg"]["instId"] == "BTC-USDT"
                and msg["data"][0]["bids"]):
            level = msg["data"][0]["bids"][0]
            top25 = [p for p, _ in a.books[key].bids.top_strings(25)]
            if level[1] != "0" and float(level[0]) >= float(top25[-1]):
                digit = level[1][-1]
                level[1] = level[1][:-1] + str((int(digit) + 1) % 10 or 1)
                target = i
                events = a.on_frame(CONN, json.dumps(msg), 1)
                assert _kinds(events) == ["BookInvalid", "Send", "Send"], events
                assert (events[0].key, events[0].kind) == (key, "checksum")
                unsub, sub = (json.loads(e.payload) for e in events[1:])
                assert unsub["op"] == "unsubscribe" and sub["op"] == "subscribe"
                assert unsub["args"] == sub["args"] == [{"channel": "books", "instId": "BTC-USDT"}]
                continue
        events = a.on_frame(CONN, frame, 1)
        if target is not None:
            assert not any(isinstance(e, BookInvalid) for e in events)
            for e in events:
                if isinstance(e, BookChanged):
                    assert e.key != key  # the invalid symbol publishes nothing until a new snapshot
    assert target is not None
    assert not a.is_live(key)
    assert a.is_live(("FUTURES", "BTC-USD-220527")) and a.is_live(("SWAP", "UNI-USD-SWAP"))


# --------------------------------------------------------------------------- seqId / prevSeqId rules
BIDS = [["8476.97", "256", "0", "12"], ["8475.55", "101", "0", "1"]]
ASKS = [["8476.98", "415", "0", "13"], ["8477", "7", "0", "2"]]


def _run(a: OkxAdapter, rows) -> list[list[str]]:
    out = []
    for action, prev, seq, bids, asks in rows:
        out.append(_kinds(a.on_frame(CONN, _books("BTC-USDT", action, bids, asks, prev, seq), 1)))
    return out


def test_seq_doc_example_idle_and_reset_are_accepted():
    a = _adapter("BTC-USDT")
    kinds = _run(a, [
        ("snapshot", -1, 10, BIDS, ASKS),
        ("update", 10, 15, [["8476.5", "3", "0", "1"]], []),
        ("update", 15, 15, [], []),  # idle keep-alive
        ("update", 15, 3, [], [["8477", "9", "0", "2"]]),  # maintenance reset: seqId < prevSeqId
        ("update", 3, 5, [["8476.5", "0", "0", "0"]], []),
    ])
    assert kinds == [["SymbolSynced", "BookChanged"], ["BookChanged"], ["BookChanged"],
                     ["BookInvalid", "SymbolSynced", "BookChanged"],  # counted, no resubscribe
                     ["BookChanged"]]
    book = a.books[("SPOT", "BTC-USDT")]
    assert book.update_id == 5 and book.asks.top(2) == [(8476.98, 415.0), (8477.0, 9.0)]
    assert a.is_live(("SPOT", "BTC-USDT"))


@pytest.mark.parametrize(("prev", "seq", "kind"), [(11, 15, "gap"), (9, 12, "gap"), (2, 4, "reset")])
def test_seq_break_invalidates_and_resubscribes_books_only(prev, seq, kind):
    a = _adapter("BTC-USDT", "BTC-USDT-SWAP")
    a.on_frame(CONN, _books("BTC-USDT-SWAP", "snapshot", BIDS, ASKS, -1, 7), 1)
    _run(a, [("snapshot", -1, 10, BIDS, ASKS)])
    events = a.on_frame(CONN, _books("BTC-USDT", "update", [["8476.5", "3", "0", "1"]], [], prev, seq), 1)
    assert _kinds(events) == ["BookInvalid", "Send", "Send"]
    assert events[0].kind == kind and events[0].key == ("SPOT", "BTC-USDT")
    assert '"books"' in events[2].payload and '"trades"' not in events[2].payload
    # updates in flight are ignored; the other symbol is untouched; a new snapshot brings it back
    assert _run(a, [("update", 15, 16, [], [["8477", "1", "0", "1"]])]) == [[]]
    assert a.is_live(("SWAP", "BTC-USDT-SWAP"))
    assert _run(a, [("snapshot", -1, 20, BIDS, ASKS)]) == [["SymbolSynced", "BookChanged"]]


def test_duplicate_update_is_dropped():
    a = _adapter("BTC-USDT")
    _run(a, [("snapshot", -1, 10, BIDS, ASKS), ("update", 10, 15, [["8476.5", "3", "0", "1"]], [])])
    assert _run(a, [("update", 10, 15, [["8476.5", "3", "0", "1"]], [])]) == [[]]
    assert a.is_live(("SPOT", "BTC-USDT"))


def test_crossed_book_after_update_resyncs():
    a = _adapter("BTC-USDT")
    _run(a, [("snapshot", -1, 10, BIDS, ASKS)])
    events = a.on_frame(CONN, _books("BTC-USDT", "update", [["8478", "1", "0", "1"]], [], 10, 11), 1)
    assert _kinds(events) == ["BookInvalid", "Send", "Send"] and events[0].kind == "crossed"


def test_disconnect_invalidates_live_symbols_and_reopen_resubscribes():
    a = _adapter("BTC-USDT", "BTC-USDT-SWAP")
    _run(a, [("snapshot", -1, 10, BIDS, ASKS)])
    events = a.on_close(CONN, "EOF")
    assert [(e.key, e.kind) for e in events] == [(("SPOT", "BTC-USDT"), "disconnect")]  # the other never synced
    assert not a.is_live(("SPOT", "BTC-USDT"))
    assert a.symbols_on(CONN) == [("SPOT", "BTC-USDT"), ("SWAP", "BTC-USDT-SWAP")]
    sends = a.on_open(CONN)  # the books and trades, then the swap's perp channels
    assert [json.loads(x.payload)["op"] for x in sends] == ["subscribe", "subscribe"]


# --------------------------------------------------------------------------- other frames
def test_control_frames_table():
    a = _adapter("BTC-USDT")
    assert a.on_frame(CONN, "pong", 1) == []
    assert a.on_frame(CONN, '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a"}', 1) == []
    (err,) = a.on_frame(CONN, json.dumps({"id": "1", "event": "error", "code": "60018", "msg":
                                          "Wrong URL or channel:books,instId:BTC-USDT doesn't exist.",
                                          "connId": "a"}), 1)
    assert isinstance(err, SubscribeFailed) and err.key == ("SPOT", "BTC-USDT") and "60018" in err.message
    assert ("SPOT", "BTC-USDT") not in a.books  # dropped, as the publisher drops its slot
    assert a.on_frame(CONN, _books("BTC-USDT", "snapshot", BIDS, ASKS, -1, 1), 1) == []
    (close,) = a.on_frame(CONN, '{"event":"notice","code":"64008","msg":"The connection will soon be closed",'
                                '"connId":"a"}', 1)
    assert isinstance(close, CloseConnection) and close.reconnect
    (bad,) = a.on_frame(CONN, '{"arg": {"channel": "books"', 1)
    assert isinstance(bad, ProtocolError) and bad.malformed
    assert a.on_frame(CONN, '{"arg":{"channel":"books","instId":"XRP-USDT"},"action":"snapshot","data":[]}', 1) == []
    assert a.ping_payload(CONN) == "ping" and 0 < a.ping_interval(CONN) < 30


def test_trades_frame():
    a = _adapter("BTC-USDT")
    frame = json.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [
        {"instId": "BTC-USDT", "tradeId": "130639474", "px": "42219.9", "sz": "0.12060306", "side": "buy",
         "ts": "1630048897897", "count": "3", "source": "0", "seqId": 1234}]})
    (ev,) = a.on_frame(CONN, frame, 99)
    assert ev == TradesReceived(("SPOT", "BTC-USDT"),
                                [(1630048897897_000_000, 99, 42219.9, 0.12060306, 130639474, Side.BUY, 0)])


def test_partial_books5_replaces_on_every_push():
    a = _adapter("BTC-USDT", book_mode="partial", book_depth=5)
    push = {"arg": {"channel": "books5", "instId": "BTC-USDT"},
            "data": [{"asks": ASKS, "bids": BIDS, "instId": "BTC-USDT", "ts": "1670324386802", "seqId": 363996337}]}
    assert _kinds(a.on_frame(CONN, json.dumps(push), 1)) == ["SymbolSynced", "BookChanged"]
    push["data"][0]["bids"] = [["8470", "1", "0", "1"]]
    assert _kinds(a.on_frame(CONN, json.dumps(push), 1)) == ["BookChanged"]
    assert a.books[("SPOT", "BTC-USDT")].bids.top(5) == [(8470.0, 1.0)]


def test_unreadable_update_of_live_symbol_is_a_gap():
    a = _adapter("BTC-USDT")
    _run(a, [("snapshot", -1, 10, BIDS, ASKS)])
    events = a.on_frame(CONN, _books("BTC-USDT", "update", [["8476.5", "x", "0", "1"]], [], 10, 11), 1)
    assert _kinds(events) == ["ProtocolError", "BookInvalid", "Send", "Send"] and events[1].kind == "gap"


# --------------------------------------------------------------------------- fuzz
_json = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                     | st.sampled_from(["books", "trades", "snapshot", "update", "BTC-USDT", "8476.9", "0", "-1"])
                     | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                         ["arg", "data", "action", "channel", "instId", "bids", "asks", "seqId", "prevSeqId", "ts",
                          "checksum", "event", "code", "msg", "tradeId", "px", "sz", "side", "id"]), c, max_size=6),
                     max_leaves=20)
_frames = st.one_of(
    st.binary(max_size=64), st.text(max_size=64), _json.map(lambda v: orjson.dumps(v).decode()),
    st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape")),  # how the loop decodes bad UTF-8
    st.builds(lambda ch, action, d: json.dumps({"arg": {"channel": ch, "instId": "BTC-USDT"}, "action": action,
                                                 "data": d}),
              st.sampled_from(["books", "trades", "books5", "bbo-tbt"]), st.sampled_from(["snapshot", "update", 3]),
              _json),
)
_ALLOWED = (BookChanged, BookInvalid, SymbolSynced, TradesReceived, ProtocolError, Send, SubscribeFailed,
            CloseConnection)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames, max_size=6))
def test_garbage_frames_yield_events_never_exceptions(frames):
    a = _adapter("BTC-USDT")
    a.on_frame(CONN, _books("BTC-USDT", "snapshot", BIDS, ASKS, -1, 10), 1)
    for f in frames:
        for e in a.on_frame(CONN, f, 1):
            assert isinstance(e, (*_ALLOWED, Notice))


# --------------------------------------------------------------------------- perpetual data (OKX-DOC push examples)
def _push(channel: str, inst: dict, rows: list) -> str:
    return json.dumps({"arg": {"channel": channel, **inst}, "data": rows})


MARK = {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "markPx": "42310.6", "ts": "1630049139746"}
INDEX = {"instId": "BTC-USDT", "idxPx": "42300.1", "high24h": "0.5", "low24h": "0.1", "open24h": "0.1",
         "sodUtc0": "0.1", "sodUtc8": "0.1", "ts": "1597026383085"}
FUNDING = {"formulaType": "noRate", "fundingRate": "0.0001875391284828", "fundingTime": "1700726400000",
           "impactValue": "", "instId": "BTC-USDT-SWAP", "instType": "SWAP", "interestRate": "", "method":
           "current_period", "maxFundingRate": "0.00375", "minFundingRate": "-0.00375", "nextFundingRate": "",
           "nextFundingTime": "1700755200000", "premium": "0.0001233824646391", "settFundingRate":
           "0.0001699799259033", "settState": "settled", "ts": "1700724675402"}
OPEN_INTEREST = {"instId": "BTC-USDT-SWAP", "instType": "SWAP", "oi": "5000", "oiCcy": "50", "oiUsd": "4990000",
                 "ts": "1597026383085"}
LIQUIDATION = {"details": [{"bkLoss": "0", "bkPx": "42000.5", "ccy": "", "posSide": "short", "side": "buy",
                            "sz": "13", "ts": "1692266434010"}],
               "instFamily": "BTC-USDT", "instId": "BTC-USDT-SWAP", "instType": "SWAP", "uly": "BTC-USDT"}


def test_perp_channels_are_subscribed_in_their_own_request_for_derivatives_only():
    a = OkxAdapter(_index())
    for n in ("BTC-USDT", "BTC-USDT-SWAP", "BTC-USDT-250627"):
        a.subscribe(a.instruments.resolve(n))
    books, perp = a.on_open(CONN)
    assert all(x["channel"] in ("books", "trades") for x in json.loads(books.payload)["args"])
    assert json.loads(perp.payload)["args"] == [
        {"channel": "mark-price", "instId": "BTC-USDT-SWAP"}, {"channel": "index-tickers", "instId": "BTC-USDT"},
        {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
        {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
        {"channel": "mark-price", "instId": "BTC-USDT-250627"},
        {"channel": "open-interest", "instId": "BTC-USDT-250627"},
        {"channel": "liquidation-orders", "instType": "SWAP"}, {"channel": "liquidation-orders", "instType": "FUTURES"}]
    # the index and the SWAP liquidations stay while another symbol of the connection needs them
    books, perp = a.unsubscribe(("FUTURES", "BTC-USDT-250627"))
    assert json.loads(perp.payload)["args"] == [
        {"channel": "mark-price", "instId": "BTC-USDT-250627"},
        {"channel": "open-interest", "instId": "BTC-USDT-250627"},
        {"channel": "liquidation-orders", "instType": "FUTURES"}]
    assert len(_adapter("BTC-USDT-SWAP", perp=False).on_open(CONN)) == 1


def test_perp_pushes_merge_into_perp_stats():
    a = _adapter()
    key = ("SWAP", "BTC-USDT-SWAP")
    (m,) = a.on_frame(CONN, _push("mark-price", {"instId": "BTC-USDT-SWAP"}, [MARK]), 1)
    assert isinstance(m, PerpStatsUpdate) and m.key == key and m.fields == {"mark_price": 42310.6}
    assert m.exch_ts_ns == 1630049139746 * 1_000_000
    (i,) = a.on_frame(CONN, _push("index-tickers", {"instId": "BTC-USDT"}, [INDEX]), 2)
    assert i.key == key and i.fields == {"index_price": 42300.1}  # not the spot BTC-USDT book's
    (f,) = a.on_frame(CONN, _push("funding-rate", {"instId": "BTC-USDT-SWAP"}, [FUNDING]), 3)
    assert f.fields == {"funding_rate": 0.0001875391284828, "next_funding_ns": 1700726400000 * 1_000_000}
    forecast = {**FUNDING, "method": "next_period", "nextFundingRate": "0.00021"}  # documented, "" today
    (f,) = a.on_frame(CONN, _push("funding-rate", {"instId": "BTC-USDT-SWAP"}, [forecast]), 3)
    assert f.fields["next_funding_rate"] == 0.00021
    (o,) = a.on_frame(CONN, _push("open-interest", {"instId": "BTC-USDT-SWAP"}, [OPEN_INTEREST]), 4)
    assert o.fields == {"open_interest": 5000.0}
    assert all(e.confirms == () for e in (m, i, f, o))  # each channel dates its own group only (layout 1.6)
    assert [type(e) for e in a.on_close(CONN, "reset")].count(PerpInvalid) == 1
    # OKX-DOC cadences (mark <= 10 s, index <= 60 s, funding 30-90 s; open interest: mdengine's 60 s), x 2 + 5 s
    assert a.perp_stale_after() == {"mark": 25.0, "index": 125.0, "funding": 185.0, "open_interest": 125.0}


def test_liquidation_orders_keep_this_connections_symbols_only():
    a = _adapter()
    other = {**LIQUIDATION, "instId": "IOST-USDT-SWAP"}
    (ev,) = a.on_frame(CONN, _push("liquidation-orders", {"instType": "SWAP"}, [other, LIQUIDATION]), 5)
    assert isinstance(ev, LiquidationsReceived) and ev.key == ("SWAP", "BTC-USDT-SWAP")
    assert ev.liquidations == [(1692266434010 * 1_000_000, 5, 42000.5, 13.0, 0, Side.BUY, 0)]
    bad = {**LIQUIDATION, "details": [{**LIQUIDATION["details"][0], "side": "up"}]}
    (ev,) = a.on_frame(CONN, _push("liquidation-orders", {"instType": "SWAP"}, [bad]), 5)
    assert isinstance(ev, ProtocolError)
    (ev,) = a.on_frame(CONN, _push("mark-price", {"instId": "BTC-USDT-SWAP"}, [{**MARK, "markPx": "nan"}]), 5)
    assert isinstance(ev, ProtocolError) and ev.key == ("SWAP", "BTC-USDT-SWAP")


def test_a_refused_perp_channel_is_reported_and_leaves_the_books_alone():
    a = OkxAdapter(_index())
    a.subscribe(a.instruments.resolve("BTC-USDT-SWAP"))
    _, perp = a.on_open(CONN)
    rid = json.loads(perp.payload)["id"]
    err = {"id": rid, "event": "error", "code": "60018", "msg": "Wrong URL or channel:funding-rate,instId:"
           "BTC-USDT-SWAP doesn't exist.", "connId": "a4d3ae55"}
    ev, invalid = a.on_frame(CONN, json.dumps(err), 6)
    assert isinstance(ev, SubscribeFailed) and ev.key is None and "perp channels" in ev.message
    assert ("SWAP", "BTC-USDT-SWAP") in a.syms
    # the record stays stale: the channels OKX did accept must not make it look live with funding frozen
    assert isinstance(invalid, PerpInvalid) and invalid.key == ("SWAP", "BTC-USDT-SWAP") and "funding-rate" in \
        invalid.detail
    assert a.on_frame(CONN, _push("mark-price", {"instId": "BTC-USDT-SWAP"}, [MARK]), 7) == []
