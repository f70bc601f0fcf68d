"""BinanceAdapter as a sans-I/O unit: tables of frames -> events, instruments, routing, a garbage-in property."""

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.events import (
    BookChanged,
    BookInvalid,
    CloseConnection,
    FetchRest,
    Notice,
    OpenConnection,
    ProtocolError,
    Send,
    SubscribeFailed,
    SymbolSynced,
    TradesReceived,
)
from mdengine.exchanges import AdapterError, get_adapter
from mdengine.exchanges.binance import AWAITING_SNAPSHOT, BRIDGING, LIVE, UNSYNCED, BinanceAdapter
from mdengine.store.layout import MarketKind, Side
from mdengine.symbols import Instrument, InstrumentIndex

SPOT_BTC = Instrument("binance", "spot", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT")
SPOT_ETH = Instrument("binance", "spot", "ETHUSDT", "ETH/USDT", MarketKind.SPOT, "ETH", "USDT")
PERP_BTC = Instrument("binance", "usdm", "BTCUSDT", "BTC/USDT:USDT", MarketKind.LINEAR, "BTC", "USDT", "USDT")


def adapter(**kw):
    return BinanceAdapter(InstrumentIndex([SPOT_BTC, SPOT_ETH, PERP_BTC]), **kw)


def names(events):
    return [type(e).__name__ for e in events]


def diff(U, u, pu=None, b=(("100.0", "1"),), a=(("101.0", "1"),), sym="btcusdt", E=1_700_000_000_000):
    d = {"e": "depthUpdate", "E": E, "s": sym.upper(), "U": U, "u": u, "b": [list(x) for x in b],
         "a": [list(x) for x in a]}
    if pu is not None:
        d["pu"] = pu
    return json.dumps({"stream": f"{sym}@depth@100ms", "data": d})


def snapshot(last, bids=(("99.0", "5"),), asks=(("102.0", "5"),)):
    return json.dumps({"lastUpdateId": last, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}).encode()


class Driver:
    """Feeds steps to one symbol and remembers the snapshot request to answer."""

    def __init__(self, inst, **kw):
        self.a = adapter(**kw)
        self.inst = inst
        self.conn = next(e.conn for e in self.a.subscribe(inst) if isinstance(e, OpenConnection))
        self.a.on_open(self.conn)
        self.request = None

    @property
    def sym(self):
        return self.a.syms[self.inst.key]

    def step(self, step):
        kind, *args = step
        if kind == "diff":
            out = self.a.on_frame(self.conn, diff(*args), 1)
        else:
            out = self.a.on_rest(self.request.request_id, 200, snapshot(*args), 1)
        reqs = [e for e in out if isinstance(e, FetchRest)]
        if reqs:
            self.request = reqs[-1]
        return out


# Each row: steps, the event names each step returns, then the final (state, update id, applied, dropped).
SPOT_TABLE = {
    "first buffered diff straddles the snapshot": (
        [("diff", 10, 12), ("snap", 11)],
        [["FetchRest"], ["SymbolSynced", "BookChanged"]], (LIVE, 12, 1, 0)),
    "buffered diffs with u <= lastUpdateId are dropped": (
        [("diff", 10, 12), ("diff", 13, 15), ("snap", 12)],
        [["FetchRest"], [], ["SymbolSynced", "BookChanged"]], (LIVE, 15, 1, 1)),
    "U == lastUpdateId + 1 bridges": (
        [("diff", 13, 15), ("snap", 12)],
        [["FetchRest"], ["SymbolSynced", "BookChanged"]], (LIVE, 15, 1, 0)),
    "snapshot newer than the buffer waits for the bridging diff": (
        [("diff", 10, 12), ("snap", 20), ("diff", 13, 19), ("diff", 20, 22), ("diff", 23, 23)],
        [["FetchRest"], [], [], ["SymbolSynced", "BookChanged"], ["BookChanged"]], (LIVE, 23, 2, 2)),
    "snapshot older than the first buffered U is fetched again on the next diff": (
        [("diff", 13, 15), ("snap", 11), ("diff", 16, 16), ("diff", 17, 17), ("snap", 14)],
        [["FetchRest"], ["BookInvalid"], ["FetchRest"], [], ["SymbolSynced", "BookChanged"]], (LIVE, 17, 3, 0)),
    "a gap while live resyncs": (
        [("diff", 10, 12), ("snap", 11), ("diff", 14, 15)],
        [["FetchRest"], ["SymbolSynced", "BookChanged"], ["BookInvalid", "FetchRest"]], (AWAITING_SNAPSHOT, 0, 1, 0)),
    "a duplicate is dropped, not a gap": (
        [("diff", 10, 12), ("snap", 11), ("diff", 10, 12), ("diff", 13, 14)],
        [["FetchRest"], ["SymbolSynced", "BookChanged"], [], ["BookChanged"]], (LIVE, 14, 2, 1)),
    "a gap inside the buffer resyncs from the diff that broke the chain": (
        [("diff", 10, 12), ("diff", 14, 15), ("snap", 11), ("snap", 14)],
        [["FetchRest"], [], ["BookInvalid", "FetchRest"], ["SymbolSynced", "BookChanged"]], (LIVE, 15, 2, 0)),
    "a diff that cannot bridge the snapshot refetches": (
        [("diff", 10, 12), ("snap", 20), ("diff", 22, 25)],
        [["FetchRest"], [], ["BookInvalid", "FetchRest"]], (AWAITING_SNAPSHOT, 0, 0, 1)),
}

USDM_TABLE = {
    "first event has U <= lastUpdateId <= u (u == lastUpdateId is kept)": (
        [("diff", 10, 12, 9), ("snap", 12)],
        [["FetchRest"], ["SymbolSynced", "BookChanged"]], (LIVE, 12, 1, 0)),
    "U is not contiguous, pu chains": (
        [("diff", 10, 12, 9), ("diff", 20, 25, 12), ("snap", 11), ("diff", 31, 40, 25)],
        [["FetchRest"], [], ["SymbolSynced", "BookChanged"], ["BookChanged"]], (LIVE, 40, 3, 0)),
    "u < lastUpdateId dropped": (
        [("diff", 10, 12, 9), ("diff", 20, 25, 12), ("snap", 22)],
        [["FetchRest"], [], ["SymbolSynced", "BookChanged"]], (LIVE, 25, 1, 1)),
    "pu mismatch while live resyncs": (
        [("diff", 10, 12, 9), ("snap", 11), ("diff", 30, 35, 26)],
        [["FetchRest"], ["SymbolSynced", "BookChanged"], ["BookInvalid", "FetchRest"]], (AWAITING_SNAPSHOT, 0, 1, 0)),
    "snapshot before the buffer is fetched again on the next diff": (
        [("diff", 20, 25, 12), ("snap", 15), ("diff", 30, 31, 25)],
        [["FetchRest"], ["BookInvalid"], ["FetchRest"]], (AWAITING_SNAPSHOT, 0, 0, 0)),
}


@pytest.mark.parametrize("case", SPOT_TABLE)
def test_SymbolSync_spot_table(case):
    run_table(SPOT_BTC, *SPOT_TABLE[case])


@pytest.mark.parametrize("case", USDM_TABLE)
def test_SymbolSync_usdm_table(case):
    run_table(PERP_BTC, *USDM_TABLE[case])


def run_table(inst, steps, expected, final):
    d = Driver(inst)
    got = [names(d.step(s)) for s in steps]
    assert got == expected
    sym = d.sym
    assert (sym.state, sym.book.update_id, sym.applied, sym.dropped) == final
    assert d.a.is_live(inst.key) == (final[0] == LIVE)


def test_SymbolSync_gap_names_the_rule_and_resyncs_only_that_symbol():
    a = adapter()
    conn = a.subscribe(SPOT_BTC)[0].conn
    a.subscribe(SPOT_ETH)
    a.on_open(conn)
    reqs = {}
    for sym in ("btcusdt", "ethusdt"):
        (req,) = a.on_frame(conn, diff(10, 12, sym=sym), 1)
        reqs[sym] = req
        assert names(a.on_rest(req.request_id, 200, snapshot(11), 1)) == ["SymbolSynced", "BookChanged"]
    out = a.on_frame(conn, diff(20, 21, sym="btcusdt"), 1)
    assert names(out) == ["BookInvalid", "FetchRest"]
    assert out[0].kind == "gap" and "U == 13, got U=20" in out[0].detail
    assert not a.is_live(SPOT_BTC.key) and a.is_live(SPOT_ETH.key)
    assert names(a.on_frame(conn, diff(13, 13, sym="ethusdt"), 1)) == ["BookChanged"]
    # the superseded request's late answer changes nothing
    assert a.on_rest(reqs["btcusdt"].request_id, 200, snapshot(30), 1) == []


def test_SymbolSync_rejects_an_input_the_table_does_not_list():
    d = Driver(SPOT_BTC)
    with pytest.raises(AdapterError, match=r"BTCUSDT.*UNSYNCED.*'bridged'"):
        d.sym._to("bridged")


def test_SymbolSync_buffered_diffs_and_snapshot_make_the_book():
    d = Driver(SPOT_BTC)
    d.step(("diff", 10, 12, None, [("99.0", "0"), ("98.0", "2")], [("102.0", "7")]))
    d.step(("snap", 11, [("99.0", "5"), ("97.0", "1")], [("102.0", "5"), ("103.0", "1")]))
    book = d.sym.book
    assert book.bids.top(5) == [(98.0, 2.0), (97.0, 1.0)]
    assert book.asks.top(5) == [(102.0, 7.0), (103.0, 1.0)]
    assert book.exch_ts_ns == 1_700_000_000_000 * 1_000_000


def test_SymbolSync_crossed_book_resyncs():
    d = Driver(SPOT_BTC)
    d.step(("diff", 10, 12))
    d.step(("snap", 11))
    out = d.step(("diff", 13, 13, None, [("103.0", "1")], []))
    assert names(out) == ["BookInvalid", "FetchRest"] and out[0].kind == "crossed"


def test_SymbolSync_malformed_levels_never_leave_a_half_applied_book():
    d = Driver(SPOT_BTC)
    d.step(("diff", 10, 12))
    d.step(("snap", 11))
    out = d.step(("diff", 13, 13, None, [("98.5", "1"), ("oops",)], []))
    assert names(out) == ["BookInvalid", "FetchRest"] and out[0].kind == "malformed"
    assert len(d.sym.book.bids) == 0 and d.sym.state == AWAITING_SNAPSHOT


def test_SymbolSync_bad_snapshot_waits_for_the_next_diff_then_refetches():
    d = Driver(SPOT_BTC)
    d.step(("diff", 10, 12))
    out = d.a.on_rest(d.request.request_id, 200, b'{"lastUpdateId": "x", "bids": [], "asks": []}', 1)
    assert names(out) == ["ProtocolError"] and d.sym.state == UNSYNCED
    assert names(d.step(("diff", 13, 14))) == ["FetchRest"]


def test_snapshot_http_error_fails_the_symbol():
    d = Driver(SPOT_BTC)
    d.step(("diff", 10, 12))
    out = d.a.on_rest(d.request.request_id, 400, b'{"code":-1121,"msg":"Invalid symbol."}', 1)
    assert names(out) == ["SubscribeFailed", "CloseConnection"] and "-1121" in out[0].message
    assert SPOT_BTC.key not in d.a.syms


def test_partial_depth_is_a_whole_book_each_time():
    a = adapter(book_mode="partial", book_depth=10)
    conn = a.subscribe(SPOT_BTC)[0].conn
    (sub,) = a.on_open(conn)
    assert "btcusdt@depth10@100ms" in sub.payload
    frame = {"stream": "btcusdt@depth10@100ms", "data": {"lastUpdateId": 50, "bids": [["100", "1"]],
                                                        "asks": [["101", "2"]]}}
    assert names(a.on_frame(conn, json.dumps(frame), 1)) == ["SymbolSynced", "BookChanged"]
    frame["data"]["lastUpdateId"] = 49
    assert a.on_frame(conn, json.dumps(frame), 1) == []  # older than the book
    frame["data"] = {"lastUpdateId": 51, "bids": [["99", "1"]], "asks": []}
    assert names(a.on_frame(conn, json.dumps(frame), 1)) == ["BookChanged"]
    assert a.books[SPOT_BTC.key].bids.top(5) == [(99.0, 1.0)] and len(a.books[SPOT_BTC.key].asks) == 0


def test_trades_side_from_buyer_is_maker():
    a = adapter()
    conn = a.subscribe(SPOT_BTC)[0].conn
    t = {"e": "trade", "E": 5, "s": "BTCUSDT", "t": 42, "p": "100.5", "q": "0.25", "T": 4, "m": True, "M": True}
    (ev,) = a.on_frame(conn, json.dumps({"stream": "btcusdt@trade", "data": t}), 99)
    assert isinstance(ev, TradesReceived) and ev.trades == [(4_000_000, 99, 100.5, 0.25, 42, Side.SELL, 0)]
    assert a.on_frame(conn, json.dumps({"stream": "btcusdt@trade", "data": t}), 99) == []  # seen: dropped
    t["m"], t["t"] = False, 43
    assert a.on_frame(conn, json.dumps({"stream": "btcusdt@trade", "data": t}), 99)[0].trades[0][5] == Side.BUY
    agg = adapter(trade_stream="aggTrade")
    conn = agg.subscribe(SPOT_BTC)[0].conn
    at = {"e": "aggTrade", "E": 5, "s": "BTCUSDT", "a": 7, "p": "1", "q": "2", "f": 1, "l": 3, "T": 4, "m": False}
    assert agg.on_frame(conn, json.dumps({"stream": "btcusdt@aggTrade", "data": at}), 1)[0].trades[0][4] == 7


def test_usdm_routes_depth_to_public_and_aggtrade_to_market():
    a = adapter()
    opens = a.subscribe(PERP_BTC)
    assert [(e.conn, e.url) for e in opens] == [
        ("usdm-public/0", "wss://fstream.binance.com/public/stream"),
        ("usdm-market/0", "wss://fstream.binance.com/market/stream")]
    assert "btcusdt@depth@100ms" in a.on_open("usdm-public/0")[0].payload
    assert '"params":["btcusdt@aggTrade","btcusdt@markPrice@1s","btcusdt@forceOrder"]' in \
        a.on_open("usdm-market/0")[0].payload  # the perp streams are /market streams too
    # the same stream name on the spot connection is a different symbol
    a.subscribe(SPOT_BTC)
    a.on_open("spot/0")
    a.on_frame("spot/0", diff(10, 12), 1)
    assert a.syms[SPOT_BTC.key].state == AWAITING_SNAPSHOT and a.syms[PERP_BTC.key].state == UNSYNCED


def test_connections_split_at_the_stream_limit():
    insts = [Instrument("binance", "usdm", f"C{i}USDT", f"C{i}/USDT:USDT", MarketKind.LINEAR, f"C{i}", "USDT",
                        "USDT") for i in range(201)]
    a = BinanceAdapter(InstrumentIndex(insts), trades=False, perp=False)
    opens = [e for inst in insts for e in a.subscribe(inst) if isinstance(e, OpenConnection)]
    assert [e.conn for e in opens] == ["usdm-public/0", "usdm-public/1"]  # USDⓈ-M: 200 streams per connection
    assert len(a.symbols_on("usdm-public/0")) == 200 and len(a.symbols_on("usdm-public/1")) == 1
    small = adapter(max_streams=2)
    small.subscribe(SPOT_BTC)
    assert names(small.subscribe(SPOT_ETH)) == ["OpenConnection"] and small.symbols_on("spot/1") == [SPOT_ETH.key]


def test_runtime_subscribe_and_unsubscribe_without_reconnect():
    a = adapter()
    a.subscribe(SPOT_BTC)
    (first,) = a.on_open("spot/0")
    assert json.loads(first.payload) == {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms", "btcusdt@trade"],
                                         "id": 1}
    (sub,) = a.subscribe(SPOT_ETH)
    assert isinstance(sub, Send) and json.loads(sub.payload)["params"] == ["ethusdt@depth@100ms", "ethusdt@trade"]
    assert a.on_frame("spot/0", '{"result":null,"id":2}', 1) == []
    (unsub,) = a.unsubscribe(SPOT_ETH.key)
    assert json.loads(unsub.payload)["method"] == "UNSUBSCRIBE"
    assert a.on_frame("spot/0", diff(1, 2, sym="ethusdt"), 1) == []  # late frames of a dropped stream: ignored
    (close,) = a.unsubscribe(SPOT_BTC.key)
    assert isinstance(close, CloseConnection) and not close.reconnect


def test_subscribe_error_frames():
    a = adapter()
    a.subscribe(SPOT_BTC)
    a.subscribe(SPOT_ETH)
    a.on_open("spot/0")  # request id 1 carries both symbols
    out = a.on_frame("spot/0", '{"code":2,"msg":"Invalid request: cannot subscribe","id":1}', 1)
    assert names(out) == ["Notice", "Send", "Send"]  # asks again one symbol at a time (ids 2, 3)
    out = a.on_frame("spot/0", '{"code":2,"msg":"Invalid request: cannot subscribe","id":3}', 1)
    assert names(out)[0] == "SubscribeFailed" and out[0].key == SPOT_ETH.key
    assert SPOT_ETH.key not in a.syms and SPOT_BTC.key in a.syms
    (ev,) = a.on_frame("spot/0", '{"code":3,"msg":"Invalid JSON: expected value at line 1 column 1"}', 1)
    assert isinstance(ev, SubscribeFailed) and ev.key is None and "code 3" in ev.message


def test_server_shutdown_closes_for_a_prompt_reconnect():
    a = adapter()
    a.subscribe(SPOT_BTC)
    for frame in ('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
                  '{"e":"serverShutdown","E":1770123456789}'):
        out = a.on_frame("spot/0", frame, 1)
        assert isinstance(out[0], Notice) and out[1] == CloseConnection("spot/0", "serverShutdown", True)


def test_disconnect_invalidates_the_books_on_that_connection_and_open_resubscribes():
    d = Driver(SPOT_BTC)
    d.step(("diff", 10, 12))
    d.step(("snap", 11))
    out = d.a.on_close(d.conn, "EOF")
    assert out == [BookInvalid(SPOT_BTC.key, "disconnect", "EOF")] and d.sym.state == UNSYNCED
    assert d.a.on_rest(d.request.request_id, 200, snapshot(11), 1) == []
    (sub,) = d.a.on_open(d.conn)
    assert "btcusdt@depth@100ms" in sub.payload
    assert names(d.step(("diff", 40, 41))) == ["FetchRest"]


def test_parse_instruments_spot_and_usdm():
    spot = {"symbols": [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT", "filters": [
            {"filterType": "PRICE_FILTER", "tickSize": "0.01000000"},
            {"filterType": "LOT_SIZE", "stepSize": "0.00001000"}]},
        {"symbol": "OLDUSDT", "status": "BREAK", "baseAsset": "OLD", "quoteAsset": "USDT", "filters": []},
        {"symbol": "BAD"}]}
    insts, events = BinanceAdapter.parse_instruments("instruments:spot", orjson.dumps(spot))
    assert [(i.native, i.unified, i.tick_size, i.lot_size) for i in insts] == [("BTCUSDT", "BTC/USDT", 0.01, 1e-05)]
    assert names(events) == ["ProtocolError"]
    usdm = {"symbols": [
        {"symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING", "baseAsset": "BTC",
         "quoteAsset": "USDT", "marginAsset": "USDT", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10"}]},
        {"symbol": "BTCUSDT_250627", "pair": "BTCUSDT", "contractType": "CURRENT_QUARTER", "status": "TRADING",
         "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT", "filters": []},
        {"symbol": "XUSDT", "contractType": "", "status": "TRADING", "baseAsset": "X", "quoteAsset": "USDT"}]}
    insts, events = BinanceAdapter.parse_instruments("instruments:usdm", orjson.dumps(usdm))
    assert [(i.unified, i.kind) for i in insts] == [("BTC/USDT:USDT", MarketKind.LINEAR),
                                                    ("BTC/USDT:USDT-250627", MarketKind.LINEAR)]
    assert events == []
    assert names(BinanceAdapter.parse_instruments("instruments:spot", b"<html>")[1]) == ["ProtocolError"]
    reqs = BinanceAdapter.instrument_requests({"spot_rest": "http://x"}, ["spot", "usdm"])
    assert [r.url for r in reqs] == ["http://x/api/v3/exchangeInfo", "https://fapi.binance.com/fapi/v1/exchangeInfo"]
    with pytest.raises(ValueError, match="no market 'coinm'"):
        BinanceAdapter.instrument_requests({}, ["coinm"])


def test_registry_and_sim_endpoints():
    assert get_adapter("binance") is BinanceAdapter
    sim = {"binance-spot": ("ws://h:1", "http://h:1"), "binance-usdm": ("ws://h:2", "http://h:2"), "okx": ("a", "b")}
    assert BinanceAdapter.sim_endpoints(sim) == {"spot_ws": "ws://h:1", "spot_rest": "http://h:1",
                                                 "usdm_ws": "ws://h:2", "usdm_rest": "http://h:2"}


# ----------------------------------------------------------------------------- garbage in: events out, never raise
_keys = st.sampled_from(["stream", "data", "e", "E", "s", "U", "u", "pu", "b", "a", "t", "p", "q", "T", "m",
                         "id", "result", "code", "msg", "lastUpdateId", "bids", "asks"])
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**64), st.floats(allow_nan=False),
                     st.sampled_from(["btcusdt@depth@100ms", "btcusdt@trade", "!serverShutdown", "depthUpdate",
                                      "trade", "100.0", "0", "x"]))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
                     max_leaves=12)
