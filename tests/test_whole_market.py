"""Whole markets in the config: wildcards subscribe every instrument the lists name (a real feed process on the
simulator serving extra instruments)."""

from __future__ import annotations

from test_feed_sim import FeedProc, wait

from mdengine.client import Client
from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges.binance import BinanceAdapter
from mdengine.sim import Simulator


def _cfg(sim: Simulator, symbols: list[str], max_symbols: int) -> ExchangeConfig:
    return ExchangeConfig("binance", symbols=symbols, endpoints=BinanceAdapter.sim_endpoints(sim.endpoints()),
                          book_depth=5, book_capacity=5, trade_capacity=16, max_symbols=max_symbols)


def test_a_market_wildcard_subscribes_every_instrument_of_that_market(namespace):
    with Simulator(exchanges=["binance-spot", "binance-usdm"], rate_hz=1, extra_instruments=30) as sim:
        feed = FeedProc(namespace, _cfg(sim, ["usdm:*"], 64))
        try:
            with Client(namespace) as c:
                wait(lambda: len(c.tops("binance")) == 33 and c.tops("binance")["live"].all(), 90,
                     "33 usdm books live")
                t = c.tops("binance")
                assert set(t["market"]) == {"usdm"}
                assert {f"Z{k:04d}/USDT:USDT" for k in range(30)} | {"BTC/USDT:USDT", "ETH/USDT:USDT",
                                                                    "SOL/USDT:USDT"} == set(t["symbol"])
        finally:
            feed.close()


def test_a_wildcard_larger_than_the_segment_takes_what_fits_and_says_so(namespace):
    with Simulator(exchanges=["binance-spot", "binance-usdm"], rate_hz=1, extra_instruments=10) as sim:
        feed = FeedProc(namespace, _cfg(sim, ["*"], 16))  # 2 x 13 instruments
        try:
            wait(lambda: len(feed.reader.symbols()) == 16, 60, "16 symbols subscribed")
            wait(lambda: "max_symbols 16" in feed.last_error(), 30, "the capacity error")
            assert "10 are not subscribed" in feed.last_error()
        finally:
            feed.close()


