"""Each exchange package's own REST and naming modules, called directly (the `mdengine.rest` facade's tests in
test_rest.py run the same bodies through the registry), and the registry's contract."""

from __future__ import annotations

import json

import pytest

from mdengine import rest as facade
from mdengine.exchanges import EXCHANGES, exchange, get_adapter
from mdengine.exchanges._rest import RestError, RestSymbol
from mdengine.exchanges.binance import endpoints as binance_endpoints
from mdengine.store.layout import MarketKind, Side

SPOT, LINEAR, INVERSE = MarketKind.SPOT, MarketKind.LINEAR, MarketKind.INVERSE


@pytest.mark.parametrize("name", EXCHANGES)
def test_every_package_provides_the_registry_contract(name):
    pkg = exchange(name)
    assert pkg.ADAPTER is get_adapter(name) and pkg.ADAPTER.exchange == name
    assert pkg.ADAPTER.DEFAULT_ENDPOINTS == pkg.endpoints.DEFAULT_ENDPOINTS  # written once, in endpoints.py
    assert set(pkg.endpoints.DEFAULT_REST) <= set(facade.DEFAULT_REST)
    assert set(pkg.endpoints.MARKET_URLS) == set(pkg.endpoints.DEFAULT_REST)
    assert all(ws.startswith("wss://") for ws, _ in pkg.endpoints.MARKET_URLS.values())
    assert pkg.ADAPTER.sim_endpoints(pkg.endpoints.MARKET_URLS) == pkg.endpoints.DEFAULT_ENDPOINTS  # same shape
    assert all(url.startswith("https://") for url in pkg.endpoints.DEFAULT_REST.values())
    for kind in (SPOT, LINEAR):
        market = pkg.naming.rest_market(kind)
        assert market in pkg.endpoints.DEFAULT_REST, (name, kind, market)
        sym = RestSymbol(name, market, pkg.naming.native_id("BTC", "USDT", kind), kind, "" if kind == SPOT else "USDT")
        for url in (pkg.rest.depth_url("http://h", sym, 10), pkg.rest.trades_url("http://h", sym, 10)):
            assert url.startswith("http://h/") and sym.native in url


def test_registry_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown exchange 'kraken'; supported: binance, okx, bybit, bitget"):
        exchange("kraken")


