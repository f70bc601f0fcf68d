"""FMZ-style facade: symbol forms, GetDepth/GetTrades shapes, subscribe on first use with REST meanwhile."""

from __future__ import annotations

import pytest
from test_client import Feed, Host, _until

from mdengine.client import Client, SubscribeError
from mdengine.client.fmz import Exchange, to_unified
from mdengine.engine.control import ControlServer
from mdengine.rest import RestError


@pytest.fixture(scope="module")
def writer_host():
    h = Host()
    yield h
    h.stop()


@pytest.mark.parametrize("fmz,unified", [("ETH_USDT", "ETH/USDT"), ("eth_usdt", "ETH/USDT"),
                                         ("BTC_USDT.swap", "BTC/USDT:USDT"), ("BTC_USD.swap", "BTC/USD:BTC"),
                                         ("BTC/USDT", "BTC/USDT"), ("BTCUSDT_250627", "BTCUSDT_250627"),
                                         ("BTC-USDT-SWAP", "BTC-USDT-SWAP")])
def test_to_unified(fmz, unified):
    assert to_unified(fmz) == unified


@pytest.fixture(scope="module")
def sim():
    from mdengine.sim import Simulator

    with Simulator(seed=7, rate_hz=20.0, exchanges=["binance-spot"]) as s:
        yield s


@pytest.fixture
def feed(writer_host, namespace):
    f = Feed(writer_host, namespace)
    yield f
    f.stop()


def test_GetDepth_and_GetTrades_shapes_from_shared_memory(namespace, feed, sim):
    slot = feed.add("spot", "ETHUSDT", "ETH/USDT")
    feed.book(slot, 100.0, 101.0, uid=1, levels=3)
    feed.trades(slot, range(5))
    ex = Exchange("binance", "ETH_USDT", namespace=namespace, endpoints=sim.endpoints())
    d = ex.GetDepth()
    assert d["Source"] == "shm" and d["Bids"][0] == {"Price": 100.0, "Amount": 1.0}
    assert [a["Price"] for a in d["Asks"]] == [101.0, 102.0, 103.0] and isinstance(d["Time"], int)
    trades = ex.GetTrades()
    assert [t["Id"] for t in trades] == [0, 1, 2, 3, 4]
    assert [t["Type"] for t in trades] == [1, 0, 1, 0, 1]  # even ids were taker sells in the helper
    assert set(trades[0]) == {"Id", "Time", "Price", "Amount", "Type"}
    t = ex.GetTicker()
    assert (t["Buy"], t["Sell"], t["Last"]) == (100.0, 101.0, 104.0)


def test_first_use_subscribes_through_the_supervisor_and_serves_rest_meanwhile(namespace, feed, sim):
    asked = []

    def supervisor(msg: dict) -> dict:  # stands in for mdengine's supervisor: the feed adds the symbol
        asked.append(msg)
        if msg.get("symbol") == "DOGE/USDT":
            return {"ok": False, "error": "binance: unknown symbol 'DOGE/USDT'"}
        slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
        feed.book(slot, 7.0, 8.0, uid=1)
        return {"ok": True, "exchange": "binance", "symbol": "BTC/USDT", "market": "spot", "native": "BTCUSDT"}

    with ControlServer(namespace, supervisor):
        ex = Exchange("binance", "BTC_USDT", namespace=namespace, endpoints=sim.endpoints())
        first = ex.GetDepth()
        assert first["Source"] in ("rest", "shm")
        if first["Source"] == "rest":
            assert first["Bids"][0]["Price"] > 1000
        _until(lambda: ex.GetDepth()["Source"] == "shm", what="the subscribed stream")
        assert ex.GetDepth()["Bids"][0]["Price"] == 7.0
        assert [m["op"] for m in asked] == ["subscribe"] and asked[0]["symbol"] == "BTC/USDT"
        with pytest.raises(RestError, match="Invalid symbol"):  # REST for an unknown symbol: the exchange says so
            ex.GetDepth("DOGE_USDT")

        def refused() -> bool:
            try:
                ex.GetDepth("DOGE_USDT")
            except RestError:
                return False
            except SubscribeError as e:  # the supervisor's answer, raised by the next call
                return "unknown symbol 'DOGE/USDT'" in str(e)
            return False

        _until(refused, what="the refusal")


def test_without_a_supervisor_serves_rest_only(namespace, feed, sim):
    feed.add("spot", "ETHUSDT", "ETH/USDT")
    client = Client(namespace, max_age=3.0, rest_fallback=True, endpoints=sim.endpoints())
    ex = Exchange("binance", "BTC_USDT", client=client)
    d = ex.GetDepth()
    assert d["Source"] == "rest" and d["Bids"][0]["Price"] > d["Bids"][1]["Price"]
    assert d["Asks"][0]["Price"] > d["Bids"][0]["Price"]
    trades = _until(lambda: ex.GetTrades(limit=10), what="REST trades from the simulator")
    assert 0 < len(trades) <= 10 and {t["Type"] for t in trades} <= {0, 1}
    _until(lambda: ex._no_supervisor, what="the failed subscribe")
    assert ex.GetDepth()["Source"] == "rest"
    client.close()


def test_exported_members_are_sorted_and_exist():
    import mdengine.client
    import mdengine.client.fmz
    import mdengine.rest

    for mod in (mdengine.client, mdengine.client.fmz, mdengine.rest):
        assert mod.__all__ == sorted(mod.__all__), mod.__name__
        assert all(hasattr(mod, name) for name in mod.__all__), mod.__name__


def test_the_old_compat_module_warns_once_and_serves_the_same_facade():
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('always'); "
            "import mdengine.client.fmz as new\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import mdengine.compat as old\n"
            "    import mdengine.compat\n"
            "    from mdengine.compat import Exchange\n"
            "print([str(x.category.__name__) for x in w], old.Exchange is new.Exchange is Exchange)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["['DeprecationWarning']", "True"]
