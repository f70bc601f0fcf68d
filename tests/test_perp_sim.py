"""Perpetual data end to end: the simulator's perp channels -> a real feed process -> shared memory -> Client."""

from __future__ import annotations

import math
import time
import uuid

import pytest
from test_feed_sim import FeedProc, config, wait

from mdengine.client import Client, NoPerpData
from mdengine.sim import Simulator
from mdengine.sim.formats.perp import FUNDING_PERIOD_MS, PerpModel
from mdengine.store import shm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def perp_feed():
    mp = pytest.MonkeyPatch()
    mp.setattr(PerpModel, "BURST_CHANCE", 1.0)  # liquidations every simulated second
    ns = "f" + uuid.uuid4().hex[:8]
    with Simulator(seed=7, rate_hz=20, exchanges=["binance-spot", "binance-usdm"]) as sim:
        f = FeedProc(ns, config(sim, ["BTC/USDT", "BTC/USDT:USDT"]))
        try:
            f.wait_live("BTC/USDT", "BTC/USDT:USDT")
            yield ns, f
        finally:
            f.close()
            for name in shm.list_names(ns):
                shm.unlink(name)
            mp.undo()


def test_a_feed_against_the_simulator_serves_live_perp_stats(perp_feed):
    ns, _ = perp_feed
    with Client(ns) as c:
        p = wait(lambda: (x := c.perp("binance", "BTC/USDT:USDT")) and not x.stale and x, 20, "live perp stats")
        top = c.top("binance", "BTC/USDT:USDT")
        mid = (top.bid + top.ask) / 2
        assert abs(p.mark_price / mid - 1) < 0.002, (p, top)  # the mark follows the book
        assert abs(p.index_price / p.mark_price - 1) < 0.001, p
        assert abs(p.funding_rate) < 0.01 and p.funding_rate != 0
        now_ns = time.time_ns()
        assert now_ns < p.next_funding_ns <= now_ns + FUNDING_PERIOD_MS * 1_000_000
        assert p.next_funding_ns % (FUNDING_PERIOD_MS * 1_000_000) == 0  # 00:00, 08:00, 16:00 UTC
        assert math.isnan(p.next_funding_rate) and math.isnan(p.open_interest)  # Binance streams neither
        assert p.age_s < 5 and p.exch_ts_ns > 0
        first = p.exch_ts_ns
        wait(lambda: c.perp("binance", "BTC/USDT:USDT").exch_ts_ns > first, 10, "the next markPrice@1s")
        with pytest.raises(NoPerpData):
            c.perp("binance", "BTC/USDT")


def test_liquidation_bursts_reach_the_client_and_wake_wait(perp_feed):
    ns, _ = perp_feed
    with Client(ns) as c:
        stream = c.liquidation_stream("binance", "BTC/USDT:USDT")
        assert c.wait(20, [stream]) == [stream]
        got = stream.poll()
        assert len(got.records) >= 1 and got.lost == 0
        r = got.records[0]
        assert r["price"] > 0 and r["qty"] > 0 and r["side"] in (1, -1) and r["exch_ts_ns"] > 0
        top = c.top("binance", "BTC/USDT:USDT")
        assert abs(r["price"] / ((top.bid + top.ask) / 2) - 1) < 0.01