_frames = st.one_of(st.binary(max_size=64), st.text(max_size=64), _json.map(json.dumps),
                    st.builds(lambda d: json.dumps({"stream": "btcusdt@depth@100ms", "data": d}),
                              st.dictionaries(_keys, _json, max_size=8)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_frames, min_size=1, max_size=5), st.booleans())
def test_garbage_frames_yield_events_or_ProtocolError_never_an_exception(frames, live):
    d = Driver(SPOT_BTC)
    if live:
        d.step(("diff", 10, 12))
        d.step(("snap", 11))
    allowed = (BookChanged, BookInvalid, FetchRest, ProtocolError, SubscribeFailed, SymbolSynced, TradesReceived,
               Notice, CloseConnection, Send)
    for f in frames:
        out = d.a.on_frame(d.conn, f, 1)
        assert isinstance(out, list) and all(isinstance(e, allowed) for e in out)
    assert d.sym.state in (UNSYNCED, AWAITING_SNAPSHOT, BRIDGING, LIVE)


# ----------------------------------------------------------------------------- rotation before the 24 h cut
def _live_driver():
    d = Driver(SPOT_BTC, rotate_after_s=60.0)
    d.step(("diff", 10, 12))
    d.step(("snap", 11))
    assert d.sym.state is LIVE
    return d