def test_the_supervisor_checks_dev_shm_for_every_segment_before_anything_starts(namespace):
    import errno
    import os

    import pytest

    from mdengine.engine.config import EngineConfig
    from mdengine.engine.supervisor import Supervisor
    from mdengine.store import layout as L
    from mdengine.store import list_names, shm

    free = os.statvfs(shm.SHM_DIR).f_bavail * os.statvfs(shm.SHM_DIR).f_frsize
    # two segments that each fit /dev/shm but not together (or neither does, on a small one)
    trade = 1 << 16
    n = min(L.MAX_SYMBOLS, max(1, int(free * 0.6 // L.SlotGeometry(50, trade).size)))
    one = L.segment_size(n, 50, trade)
    if 2 * one <= free:
        pytest.skip(f"/dev/shm ({free} B free) holds two {one} B segments")
    exchanges = [ExchangeConfig(name, symbols=["BTC/USDT"], max_symbols=n, trade_capacity=trade)
                 for name in ("binance", "okx")]
    sup = Supervisor(EngineConfig(namespace=namespace, exchanges=exchanges))
    with pytest.raises(OSError, match="enlarge /dev/shm") as err:
        sup.start()
    assert err.value.errno == errno.ENOSPC
    assert f"mde-{namespace}-binance" in str(err.value) and f"mde-{namespace}-okx" in str(err.value)
    assert list_names(namespace) == []


def test_a_wildcard_follows_instruments_listed_and_delisted_at_run_time(namespace):
    from dataclasses import replace

    from mdengine.sim.listings import whole_market

    with Simulator(exchanges=["binance-spot", "binance-usdm"], rate_hz=1, extra_instruments=5) as sim:
        cfg = _cfg(sim, ["usdm:*", "Z0002/USDT:USDT"], 32)
        cfg.instrument_refresh_s = 0.5
        feed = FeedProc(namespace, cfg)
        try:
            with Client(namespace) as c:
                wait(lambda: len(c.tops("binance")) == 8 and c.tops("binance")["live"].all(), 60, "8 books live")
                template = whole_market("binance-usdm", 1)[0]
                sim.list_instrument("binance-usdm", replace(template, native="Z0999USDT", unified="Z0999/USDT:USDT"))
                sim.delist("binance-usdm", "Z0001USDT")
                sim.delist("binance-usdm", "Z0002USDT")  # also configured by name: it stays

                def followed() -> bool:
                    t = c.tops("binance")
                    names = set(t["symbol"])
                    return ("Z0999/USDT:USDT" in names and "Z0001/USDT:USDT" not in names
                            and t["live"][t["symbol"] == "Z0999/USDT:USDT"].all())

                wait(followed, 60, "the new instrument live and the delisted one gone")
                assert "Z0002/USDT:USDT" in set(c.tops("binance")["symbol"])
                assert len(c.tops("binance")) == 8
        finally:
            feed.close()


def test_connection_attempts_share_the_exchanges_per_ip_budget(namespace):
    """OKX allows 3 WebSocket connection requests per second per IP: a whole-market OKX feed (15 symbols per
    connection) opens its connections inside the box's shared connect budget."""
    from mdengine import restbudget
    from mdengine.exchanges.okx import OkxAdapter

    with Simulator(exchanges=["okx"], rate_hz=1, extra_instruments=20) as sim:
        cfg = ExchangeConfig("okx", symbols=["*"], endpoints=OkxAdapter.sim_endpoints(sim.endpoints()),
                             book_depth=5, book_capacity=5, trade_capacity=16, max_symbols=128)
        feed = FeedProc(namespace, cfg)
        try:
            with Client(namespace) as c:
                wait(lambda: len(c.tops("okx")) > 60 and c.tops("okx")["live"].all(), 90, "every OKX book live")
        finally:
            feed.close()
        opened = sim.stats("okx")["connections"]
        u = restbudget.RestBudget("okx-connect").usage()
        assert opened >= 5, opened
        assert u["requests"] >= opened, (u, opened)
        assert u["peak_window_used"] <= restbudget.SAFETY * 3, u  # never more than 2.7 attempts in one second


def test_the_simulator_sizes_whole_markets_as_the_real_venues_list_them():
    from mdengine.sim.listings import WHOLE_MARKET

    sim = Simulator(whole_market=True, rate_hz=1)  # not started: the listings are made at construction
    listed = {m: len(s.venue.instruments) for m, s in sim.servers.items()}
    assert listed["binance-spot"] > 1500 and 400 <= listed["binance-usdm"] < 500
    assert all(listed[m] > 1000 for m in ("okx", "bybit", "bitget"))
    for market, sizes in WHOLE_MARKET.items():
        kinds = [i.kind for i in sim.servers[market].venue.instruments.values()]
        assert all(kinds.count(kind) > n for kind, n in sizes.items()), market  # n synthetic + the defaults
    natives = [i.native for i in sim.servers["okx"].venue.instruments.values()]
    assert len(natives) == len(set(natives))


def test_a_starved_recorded_rate_simulator_does_not_catch_up_on_missed_steps():
    """A pass that comes late (the CPU was busy) ticks at most max_lag_s of steps: catching up on seconds of missed
    steps in one pass sent nothing for that long, and at whole-market size every feed dropped its connections."""
    import time

    from mdengine.sim.listings import recorded_rate

    with Simulator(exchanges=["binance-spot"], recorded_rates=True, extra_instruments=200) as sim:
        rate = sum(recorded_rate("binance-spot", i) for i in range(len(sim.servers["binance-spot"].venue.models)))
        time.sleep(0.5)
        t0, s0 = time.monotonic(), sim.stats("binance-spot")["steps"]
        sim._call(time.sleep, 3.0)  # the simulator's loop is blocked for 3 s
        time.sleep(0.5)
        steps, elapsed = sim.stats("binance-spot")["steps"] - s0, time.monotonic() - t0
    # caught up: about rate x elapsed steps; capped: about rate x (elapsed - 3 s + 0.1 s)
    assert steps < rate * (elapsed - 1.5), f"{steps=} {rate=:.0f}/s {elapsed=:.1f}s"
    assert steps > 0
