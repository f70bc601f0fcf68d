"""Perp records over REST: each exchange's URLs and parsers on answers shaped as its documentation shows them
(pure), and the same requests against the simulator's REST server through a real Client (real sockets)."""

from __future__ import annotations

import json
import math
from urllib.parse import parse_qs, urlsplit

import pytest
from test_client import Feed, Host

from mdengine import rest
from mdengine.client import Client, NoPerpData
from mdengine.core.types import MarketKind
from mdengine.rest import RestError


def _bodies(*docs: object) -> list[bytes]:
    return [json.dumps(d).encode() for d in docs]


def _path_query(url: str) -> tuple[str, dict[str, str]]:
    u = urlsplit(url)
    return u.path, {k: v[0] for k, v in parse_qs(u.query).items()}


# BN-UM "Mark Price" (premiumIndex) and "Open Interest" response examples
BINANCE_MARK = {"symbol": "BTCUSDT", "markPrice": "11793.63104562", "indexPrice": "11781.80495970",
                "estimatedSettlePrice": "11781.16138815", "lastFundingRate": "0.00038246", "interestRate": "0.00010000",
                "nextFundingTime": 1597392000000, "time": 1597370495002}
BINANCE_OI = {"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011}


def test_binance_perp_is_premium_index_plus_open_interest():
    sym = rest.resolve("binance", "BTC/USDT:USDT")
    urls = rest.perp_urls("http://h", sym)
    assert [_path_query(u) for u in urls] == [("/fapi/v1/premiumIndex", {"symbol": "BTCUSDT"}),
                                              ("/fapi/v1/openInterest", {"symbol": "BTCUSDT"})]
    p = rest.parse_perp("binance", _bodies(BINANCE_MARK, BINANCE_OI))
    assert p.fields == {"mark_price": 11793.63104562, "index_price": 11781.8049597, "funding_rate": 0.00038246,
                        "open_interest": 10659.509, "next_funding_ns": 1597392000000 * 10**6}
    assert p.exch_ts_ns == 1597370495002 * 10**6
    delivery = dict(BINANCE_MARK, lastFundingRate="", nextFundingTime=0)  # a delivery contract: absent, not zero
    assert "funding_rate" not in rest.parse_perp("binance", _bodies(delivery, BINANCE_OI)).fields
    with pytest.raises(ValueError, match="spot"):
        rest.perp_urls("http://h", rest.resolve("binance", "BTC/USDT"))


def test_okx_perp_takes_four_public_answers_and_keeps_a_forecast_next_rate():
    sym = rest.resolve("okx", "BTC/USDT:USDT")
    urls = [_path_query(u) for u in rest.perp_urls("http://h", sym)]
    assert urls == [("/api/v5/public/mark-price", {"instType": "SWAP", "instId": "BTC-USDT-SWAP"}),
                    ("/api/v5/market/index-tickers", {"instId": "BTC-USDT"}),
                    ("/api/v5/public/funding-rate", {"instId": "BTC-USDT-SWAP"}),
                    ("/api/v5/public/open-interest", {"instType": "SWAP", "instId": "BTC-USDT-SWAP"})]

    def ok(row: dict) -> dict:
        return {"code": "0", "msg": "", "data": [row]}

    mark = ok({"instType": "SWAP", "instId": "BTC-USDT-SWAP", "markPx": "200", "ts": "1597026383085"})
    index = ok({"instId": "BTC-USDT", "idxPx": "199.5", "high24h": "0.5", "low24h": "0.1", "open24h": "0.1",
                "sodUtc0": "0.1", "sodUtc8": "0.1", "ts": "1597026383085"})
    funding = {"fundingRate": "0.0000792386885340", "fundingTime": "1703088000000", "instId": "BTC-USDT-SWAP",
               "instType": "SWAP", "method": "current_period", "nextFundingRate": "",
               "nextFundingTime": "1703116800000", "ts": "1703070685309"}
    oi = ok({"instType": "SWAP", "instId": "BTC-USDT-SWAP", "oi": "5000", "oiCcy": "555.55", "oiUsd": "50000",
             "ts": "1597026383085"})
    p = rest.parse_perp("okx", _bodies(mark, index, ok(funding), oi))
    assert p.fields == {"mark_price": 200.0, "index_price": 199.5, "funding_rate": 0.000079238688534,
                        "open_interest": 5000.0, "next_funding_ns": 1703088000000 * 10**6}  # nextFundingRate "": absent
    forecast = dict(funding, method="next_period", nextFundingRate="0.0001")
    assert rest.parse_perp("okx", _bodies(mark, index, ok(forecast), oi)).fields["next_funding_rate"] == 0.0001
    with pytest.raises(RestError, match="Instrument ID does not exist"):
        rest.parse_perp("okx", _bodies({"code": "51001", "msg": "Instrument ID does not exist", "data": []},
                                        index, ok(funding), oi))


def test_bybit_perp_is_the_ticker_with_the_envelope_time():
    sym = rest.resolve("bybit", "BTC/USD:BTC")
    assert sym.kind == MarketKind.INVERSE
    (url,) = rest.perp_urls("http://h", sym)
    assert _path_query(url) == ("/v5/market/tickers", {"category": "inverse", "symbol": "BTCUSD"})
    row = {"symbol": "BTCUSD", "lastPrice": "16597.00", "indexPrice": "16598.54", "markPrice": "16596.00",
           "openInterest": "373504107", "fundingRate": "-0.000212", "nextFundingTime": "1672387200000",
           "predictedDeliveryPrice": "", "deliveryTime": "0"}
    doc = {"retCode": 0, "retMsg": "OK", "result": {"category": "inverse", "list": [row]}, "retExtInfo": {},
           "time": 1672376496682}
    p = rest.parse_perp("bybit", _bodies(doc))
    assert p.fields == {"mark_price": 16596.0, "index_price": 16598.54, "funding_rate": -0.000212,
                        "open_interest": 373504107.0, "next_funding_ns": 1672387200000 * 10**6}
    assert p.exch_ts_ns == 1672376496682 * 10**6
    with pytest.raises(RestError, match="no data"):
        rest.parse_perp("bybit", _bodies(dict(doc, result={"category": "inverse", "list": []})))


# Bitget v2 "Get Ticker" and "Get Next Funding Time" response examples
BITGET_TICKER = {"code": "00000", "msg": "success", "requestTime": 1695794095685, "data": [
    {"symbol": "ETHUSD_231229", "lastPr": "1829.3", "askPr": "1829.8", "bidPr": "1829.3", "bidSz": "0.054",
     "askSz": "0.785", "high24h": "0", "low24h": "0", "ts": "1695794098184", "change24h": "0", "baseVolume": "0",
     "quoteVolume": "0", "usdtVolume": "0", "openUtc": "0", "changeUtc24h": "0", "indexPrice": "1822.15",
     "fundingRate": "0", "holdingAmount": "9488.49", "deliveryStartTime": "1693538723186",
     "deliveryTime": "1703836799000", "deliveryStatus": "delivery_normal", "open24h": "0", "markPrice": "1829"}]}
BITGET_FUNDING_TIME = {"code": "00000", "msg": "success", "requestTime": 1695796425096,
                       "data": [{"symbol": "BTCUSDT", "nextFundingTime": "1695801600000", "ratePeriod": "8"}]}


def test_bitget_perp_is_the_ticker_plus_the_next_funding_time():
    sym = rest.resolve("bitget", "BTC/USDT:USDT")
    urls = [_path_query(u) for u in rest.perp_urls("http://h", sym)]
    q = {"symbol": "BTCUSDT", "productType": "USDT-FUTURES"}
    assert urls == [("/api/v2/mix/market/ticker", q), ("/api/v2/mix/market/funding-time", q)]
    p = rest.parse_perp("bitget", _bodies(BITGET_TICKER, BITGET_FUNDING_TIME))
    assert p.fields == {"mark_price": 1829.0, "index_price": 1822.15, "funding_rate": 0.0,
                        "open_interest": 9488.49, "next_funding_ns": 1695801600000 * 10**6}
    assert p.exch_ts_ns == 1695794098184 * 10**6
    bad = json.loads(json.dumps(BITGET_TICKER))
    bad["data"][0]["markPrice"] = "-5"  # the feed's range rule: never stored
    with pytest.raises(RestError, match="mark_price"):
        rest.parse_perp("bitget", _bodies(bad, BITGET_FUNDING_TIME))


@pytest.fixture(scope="module")
def writer_host():
    h = Host()
    yield h
    h.stop()


@pytest.fixture
def engine(writer_host, namespace):
    """An engine to attach to: one Binance feed publishing a spot book only."""
    f = Feed(writer_host, namespace)
    f.book(f.add("spot", "BTCUSDT", "BTC/USDT"), 1.0, 2.0, uid=1)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def sim():
    from mdengine.sim import Simulator

    with Simulator(seed=11, rate_hz=20.0, exchanges=["binance-usdm", "okx", "bybit", "bitget"]) as s:
        yield s


@pytest.mark.parametrize("exchange", ["binance", "okx", "bybit", "bitget"])
def test_an_unsubscribed_perpetual_is_served_from_the_simulators_rest(namespace, engine, sim, exchange):
    from mdengine.sim.formats.perp import FUNDING_PERIOD_MS

    with Client(namespace, rest_fallback=True, endpoints=sim.endpoints()) as c:
        p = c.perp(exchange, "BTC/USDT:USDT")
        assert (p.source, p.state, p.stale, p.reason) == ("rest", "rest", False, "")
        market = {"binance": "binance-usdm"}.get(exchange, exchange)
        native = {"okx": "BTC-USDT-SWAP"}.get(exchange, "BTCUSDT")
        _, bids, asks = sim.model_book(market, native, 1)
        mid = (float(bids[0][0]) + float(asks[0][0])) / 2
        assert abs(p.mark_price / mid - 1) < 0.002 and abs(p.index_price / p.mark_price - 1) < 0.001, (p, mid)
        assert abs(p.funding_rate) < 0.01 and p.open_interest > 0 and p.exch_ts_ns > 0
        assert p.next_funding_ns % (FUNDING_PERIOD_MS * 1_000_000) == 0 and p.next_funding_ns > 0
        assert math.isnan(p.next_funding_rate)
        assert c.statistics().rest_reads >= 1
        assert c.perp(exchange, "BTC/USDT:USDT").age_s < 1.0  # reused for REST_CACHE_S, then asked again


def test_a_failed_rest_perp_read_names_the_exchanges_error(namespace, engine, sim):
    with Client(namespace, rest_fallback=True, endpoints=sim.endpoints()) as c:
        with pytest.raises(RestError, match="Invalid symbol"):
            c.perp("binance", "NOPE/USDT:USDT")
        with pytest.raises(NoPerpData):  # spot, not subscribed: nothing asked of REST
            c.perp("okx", "BTC/USDT")
        assert c.statistics().rest_failures >= 1


def test_a_stopped_feeds_perp_record_is_served_from_rest_marked_as_such(writer_host, namespace, sim):
    from mdengine.client import StaleBookError

    f = Feed(writer_host, namespace)
    slot = f.add("usdm", "BTCUSDT", "BTC/USDT:USDT", MarketKind.LINEAR)
    f.call("perp", slot, {"mark_price": 100.5, "index_price": 100.4, "funding_rate": 1e-4, "open_interest": 7.0}, 0)
    f.stop()
    with Client(namespace, max_age=3.0, rest_fallback=True, endpoints=sim.endpoints()) as c:
        p = c.perp("binance", "BTC/USDT:USDT")
        assert (p.source, p.state, p.stale) == ("rest", "rest", False)
        assert p.mark_price > 1000 and p.open_interest != 7.0  # the simulator's, not the stopped feed's
        assert c.statistics().stale_reads == 1
    with Client(namespace, max_age=3.0, endpoints=sim.endpoints()) as c, \
            pytest.raises(StaleBookError, match="feed stopped"):
        c.perp("binance", "BTC/USDT:USDT")
    with Client(namespace, endpoints=sim.endpoints()) as c:  # neither: the last record, flagged
        p = c.perp("binance", "BTC/USDT:USDT")
        assert (p.mark_price, p.source, p.stale) == (100.5, "shm", True)


def test_fmz_GetFundings_has_fmzs_funding_fields_and_uses_the_rest_fallback(namespace, engine, sim):  # noqa: N802
    """FMZ's Funding structure: Info, Symbol, Interval (ms), Time (ms of the coming settlement), Rate. The facade's
    client falls back to REST, so an unsubscribed perpetual is read there."""
    from mdengine.client.fmz import Exchange
    from mdengine.sim.formats.perp import FUNDING_PERIOD_MS

    with Client(namespace, max_age=3.0, rest_fallback=True, endpoints=sim.endpoints()) as c:
        ex = Exchange("okx", "BTC_USDT.swap", client=c)
        (f,) = ex.GetFundings()
        assert set(f) == {"Info", "Symbol", "Interval", "Time", "Rate"}
        assert f["Symbol"] == "BTC_USDT.swap" and f["Interval"] is None  # no stream carries the period: absent
        assert f["Time"] % FUNDING_PERIOD_MS == 0 and abs(f["Rate"]) < 0.01
        assert f["Info"]["Source"] == "rest" and f["Info"]["MarkPrice"] > 0 and not f["Info"]["Stale"]