def _trade_frame(tid):
    trade = {"e": "trade", "E": 5, "s": "BTCUSDT", "t": tid, "p": "1", "q": "1", "T": 4, "m": True}
    return json.dumps({"stream": "btcusdt@trade", "data": trade})


def _rotate(d):
    a = d.a
    assert a.rotate_after(d.conn) == 60.0
    out = a.on_rotate(d.conn)
    (opened,) = [e for e in out if isinstance(e, OpenConnection)]
    assert opened.conn != d.conn and a.rotate_after(opened.conn) == 0.0 == a.rotate_after(d.conn)
    subscribe = a.on_open(opened.conn)
    assert [json.loads(e.payload)["params"] for e in subscribe] == [["btcusdt@depth@100ms", "btcusdt@trade"]]
    return opened.conn


def test_rotation_overlaps_two_connections_applies_each_diff_and_trade_once_then_closes_the_old_one():
    d = _live_driver()
    a, old = d.a, d.conn
    new = _rotate(d)
    frame = _trade_frame(7)
    assert names(a.on_frame(old, frame, 1)) == ["TradesReceived"]
    assert a.on_frame(new, frame, 2) == []  # the same trade through the successor
    assert names(a.on_frame(old, diff(13, 13), 3)) == ["BookChanged"]
    # the successor's first depth frame: a duplicate (dropped), and every depth stream has now spoken on it
    out = a.on_frame(new, diff(13, 13), 4)
    assert names(out) == ["Notice", "CloseConnection"] and out[1].conn == old and not out[1].reconnect
    assert a.on_close(old, "replaced") == []  # the loop's report of that close changes nothing
    assert names(a.on_frame(new, diff(14, 14), 5)) == ["BookChanged"]
    assert d.sym.state is LIVE and d.sym.applied == 3 and d.sym.conn == new
    assert a.symbols_on(new) == [SPOT_BTC.key] and a.symbols_on(old) == []
    assert a.rotate_after(new) == 60.0  # the successor rotates in turn
    # a later subscription goes to the connection that now fills the slot, and unsubscribing closes it
    out = a.subscribe(SPOT_ETH)
    assert [e.conn for e in out if isinstance(e, Send)] == [new]
    a.unsubscribe(SPOT_ETH.key)
    assert names(a.unsubscribe(SPOT_BTC.key))[-1] == "CloseConnection"


