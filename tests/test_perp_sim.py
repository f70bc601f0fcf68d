"""Perpetual data end to end: the simulator's perp channels -> a real feed process -> shared memory -> Client."""

from __future__ import annotations

import math
import time
import uuid

import pytest
from test_feed_sim import FeedProc, config, wait

from mdengine.client import Client, NoPerpData
from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges.bitget import BitgetAdapter
from mdengine.exchanges.bybit import BybitAdapter
from mdengine.exchanges.okx import OkxAdapter
from mdengine.sim import Simulator
from mdengine.sim.formats.perp import FUNDING_PERIOD_MS, PerpModel
from mdengine.store import shm

pytestmark = pytest.mark.slow


PERP = "BTC/USDT:USDT"
EXCHANGES = ["binance", "bybit", "okx", "bitget"]  # Binance's open interest: polled by REST
HAS_LIQUIDATIONS = ["binance", "bybit", "okx"]  # Bitget's v2 public API has no liquidation channel


@pytest.fixture(scope="module")
def perp_feeds():
    mp = pytest.MonkeyPatch()
    mp.setattr(PerpModel, "BURST_CHANCE", 1.0)  # liquidations every simulated second
    ns = "f" + uuid.uuid4().hex[:8]
    feeds = []
    with Simulator(seed=7, rate_hz=20, exchanges=["binance-spot", "binance-usdm", "bybit", "okx", "bitget"]) as sim:
        try:
            feeds.append(FeedProc(ns, config(sim, ["BTC/USDT", PERP], options={"open_interest_interval_s": 1.0})))
            feeds.append(FeedProc(ns, ExchangeConfig(
                "bybit", symbols=[PERP], markets=["linear"], endpoints=BybitAdapter.sim_endpoints(sim.endpoints()),
                book_depth=20, book_capacity=20)))
            feeds.append(FeedProc(ns, ExchangeConfig(
                "okx", symbols=[PERP], markets=["SWAP"], endpoints=OkxAdapter.sim_endpoints(sim.endpoints()),
                book_depth=20, book_capacity=20)))
            feeds.append(FeedProc(ns, ExchangeConfig(
                "bitget", symbols=[PERP], markets=["USDT-FUTURES"],
                endpoints=BitgetAdapter.sim_endpoints(sim.endpoints()), book_depth=20, book_capacity=20)))
            for f in feeds:
                f.wait_live(PERP)
            yield ns, sim, dict(zip(["binance", "bybit", "okx", "bitget"], feeds, strict=True))
        finally:
            for f in feeds:
                f.close()
            for name in shm.list_names(ns):
                shm.unlink(name)
            mp.undo()


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_feed_against_the_simulator_serves_live_perp_stats(perp_feeds, exchange):
    ns, sim, feeds = perp_feeds
    with Client(ns) as c:
        p = wait(lambda: (x := c.perp(exchange, PERP)) and not x.stale and not math.isnan(x.open_interest) and x, 20,
                 "live perp stats with open interest")
        top = c.top(exchange, PERP)
        mid = (top.bid + top.ask) / 2
        assert abs(p.mark_price / mid - 1) < 0.002, (p, top)  # the mark follows the book
        assert abs(p.index_price / p.mark_price - 1) < 0.001, p
        assert abs(p.funding_rate) < 0.01 and p.funding_rate != 0
        now_ns = time.time_ns()
        assert now_ns < p.next_funding_ns <= now_ns + FUNDING_PERIOD_MS * 1_000_000
        assert p.next_funding_ns % (FUNDING_PERIOD_MS * 1_000_000) == 0  # 00:00, 08:00, 16:00 UTC
        assert math.isnan(p.next_funding_rate)  # neither exchange announces it on these streams
        assert p.open_interest > 0
        assert p.age_s < 5 and p.exch_ts_ns > 0
        first = p.exch_ts_ns
        wait(lambda: c.perp(exchange, PERP).exch_ts_ns > first, 10, "the next update")
        if exchange == "binance":
            with pytest.raises(NoPerpData):
                c.perp("binance", "BTC/USDT")


