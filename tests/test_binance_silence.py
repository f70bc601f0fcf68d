"""A silent Binance connection against real feed processes and the simulator: never served as live.

Binance answers pings at the WebSocket level, so a silent connection must stay silent there too (the simulator's
`silent` fault stops the websockets library's own pongs), and USDⓈ-M carries each symbol on two connections
(books on /public, trades and perp data on /market): each connection's silence makes stale exactly the data it
carries. stale_after_s is 2 s; every wait below allows 10 times that.
"""

from __future__ import annotations

import time
import uuid

import pytest
from test_feed_sim import FeedProc, config, wait

from mdengine.client import Client
from mdengine.sim import Simulator
from mdengine.store import shm

pytestmark = pytest.mark.slow
SPOT, USDM = "binance-spot", "binance-usdm"
PERP = "BTC/USDT:USDT"
STALE_AFTER_S = 2.0
WITHIN_S = 10 * STALE_AFTER_S
SILENCE_S = 60.0  # longer than any wait: the fault outlives the connections it silenced


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=11, rate_hz=20, exchanges=[SPOT, USDM]) as s:
        yield s


@pytest.fixture(scope="module")
def feed(sim):
    ns = "f" + uuid.uuid4().hex[:8]
    f = FeedProc(ns, config(sim, ["BTC/USDT", PERP], stale_after_s=STALE_AFTER_S))
    try:
        f.wait_live("BTC/USDT", PERP, timeout=60)
        yield ns, f
    finally:
        f.close()
        for name in shm.list_names(ns):
            shm.unlink(name)


@pytest.fixture(autouse=True)
def _clean(sim):
    yield
    sim.clear_faults()


def _watch(read, until, timeout: float):
    """Poll read() every 10 ms until until(results) holds; returns (seconds taken, every result seen)."""
    start, seen = time.monotonic(), []
    while True:
        seen.append(read())
        if until(seen):
            return time.monotonic() - start, seen
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s; last {seen[-1]}"
        time.sleep(0.01)


def _silenced(x) -> bool:
    return x.stale and x.reason.startswith("nothing received from the exchange")


def test_a_silent_binance_connection_is_stale_within_stale_after_then_replaced(sim, feed):
    """The feed probes a silent connection with a WebSocket ping; the silent simulator leaves it unanswered (before,
    the websockets library's pong confirmed the connection, and the book stayed live for ever)."""
    _, f = feed
    with Client(feed[0]) as c:
        wait(lambda: not c.top("binance", "BTC/USDT").stale, WITHIN_S, "a live spot book")
        ignored = sim.stats(SPOT).get("pings_ignored", 0)
        sim.inject(SPOT, "silent", seconds=SILENCE_S)
        took, seen = _watch(lambda: c.top("binance", "BTC/USDT"), lambda s: _silenced(s[-1]), WITHIN_S)
        print(f"stale after {took:.2f} s: {seen[-1].reason}")
        assert sim.stats(SPOT)["pings_ignored"] > ignored  # the feed did probe, and heard nothing
        # the feed replaces the connection (the fault silences only those open when it was injected)
        wait(lambda: not c.top("binance", "BTC/USDT").stale, 3 * WITHIN_S, "a live book on a new connection")


def test_each_usdm_connection_confirms_only_the_data_it_carries(sim, feed):
    """Silence on /market makes the perp record stale while the book (on /public) stays live; silence on /public
    makes the book stale while the perp record stays live. Before, both followed one confirmation per symbol, so
    the other connection's traffic kept the silent one's data "live" until the feed replaced the connection."""
    ns, f = feed
    with Client(ns) as c:
        wait(lambda: not c.top("binance", PERP).stale and not c.perp("binance", PERP).stale, WITHIN_S,
             "a live book and perp record")
        sim.inject(USDM, "silent", path="/market", seconds=SILENCE_S)
        _, seen = _watch(lambda: (c.top("binance", PERP), c.perp("binance", PERP)), lambda s: _silenced(s[-1][1]),
                         WITHIN_S)
        assert not any(top.stale for top, _ in seen), [top.reason for top, _ in seen if top.stale][:3]
        print(f"perp: {seen[-1][1].reason}")
        wait(lambda: not c.perp("binance", PERP).stale, 3 * WITHIN_S, "perp data live on a new /market connection")

        sim.inject(USDM, "silent", path="/public", seconds=SILENCE_S)
        _, seen = _watch(lambda: (c.top("binance", PERP), c.perp("binance", PERP)), lambda s: _silenced(s[-1][0]),
                         WITHIN_S)
        assert not any(perp.stale for _, perp in seen), [perp.reason for _, perp in seen if perp.stale][:3]
        print(f"book: {seen[-1][0].reason}")
        wait(lambda: not c.top("binance", PERP).stale, 3 * WITHIN_S, "a live book on a new /public connection")