def test_rotation_takes_over_after_a_while_when_a_depth_stream_stays_quiet():
    d = _live_driver()
    a, old = d.a, d.conn
    new = _rotate(d)
    assert names(a.on_frame(new, _trade_frame(7), 10**9)) == ["TradesReceived"]  # no depth yet: the old one stays
    out = a.on_frame(new, _trade_frame(8), 10**9 + 31 * 10**9)
    assert names(out) == ["TradesReceived", "Notice", "CloseConnection"] and out[2].conn == old


def test_rotation_old_connection_dropping_early_hands_over_without_a_resync():
    d = _live_driver()
    a, old = d.a, d.conn
    new = _rotate(d)
    out = a.on_close(old, "closed by server (24 h)")
    assert names(out) == ["Notice", "CloseConnection"] and d.sym.state is LIVE  # no BookInvalid
    assert names(a.on_frame(new, diff(13, 13), 1)) == ["BookChanged"]
    assert names(a.on_frame(new, diff(15, 15), 2)) == ["BookInvalid", "FetchRest"]  # a real gap still resyncs


def test_rotation_abandoned_when_the_successor_drops_keeps_the_old_connection_and_new_symbols():
    d = _live_driver()
    a, old = d.a, d.conn
    new = _rotate(d)
    out = a.subscribe(SPOT_ETH)  # made during the rotation: it lives on the successor only
    assert [e.conn for e in out if isinstance(e, Send)] == [new]
    out = a.on_close(new, "handshake reset")
    assert names(out) == ["Notice", "CloseConnection", "Send"] and out[1].conn == new
    assert json.loads(out[2].payload)["params"] == ["ethusdt@depth@100ms", "ethusdt@trade"] and out[2].conn == old
    assert d.sym.state is LIVE and a.syms[SPOT_ETH.key].conn == old
    assert sorted(a.symbols_on(old)) == sorted([SPOT_BTC.key, SPOT_ETH.key])
    assert names(a.on_frame(old, diff(13, 13), 1)) == ["BookChanged"]


def test_rotation_successor_not_up_when_the_old_one_drops_resyncs_as_before():
    d = _live_driver()
    a, old = d.a, d.conn
    a.on_rotate(old)  # successor opened but never connected
    out = a.on_close(old, "closed by server")
    assert names(out)[0] == "CloseConnection" and "BookInvalid" in names(out) and d.sym.state is UNSYNCED
    assert a.rotate_after(old) == 60.0 and a.on_open(old)  # the old connection reconnects as usual


def test_rotate_after_s_is_validated():
    with pytest.raises(ValueError, match="rotate_after_s"):
        adapter(rotate_after_s=-1)
    assert adapter(rotate_after_s=0).rotate_after("spot/0") == 0.0
