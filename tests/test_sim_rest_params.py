"""The simulator's REST handlers answer a query parameter they cannot read (``limit=abc``) as each exchange answers a
bad parameter, in its envelope, and go on serving; they never crash the request."""

from __future__ import annotations

import time
from decimal import Decimal
from urllib.parse import quote

import pytest

from mdengine.sim import Simulator
from mdengine.sim.testing import http_get

# market, path and query with a good symbol, the parameter made bad
CASES = [
    ("binance-spot", "/api/v3/trades?symbol=BTCUSDT", "limit"),
    ("binance-spot", "/api/v3/depth?symbol=BTCUSDT", "limit"),
    ("binance-usdm", "/fapi/v1/trades?symbol=BTCUSDT", "limit"),
    ("binance-usdm", "/fapi/v1/depth?symbol=BTCUSDT", "limit"),
    ("okx", "/api/v5/market/trades?instId=BTC-USDT", "limit"),
    ("okx", "/api/v5/market/books?instId=BTC-USDT", "sz"),
    ("bybit", "/v5/market/recent-trade?category=linear&symbol=BTCUSDT", "limit"),
    ("bybit", "/v5/market/recent-trade?category=spot&symbol=BTCUSDT", "limit"),
    ("bybit", "/v5/market/instruments-info?category=linear", "limit"),
    ("bybit", "/v5/market/instruments-info?category=linear", "cursor"),
    ("bybit", "/v5/market/orderbook?category=linear&symbol=BTCUSDT", "limit"),
    ("bitget", "/api/v2/spot/market/fills?symbol=BTCUSDT", "limit"),
    ("bitget", "/api/v2/mix/market/fills?productType=USDT-FUTURES&symbol=BTCUSDT", "limit"),
    ("bitget", "/api/v2/spot/market/orderbook?symbol=BTCUSDT", "limit"),
    ("bitget", "/api/v2/mix/market/merge-depth?productType=USDT-FUTURES&symbol=BTCUSDT", "limit"),
]


def _refused(market: str, status: int, body: object, param: str) -> bool:
    """Is this the exchange's answer to a bad parameter (docs/simulator.md "Bad query parameters")?"""
    assert isinstance(body, dict), body
    if market.startswith("binance"):
        return status == 400 and body["code"] == -1100 and f"'{param}'" in body["msg"]
    if market == "okx":
        return status == 400 and body["code"] == "51000" and body["msg"] == f"Parameter {param} error"
    if market == "bybit":
        return status == 200 and body["retCode"] == 10001 and param in body["retMsg"]
    return status == 400 and body["code"] == "400" and param in body["msg"] and body["data"] is None


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=3, rate_hz=20) as s:
        yield s


@pytest.mark.parametrize("market,path,param", CASES, ids=[f"{m}{p.split('?')[0]}:{q}" for m, p, q in CASES])
@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", "٣"])
def test_unreadable_parameter_gets_the_exchange_error(sim, market, path, param, bad):
    base = sim.rest_url(market)
    status, _, body = http_get(f"{base}{path}&{param}={quote(bad)}")
    assert _refused(market, status, body, param), (status, body)
    status, _, body = http_get(f"{base}{path}&{param}=5")  # the same endpoint still answers a good value
    assert status == 200, body
    if market == "bybit":
        assert body["retCode"] == 0, body
    assert sim.stats(market)["rest_bad_params"] >= 1


def test_limits_are_clamped_and_honoured(sim):
    """A readable limit: the newest ``limit`` trades on every venue, at most the documented maximum."""
    b = sim.rest_url("binance-spot")
    deadline = time.monotonic() + 30
    while len(http_get(f"{b}/api/v3/trades?symbol=BTCUSDT")[2]) < 3 or \
            len(http_get(f"{sim.rest_url('okx')}/api/v5/market/trades?instId=BTC-USDT")[2]["data"]) < 2:
        assert time.monotonic() < deadline, "the simulator made no trades"
        time.sleep(0.1)
    _, _, fills = http_get(f"{b}/api/v3/trades?symbol=BTCUSDT&limit=3")
    assert len(fills) == 3
    _, _, zero = http_get(f"{b}/api/v3/trades?symbol=BTCUSDT&limit=0")
    assert zero == []  # not every trade (a slice from -0)
    o = sim.rest_url("okx")
    _, _, body = http_get(f"{o}/api/v5/market/trades?instId=BTC-USDT&limit=2")
    assert len(body["data"]) == 2 and int(body["data"][0]["tradeId"]) > int(body["data"][1]["tradeId"])
    _, _, body = http_get(f"{o}/api/v5/market/books?instId=BTC-USDT&sz=100000")
    assert 1 < len(body["data"][0]["bids"]) <= 400


def test_bybit_derivative_order_sizes_are_plausible_per_kind(sim):
    """instruments-info sizes are in each kind's unit (BY-DOC: BTCUSDT maxOrderQty "1190.000" BTC, step 0.001;
    inverse sizes are whole USD contracts), so the largest order is worth about the same on every derivative."""
    base = sim.rest_url("bybit")
    values = {}
    for cat in ("linear", "inverse"):
        _, _, body = http_get(f"{base}/v5/market/instruments-info?category={cat}")
        for row in body["result"]["list"]:
            lot = row["lotSizeFilter"]
            step = Decimal(lot["qtyStep"])
            if cat == "inverse":
                assert step == 1 and "." not in lot["maxOrderQty"], lot  # whole contracts
            for field in ("maxOrderQty", "maxMktOrderQty", "postOnlyMaxOrderQty"):
                assert Decimal(lot[field]) % step == 0 and Decimal(lot[field]) > 0, (row["symbol"], field, lot)
            assert Decimal(lot["maxMktOrderQty"]) < Decimal(lot["maxOrderQty"])
            _, _, book = http_get(f"{base}/v5/market/orderbook?category={cat}&symbol={row['symbol']}")
            mid = (float(book["result"]["b"][0][0]) + float(book["result"]["a"][0][0])) / 2
            qty = float(lot["maxOrderQty"])
            values[row["symbol"], cat] = qty if cat == "inverse" else qty * mid  # inverse: 1 USD a contract
            if cat == "linear":
                assert lot["minNotionalValue"] == "5", lot
    assert ("BTCUSD", "inverse") in values and ("ETHUSDT", "linear") in values
    for key, value in values.items():  # every largest order worth 10 M - 1 G in USD(T)
        assert 1e7 <= value <= 1e9, (key, value, values)
