"""Bybit adapter, frame level: bytes in, events out (no sockets). Feed-process tests: test_bybit_sim.py."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdengine.events import (
    BookChanged,
    BookInvalid,
    FetchRest,
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
from mdengine.exchanges.bybit import BybitAdapter
from mdengine.store.layout import MarketKind, Side, TradeFlags
from mdengine.symbols import Instrument, InstrumentIndex

REST = "http://127.0.0.1:9"
SPOT_ROWS = [{"symbol": s, "baseCoin": s[:-4], "quoteCoin": "USDT", "status": "Trading",
              "lotSizeFilter": {"basePrecision": "0.000001", "minOrderQty": "0.000048"},
              "priceFilter": {"tickSize": "0.01"}} for s in ("BTCUSDT", "ETHUSDT")]
LINEAR_ROWS = [
    {"symbol": "BTCUSDT", "contractType": "LinearPerpetual", "baseCoin": "BTC", "quoteCoin": "USDT",
     "settleCoin": "USDT", "priceFilter": {"tickSize": "0.10"}, "lotSizeFilter": {"qtyStep": "0.001"},
     "deliveryTime": "0"},
    {"symbol": "BTCUSDT-26JUN26", "contractType": "LinearFutures", "baseCoin": "BTC", "quoteCoin": "USDT",
     "settleCoin": "USDT", "priceFilter": {"tickSize": "0.10"}, "lotSizeFilter": {"qtyStep": "0.001"},
     "deliveryTime": "1782460800000"},
]
INVERSE_ROWS = [{"symbol": "BTCUSD", "contractType": "InversePerpetual", "baseCoin": "BTC", "quoteCoin": "USD",
                 "settleCoin": "BTC", "priceFilter": {"tickSize": "0.50"}, "lotSizeFilter": {"qtyStep": "1"}}]


def _body(rows, cursor=None) -> bytes:
    result = {"category": "x", "list": rows}
    if cursor is not None:
        result["nextPageCursor"] = cursor
    return orjson.dumps({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 1})


def _index() -> InstrumentIndex:
    reqs = {r.request_id.split("category=")[1].split("&")[0]: r
            for r in BybitAdapter.instrument_requests({"rest": REST})}
    insts = []
    for cat, rows in (("spot", SPOT_ROWS), ("linear", LINEAR_ROWS), ("inverse", INVERSE_ROWS)):
        got, events = BybitAdapter.parse_instruments(reqs[cat].request_id, _body(rows, ""))
        assert events == []
        insts += got
    return InstrumentIndex(insts)


def _adapter(*symbols: str, **kw) -> BybitAdapter:
    idx = _index()
    a = BybitAdapter(idx, **kw)
    for s in symbols or ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"):
        a.subscribe(idx.resolve(s))
    for conn in list(a._conns):
        a.on_open(conn)
    return a


def _book(typ: str, u: int, b=(), a=(), topic="orderbook.50.BTCUSDT") -> str:
    return json.dumps({"topic": topic, "type": typ, "ts": 1672304484978, "data": {
        "s": topic.rsplit(".", 1)[1], "b": list(b), "a": list(a), "u": u, "seq": 7961638724}, "cts": 1672304484976})


B = [["16493.50", "0.006"], ["16493.00", "0.100"]]
A = [["16611.00", "0.029"], ["16612.00", "0.213"]]


def _kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


# --------------------------------------------------------------------------- instruments
def test_parse_instruments_and_paging():
    idx = _index()
    assert idx.resolve("BTC/USDT").market == "spot" and idx.resolve("BTC/USDT").lot_size == 0.000001
    perp = idx.resolve("BTC/USDT:USDT")
    assert (perp.market, perp.native, perp.kind, perp.tick_size) == ("linear", "BTCUSDT", MarketKind.LINEAR, 0.1)
    assert idx.resolve("BTC/USDT:USDT-260626").native == "BTCUSDT-26JUN26"
    assert idx.resolve("BTC/USD:BTC").kind == MarketKind.INVERSE
    (req,) = BybitAdapter.instrument_requests({"rest": REST}, ["linear"])
    assert req.url == f"{REST}/v5/market/instruments-info?category=linear&limit=1000"
    insts, events = BybitAdapter.parse_instruments(req.request_id, _body(LINEAR_ROWS[:1], "abc=/+"))
    assert len(insts) == 1
    assert events == [FetchRest(req.request_id, req.request_id + "&cursor=abc%3D%2F%2B")]
    insts, events = BybitAdapter.parse_instruments(req.request_id, b'{"retCode":10001,"retMsg":"params error"}')
    assert insts == [] and isinstance(events[0], ProtocolError)


def test_registry_and_sim_endpoints():
    assert get_adapter("bybit") is BybitAdapter
    assert BybitAdapter.sim_endpoints({"bybit": ("ws://h:1", "http://h:1")}) == {"ws": "ws://h:1", "rest": "http://h:1"}


# --------------------------------------------------------------------------- subscriptions
def test_one_connection_per_category_and_spot_args_split_by_ten():
    idx = _index()
    a = BybitAdapter(idx, endpoints={"ws": "ws://h:2"})
    assert a.subscribe(idx.resolve("BTC/USDT")) == [OpenConnection("spot-0", "ws://h:2/v5/public/spot")]
    assert a.subscribe(idx.resolve("BTC/USDT:USDT")) == [OpenConnection("linear-0", "ws://h:2/v5/public/linear")]
    a.subscribe(idx.resolve("ETH/USDT"))
    a.SYMBOLS_PER_CONN = 100
    for i in range(4):  # more spot symbols than one request may carry
        a.subscribe(Instrument("bybit", "spot", f"X{i}USDT", f"X{i}/USDT", MarketKind.SPOT, f"X{i}", "USDT"))
    sends = a.on_open("spot-0")
    args = [json.loads(s.payload)["args"] for s in sends]
    assert [len(x) for x in args] == [10, 2]
    assert args[0][:2] == ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]


@pytest.mark.parametrize(("mode", "depth", "topic"), [("diff", 50, "orderbook.50.BTCUSDT"),
                                                     ("diff", 20, "orderbook.50.BTCUSDT"),
                                                     ("diff", 200, "orderbook.200.BTCUSDT"),
                                                     ("diff", 400, "orderbook.1000.BTCUSDT"),
                                                     ("partial", 5, "orderbook.1.BTCUSDT")])
def test_depth_choice(mode, depth, topic):
    a = _adapter("BTC/USDT", book_mode=mode, book_depth=depth)
    assert a.syms[("spot", "BTCUSDT")].channel == topic


# --------------------------------------------------------------------------- book sequencing
def test_snapshot_then_contiguous_deltas():
    a = _adapter()
    assert _kinds(a.on_frame("spot-0", _book("snapshot", 100, B, A), 1)) == ["SymbolSynced", "BookChanged"]
    assert _kinds(a.on_frame("spot-0", _book("delta", 101, [["16493.50", "0"]], [["16610.00", "1"]]), 1)) == [
        "BookChanged"]
    book = a.books[("spot", "BTCUSDT")]
    assert book.bids.best() == (16493.0, 0.1) and book.asks.best() == (16610.0, 1.0) and book.update_id == 101
    assert a.on_frame("spot-0", _book("delta", 101, [["16493.00", "5"]]), 1) == []  # duplicate dropped
    assert book.bids.best() == (16493.0, 0.1)


def test_gap_resubscribes_that_topic_only():
    a = _adapter()
    a.on_frame("spot-0", _book("snapshot", 5, B, A, topic="orderbook.50.ETHUSDT"), 1)
    a.on_frame("spot-0", _book("snapshot", 100, B, A), 1)
    events = a.on_frame("spot-0", _book("delta", 102, [["16493.00", "5"]]), 1)
    assert _kinds(events) == ["BookInvalid", "Send", "Send"] and events[0].kind == "gap"
    assert [json.loads(e.payload)["op"] for e in events[1:]] == ["unsubscribe", "subscribe"]
    assert all(json.loads(e.payload)["args"] == ["orderbook.50.BTCUSDT"] for e in events[1:])
    assert a.on_frame("spot-0", _book("delta", 103, [["1", "1"]]), 1) == []  # ignored until the snapshot
    assert a.is_live(("spot", "ETHUSDT")) and not a.is_live(("spot", "BTCUSDT"))
    assert _kinds(a.on_frame("spot-0", _book("snapshot", 200, B, A), 1)) == ["SymbolSynced", "BookChanged"]


def test_u_equal_one_is_a_restart_that_overwrites_the_book():
    a = _adapter()
    a.on_frame("spot-0", _book("snapshot", 100, B, A), 1)
    events = a.on_frame("spot-0", _book("delta", 1, [["16000", "1"]], [["16001", "2"]]), 1)
    assert _kinds(events) == ["BookInvalid", "SymbolSynced", "BookChanged"] and events[0].kind == "reset"
    book = a.books[("spot", "BTCUSDT")]
    assert book.bids.top(5) == [(16000.0, 1.0)] and book.asks.top(5) == [(16001.0, 2.0)]
    assert _kinds(a.on_frame("spot-0", _book("delta", 2, [["16000", "3"]]), 1)) == ["BookChanged"]
    # a re-sent snapshot with a higher u simply replaces the book
    assert _kinds(a.on_frame("spot-0", _book("snapshot", 50, B, A), 1)) == ["BookChanged"]


def test_level1_snapshots_repeat_with_same_u():
    a = _adapter("BTC/USDT", book_mode="partial")
    f = _book("snapshot", 7, B[:1], A[:1], topic="orderbook.1.BTCUSDT")
    assert _kinds(a.on_frame("spot-0", f, 1)) == ["SymbolSynced", "BookChanged"]
    assert _kinds(a.on_frame("spot-0", f, 1)) == ["BookChanged"]


def test_crossed_delta_resyncs():
    a = _adapter()
    a.on_frame("spot-0", _book("snapshot", 100, B, A), 1)
    events = a.on_frame("spot-0", _book("delta", 101, [["16700", "1"]]), 1)
    assert _kinds(events) == ["BookInvalid", "Send", "Send"] and events[0].kind == "crossed"


def test_same_native_in_two_categories_is_kept_apart():
    a = _adapter()
    a.on_frame("linear-0", _book("snapshot", 10, [["1", "1"]], [["2", "1"]]), 1)
    assert a.is_live(("linear", "BTCUSDT")) and not a.is_live(("spot", "BTCUSDT"))


# --------------------------------------------------------------------------- trades and control frames
def test_trades_numeric_and_uuid_ids():
    a = _adapter()
    spot = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [
        {"T": 1672304486865, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50", "i": "2290000000061666327",
         "BT": False}]}
    (ev,) = a.on_frame("spot-0", json.dumps(spot), 5)
    assert ev.trades == [(1672304486865_000_000, 5, 16578.5, 0.001, 2290000000061666327, Side.BUY, 0)]
    lin = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [
        {"T": 1, "s": "BTCUSDT", "S": "Sell", "v": "2", "p": "3", "L": "MinusTick",
         "i": "20f43950-d8dd-5b31-9112-a178eb6023af", "BT": False},
        {"T": 2, "s": "BTCUSDT", "S": "Sell", "v": "2", "p": "3", "i": "30f43950-d8dd-5b31-9112-a178eb6023af"}]}
    (ev,) = a.on_frame("linear-0", json.dumps(lin), 5)
    ids = [t[4] for t in ev.trades]
    assert ev.key == ("linear", "BTCUSDT") and [t[5] for t in ev.trades] == [Side.SELL, Side.SELL]
    assert all(0 <= i < 2**63 for i in ids) and ids[0] != ids[1]
    assert all(t[6] == TradeFlags.ID_HASHED for t in ev.trades)
    (again,) = a.on_frame("linear-0", json.dumps(lin), 6)
    assert [t[4] for t in again.trades] == ids  # stable hash


def test_acks_pongs_and_refusals():
    a = _adapter("BTC/USDT", "ETH/USDT")
    assert a.on_frame("spot-0", '{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}', 1) == []
    assert a.on_frame("spot-0", '{"success":true,"ret_msg":"subscribe","conn_id":"x","req_id":"1","op":"subscribe"}',
                      1) == []
    refusal = {"success": False, "ret_msg": "Invalid symbol :[orderbook.50.ETHUSDT]", "conn_id": "x", "req_id": "1",
               "op": "subscribe"}
    events = a.on_frame("spot-0", json.dumps(refusal), 1)
    assert _kinds(events) == ["SubscribeFailed", "Send"]
    assert events[0].key == ("spot", "ETHUSDT") and ("spot", "ETHUSDT") not in a.syms
    assert json.loads(events[1].payload)["args"] == ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"]
    assert _kinds(a.on_frame("spot-0", json.dumps({**refusal, "req_id": "nope"}), 1)) == ["Notice"]
    assert a.ping_payload("spot-0") == '{"op":"ping"}' and a.ping_interval("spot-0") == 20.0


def test_refusal_without_a_named_topic_is_retried_one_by_one():
    a = _adapter("BTC/USDT")
    events = a.on_frame("spot-0", '{"success":false,"ret_msg":"error:handler not found","req_id":"1",'
                                  '"op":"subscribe"}', 1)
    assert [json.loads(e.payload)["args"] for e in events] == [["orderbook.50.BTCUSDT"], ["publicTrade.BTCUSDT"]]
    rid = json.loads(events[0].payload)["req_id"]
    (failed,) = a.on_frame("spot-0", json.dumps({"success": False, "ret_msg": "x", "req_id": rid, "op": "subscribe"}),
                           1)
    assert isinstance(failed, SubscribeFailed) and failed.key == ("spot", "BTCUSDT")


def test_disconnect_marks_live_symbols():
    a = _adapter()
    a.on_frame("spot-0", _book("snapshot", 100, B, A), 1)
    assert [e.kind for e in a.on_close("spot-0", "reset")] == ["disconnect"]
    assert a.on_close("linear-0", "reset") == []


# --------------------------------------------------------------------------- fuzz
_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False)
                     | st.sampled_from(["snapshot", "delta", "Buy", "16493.5", "0", "orderbook.50.BTCUSDT"])
                     | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                         ["topic", "type", "data", "ts", "cts", "s", "b", "a", "u", "seq", "T", "S", "v", "p", "i",
                          "op", "success", "ret_msg", "req_id"]), c, max_size=6), max_leaves=20)
_frames = st.one_of(
    st.binary(max_size=64), st.text(max_size=64), _json.map(lambda v: orjson.dumps(v).decode()),
    st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape")),  # how the loop decodes bad UTF-8
    st.builds(lambda topic, typ, d: json.dumps({"topic": topic, "type": typ, "ts": 1, "data": d}),
              st.sampled_from(["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT", "orderbook.50.XUSDT"]),
              st.sampled_from(["snapshot", "delta", None]), _json),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames, max_size=6))
def test_garbage_frames_yield_events_never_exceptions(frames):
    a = _adapter("BTC/USDT")
    a.on_frame("spot-0", _book("snapshot", 100, B, A), 1)
    for f in frames:
        for e in a.on_frame("spot-0", f, 1):
            assert isinstance(e, (BookChanged, BookInvalid, SymbolSynced, TradesReceived, ProtocolError, Send,
                                  SubscribeFailed, Notice))


# ----------------------------------------------------------------------------- perpetual data (BY-DOC examples)
TICKER_SNAPSHOT = {"topic": "tickers.BTCUSDT", "type": "snapshot", "data": {
    "symbol": "BTCUSDT", "tickDirection": "PlusTick", "price24hPcnt": "0.017103", "lastPrice": "17216.00",
    "prevPrice24h": "16926.50", "highPrice24h": "17281.50", "lowPrice24h": "16915.00", "prevPrice1h": "17238.00",
    "markPrice": "17217.33", "indexPrice": "17227.36", "openInterest": "68744.761", "openInterestValue":
    "1183601235.91", "turnover24h": "1570383121.943499", "volume24h": "91705.276", "nextFundingTime": "1673280000000",
    "fundingRate": "-0.000212", "bid1Price": "17215.50", "bid1Size": "84.489", "ask1Price": "17216.00",
    "ask1Size": "83.020"}, "cs": 24987956059, "ts": 1673272861686}
ALL_LIQUIDATION = {"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": 1739502303204,
                   "data": [{"T": 1739502302929, "s": "BTCUSDT", "S": "Sell", "v": "0.02", "p": "17000.5"}]}


def test_perp_topics_are_subscribed_for_derivatives_only_and_off_with_perp_false():
    a = BybitAdapter(_index())
    idx = a.instruments
    a.subscribe(idx.resolve("BTC/USDT"))
    a.subscribe(idx.resolve("BTC/USDT:USDT"))
    frames = {conn: a.on_open(conn) for conn in list(a._conns)}
    linear = " ".join(e.payload for e in frames["linear-0"])
    assert "tickers.BTCUSDT" in linear and "allLiquidation.BTCUSDT" in linear
    assert "tickers" not in " ".join(e.payload for e in frames["spot-0"])
    off = _adapter("BTC/USDT:USDT", perp=False)
    assert not any("tickers" in e.payload for e in off.on_open("linear-0"))


def test_tickers_snapshot_and_deltas_become_perp_stats():
    a = _adapter()
    (ev,) = a.on_frame("linear-0", json.dumps(TICKER_SNAPSHOT), 5)
    key = ("linear", "BTCUSDT")
    assert isinstance(ev, PerpStatsUpdate) and ev.key == key and (ev.exch_ts_ns, ev.recv_ts_ns) == (
        1673272861686 * 1_000_000, 5)
    assert ev.fields == {"mark_price": 17217.33, "index_price": 17227.36, "funding_rate": -0.000212,
                         "open_interest": 68744.761, "next_funding_ns": 1673280000000 * 1_000_000}
    delta = {"topic": "tickers.BTCUSDT", "type": "delta", "data": {"symbol": "BTCUSDT", "markPrice": "17218.00",
                                                                   "lastPrice": "17216.50"}, "cs": 1, "ts": 2}
    (ev,) = a.on_frame("linear-0", json.dumps(delta), 6)
    assert ev.fields == {"mark_price": 17218.0}  # only what changed: the store merges it into the record
    assert set(ev.confirms) == {"mark", "index", "funding", "open_interest"}  # the rest is vouched for (1.6)
    assert a.perp_stale_after() == {}  # one topic carries every group: none goes quiet alone
    quiet = {**delta, "data": {"symbol": "BTCUSDT", "lastPrice": "17216.00"}}
    assert a.on_frame("linear-0", json.dumps(quiet), 7) == []
    assert [type(e) for e in a.on_close("linear-0", "reset")] == [PerpInvalid]


def test_all_liquidation_side_is_the_position_so_the_order_is_the_other_side():
    a = _adapter()
    (ev,) = a.on_frame("linear-0", json.dumps(ALL_LIQUIDATION), 9)
    assert isinstance(ev, LiquidationsReceived)
    assert ev.liquidations == [(1739502302929 * 1_000_000, 9, 17000.5, 0.02, 0, Side.BUY, 0)]  # a short closed
    bad = {**ALL_LIQUIDATION, "data": [{**ALL_LIQUIDATION["data"][0], "S": "Up"}]}
    (ev,) = a.on_frame("linear-0", json.dumps(bad), 9)
    assert isinstance(ev, ProtocolError) and ev.key == ("linear", "BTCUSDT")
    bad_ticker = {**TICKER_SNAPSHOT, "data": {**TICKER_SNAPSHOT["data"], "markPrice": "-3"}}
    (ev,) = a.on_frame("linear-0", json.dumps(bad_ticker), 9)
    assert isinstance(ev, ProtocolError)


def test_a_refused_tickers_topic_keeps_the_books_and_the_other_perp_topics():
    idx = _index()
    a = BybitAdapter(idx)
    a.subscribe(idx.resolve("BTC/USDT:USDT"))
    a.subscribe(next(i for i in idx if i.native == "BTCUSDT-26JUN26"))
    (req,) = [json.loads(e.payload) for e in a.on_open("linear-0")]
    assert {"tickers.BTCUSDT", "tickers.BTCUSDT-26JUN26"} <= set(req["args"])
    refusal = {"success": False, "ret_msg": "Invalid symbol :[tickers.BTCUSDT]", "conn_id": "x",
               "req_id": req["req_id"], "op": "subscribe"}
    events = a.on_frame("linear-0", json.dumps(refusal), 1)
    assert _kinds(events) == ["SubscribeFailed", "Send"]
    assert events[0].key is None and "books kept" in events[0].message  # the symbol's books are not refused
    assert ("linear", "BTCUSDT") in a.syms
    assert set(json.loads(events[1].payload)["args"]) == set(req["args"]) - {"tickers.BTCUSDT"}
