"""Every fault is delivered on the wire."""

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed

from mdengine.sim import Simulator
from mdengine.sim.testing import WsClient, http_get


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=5, rate_hz=50, symbols=["BTC/USDT"]) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(sim):
    sim.resume()
    yield
    sim.clear_faults()


def okx_books(sim, inst="BTC-USDT"):
    c = WsClient(sim.url("okx") + "/ws/v5/public")
    c.send({"op": "subscribe", "args": [{"channel": "books", "instId": inst}]})
    assert c.recv()["event"] == "subscribe"
    assert c.recv()["action"] == "snapshot"
    return c


def seq_pairs(c, n):
    return [(d["prevSeqId"], d["seqId"]) for m in (c.recv() for _ in range(n)) for d in m["data"]]


def test_skip_sequence_leaves_a_real_gap(sim):
    with okx_books(sim) as c:
        before = seq_pairs(c, 2)
        sim.inject("okx", "skip_sequence", symbol="BTC-USDT")
        pairs = before + seq_pairs(c, 6)
        breaks = [i for i in range(1, len(pairs)) if pairs[i][0] != pairs[i - 1][1]]
        assert len(breaks) == 1
    assert sim.fault_log("okx")[-1][::2] == ("skip_sequence", "BTC-USDT")


def test_duplicate_and_reorder_on_binance_spot(sim):
    with WsClient(sim.url("binance-spot") + "/ws/btcusdt@depth") as c:
        c.recv()
        sim.inject("binance-spot", "duplicate", symbol="BTCUSDT")
        us = [c.recv()["u"] for _ in range(5)]
        assert any(us[i] == us[i + 1] for i in range(4))
        sim.inject("binance-spot", "reorder", symbol="BTCUSDT")
        us = [c.recv()["u"] for _ in range(5)]
        assert any(us[i] > us[i + 1] for i in range(4))


def test_corrupt_checksum_on_bitget(sim):
    from mdengine.sim.market import checksum_string, crc32_signed

    with WsClient(sim.url("bitget") + "/v2/ws/public") as c:
        c.send({"op": "subscribe", "args": [{"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"}]})
        c.recv()
        msgs = [c.recv()]
        sim.inject("bitget", "corrupt_checksum", symbol="SPOT/BTCUSDT")
        msgs += [c.recv() for _ in range(5)]
    book = ({}, {})
    bad = 0
    for m in msgs:
        d = m["data"][0]
        for side, key in zip(book, ("bids", "asks"), strict=True):
            for px, qty in d[key]:
                side.pop(px, None) if qty == "0" else side.__setitem__(px, qty)
        b = [[p, book[0][p]] for p in sorted(book[0], key=float, reverse=True)[:25]]
        a = [[p, book[1][p]] for p in sorted(book[1], key=float)[:25]]
        bad += crc32_signed(checksum_string(b, a)) != d["checksum"]
    assert bad == 1
    assert sim.fault_log("bitget")[-1][::2] == ("corrupt_checksum", "SPOT/BTCUSDT")


def test_crossed_book_on_bybit(sim):
    with WsClient(sim.url("bybit") + "/v5/public/spot") as c:
        c.send({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]})
        c.recv()
        c.recv()
        sim.inject("bybit", "crossed_book", symbol="BTCUSDT")
        m = c.recv_until(lambda m: m["data"]["b"] and m["data"]["a"] is not None and float(m["data"]["b"][0][0])
                         > float(sim.model_book("bybit", "spot/BTCUSDT", 1)[2][0][0]) - 1e-9, 3)
        assert m["type"] in ("delta", "snapshot")


def test_malformed_json_drop_and_disconnect(sim):
    with WsClient(sim.url("okx") + "/ws/v5/public") as c:
        sim.inject("okx", "malformed_json", text="{oops")
        assert c.recv_text() == "{oops"
        sim.inject("okx", "disconnect", code=4000, reason="bye")
        with pytest.raises(ConnectionClosed) as e:
            c.recv_text()
        assert e.value.rcvd.code == 4000
    with WsClient(sim.url("okx") + "/ws/v5/public") as c:
        sim.inject("okx", "drop")
        with pytest.raises(ConnectionClosed) as e:
            c.recv_text()
        assert e.value.rcvd is None  # no close frame: the TCP connection died


def test_silent_for_seconds_then_back(sim):
    with okx_books(sim) as c:
        sim.pause()
        c.drain(0.1)
        sim.inject("okx", "silent", seconds=0.4)
        c.send("ping")
        with pytest.raises(TimeoutError):
            c.recv(0.3)
        time.sleep(0.15)
        c.send("ping")
        assert c.recv_until(lambda m: m == "pong", 2) == "pong"


