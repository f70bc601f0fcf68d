"""Bitget adapter, frame level: bytes in, events out (no sockets). Feed-process tests: test_bitget_sim.py."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdengine.book import LocalBook
from mdengine.events import (
    BookChanged,
    BookInvalid,
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
from mdengine.exchanges.bitget import BitgetAdapter
from mdengine.store.layout import MarketKind, Side
from mdengine.symbols import InstrumentIndex

CONN = "public-0"
SPOT = {"code": "00000", "msg": "success", "data": [
    {"symbol": "BTCUSDT", "baseCoin": "BTC", "quoteCoin": "USDT", "pricePrecision": "2", "quantityPrecision": "6",
     "status": "online"}]}
USDT_FUT = {"code": "00000", "msg": "success", "data": [
    {"symbol": "BTCUSDT", "baseCoin": "BTC", "quoteCoin": "USDT", "pricePlace": "2", "priceEndStep": "5",
     "volumePlace": "3", "sizeMultiplier": "0.001", "symbolType": "perpetual", "deliveryTime": ""},
    {"symbol": "BTCUSDT0627", "baseCoin": "BTC", "quoteCoin": "USDT", "pricePlace": "1", "priceEndStep": "1",
     "sizeMultiplier": "0.001", "symbolType": "delivery", "deliveryTime": "1782460800000"}]}
COIN_FUT = {"code": "00000", "msg": "success", "data": [
    {"symbol": "BTCUSD", "baseCoin": "BTC", "quoteCoin": "USD", "pricePlace": "1", "priceEndStep": "1",
     "sizeMultiplier": "0.001", "symbolType": "perpetual"}]}


def _index() -> InstrumentIndex:
    insts = []
    for market, body in (("SPOT", SPOT), ("USDT-FUTURES", USDT_FUT), ("COIN-FUTURES", COIN_FUT)):
        got, events = BitgetAdapter.parse_instruments(f"instruments:{market}", orjson.dumps(body))
        assert events == []
        insts += got
    return InstrumentIndex(insts)


def _adapter(*symbols: str, **kw) -> BitgetAdapter:
    idx = _index()
    a = BitgetAdapter(idx, **kw)
    for s in symbols or ("BTC/USDT", "BTC/USDT:USDT"):
        a.subscribe(idx.resolve(s))
    a.on_open(CONN)
    return a


def _book(action: str, bids, asks, seq=None, checksum=0, it="SPOT", ch="books", **extra) -> str:
    d = {"asks": asks, "bids": bids, "checksum": checksum, "ts": "1695710946294", **extra}
    if seq is not None:
        d["seq"] = seq
    return json.dumps({"action": action, "arg": {"instType": it, "channel": ch, "instId": "BTCUSDT"}, "data": [d],
                       "ts": 1695710946294})


def _cs(bids, asks) -> int:
    b = LocalBook()
    b.apply_snapshot(bids, asks)
    return b.checksum()


def _kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


B = [["43231.1", "4"], ["43231", "6"]]
A = [["43232.8", "9"], ["43232.9", "8"]]


# --------------------------------------------------------------------------- instruments
def test_parse_instruments_ticks_lots_and_names():
    idx = _index()
    spot = idx.resolve("BTC/USDT")
    assert (spot.market, spot.tick_size, spot.lot_size) == ("SPOT", 0.01, 0.000001)
    perp = idx.resolve("BTC/USDT:USDT")
    assert perp.market == "USDT-FUTURES" and perp.tick_size == pytest.approx(0.05) and perp.lot_size == 0.001
    assert idx.resolve("BTC/USDT:USDT-260626").native == "BTCUSDT0627"
    inv = idx.resolve("BTC/USD:BTC")
    assert (inv.market, inv.kind) == ("COIN-FUTURES", MarketKind.INVERSE)
    reqs = BitgetAdapter.instrument_requests({"rest": "http://h:1"})
    assert [r.url for r in reqs] == ["http://h:1/api/v2/spot/public/symbols",
                                     "http://h:1/api/v2/mix/market/contracts?productType=USDT-FUTURES",
                                     "http://h:1/api/v2/mix/market/contracts?productType=COIN-FUTURES"]
    insts, events = BitgetAdapter.parse_instruments("instruments:SPOT", b'{"code":"40034","msg":"x","data":null}')
    assert insts == [] and isinstance(events[0], ProtocolError)


def test_registry_and_sim_endpoints():
    assert get_adapter("bitget") is BitgetAdapter
    assert BitgetAdapter.sim_endpoints({"bitget": ("ws://h:1", "http://h:1")}) == {"ws": "ws://h:1",
                                                                                   "rest": "http://h:1"}


def test_subscribe_frames_and_channels():
    idx = _index()
    a = BitgetAdapter(idx, endpoints={"ws": "ws://h:3"})
    assert a.subscribe(idx.resolve("BTC/USDT")) == [OpenConnection(CONN, "ws://h:3/v2/ws/public")]
    a.subscribe(idx.resolve("BTC/USD:BTC"))
    (send,) = a.on_open(CONN)
    assert json.loads(send.payload)["args"] == [
        {"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"},
        {"instType": "SPOT", "channel": "trade", "instId": "BTCUSDT"},
        {"instType": "COIN-FUTURES", "channel": "books", "instId": "BTCUSD"},
        {"instType": "COIN-FUTURES", "channel": "trade", "instId": "BTCUSD"},
        {"instType": "COIN-FUTURES", "channel": "ticker", "instId": "BTCUSD"}]  # perp data: futures only
    assert a.send_rate(CONN) < 10 and a.ping_payload(CONN) == "ping"
    for depth, ch in ((1, "books1"), (5, "books5"), (15, "books15"), (50, "books15")):
        assert _adapter("BTC/USDT", book_mode="partial", book_depth=depth).syms[("SPOT", "BTCUSDT")].channel == ch


# --------------------------------------------------------------------------- checksum
@pytest.mark.parametrize(("bids", "asks", "expected"), [
    ([["43231.1", "4"], ["43231", "6"]], [["43232.8", "9"], ["43232.9", "8"]], -1504501796),
    ([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]], 831078360),
])
def test_checksum_worked_examples(bids, asks, expected):
    assert _cs(bids, asks) == expected
    a = _adapter()
    assert _kinds(a.on_frame(CONN, _book("snapshot", bids, asks, 1, expected), 1)) == ["SymbolSynced", "BookChanged"]
    events = a.on_frame(CONN, _book("snapshot", bids, asks, 2, expected ^ 1), 1)
    assert _kinds(events) == ["BookInvalid", "Send", "Send"] and events[0].kind == "checksum"


def test_checksum_uses_exact_wire_strings():
    a = _adapter()
    bids = [["43231.10", "4"]]  # "43231.10" != "43231.1" in the check string
    events = a.on_frame(CONN, _book("snapshot", bids, A, 1, _cs([["43231.1", "4"]], A)), 1)
    assert events[0].kind == "checksum"


def test_update_checked_after_whole_message_and_zero_means_not_sent():
    a = _adapter("BTC/USDT", "BTC/USDT:USDT")
    a.on_frame(CONN, _book("snapshot", B, A, 10, _cs(B, A), it="USDT-FUTURES"), 1)
    a.on_frame(CONN, _book("snapshot", B, A, 10, _cs(B, A)), 1)
    nb, na = [["43231.5", "1"], ["43231.1", "0"]], [["43232.8", "3"]]
    after_b, after_a = [["43231.5", "1"], ["43231", "6"]], [["43232.8", "3"], ["43232.9", "8"]]
    assert _kinds(a.on_frame(CONN, _book("update", nb, na, 11, _cs(after_b, after_a)), 1)) == ["BookChanged"]
    assert _kinds(a.on_frame(CONN, _book("update", [["43231.6", "1"]], [], 12, 0), 1)) == ["BookChanged"]
    events = a.on_frame(CONN, _book("update", [["43231.7", "1"]], [], 13, 12345), 1)
    assert _kinds(events) == ["BookInvalid", "Send", "Send"] and events[0].kind == "checksum"
    assert '"books"' in events[2].payload and '"trade"' not in events[2].payload
    assert a.is_live(("USDT-FUTURES", "BTCUSDT")) and not a.is_live(("SPOT", "BTCUSDT"))


# --------------------------------------------------------------------------- seq / pseq
@pytest.mark.parametrize(("extra", "seq", "outcome"), [
    ({}, 11, ["BookChanged"]),
    ({}, 15, ["BookChanged"]),  # no pseq: a jump cannot be proven; the checksum is the check
    ({}, 10, []),  # duplicate
    ({}, 4, ["BookInvalid", "Send", "Send"]),  # went back: reset
    ({"pseq": 10}, 11, ["BookChanged"]),
    ({"pseq": 9}, 11, ["BookInvalid", "Send", "Send"]),  # pseq present and broken: gap
])
def test_seq_rules(extra, seq, outcome):
    a = _adapter()
    a.on_frame(CONN, _book("snapshot", B, A, 10), 1)
    assert _kinds(a.on_frame(CONN, _book("update", [["43231.5", "1"]], [], seq, **extra), 1)) == outcome


def test_new_snapshot_with_lower_seq_is_a_counted_reset():
    a = _adapter()
    a.on_frame(CONN, _book("snapshot", B, A, 500), 1)
    events = a.on_frame(CONN, _book("snapshot", B, A, 1), 1)
    assert _kinds(events) == ["BookInvalid", "SymbolSynced", "BookChanged"] and events[0].kind == "reset"


def test_partial_channel_snapshots_every_push():
    a = _adapter("BTC/USDT", book_mode="partial", book_depth=5)
    assert _kinds(a.on_frame(CONN, _book("snapshot", B, A, 3, ch="books5"), 1)) == ["SymbolSynced", "BookChanged"]
    assert _kinds(a.on_frame(CONN, _book("snapshot", B[:1], A, 2, ch="books5"), 1)) == ["BookChanged"]
    assert len(a.books[("SPOT", "BTCUSDT")].bids) == 1


def test_crossed_update_resyncs():
    a = _adapter()
    a.on_frame(CONN, _book("snapshot", B, A, 10), 1)
    events = a.on_frame(CONN, _book("update", [["43233", "1"]], [], 11), 1)
    assert events[0].kind == "crossed"


# --------------------------------------------------------------------------- trades
def _trades(action: str, rows) -> str:
    return json.dumps({"action": action, "arg": {"instType": "SPOT", "channel": "trade", "instId": "BTCUSDT"},
                       "data": [{"ts": str(ts), "price": "27000.5", "size": "0.001", "side": side, "tradeId": str(i)}
                                for ts, i, side in rows], "ts": 1})


def test_trades_reversed_and_deduplicated_across_snapshot_and_resubscribe():
    a = _adapter()
    (ev,) = a.on_frame(CONN, _trades("snapshot", [(1003, 13, "buy"), (1002, 12, "sell"), (1001, 11, "buy")]), 7)
    assert [t[4] for t in ev.trades] == [11, 12, 13]
    assert ev.trades[0] == (1001_000_000, 7, 27000.5, 0.001, 11, Side.BUY, 0)
    (ev,) = a.on_frame(CONN, _trades("update", [(1004, 14, "sell"), (1003, 13, "buy")]), 7)
    assert [t[4] for t in ev.trades] == [14]
    # a resubscribe/reconnect replays recent trades: only the unseen one passes
    (ev,) = a.on_frame(CONN, _trades("snapshot", [(1005, 15, "buy"), (1004, 14, "sell"), (1003, 13, "buy")]), 7)
    assert [t[4] for t in ev.trades] == [15]
    assert a.on_frame(CONN, _trades("snapshot", [(1004, 14, "sell")]), 7) == []


# --------------------------------------------------------------------------- control frames
def test_control_frames_table():
    a = _adapter()
    assert a.on_frame(CONN, "pong", 1) == []
    assert a.on_frame(CONN, '{"event":"subscribe","arg":{"instType":"SPOT","channel":"books","instId":"BTCUSDT"}}',
                      1) == []
    (err,) = a.on_frame(CONN, json.dumps({"event": "error", "arg": {"instType": "SPOT", "channel": "books",
                                                                   "instId": "BTCUSDT"}, "code": 30001,
                                          "msg": "instType:SPOT,channel:books,instId:BTCUSDT doesn't exist"}), 1)
    assert isinstance(err, SubscribeFailed) and err.key == ("SPOT", "BTCUSDT") and ("SPOT", "BTCUSDT") not in a.syms
    (err,) = a.on_frame(CONN, '{"event":"error","code":30001,"msg":"instType:USDT-FUTURES,channel:books,'
                              'instId:BTCUSDT doesn\'t exist"}', 1)
    assert isinstance(err, SubscribeFailed) and err.key == ("USDT-FUTURES", "BTCUSDT")
    (note,) = a.on_frame(CONN, '{"event":"error","code":30007,"msg":"Request over limit,connection close"}', 1)
    assert isinstance(note, Notice)
    assert isinstance(a.on_frame(CONN, "{oops", 1)[0], ProtocolError)


# --------------------------------------------------------------------------- fuzz
_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False)
                     | st.sampled_from(["snapshot", "update", "books", "trade", "SPOT", "BTCUSDT", "43231.1", "0"])
                     | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                         ["action", "arg", "data", "instType", "channel", "instId", "bids", "asks", "checksum",
                          "seq", "pseq", "ts", "event", "code", "msg", "price", "size", "side", "tradeId"]), c,
                         max_size=6), max_leaves=20)
_frames = st.one_of(
    st.binary(max_size=64), st.text(max_size=64), _json.map(lambda v: orjson.dumps(v).decode()),
    st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape")),  # how the loop decodes bad UTF-8
    st.builds(lambda ch, action, d: json.dumps({"action": action, "arg": {"instType": "SPOT", "channel": ch,
                                                                           "instId": "BTCUSDT"}, "data": d}),
              st.sampled_from(["books", "trade", "books5"]), st.sampled_from(["snapshot", "update", None]), _json),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames, max_size=6))
def test_garbage_frames_yield_events_never_exceptions(frames):
    a = _adapter()
    a.on_frame(CONN, _book("snapshot", B, A, 10), 1)
    for f in frames:
        for e in a.on_frame(CONN, f, 1):
            assert isinstance(e, (BookChanged, BookInvalid, SymbolSynced, TradesReceived, ProtocolError, Send,
                                  SubscribeFailed, Notice))


# --------------------------------------------------------------------------- perpetual data (v2 futures ticker)
TICKER = {"action": "snapshot", "arg": {"instType": "USDT-FUTURES", "channel": "ticker", "instId": "BTCUSDT"},
          "data": [{"instId": "BTCUSDT", "lastPr": "27000.5", "bidPr": "27000", "askPr": "27000.5", "bidSz": "2.71",
                    "askSz": "8.76", "open24h": "27000.5", "high24h": "30668.5", "low24h": "26999.0",
                    "change24h": "-0.00002", "fundingRate": "0.000010", "nextFundingTime": "1695722400000",
                    "markPrice": "27000.0", "indexPrice": "25702.4", "holdingAmount": "929.502",
                    "baseVolume": "368.900", "quoteVolume": "10152429.961", "openUtc": "27000.5", "symbolType": 1,
                    "symbol": "BTCUSDT", "deliveryPrice": "0", "ts": "1695715383021"}],
          "ts": 1695715383039}


def test_the_futures_ticker_becomes_perp_stats():
    a = _adapter()
    (ev,) = a.on_frame(CONN, json.dumps(TICKER), 3)
    assert isinstance(ev, PerpStatsUpdate) and ev.key == ("USDT-FUTURES", "BTCUSDT")
    assert ev.fields == {"mark_price": 27000.0, "index_price": 25702.4, "funding_rate": 0.00001,
                         "open_interest": 929.502, "next_funding_ns": 1695722400000 * 1_000_000}
    assert (ev.exch_ts_ns, ev.recv_ts_ns) == (1695715383021 * 1_000_000, 3)
    bad = {**TICKER, "data": [{**TICKER["data"][0], "fundingRate": "7"}]}
    (ev,) = a.on_frame(CONN, json.dumps(bad), 3)
    assert isinstance(ev, ProtocolError) and ev.key == ("USDT-FUTURES", "BTCUSDT")
    assert [type(e) for e in a.on_close(CONN, "reset")].count(PerpInvalid) == 1
    assert not any("ticker" in e.payload for e in _adapter("BTC/USDT:USDT", perp=False).on_open(CONN))


def test_a_refused_ticker_leaves_the_books_alone():
    a = _adapter()
    err = {"event": "error", "arg": {"instType": "USDT-FUTURES", "channel": "ticker", "instId": "BTCUSDT"},
           "code": 30001, "msg": "instType:USDT-FUTURES,channel:ticker,instId:BTCUSDT doesn't exist"}
    (ev,) = a.on_frame(CONN, json.dumps(err), 4)
    assert isinstance(ev, SubscribeFailed) and ev.key is None and "books are not affected" in ev.message
    assert ("USDT-FUTURES", "BTCUSDT") in a.syms
