"""REST fallback: exact exchange bodies → values, error envelopes → RestError with the exchange's text,
and every market's depth and trades endpoints against the simulator's REST server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mdengine import rest
from mdengine.rest import RestError, resolve
from mdengine.store.layout import MarketKind, Side, TradeFlags

SPOT, LINEAR, INVERSE = MarketKind.SPOT, MarketKind.LINEAR, MarketKind.INVERSE

# Bodies from the exchanges' own documentation (shared/notes/exchanges.md).
DEPTH_BODIES = {
    "binance": b'{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,'
               b'"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}',
    "okx": b'{"code":"0","msg":"","data":[{"asks":[["41006.8","0.60038921","0","1"]],'
           b'"bids":[["41006.3","0.30178218","0","2"]],"ts":"1629966436396"}]}',
    "bybit": b'{"retCode":0,"retMsg":"OK","result":{"s":"BTCUSDT","a":[["65557.7","16.606555"]],'
             b'"b":[["65485.47","47.081829"]],"ts":1716863719031,"u":230704,"seq":1432604333,"cts":1716863718905},'
             b'"retExtInfo":{},"time":1716863719382}',
    "bitget": b'{"code":"00000","msg":"success","requestTime":1698303884579,"data":{"asks":[["34567.15","0.0131"],'
              b'["34567.25","0.0144"]],"bids":[["34567","0.2917"],["34566.85","0.0145"]],"ts":"1698303884584"}}',
}
EXPECTED_DEPTH = {
    "binance": ([[4.0, 431.0]], [[4.000002, 12.0]], 1027024, 1589436922972 * 10**6),
    "okx": ([[41006.3, 0.30178218]], [[41006.8, 0.60038921]], 0, 1629966436396 * 10**6),
    "bybit": ([[65485.47, 47.081829]], [[65557.7, 16.606555]], 230704, 1716863719031 * 10**6),
    "bitget": ([[34567.0, 0.2917], [34566.85, 0.0145]], [[34567.15, 0.0131], [34567.25, 0.0144]], 0,
               1698303884584 * 10**6),
}


@pytest.mark.parametrize("exchange", sorted(DEPTH_BODIES))
def test_parse_depth_documented_bodies(exchange):
    book = rest.parse_depth(exchange, DEPTH_BODIES[exchange])
    bids, asks, uid, ts = EXPECTED_DEPTH[exchange]
    assert book.bids.tolist() == bids and book.asks.tolist() == asks
    assert (book.update_id, book.exch_ts_ns) == (uid, ts)


def test_parse_depth_bitget_mix_numbers():
    body = json.dumps({"code": "00000", "msg": "success", "requestTime": 1, "data": {
        "asks": [[26347.5, 0.25], [26348.0, 0.16]], "bids": [[26346.5, 0.16]], "precision": "scale0",
        "scale": "0.5", "isMaxPrecision": "NO", "ts": "1695870968804"}})
    book = rest.parse_depth("bitget", body)
    assert book.asks.tolist() == [[26347.5, 0.25], [26348.0, 0.16]] and book.bids.tolist() == [[26346.5, 0.16]]


@pytest.mark.parametrize("exchange,body,message", [
    ("binance", b'{"code":-1121,"msg":"Invalid symbol."}', r"binance: Invalid symbol\. \(code -1121\)"),
    ("okx", b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}', "Instrument ID does not exist"),
    ("bybit", b'{"retCode":10001,"retMsg":"params error: Symbol Is Invalid","result":{}}', "Symbol Is Invalid"),
    ("bitget", b'{"code":"40034","msg":"Parameter does not exist","data":null}', "Parameter does not exist"),
    ("okx", b"<html>502 Bad Gateway</html>", "not JSON"),
    ("bybit", b'{"retCode":0,"retMsg":"OK","result":{"b":[["1"]],"a":[]}}', "bad bids level"),
])
def test_error_bodies_raise_RestError_with_the_exchange_message(exchange, body, message):
    with pytest.raises(RestError, match=message):
        rest.parse_depth(exchange, body)


@settings(max_examples=200, deadline=None)
@example(exchange="binance", body='{"code": null, "bids": [{}]}')  # a dict for a level (found by this test)
@example(exchange="binance", body='[{"isBuyerMaker": true, "id": 1, "time": 1e30, "price": "1", "qty": "1"}]')
@example(exchange="binance", body='[{"isBuyerMaker": true, "id": 1, "time": 100000000000000000000, "price": "1", '
                                  '"qty": "1"}]')  # a time beyond int64
@given(exchange=st.sampled_from(["binance", "okx", "bybit", "bitget"]),
       body=st.one_of(st.binary(max_size=200), st.recursive(
           st.none() | st.booleans() | st.integers() | st.text(max_size=5),
           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
               st.sampled_from(["code", "msg", "data", "bids", "asks", "b", "a", "result", "retCode", "list",
                                "lastUpdateId", "ts"]), inner, max_size=5), max_leaves=12).map(json.dumps)))
def test_garbage_yields_values_or_RestError_never_anything_else(exchange, body):
    for parse in (rest.parse_depth, rest.parse_trades):
        try:
            parse(exchange, body)
        except RestError:
            pass


@pytest.mark.parametrize("px,qty", [("1e400", "1"), ("1", "1e400"), ("-5", "1"), ("5", "-1"), ("0", "1"),
                                    ("NaN", "1"), ("2e12", "1"), ("1", "2e15")])
def test_REST_fallback_refuses_numbers_the_book_refuses(px, qty):
    """The client's REST fallback obeys the feed's rule (mdengine.limits): no inf, negative or absurd number is
    served as a book level or a trade."""
    depth = json.dumps({"lastUpdateId": 1, "bids": [[px, qty]], "asks": [["10", "1"]]})
    with pytest.raises(RestError, match="bad bids level"):
        rest.parse_depth("binance", depth)
    trades = json.dumps([{"id": 1, "price": px, "qty": qty, "time": 1, "isBuyerMaker": True}])
    with pytest.raises(RestError, match="bad trade"):
        rest.parse_trades("binance", trades)
    okx = json.dumps({"code": "0", "data": [{"px": px, "sz": qty, "ts": "1", "tradeId": "1", "side": "buy"}]})
    with pytest.raises(RestError, match="bad trade"):
        rest.parse_trades("okx", okx)


def test_parse_trades_sides_order_and_ids():
    binance = b'[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,' \
              b'"isBuyerMaker":true,"isBestMatch":true},{"id":28458,"price":"4.1","qty":"1","time":1499865549591,' \
              b'"isBuyerMaker":false}]'
    t = rest.parse_trades("binance", binance, recv_ts_ns=5)
    assert t["trade_id"].tolist() == [28457, 28458] and t["side"].tolist() == [Side.SELL, Side.BUY]
    assert t["exch_ts_ns"][0] == 1499865549590 * 10**6 and t["recv_ts_ns"].tolist() == [5, 5]
    bybit = json.dumps({"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": [
        {"execId": "b1c2-uuid", "symbol": "BTCUSDT", "price": "2", "size": "1", "side": "Sell", "time": "2"},
        {"execId": "a0b1-uuid", "symbol": "BTCUSDT", "price": "1", "size": "1", "side": "Buy", "time": "1"}]}})
    t = rest.parse_trades("bybit", bybit)  # newest first on the wire, oldest first here
    assert t["price"].tolist() == [1.0, 2.0] and t["side"].tolist() == [Side.BUY, Side.SELL]
    assert (t["flags"] & TradeFlags.ID_HASHED).all() and t["trade_id"][0] == rest.trade_id("a0b1-uuid")[0]
    assert t["trade_id"].min() >= 0


def test_resolve_derives_native_ids_and_markets():
    assert resolve("binance", "BTC/USDT") == rest.RestSymbol("binance", "binance-spot", "BTCUSDT", SPOT)
    assert resolve("binance", "BTC/USDT:USDT").rest_market == "binance-usdm"
    assert resolve("okx", "BTC/USDT:USDT").native == "BTC-USDT-SWAP"
    assert resolve("okx", "BTC/USD:BTC").native == "BTC-USD-SWAP"
    assert resolve("okx", "ETH/USDT").native == "ETH-USDT"
    assert resolve("bybit", "BTC/USD:BTC").kind == INVERSE
    assert resolve("bitget", "ETHUSDT", LINEAR) == rest.RestSymbol("bitget", "bitget", "ETHUSDT", LINEAR)
    assert resolve("bybit", "BTC/USDT:USDT", LINEAR, "BTCUSDT").native == "BTCUSDT"
    with pytest.raises(ValueError, match="dated future"):
        resolve("okx", "BTC/USD:BTC-250627")
    with pytest.raises(ValueError, match="coin-margined"):
        resolve("binance", "BTC/USD:BTC")


def test_urls_use_each_exchange_limits():
    b = "http://h"
    assert rest.depth_url(b, resolve("binance", "BTC/USDT:USDT"), 30) == "http://h/fapi/v1/depth?symbol=BTCUSDT&limit=50"
    assert rest.depth_url(b, resolve("okx", "BTC/USDT"), 1000).endswith("instId=BTC-USDT&sz=400")
    assert "productType=USDT-FUTURES" in rest.depth_url(b, resolve("bitget", "BTC/USDT:USDT"), 20)
    assert rest.depth_url(b, resolve("bitget", "BTC/USDT:USDT"), 20).endswith("limit=50")
    assert "category=inverse" in rest.trades_url(b, resolve("bybit", "BTC/USD:BTC"))
    assert rest.rest_endpoints({"okx": ("ws://x", "http://y/")})["okx"] == "http://y"


# ----------------------------------------------------------------------------- against the simulator
@pytest.fixture(scope="module")
def sim():
    from mdengine.sim import Simulator

    with Simulator(seed=3, rate_hz=20.0) as s:
        yield s


CASES = [("binance", "BTC/USDT", "binance-spot", "BTCUSDT"), ("binance", "ETH/USDT:USDT", "binance-usdm", "ETHUSDT"),
         ("okx", "BTC/USDT", "okx", "BTC-USDT"), ("okx", "ETH/USDT:USDT", "okx", "ETH-USDT-SWAP"),
         ("bybit", "BTC/USDT", "bybit", "spot/BTCUSDT"), ("bybit", "BTC/USD:BTC", "bybit", "inverse/BTCUSD"),
         ("bitget", "BTC/USDT", "bitget", "SPOT/BTCUSDT"),
         ("bitget", "ETH/USDT:USDT", "bitget", "USDT-FUTURES/ETHUSDT")]


@pytest.mark.parametrize("exchange,symbol,market,model", CASES)
def test_depth_and_trades_from_the_simulator(sim, exchange, symbol, market, model):
    bases = rest.rest_endpoints(sim.endpoints())
    sym = resolve(exchange, symbol)
    book = rest.fetch_depth(bases[sym.rest_market], sym, 20)
    _, bids, asks = sim.model_book(market, model, 20)
    # The market moves between the two reads; the prices must still be the simulator's and ordered.
    assert len(book.bids) > 0 and len(book.asks) > 0
    assert np.all(np.diff(book.bids[:, 0]) < 0) and np.all(np.diff(book.asks[:, 0]) > 0)
    assert book.bids[0, 0] < book.asks[0, 0]
    assert abs(book.bids[0, 0] - float(bids[0][0])) / float(bids[0][0]) < 0.01
    trades = rest.fetch_trades(bases[sym.rest_market], sym, 50)
    assert trades.dtype.names[0] == "exch_ts_ns"
    if len(trades) > 1:
        assert np.all(np.diff(trades["exch_ts_ns"]) >= 0)  # oldest first
        assert set(trades["side"].tolist()) <= {Side.BUY, Side.SELL}


@pytest.mark.parametrize("exchange,symbol,message", [
    ("binance", "DOGE/USDT", "Invalid symbol"), ("okx", "DOGE/USDT", "Instrument ID does not exist"),
    ("bybit", "DOGE/USDT", "Symbol Is Invalid"), ("bitget", "DOGE/USDT", "Parameter does not exist")])
def test_unknown_symbol_from_the_simulator_carries_the_exchange_message(sim, exchange, symbol, message):
    bases = rest.rest_endpoints(sim.endpoints())
    sym = resolve(exchange, symbol)
    with pytest.raises(RestError, match=message):
        rest.fetch_depth(bases[sym.rest_market], sym, 5)


def test_bybit_depth_up_to_each_category_maximum_and_the_simulator_refuses_beyond():
    """Every Bybit category serves up to 1000 levels a side (BY-DOC market/orderbook.mdx); beyond: retCode 10001."""
    from mdengine.sim import Simulator
    from mdengine.sim.testing import http_get

    with Simulator(seed=5, exchanges=["bybit"], symbols=["BTC/USDT", "BTC/USD:BTC"], rate_hz=1.0, levels=1000) as s:
        base = s.rest_url("bybit")
        for symbol, category in (("BTC/USDT", "spot"), ("BTC/USDT:USDT", "linear"), ("BTC/USD:BTC", "inverse")):
            book = rest.fetch_depth(base, resolve("bybit", symbol), 1000)
            assert len(book.bids) == len(book.asks) == 1000, symbol
            url = f"{base}/v5/market/orderbook?category={category}&symbol={resolve('bybit', symbol).native}"
            assert len(http_get(url)[2]["result"]["b"]) == (1 if category == "spot" else 25)  # the defaults
            for limit in ("0", "1001", "x"):
                status, _, body = http_get(f"{url}&limit={limit}")
                assert (status, body["retCode"]) == (200, 10001), (symbol, limit)
                with pytest.raises(RestError, match=r"retCode 10001"):
                    rest.parse_depth("bybit", rest.fetch(f"{url}&limit={limit}", exchange="bybit"))


def test_http_429_and_unreachable_host_raise_RestError(sim):
    bases = rest.rest_endpoints(sim.endpoints())
    sym = resolve("binance", "BTC/USDT")
    sim.inject("binance-spot", "http_429")
    with pytest.raises(RestError, match="Too many requests") as info:
        rest.fetch_depth(bases["binance-spot"], sym, 5)
    assert info.value.status == 429
    with pytest.raises(RestError) as info:
        rest.fetch_depth("http://127.0.0.1:9", sym, 5, timeout=2.0)
    assert info.value.status == 0