@pytest.mark.parametrize("exchange", HAS_LIQUIDATIONS)
def test_liquidation_bursts_reach_the_client_and_wake_wait(perp_feeds, exchange):
    ns, sim, feeds = perp_feeds
    with Client(ns) as c:
        stream = c.liquidation_stream(exchange, PERP)
        assert c.wait(20, [stream]) == [stream]
        got = stream.poll()
        assert len(got.records) >= 1 and got.lost == 0
        r = got.records[0]
        assert r["price"] > 0 and r["qty"] > 0 and r["side"] in (1, -1) and r["exch_ts_ns"] > 0
        top = c.top(exchange, PERP)
        assert abs(r["price"] / ((top.bid + top.ask) / 2) - 1) < 0.01


MARKET = {"binance": "binance-usdm", "bybit": "bybit", "okx": "okx", "bitget": "bitget"}  # the simulator's


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_silent_connection_makes_the_perp_record_stale_served_by_rest_then_live_again(perp_feeds, exchange):
    """The perp record follows the books' freshness rules: during silence on its connection it ages (nothing, not
    even Binance's polled open interest, refreshes it) and is stale within stale_after_s (3 s), with the reason;
    meanwhile a client with max_age and rest_fallback reads it from the simulator's REST; then it is live again."""
    ns, sim, feeds = perp_feeds
    with Client(ns) as c, Client(ns, max_age=3.0, rest_fallback=True, endpoints=sim.endpoints()) as rc:
        wait(lambda: not c.perp(exchange, PERP).stale, 20, "live perp stats")
        assert rc.perp(exchange, PERP).source == "shm"
        sim.inject(MARKET[exchange], "silent", seconds=10.0)  # the sockets stay open; no frame comes back on them
        try:
            wait(lambda: c.perp(exchange, PERP).age_s > 3.5, 15, "the perp record ageing")
            if exchange != "binance":  # Binance: the simulator's silence lets WebSocket pongs through, and the feed
                # takes them as the connection's confirmation (a known simulator issue, not this record's rule)
                p = wait(lambda: (x := c.perp(exchange, PERP)).stale and x, 15, "stale perp stats")
                assert "nothing received" in p.reason, p
            served = rc.perp(exchange, PERP)
            if c.perp(exchange, PERP).age_s > 3.0:  # (not replaced yet: the usual case)
                assert served.source == "rest" and not served.stale and served.mark_price > 0, served
            wait(lambda: (x := c.perp(exchange, PERP)).age_s < 2.0 and not x.stale, 40,
                 "perp stats live again (a new connection, or the silence over)")
        finally:
            sim.clear_faults(MARKET[exchange])


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_malformed_perp_frame_is_counted_and_dropped_and_the_book_is_untouched(perp_feeds, exchange):
    ns, sim, feeds = perp_feeds
    feed = feeds[exchange]
    with Client(ns) as c:
        wait(lambda: not c.perp(exchange, PERP).stale, 20, "live perp stats")
        malformed, resyncs = feed.counter("malformed"), feed.counter("resyncs")
        sim.inject(MARKET[exchange], "bad_perp", count=3)  # the next 3 perp frames carry "not-a-number" for a value
        wait(lambda: feed.counter("malformed") == malformed + 3, 20, "malformed + 3")  # each one counted
        assert "not-a-number" in feed.last_error(), feed.last_error()
        assert feed.counter("resyncs") == resyncs and feed.state(PERP) == "live"  # the book is untouched
        assert not c.top(exchange, PERP).stale
        after = time.time_ns()
        p = wait(lambda: (x := c.perp(exchange, PERP)).exch_ts_ns > after - 1_000_000_000 and not x.stale and x, 20,
                 "the next good perp frame")
        assert p.mark_price > 0 and not math.isnan(p.funding_rate)