def test_silent_leaves_websocket_pings_unanswered_then_answers_again(sim):
    """A silent peer answers nothing: not the exchange's ping text, and not a WebSocket ping either (the websockets
    library would answer that one by itself), so a client probing a silent connection hears nothing."""
    with WsClient(sim.url("binance-spot") + "/ws/btcusdt@depth") as c:
        c.recv()
        sim.pause()  # no data: the client's queue stays empty, so it keeps reading (and sees any pong)
        c.drain(0.1)
        assert c.ws.ping(b"before").wait(5)  # answered while not silent
        sim.inject("binance-spot", "silent", seconds=1.5)
        assert not c.ws.ping(b"during").wait(0.8)
        assert sim.stats("binance-spot")["pings_ignored"] >= 1
        time.sleep(1.0)  # the fault is over
        assert c.ws.ping(b"after").wait(5)


def test_a_connection_fault_can_pick_connections_by_path(sim):
    with WsClient(sim.url("binance-usdm") + "/public/ws/btcusdt@depth") as public, \
            WsClient(sim.url("binance-usdm") + "/market/ws/btcusdt@aggTrade") as market:
        assert public.recv()["e"] == "depthUpdate"
        sim.pause()
        public.drain(0.1)
        sim.inject("binance-usdm", "silent", path="/market", seconds=30.0)
        assert not market.ws.ping(b"market").wait(0.8)
        assert public.ws.ping(b"public").wait(5)


def test_refuse_subscription_each_exchange(sim):
    cases = {
        "binance-spot": ("/ws", {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1},
                         lambda m: m.get("code") == 2),
        "okx": ("/ws/v5/public", {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]},
                lambda m: m["event"] == "error"),
        "bybit": ("/v5/public/spot", {"op": "subscribe", "args": ["publicTrade.BTCUSDT"]},
                  lambda m: m["success"] is False),
        "bitget": ("/v2/ws/public", {"op": "subscribe", "args": [{"instType": "SPOT", "channel": "trade",
                                                                  "instId": "BTCUSDT"}]},
                   lambda m: m["event"] == "error" and m["code"] == 30001),
    }
    for market, (path, req, refused) in cases.items():
        sim.inject(market, "refuse_subscription")
        with WsClient(sim.url(market) + path) as c:
            c.send(req)
            m = c.recv()
            assert refused(m), (market, m)
            c.send(req)
            assert not refused(c.recv()), market  # count=1: the next one works


def test_http_429_with_retry_after_and_slow_rest(sim):
    base = sim.rest_url("binance-spot")
    sim.inject("binance-spot", "http_429", retry_after=7)
    status, headers, body = http_get(base + "/api/v3/depth?symbol=BTCUSDT")
    assert status == 429 and headers["Retry-After"] == "7" and body["code"] == -1003
    assert http_get(base + "/api/v3/depth?symbol=BTCUSDT")[0] == 200
    sim.inject("binance-spot", "slow_rest", seconds=0.5, path="/api/v3/depth")
    t = time.monotonic()
    assert http_get(base + "/api/v3/depth?symbol=BTCUSDT")[0] == 200
    assert time.monotonic() - t >= 0.45


def test_okx_seq_reset_and_idle_keepalive(sim):
    with okx_books(sim) as c:
        before = seq_pairs(c, 2)
        sim.inject("okx", "seq_reset", symbol="BTC-USDT")
        pairs = before + seq_pairs(c, 4)
        assert any(s < p for p, s in pairs)
        assert all(pairs[i][0] == pairs[i - 1][1] for i in range(1, len(pairs)))  # chain still holds
        sim.pause()
        c.drain(0.2)
        sim.inject("okx", "idle_keepalive")
        d = c.recv()["data"][0]
        assert d["prevSeqId"] == d["seqId"] and d["bids"] == [] and d["asks"] == []


def test_bybit_u1_reset_is_a_snapshot(sim):
    with WsClient(sim.url("bybit") + "/v5/public/spot") as c:
        c.send({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"]})
        c.recv()
        c.recv()
        sim.inject("bybit", "seq_reset", symbol="spot/BTCUSDT")
        m = c.recv_until(lambda m: m["type"] == "snapshot", 3)
        assert m["data"]["u"] == 1 and len(m["data"]["b"]) == 50


def test_server_shutdown_notices(sim):
    with WsClient(sim.url("binance-spot") + "/stream?streams=btcusdt@trade") as c:
        sim.inject("binance-spot", "server_shutdown", close_after=0.1)
        m = c.recv_until(lambda m: m.get("stream") == "!serverShutdown")
        assert m["data"]["e"] == "serverShutdown"
        with pytest.raises(ConnectionClosed):
            while True:
                c.recv_text()
    with WsClient(sim.url("okx") + "/ws/v5/public") as c:
        sim.inject("okx", "server_shutdown")
        m = c.recv()
        assert m["event"] == "notice" and m["code"] == "64008"


def test_inject_rejects_unknown_fault(sim):
    with pytest.raises(ValueError):
        sim.inject("okx", "meteor")
    with pytest.raises(ValueError):
        sim.inject("binance-spot", "seq_reset")
    assert json.dumps(sim.stats("okx"))