def test_binance_package():
    pkg = exchange("binance")
    assert pkg.naming.rest_market(SPOT) == "binance-spot" and pkg.naming.rest_market(LINEAR) == "binance-usdm"
    assert pkg.naming.rest_market(INVERSE) is None  # COIN-M: no REST fallback
    spot = RestSymbol("binance", "binance-spot", "BTCUSDT", SPOT)
    assert pkg.rest.depth_url("http://h", spot, 9000) == "http://h/api/v3/depth?symbol=BTCUSDT&limit=5000"
    assert pkg.rest.trades_url("http://h", spot, 0) == "http://h/api/v3/trades?symbol=BTCUSDT&limit=1"
    usdm = RestSymbol("binance", "binance-usdm", "BTCUSDT", LINEAR, "USDT")
    assert pkg.rest.depth_url("http://h", usdm, 2000).endswith("/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    with pytest.raises(RestError, match=r"binance: Invalid symbol\. \(code -1121\)"):
        pkg.rest.payload({"code": -1121, "msg": "Invalid symbol."})
    book = pkg.rest.parse_depth({"lastUpdateId": 7, "E": 2, "bids": [["1", "2"]], "asks": []})
    assert (book.bids.tolist(), book.asks.shape) == ([[1.0, 2.0]], (0, 2))
    assert (book.update_id, book.exch_ts_ns) == (7, 2_000_000)
    rows = pkg.rest.trade_rows([{"id": 5, "price": "3", "qty": "4", "time": 6, "isBuyerMaker": False}], 9)
    assert rows == [(6_000_000, 9, 3.0, 4.0, 5, Side.BUY, 0, -1)]


@pytest.mark.parametrize("url,usdm", [
    ("wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms", False),
    ("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000", False),
    ("wss://fstream.binance.com/public/stream", True),
    ("https://fapi.binance.com/fapi/v1/exchangeInfo", True),
    ("ws://127.0.0.1:5001/public/stream", True),  # a simulator's USDⓈ-M routes
    ("ws://127.0.0.1:5001/market/stream", True),
    ("http://127.0.0.1:5001/fapi/v1/depth?symbol=BTCUSDT", True),
    ("ws://127.0.0.1:5000/stream?streams=btcusdt@trade", False),
])
def test_binance_market_of_url(url, usdm):
    assert binance_endpoints.market_of_url(url) == ("usdm" if usdm else "spot")
    assert binance_endpoints.rest_market_of_url(url) == ("binance-usdm" if usdm else "binance-spot")


def test_binance_market_of_url_learns_usdm_hosts_from_fapi_paths():
    """A recording made against a simulator: its USDⓈ-M host has no telling name, but it served /fapi/ REST."""
    urls = ["http://127.0.0.1:5001/fapi/v1/exchangeInfo", "http://127.0.0.1:5000/api/v3/exchangeInfo"]
    hosts = binance_endpoints.usdm_hosts(urls)
    assert hosts == {"127.0.0.1:5001"}
    assert binance_endpoints.market_of_url("ws://127.0.0.1:5001/ws", hosts) == "usdm"
    assert binance_endpoints.market_of_url("ws://127.0.0.1:5000/ws", hosts) == "spot"


def test_okx_package():
    pkg = exchange("okx")
    assert pkg.naming.native_id("BTC", "USDT", SPOT) == "BTC-USDT"
    assert pkg.naming.native_id("BTC", "USD", INVERSE) == "BTC-USD-SWAP"
    sym = RestSymbol("okx", "okx", "BTC-USDT", SPOT)
    assert pkg.rest.trades_url("http://h", sym, 9999).endswith("/api/v5/market/trades?instId=BTC-USDT&limit=500")
    with pytest.raises(RestError, match=r"okx: unexpected REST answer \[\]"):
        pkg.rest.payload([])
    with pytest.raises(RestError, match="okx: REST depth has no data"):
        pkg.rest.parse_depth([])
    data = pkg.rest.payload({"code": "0", "data": [{"px": "1", "sz": "2", "ts": "3", "tradeId": "4", "side": "sell"},
                                                   {"px": "1", "sz": "2", "ts": "1", "tradeId": "2", "side": "buy"}]})
    rows = pkg.rest.trade_rows(data, 0)
    assert [r[4] for r in rows] == [2, 4] and [r[5] for r in rows] == [Side.BUY, Side.SELL]  # oldest first


def test_bybit_package():
    pkg = exchange("bybit")
    spot = RestSymbol("bybit", "bybit", "BTCUSDT", SPOT)
    assert pkg.rest.trades_url("http://h", spot, 1000).endswith("category=spot&symbol=BTCUSDT&limit=60")
    inverse = RestSymbol("bybit", "bybit", "BTCUSD", INVERSE, "BTC")
    assert pkg.rest.depth_url("http://h", inverse, 500).endswith(
        "/v5/market/orderbook?category=inverse&symbol=BTCUSD&limit=500")
    for kind in (SPOT, LINEAR, INVERSE):  # every category takes up to 1000 levels (BY-DOC market/orderbook.mdx)
        sym = RestSymbol("bybit", "bybit", "BTCUSDT", kind)
        assert pkg.rest.depth_url("http://h", sym, 1000).endswith("&limit=1000")
        assert pkg.rest.depth_url("http://h", sym, 5000).endswith("&limit=1000")
        assert pkg.rest.depth_url("http://h", sym, 0).endswith("&limit=1")
    with pytest.raises(RestError, match=r"bybit: error \(retCode 10006\)"):
        pkg.rest.payload({"retCode": 10006})
    book = pkg.rest.parse_depth({"b": [["2", "1"]], "a": [["3", "1"]], "u": 8, "ts": 1})
    assert (book.bids.tolist(), book.asks.tolist(), book.update_id) == ([[2.0, 1.0]], [[3.0, 1.0]], 8)
    with pytest.raises(RestError, match="bybit: unexpected REST trades"):
        pkg.rest.trade_rows({"category": "spot"}, 0)


def test_bitget_package():
    pkg = exchange("bitget")
    assert pkg.naming.product_type(LINEAR, "USDC") == "USDC-FUTURES"
    assert pkg.naming.product_type(INVERSE, "BTC") == "COIN-FUTURES"
    spot = RestSymbol("bitget", "bitget", "BTCUSDT", SPOT)
    assert pkg.rest.depth_url("http://h", spot, 500).endswith("symbol=BTCUSDT&type=step0&limit=150")
    perp = RestSymbol("bitget", "bitget", "BTCUSDT", LINEAR, "USDT")
    assert pkg.rest.depth_url("http://h", perp, 51).endswith("productType=USDT-FUTURES&precision=scale0&limit=max")
    assert pkg.rest.trades_url("http://h", perp, 500).endswith(
        "/api/v2/mix/market/fills?symbol=BTCUSDT&productType=USDT-FUTURES&limit=100")
    with pytest.raises(RestError, match=r"bitget: Parameter does not exist \(code 40034\)"):
        pkg.rest.payload(json.loads('{"code":"40034","msg":"Parameter does not exist","data":null}'))
    book = pkg.rest.parse_depth({"bids": [[26346.5, 0.16]], "asks": [], "ts": "5"})
    assert (book.bids.tolist(), book.update_id, book.exch_ts_ns) == ([[26346.5, 0.16]], 0, 5_000_000)
