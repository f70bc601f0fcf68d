"""The Client against a real engine: a feed process (run_feed) on the simulator, Bybit BTC/USDT:USDT."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from test_client import _until

from mdengine.client import Client, StaleBookError
from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges import get_adapter

CTX = mp.get_context("spawn")
SYMBOL = "BTC/USDT:USDT"


@pytest.fixture
def engine(namespace):
    from mdengine.feed.process import run_feed
    from mdengine.sim import Simulator

    sim = Simulator(seed=11, rate_hz=20.0, exchanges=["bybit"], symbols=["BTC/USDT:USDT"]).start()
    cfg = ExchangeConfig(name="bybit", symbols=[SYMBOL], markets=["linear"], book_depth=20, book_capacity=20,
                         endpoints=get_adapter("bybit").sim_endpoints(sim.endpoints()), heartbeat_interval_s=0.1)
    proc = CTX.Process(target=run_feed, args=(namespace, cfg), kwargs={"log_level": "WARNING"}, daemon=True)
    proc.start()
    try:
        c = _until(lambda: _attach(namespace), 30, "the feed's segment")
        _until(lambda: c.book("bybit", SYMBOL).top().state == "live", 30, "a live book")
        yield sim, proc, c
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        sim.stop()


def _attach(namespace: str) -> Client | None:
    try:
        c = Client(namespace, endpoints=None)
        c.book("bybit", SYMBOL)
        return c
    except Exception:  # noqa: BLE001 - not there yet
        return None


def test_reads_match_the_simulator_model(engine):
    sim, _, c = engine
    book = c.book("bybit", "BTCUSDT", market="linear")
    assert c.book("bybit", SYMBOL) is not book and book.symbol == SYMBOL
    sim.pause()
    try:
        uid = _until(lambda: _settled(book), 10, "a settled book")
        seq, bids, asks = sim.model_book("bybit", "linear/BTCUSDT", 10)
        d = book.snapshot(10)
        assert d.update_id == uid and d.source == "shm" and d.state == "live" and not d.stale
        assert d.bids.tolist() == [[float(p), float(q)] for p, q in bids]
        assert d.asks.tolist() == [[float(p), float(q)] for p, q in asks]
        top = book.top()
        assert (top.bid, top.ask) == (float(bids[0][0]), float(asks[0][0])) and top.age_s < 10
    finally:
        sim.resume()


def _settled(book) -> int | None:
    a = book.header().update_id
    time.sleep(0.3)
    return a if book.header().update_id == a else None


def test_wait_and_trades_follow_the_stream(engine):
    _, _, c = engine
    book = c.book("bybit", SYMBOL)
    stream = c.trade_stream("bybit", SYMBOL)
    for spin in (False, True):
        c.wait(0.0, [book])  # absorb what changed since the handle was made
        before = book.header().update_id
        assert c.wait(10.0, [book], spin=spin) == [book]
        assert book.header().update_id != before
    got = _until(lambda: len(stream.poll().records) or None, 10, "trades")
    assert got > 0 and stream.statistics().lost == 0


def test_feed_stopped_is_stale_then_rest_fallback(engine, namespace):
    sim, proc, c = engine
    assert c.top("bybit", SYMBOL).source == "shm"
    proc.terminate()
    proc.join(10)
    _until(lambda: c.top("bybit", SYMBOL).stale, 10, "stale after the feed stopped")
    with Client(namespace, max_age=1.0) as strict, pytest.raises(StaleBookError):
        strict.top("bybit", SYMBOL)
    with Client(namespace, max_age=1.0, rest_fallback=True, endpoints=sim.endpoints()) as fb:
        top = fb.top("bybit", SYMBOL)
        assert top.source == "rest" and top.bid < top.ask
        assert fb.recent_trades("bybit", SYMBOL, 5).source == "rest"


def test_silent_stream_goes_to_rest_after_max_age(engine, namespace):
    sim, _, _ = engine
    with Client(namespace, max_age=0.5, rest_fallback=True, endpoints=sim.endpoints()) as c:
        assert c.top("bybit", SYMBOL).source == "shm"
        sim.inject("bybit", "silent")  # the WebSocket goes quiet; the feed itself keeps its heartbeat
        try:
            top = _until(lambda: (t := c.top("bybit", SYMBOL)).source == "rest" and t, 10, "REST after max_age")
            assert top.bid < top.ask and c.statistics().rest_reads >= 1
        finally:
            sim.clear_faults()