# A channel (topic, stream) that names only the perp subscriptions: OKX's perp channels are the only ones with a "-"
PERP_CHANNEL = {"binance": "markPrice", "bybit": "tickers", "okx": "-", "bitget": "ticker"}


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_refused_perp_subscription_is_reported_and_the_book_stays(perp_feeds, exchange):
    """Last in this module: the refused perp subscription is not retried, so the record stays stale."""
    ns, sim, feeds = perp_feeds
    feed = feeds[exchange]
    before = feed.counter("subscribe_errors")
    sim.inject(MARKET[exchange], "refuse_subscription", channel=PERP_CHANNEL[exchange], count=5)
    sim.inject(MARKET[exchange], "drop")  # the feed reconnects and subscribes again: the perp part is refused
    wait(lambda: feed.counter("subscribe_errors") > before, 20, "a subscribe error")
    assert "refused" in feed.last_error() or "doesn't exist" in feed.last_error(), feed.last_error()
    feed.wait_live(PERP)  # the book was not dropped with it
    sim.clear_faults(MARKET[exchange])
    with Client(ns) as c:
        assert not c.top(exchange, PERP).stale
        time.sleep(2.0)  # perp frames would have come by now
        p = c.perp(exchange, PERP)
        assert p.stale and p.state != "live", p


def test_one_perp_channel_gone_quiet_is_stale_in_stale_fields_while_the_mark_stays_live(perp_feeds):
    """Layout 1.6. OKX: index-tickers alone goes quiet (the simulator mutes that channel; mark-price, funding-rate and
    open-interest go on), so the index is named stale while the record and its mark stay live. Binance: the polled
    open interest fails (HTTP 500) while markPrice streams on. Then both come back. Bounds: 10 s, ten times the
    simulator's cadence of those groups (index pushes on each 1 s model step; open interest polled every 1 s)."""
    _, sim, _ = perp_feeds
    ns = "q" + uuid.uuid4().hex[:8]
    feeds = []
    try:
        feeds.append(FeedProc(ns, ExchangeConfig(
            "okx", symbols=[PERP], markets=["SWAP"], endpoints=OkxAdapter.sim_endpoints(sim.endpoints()),
            book_depth=20, book_capacity=20, options={"perp_stale_after_s": {"index": 10.0}})))
        feeds.append(FeedProc(ns, config(sim, [PERP], options={"open_interest_interval_s": 1.0,
                                                               "perp_stale_after_s": {"open_interest": 10.0}})))
        for f in feeds:
            f.wait_live(PERP)
        with Client(ns) as c:
            for exchange in ("okx", "binance"):
                wait(lambda ex=exchange: (x := c.perp(ex, PERP)) and not x.stale and not x.stale_fields and
                     not math.isnan(x.open_interest) and not math.isnan(x.index_price), 20, f"{exchange} all live")
            sim.inject("okx", "mute_channel", channel="index-tickers")
            sim.inject("binance-usdm", "http_error", path="/fapi/v1/openInterest", count=1_000_000)
            try:
                p = wait(lambda: (x := c.perp("okx", PERP)).stale_fields and x, 40, "OKX's index named stale")
                assert p.stale_fields == ("index_price",) and not p.stale and p.state == "live", p
                assert p.index_age_s > 10.0 and p.age_s < 10.0 and p.open_interest_age_s < 10.0, p
                assert "index not received for" in p.reason, p.reason
                q = wait(lambda: (x := c.perp("binance", PERP)).stale_fields and x, 40, "Binance's open interest stale")
                assert q.stale_fields == ("open_interest",) and not q.stale and q.age_s < 10.0, q
                assert q.open_interest_age_s > 10.0 and q.index_age_s < 10.0 and q.open_interest > 0, q
            finally:
                sim.clear_faults("okx")
                sim.clear_faults("binance-usdm")
            for exchange in ("okx", "binance"):
                wait(lambda ex=exchange: (x := c.perp(ex, PERP)) and not x.stale and not x.stale_fields, 60,
                     f"{exchange} all live again")  # the feed's REST retries back off up to 30 s
    finally:
        for f in feeds:
            f.close()
        for name in shm.list_names(ns):
            shm.unlink(name)
