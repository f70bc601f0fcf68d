"""A correct client, written here from exchanges.md, syncs to each market and ends with the model's book."""

import pytest

from mdengine.sim import Simulator
from mdengine.sim.market import checksum_string, crc32_signed
from mdengine.sim.testing import WsClient, http_get


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=11, rate_hz=50, okx_checksum="crc32", symbols=["BTC/USDT", "BTC/USD"]) as s:
        yield s


def apply(book, levels):
    for px, qty, *_ in levels:
        if float(qty) == 0:
            book.pop(px, None)
        else:
            book[px] = qty


def top(book, n, bids):
    keys = sorted(book, key=float, reverse=bids)[:n]
    return [(k, book[k]) for k in keys]


def settle(sim, client):
    """Freeze the models and read what was already in flight."""
    sim.pause()
    tail = client.drain(0.3)
    return tail


def finish(sim, market, symbol, bids, asks, n=20):
    _, mb, ma = sim.model_book(market, symbol, n)
    assert top(bids, n, True) == mb
    assert top(asks, n, False) == ma


def test_binance_spot_client_syncs_with_snapshot_and_U_chain(sim):
    sim.resume()
    url = sim.url("binance-spot") + "/stream?streams=btcusdt@depth@100ms"
    with WsClient(url) as c:
        buf = [c.recv()["data"] for _ in range(5)]
        _, _, snap = http_get(sim.rest_url("binance-spot") + "/api/v3/depth?symbol=BTCUSDT&limit=1000")
        last = snap["lastUpdateId"]
        assert last >= buf[0]["U"]
        bids, asks = dict(map(tuple, snap["bids"])), dict(map(tuple, snap["asks"]))
        events = buf + [c.recv()["data"] for _ in range(30)]
        events += [m["data"] for m in settle(sim, c)]
        events = [e for e in events if e["u"] > last]
        assert events[0]["U"] <= last + 1 <= events[0]["u"]
        for e in events:
            assert e["U"] == last + 1
            apply(bids, e["b"])
            apply(asks, e["a"])
            last = e["u"]
        assert sim.model_book("binance-spot", "BTCUSDT")[0] == last
        finish(sim, "binance-spot", "BTCUSDT", bids, asks)


def test_binance_usdm_client_syncs_with_pu_chain_and_noncontiguous_U(sim):
    sim.resume()
    with WsClient(sim.url("binance-usdm") + "/public/ws/btcusdt@depth@100ms") as c:
        buf = [c.recv() for _ in range(5)]
        _, _, snap = http_get(sim.rest_url("binance-usdm") + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
        last = snap["lastUpdateId"]
        bids, asks = dict(map(tuple, snap["bids"])), dict(map(tuple, snap["asks"]))
        events = buf + [c.recv() for _ in range(30)] + settle(sim, c)
        events = [e for e in events if e["u"] >= last]
        assert events[0]["U"] <= last <= events[0]["u"]
        gaps = 0
        prev = None
        for e in events:
            if prev is not None:
                assert e["pu"] == prev
                gaps += e["U"] != prev + 1
            apply(bids, e["b"])
            apply(asks, e["a"])
            prev = e["u"]
        assert gaps > 0  # U is not contiguous on USDⓈ-M
        finish(sim, "binance-usdm", "BTCUSDT", bids, asks)


def test_okx_client_chains_seqId_and_verifies_legacy_crc32(sim):
    sim.resume()
    with WsClient(sim.url("okx") + "/ws/v5/public") as c:
        c.send({"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USD-SWAP"}]})
        msgs = [c.recv() for _ in range(30)] + settle(sim, c)
        books = [m for m in msgs if "action" in m]
        assert books[0]["action"] == "snapshot" and books[0]["data"][0]["prevSeqId"] == -1
        bids, asks, last = {}, {}, None
        for m in books:
            d = m["data"][0]
            if last is not None:
                assert d["prevSeqId"] == last
            apply(bids, d["bids"])
            apply(asks, d["asks"])
            last = d["seqId"]
            s = checksum_string([[p, q] for p, q in top(bids, 25, True)], [[p, q] for p, q in top(asks, 25, False)])
            assert crc32_signed(s) == d["checksum"]
        finish(sim, "okx", "BTC-USD-SWAP", bids, asks)


def test_bybit_orderbook50_view_and_rest_u_agree(sim):
    sim.resume()
    with WsClient(sim.url("bybit") + "/v5/public/linear") as c:
        c.send({"op": "subscribe", "args": ["orderbook.50.BTCUSDT"], "req_id": "1"})
        assert c.recv()["success"] is True
        msgs = [c.recv() for _ in range(30)] + settle(sim, c)
        assert msgs[0]["type"] == "snapshot" and all(m["type"] == "delta" for m in msgs[1:])
        bids, asks = {}, {}
        for m in msgs:
            apply(bids, m["data"]["b"])
            apply(asks, m["data"]["a"])
        assert len(bids) == 50 and len(asks) == 50
        finish(sim, "bybit", "linear/BTCUSDT", bids, asks, 50)
        _, _, r = http_get(sim.rest_url("bybit") + "/v5/market/orderbook?category=linear&symbol=BTCUSDT&limit=50")
        assert r["result"]["u"] == msgs[-1]["data"]["u"]


def test_bitget_books_checksum_and_seq(sim):
    sim.resume()
    with WsClient(sim.url("bitget") + "/v2/ws/public") as c:
        c.send({"op": "subscribe", "args": [{"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"}]})
        assert c.recv()["event"] == "subscribe"
        msgs = [c.recv() for _ in range(30)] + settle(sim, c)
        bids, asks, seq = {}, {}, None
        for m in msgs:
            d = m["data"][0]
            if seq is not None:
                assert d["seq"] == seq + 1
            seq = d["seq"]
            apply(bids, d["bids"])
            apply(asks, d["asks"])
            s = checksum_string([[p, q] for p, q in top(bids, 25, True)], [[p, q] for p, q in top(asks, 25, False)])
            assert crc32_signed(s) == d["checksum"]
        finish(sim, "bitget", "SPOT/BTCUSDT", bids, asks)
