"""Client REST fallback against the simulator's REST server: stopped feed, unsubscribed symbols, failures."""

from __future__ import annotations

import time

import pytest
from test_client import Feed, Host, _until

from mdengine.client import BookBuffer, Client, StaleBookError


@pytest.fixture(scope="module")
def writer_host():
    h = Host()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def sim():
    from mdengine.sim import Simulator

    with Simulator(seed=5, rate_hz=20.0, exchanges=["binance-spot", "okx"]) as s:
        yield s


@pytest.fixture
def stopped_feed(writer_host, namespace):
    """A binance segment whose feed published BTC/USDT at 1/2 and then stopped."""
    f = Feed(writer_host, namespace)
    slot = f.add("spot", "BTCUSDT", "BTC/USDT")
    f.book(slot, 1.0, 2.0, uid=1)
    f.stop()
    return slot


def _near_model(sim, market: str, native: str, px: float) -> bool:
    _, bids, _ = sim.model_book(market, native, 1)
    return abs(px - float(bids[0][0])) / float(bids[0][0]) < 0.01


def test_stopped_feed_falls_back_to_rest_marked_as_such(namespace, stopped_feed, sim):
    with Client(namespace, max_age=3.0, rest_fallback=True, endpoints=sim.endpoints()) as c:
        book = c.book("binance", "BTC/USDT")
        top = book.top()
        assert (top.source, top.state, top.stale) == ("rest", "rest", False)
        assert top.bid != 1.0 and _near_model(sim, "binance-spot", "BTCUSDT", top.bid) and top.bid < top.ask
        d = book.snapshot(10)
        assert d.source == "rest" and len(d.bids) == 10 and d.bids[0, 0] > d.bids[9, 0]
        buf = book.read_into(BookBuffer(5))
        assert (buf.source, buf.n_bids, buf.n_asks) == ("rest", 5, 5) and buf.bids[0, 0] > 1000
        stats = c.statistics()
        assert stats.stale_reads == 3 and stats.rest_reads >= 1
    no_fallback = Client(namespace, max_age=3.0, endpoints=sim.endpoints())
    with no_fallback as c, pytest.raises(StaleBookError, match="feed stopped"):  # the stale read raises
        c.top("binance", "BTC/USDT")
    with Client(namespace, endpoints=sim.endpoints()) as c:  # neither: the last book, flagged stale
        top = c.top("binance", "BTC/USDT")
        assert (top.bid, top.source, top.stale) == (1.0, "shm", True)


def test_unsubscribed_symbol_is_served_from_rest_then_from_shm(writer_host, namespace, sim):
    feed = Feed(writer_host, namespace)
    try:
        with Client(namespace, rest_fallback=True, endpoints=sim.endpoints()) as c:
            book = c.book("binance", "ETH/USDT")
            assert not book.bound
            top = book.top()
            assert top.source == "rest" and _near_model(sim, "binance-spot", "ETHUSDT", top.bid)
            okx = c.top("okx", "BTC/USDT:USDT")  # no okx segment at all: REST still works
            assert okx.source == "rest" and _near_model(sim, "okx", "BTC-USDT-SWAP", okx.bid)
            slot = feed.add("spot", "ETHUSDT", "ETH/USDT")  # "subscribed" now
            feed.book(slot, 5.0, 6.0, uid=3)
            _until(lambda: book.top().source == "shm", what="switch to shared memory")
            assert book.top().bid == 5.0 and book.bound
    finally:
        feed.stop()


def test_rest_trades_for_an_unsubscribed_symbol(namespace, stopped_feed, sim):
    with Client(namespace, rest_fallback=True, endpoints=sim.endpoints()) as c:
        recent = _until(lambda: len((r := c.recent_trades("binance", "ETH/USDT", 20)).records) and r,
                        what="REST trades from the simulator")
        assert recent.source == "rest" and 0 < len(recent.records) <= 20
        assert c.trades("binance", "ETH/USDT").records.size == 0  # a late joiner starts at the latest trade
        got = _until(lambda: len((t := c.trades("binance", "ETH/USDT")).records) and t, what="new REST trades")
        assert got.source == "rest"
        assert got.records["trade_id"].min() > recent.records["trade_id"].max() - 1000
        again = c.trades("binance", "ETH/USDT")
        assert not set(again.records["trade_id"].tolist()) & set(got.records["trade_id"].tolist())


def test_failed_rest_fallback_raises_stale_with_the_cause(namespace, stopped_feed, sim):
    sim.inject("binance-spot", "http_429", count=1)
    with Client(namespace, max_age=3.0, rest_fallback=True, endpoints=sim.endpoints()) as c:
        with pytest.raises(StaleBookError, match="REST fallback failed.*429"):
            c.top("binance", "BTC/USDT")
        assert c.statistics().rest_failures == 1
        time.sleep(0.01)
        assert c.top("binance", "BTC/USDT").source == "rest"
