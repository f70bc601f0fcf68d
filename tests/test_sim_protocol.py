"""Acks, errors, heartbeats, limits, REST and frame shapes versus real frames and exchanges.md examples."""

import json
import os
import time

import pytest
import websocket  # websocket-client: exposes server ping frames
from websockets.exceptions import ConnectionClosed

from mdengine.sim import Simulator
from mdengine.sim.testing import WsClient, http_get


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=2, rate_hz=50, binance_spot_ping_interval=0.2, okx_idle_timeout=0.5,
                   bybit_l1_repeat=0.2, bitget_idle_timeout=0.6) as s:
        yield s


def shape(v):
    """Keys, types and nesting of a JSON value (first element stands for a list)."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__


def compatible(r, o):
    if r == [] and isinstance(o, list):
        return True  # an empty real list says nothing about its elements
    if isinstance(r, dict) and isinstance(o, dict):
        return r.keys() == o.keys() and all(compatible(r[k], o[k]) for k in r)
    if isinstance(r, list) and isinstance(o, list):
        return compatible(r[0], o[0]) if r and o else True
    return r == o


def same_shape(real, ours, extra=()):
    r, o = shape(real), shape(ours)
    for k in extra:
        o.pop(k, None)
    assert compatible(r, o), (r, o)


def test_binance_spot_shapes_match_recording(sim, recordings_dir):
    recorded = {}
    with open(os.path.join(recordings_dir, "binance-spot-2021-10-12.jsonl")) as fh:
        for line in fh:
            ev = json.loads(line)
            if ev["kind"] == "recv":
                d = json.loads(ev["data"])
                recorded.setdefault(d["stream"].split("@", 1)[1], d)
            elif ev["kind"] == "http":
                recorded["rest"] = json.loads(ev["data"])
    url = sim.url("binance-spot") + "/stream?streams=btcusdt@depth@100ms/btcusdt@aggTrade/btcusdt@bookTicker"
    with WsClient(url) as c:
        got = {}
        while len(got) < 3:
            m = c.recv()
            got.setdefault(m["stream"].split("@", 1)[1], m)
    for kind in ("depth@100ms", "aggTrade", "bookTicker"):
        same_shape(recorded[kind], got[kind])
    same_shape(recorded["rest"], http_get(sim.rest_url("binance-spot") + "/api/v3/depth?symbol=BTCUSDT")[2])


def test_okx_shapes_match_recording_plus_seq_fields(sim, recordings_dir):
    rec = {}
    with open(os.path.join(recordings_dir, "okx-2022-05-13.jsonl")) as fh:
        for line in fh:
            ev = json.loads(line)
            if ev["kind"] == "recv":
                d = json.loads(ev["data"])
                rec.setdefault(d.get("event") or d["arg"]["channel"] + d.get("action", ""), d)
    with WsClient(sim.url("okx") + "/ws/v5/public") as c:
        c.send({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"},
                                            {"channel": "trades", "instId": "BTC-USDT"}]})
        got = {}
        while len(got) < 4:
            d = c.recv()
            got.setdefault(d.get("event") or d["arg"]["channel"] + d.get("action", ""), d)
    same_shape(rec["subscribe"], got["subscribe"], extra=("connId",))
    for k in ("bookssnapshot", "booksupdate"):
        ours = got[k]
        for f in ("prevSeqId", "seqId"):  # what OKX sends since 2022
            assert isinstance(ours["data"][0].pop(f), int)
        same_shape(rec[k], ours)
    t = got["trades"]["data"][0]
    assert set(rec["trades"]["data"][0]) <= set(t) and {"count", "source", "seqId"} <= set(t)


def test_usdm_bybit_bitget_shapes_match_doc_examples(sim):
    usdm = {"e": "depthUpdate", "E": 1, "T": 1, "s": "BTCUSDT", "U": 157, "u": 160, "pu": 149,
            "b": [["0.0024", "10"]], "a": [["0.0026", "100"]]}
    with WsClient(sim.url("binance-usdm") + "/public/ws/btcusdt@depth") as c:
        same_shape(usdm, c.recv())
    agg = {"e": "aggTrade", "E": 1, "s": "BNBUSDT", "a": 5933014, "p": "0.001", "q": "100", "nq": "100", "f": 100,
           "l": 105, "T": 123456785, "m": True}
    with WsClient(sim.url("binance-usdm") + "/market/ws/btcusdt@aggTrade") as c:
        same_shape(agg, c.recv())
    snap = {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1,
            "data": {"s": "BTCUSDT", "b": [["16493.50", "0.006"]], "a": [["16611.00", "0.029"]], "u": 1, "seq": 1},
            "cts": 1}
    trade = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [
        {"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50", "L": "PlusTick",
         "i": "20f43950-d8dd-5b31-9112-a178eb6023af", "BT": False, "seq": 1783284617}]}
    with WsClient(sim.url("bybit") + "/v5/public/linear") as c:
        c.send({"op": "subscribe", "args": ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"], "req_id": "x"})
        ack = c.recv()
        assert ack == {"success": True, "ret_msg": "", "conn_id": ack["conn_id"], "req_id": "x", "op": "subscribe"}
        same_shape(snap, c.recv())
        t = c.recv_until(lambda m: m["topic"].startswith("publicTrade"))
        same_shape(trade, t)
        assert len(t["data"][0]["i"]) == 36
    bg = {"action": "snapshot", "arg": {"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"},
          "data": [{"asks": [["100.50", "1.00"]], "bids": [["100.00", "1.50"]], "checksum": 1431635978,
                    "seq": 1001, "ts": "1700000000000"}], "ts": 1}
    bgt = {"action": "snapshot", "arg": {"instType": "USDT-FUTURES", "channel": "trade", "instId": "BTCUSDT"},
           "data": [{"ts": "1695716760565", "price": "27000.5", "size": "0.001", "side": "buy",
                     "tradeId": "1111111111"}], "ts": 1695716761589}
    with WsClient(sim.url("bitget") + "/v2/ws/public") as c:
        c.send({"op": "subscribe", "args": [{"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"},
                                            {"instType": "USDT-FUTURES", "channel": "trade", "instId": "BTCUSDT"}]})
        c.recv()
        same_shape(bg, c.recv())
        c.recv_until(lambda m: m.get("event") == "subscribe")
        t = c.recv()
        same_shape(bgt, t)
        ts = [int(x["ts"]) for x in t["data"]]
        assert ts == sorted(ts, reverse=True)  # newest first


def test_binance_acks_unknown_stream_and_sends_nothing(sim):
    with WsClient(sim.url("binance-spot") + "/ws") as c:
        c.send({"method": "SUBSCRIBE", "params": ["nosuch@depth"], "id": 7})
        assert c.recv() == {"result": None, "id": 7}
        with pytest.raises(TimeoutError):
            c.recv(0.3)
        c.send({"method": "LIST_SUBSCRIPTIONS", "id": 8})
        assert c.recv() == {"result": ["nosuch@depth"], "id": 8}
        c.send("{bad")
        assert c.recv()["code"] == 3
        c.send({"method": "FOO", "id": 9})
        assert c.recv()["code"] == 2


def test_binance_usdm_routes_depth_to_public_only(sim):
    with WsClient(sim.url("binance-usdm") + "/market/stream?streams=btcusdt@depth/btcusdt@aggTrade") as c:
        msgs = [c.recv() for _ in range(3)]
    assert {m["stream"] for m in msgs} == {"btcusdt@aggTrade"}


def test_binance_server_ping_frames_and_message_rate_limit(sim):
    ws = websocket.create_connection(sim.url("binance-spot") + "/ws", timeout=3)
    try:
        op, _ = ws.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_PING
    finally:
        ws.close()
    with WsClient(sim.url("binance-spot") + "/ws") as c:
        for i in range(6):
            c.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
        with pytest.raises(ConnectionClosed):
            while True:
                c.recv()


def test_okx_errors_ping_and_idle_close_4004(sim):
    with WsClient(sim.url("okx") + "/ws/v5/public") as c:
        c.send({"op": "nope", "args": []})
        assert c.recv()["code"] == "60019"
        c.send("not json")
        assert c.recv()["code"] == "60012"
        c.send("ping")
        assert c.recv() == "pong"
        with pytest.raises(ConnectionClosed) as e:
            c.recv(3)
        assert e.value.rcvd.code == 4004


def test_bybit_pong_shapes_spot_vs_linear_and_spot_args_limit(sim):
    with WsClient(sim.url("bybit") + "/v5/public/spot") as c:
        c.send({"op": "ping", "req_id": "p"})
        p = c.recv()
        assert p == {"success": True, "ret_msg": "pong", "conn_id": p["conn_id"], "op": "ping"}
        c.send({"op": "subscribe", "args": [f"publicTrade.X{i}" for i in range(11)]})
        assert c.recv()["success"] is False
        c.send({"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]})
        assert c.recv()["ret_msg"] == "subscribe"
        sim.pause()
        c.drain(0.1)
        again = c.recv(2)  # level 1 re-sent while unchanged
        assert again["type"] == "snapshot" and again["topic"] == "orderbook.1.BTCUSDT"
        sim.resume()
    with WsClient(sim.url("bybit") + "/v5/public/linear") as c:
        c.send({"op": "ping"})
        assert c.recv()["req_id"] == ""


def test_bitget_pong_rate_limit_and_ping_timeout(sim):
    with WsClient(sim.url("bitget") + "/v2/ws/public") as c:
        c.send("ping")
        assert c.recv() == "pong"
        t = time.monotonic()
        with pytest.raises(ConnectionClosed):  # closed for want of a ping (0.6 s here), not a 30 s receive timeout
            c.recv(30)
        assert time.monotonic() - t >= 0.5
    with WsClient(sim.url("bitget") + "/v2/ws/public") as c:
        for _ in range(11):
            c.send("ping")
        msgs = []
        with pytest.raises(ConnectionClosed):
            while True:
                msgs.append(c.recv())
        assert msgs[-1]["code"] == 30007


def test_rest_instruments_trades_and_errors(sim):
    r = sim.rest_url
    info = http_get(r("binance-spot") + "/api/v3/exchangeInfo")[2]
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert {f["filterType"]: f for f in btc["filters"]}["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert http_get(r("binance-usdm") + "/fapi/v1/depth?symbol=NOPE")[0] == 400
    trades = http_get(r("binance-usdm") + "/fapi/v1/trades?symbol=BTCUSDT&limit=5")[2]
    assert all(isinstance(t["id"], int) for t in trades)
    swap = http_get(r("okx") + "/api/v5/public/instruments?instType=SWAP")[2]["data"]
    assert {d["instId"]: d["ctVal"] for d in swap}["BTC-USD-SWAP"] == "100"
    assert http_get(r("okx") + "/api/v5/market/books?instId=BTC-USDT&sz=5")[2]["data"][0]["asks"]
    assert http_get(r("okx") + "/api/v5/market/trades?instId=BTC-USDT")[2]["code"] == "0"
    p1 = http_get(r("bybit") + "/v5/market/instruments-info?category=linear&limit=2")[2]["result"]
    p2 = http_get(r("bybit") + f"/v5/market/instruments-info?category=linear&limit=2&cursor={p1['nextPageCursor']}")
    assert len(p1["list"]) == 2 and p2[2]["result"]["nextPageCursor"] == ""
    assert http_get(r("bybit") + "/v5/market/recent-trade?category=spot&symbol=BTCUSDT")[2]["retCode"] == 0
    c = http_get(r("bitget") + "/api/v2/mix/market/contracts?productType=USDT-FUTURES")[2]["data"]
    assert {x["symbol"] for x in c} >= {"BTCUSDT", "ETHUSDT"}
    md = http_get(r("bitget") + "/api/v2/mix/market/merge-depth?symbol=BTCUSDT&productType=usdt-futures")[2]
    assert isinstance(md["data"]["asks"][0][0], float)
    assert http_get(r("bitget") + "/api/v2/spot/market/fills?symbol=BTCUSDT")[2]["code"] == "00000"
    assert http_get(r("bitget") + "/nope")[0] == 404
