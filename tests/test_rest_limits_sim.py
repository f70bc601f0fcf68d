"""REST limits end to end: the simulator answers an exchange's limit as the exchange does (429, then a 418 ban),
and processes sharing the box's REST budget (mdengine.restbudget) stay inside it."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from mdengine import rest, restbudget
from mdengine.engine.status import StatusSampler, render_text
from mdengine.sim import Simulator
from mdengine.sim.testing import http_get


def test_the_simulator_answers_429_with_retry_after_then_bans_with_418():
    # binance-usdm at 1 %: 24 weight per window; a depth of limit 1000 weighs 20
    with Simulator(exchanges=["binance-usdm"], rate_hz=1, rest_limit_scale=0.01, rest_ban_after=2,
                   rest_ban_s=30) as sim:
        url = sim.rest_url("binance-usdm") + "/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
        assert http_get(url)[0] == 200
        status, headers, body = http_get(url)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60, (status, headers)
        assert body["code"] == -1003
        status, headers, _ = http_get(url)
        assert status == 418 and int(headers["Retry-After"]) == 30
        assert http_get(sim.rest_url("binance-usdm") + "/fapi/v1/exchangeInfo")[0] == 418  # the whole IP
        stats = sim.stats("binance-usdm")
        assert stats["rest_429"] == 1 and stats["rest_418"] == 2


def _fetch_many(base: str, n: int, scope: str, out) -> None:
    os.environ[restbudget.SCOPE_ENV] = scope
    sym = rest.resolve("bitget", "BTC/USDT")
    ok = refused = 0
    for _ in range(n):
        try:
            rest.fetch_depth(base, sym, 5, timeout=30)
            ok += 1
        except rest.RestError as e:
            refused += 1
            print("refused:", e, flush=True)
    out.put((ok, refused))


def test_processes_sharing_the_budget_stay_inside_the_limit(_private_rest_budgets):
    """Three processes fetch 8 bitget spot snapshots each through the client's REST path, against a simulator
    that allows 10 per second and bans after 429s. Sharing the budget they get every one, with no 429 at all;
    the negative control (the same 24 GETs without the budget) is refused."""
    scope = _private_rest_budgets
    with Simulator(exchanges=["bitget"], rate_hz=1, rest_limit_scale=0.5, rest_ban_after=3, rest_ban_s=5) as sim:
        base = sim.rest_url("bitget")
        budget = restbudget.RestBudget("bitget-spot-books", limit=10.0, window_s=1.0)  # what the simulator enforces
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_fetch_many, args=(base, 8, scope, out)) for _ in range(3)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
        stats = sim.stats("bitget")
        assert results == [(8, 0)] * 3, (results, stats)
        assert stats.get("rest_429", 0) == 0 and stats.get("rest_418", 0) == 0, stats
        assert budget.usage()["requests"] == 24 and budget.usage()["waits"] > 0
        assert sim.servers["bitget"].rest_limiter.peak_ratio() <= 1.0
        # negative control: the same GETs, unpaced
        url = base + "/api/v2/spot/market/orderbook?symbol=BTCUSDT&limit=5"
        codes = [http_get(url)[0] for _ in range(24)]
        assert 429 in codes or 418 in codes, codes


def test_a_429_seen_by_one_process_holds_back_the_others(_private_rest_budgets, namespace):
    with Simulator(exchanges=["bitget"], rate_hz=1) as sim:
        sim.inject("bitget", "http_429", retry_after=3)
        sym = rest.resolve("bitget", "BTC/USDT")
        try:
            rest.fetch_depth(sim.rest_url("bitget"), sym, 5, timeout=5)
            raise AssertionError("the injected 429 did not come")
        except rest.RestError as e:
            assert e.status == 429
        budget = restbudget.RestBudget("bitget-spot-books")
        assert 2.0 < budget.reserve(1.0) <= 3.0  # every process on the box now waits out the Retry-After
        assert budget.usage()["penalties"] == 1
        # and `mdengine status` shows it
        status = StatusSampler(namespace).sample()
        [shown] = [b for b in status["rest_budgets"] if b["key"] == "bitget-spot-books"]
        assert shown["penalties"] == 1 and shown["last_penalty_status"] == 429 and shown["blocked_s"] > 1
        assert "REST budget bitget-spot-books:" in render_text(status) and "1 x 429/418" in render_text(status)


def test_a_feed_start_up_storm_is_paced_inside_the_limit(_private_rest_budgets, namespace):
    """A real feed process starts 60 USDⓈ-M books (60 depth snapshots, plus the instrument list) against a simulator
    that enforces a tenth of Binance's limit over 2-second windows (240 weight), bans after 3 429s, and shares that
    limit with the box's budget. The storm may take 180 a window (`storm_weight`, 75 % of it): 60 snapshots of
    1,000 levels (weight 20) would not fit, so each asks for 50 (weight 2, still more than the 20 levels the book
    publishes). Every book goes live without a single 429."""
    from test_feed_sim import FeedProc, wait

    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges.binance import BinanceAdapter
    from mdengine.store import SegmentReader

    symbols = [f"Z{k:04d}/USDT:USDT" for k in range(60)]
    with Simulator(exchanges=["binance-spot", "binance-usdm"], rate_hz=1, extra_instruments=60,
                   rest_limit_scale=0.1, rest_window_s=2.0, rest_ban_after=3, rest_ban_s=60) as sim:
        restbudget.RestBudget("binance-usdm", limit=2400 * 0.1, window_s=2.0)  # what the simulator enforces
        cfg = ExchangeConfig("binance", symbols=symbols, endpoints=BinanceAdapter.sim_endpoints(sim.endpoints()),
                             book_depth=20, book_capacity=20, max_symbols=128, options={"storm_weight": 180.0})
        feed = FeedProc(namespace, cfg)
        try:
            reader = SegmentReader(namespace, "binance")
            try:
                def live() -> int:
                    return sum(reader.book(e.unified, e.market).header().state_name == "live"
                               for e in reader.symbols())

                wait(lambda: live() == 60, 120, "60 books live")
            finally:
                reader.close()
        finally:
            feed.close()
        stats = sim.stats("binance-usdm")
        assert stats.get("rest_429", 0) == 0 and stats.get("rest_418", 0) == 0, stats
        assert stats["rest_requests"] >= 61, stats
        assert sim.servers["binance-usdm"].rest_limiter.peak_ratio() <= 1.0
        u = restbudget.RestBudget("binance-usdm").usage()
        assert u["requests"] >= 61 and u["peak_ratio"] <= restbudget.SAFETY
        # 60 snapshots of weight 2, the instrument list and an open-interest poll (1 each): 122 on a quiet run, far
        # below 60 x 20; the whole storm fit one window's storm_weight
        assert u["granted_weight"] <= 60 * 2 + 1 + 10 * 20 and u["peak_window_used"] <= 180.0, u
        assert u["server_seen_s"] > 0 and u["server_used"] > 0, u  # the feed hands the answers' count to the budget


def test_a_broken_budget_file_never_stops_the_books(_private_rest_budgets, namespace):
    """Something else took the budget's name in /dev/shm (here a directory): the feed logs it, fetches unpaced
    and its books go live; the client's REST fallback works unpaced too."""
    from test_feed_sim import FeedProc

    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges.binance import BinanceAdapter
    from mdengine.store.shm import SHM_DIR

    squatter = os.path.join(SHM_DIR, f"{restbudget.NAME_PREFIX}{_private_rest_budgets}-binance-usdm")
    os.mkdir(squatter)
    try:
        with Simulator(exchanges=["binance-spot", "binance-usdm"], rate_hz=5) as sim:
            cfg = ExchangeConfig("binance", symbols=["BTC/USDT:USDT"], book_depth=5, book_capacity=5,
                                 endpoints=BinanceAdapter.sim_endpoints(sim.endpoints()))
            feed = FeedProc(namespace, cfg)
            try:
                feed.wait_live("BTC/USDT:USDT", timeout=60)
            finally:
                feed.close()
            book = rest.fetch_depth(sim.rest_url("binance-usdm"), rest.resolve("binance", "BTC/USDT:USDT"), 5)
            assert len(book.bids) == 5
    finally:
        os.rmdir(squatter)


def test_the_simulator_ticks_each_instrument_at_its_recorded_rate():
    from mdengine.sim.listings import recorded_rate
    from mdengine.sim.testing import WsClient

    with Simulator(exchanges=["binance-spot"], recorded_rates=True, extra_instruments=3) as sim:
        venue = sim.servers["binance-spot"].venue
        keys = list(venue.models)
        rates = [recorded_rate("binance-spot", i) for i in range(len(keys))]
        assert rates[:4] == [5.0, 0.5, 0.33, 0.067]
        with WsClient(sim.url("binance-spot") + "/stream?streams=" + "/".join(
                f"{k.lower()}@depth@100ms" for k in keys)) as ws:
            frames, end = [], time.monotonic() + 4.0
            while time.monotonic() < end:
                try:
                    frames.append(ws.recv(max(0.01, end - time.monotonic())))
                except TimeoutError:
                    break
        counts = {k: sum(1 for f in frames if isinstance(f, dict) and f.get("stream", "").startswith(k.lower() + "@"))
                  for k in keys}
        fastest, slowest = keys[0], keys[3]
        assert counts[fastest] >= 10 and counts[slowest] <= 2, counts  # ~5/s against ~0.07/s


def _outsider(url: str, interval: float, stop, out) -> None:
    """Another program on the same IP: plain urllib, no budget, one GET every `interval` s."""
    import urllib.error
    import urllib.request

    codes: list[int] = []
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - the local simulator
                codes.append(r.status)
        except urllib.error.HTTPError as e:
            codes.append(e.code)
        stop.wait(interval)
    out.put(codes)


def test_weight_spent_around_mdengine_slows_the_budget_instead_of_drawing_429s(_private_rest_budgets, namespace):
    """Another program on the IP fetches Binance USDⓈ-M depth (weight 5, 10 a second: 100 of a 240-weight window)
    without the budget; the simulator counts it and reports the IP's use in X-MBX-USED-WEIGHT-1M. Meanwhile the
    client's REST path fetches 40 depth snapshots of weight 10 through the budget (240 per 2 s, of which it grants
    up to 216 alone: with the outsider's 100 that passes the limit). It adopts the server's count, slows down, and
    nobody gets a 429 or a 418."""
    import threading

    with Simulator(exchanges=["binance-spot", "binance-usdm"], rate_hz=1, rest_limit_scale=0.1, rest_window_s=2.0,
                   rest_ban_after=3, rest_ban_s=60) as sim:
        base = sim.rest_url("binance-usdm")
        budget = restbudget.RestBudget("binance-usdm", limit=2400 * 0.1, window_s=2.0)  # what the simulator enforces
        import queue

        stop, out = threading.Event(), queue.Queue()
        other = threading.Thread(target=_outsider, args=(base + "/fapi/v1/depth?symbol=BTCUSDT&limit=100", 0.1,
                                                         stop, out), daemon=True)
        other.start()
        try:
            sym = rest.resolve("binance", "BTC/USDT:USDT")
            for _ in range(40):
                rest.fetch(base + "/fapi/v1/depth?symbol=BTCUSDT&limit=500", timeout=30, exchange=sym.exchange)
        finally:
            stop.set()
            other.join(30)
        codes = out.get(timeout=5)
        stats = sim.stats("binance-usdm")
        assert stats.get("rest_429", 0) == 0 and stats.get("rest_418", 0) == 0, (stats, codes)
        assert len(codes) >= 10 and set(codes) == {200}, codes
        u = budget.usage()
        assert u["requests"] == 40 and u["adoptions"] > 0, u  # the outsider's weight was counted
        assert u["waits"] > 0
        assert sim.servers["binance-usdm"].rest_limiter.peak_ratio() <= 1.0


def test_a_bybit_403_holds_back_every_rest_get_on_the_box(_private_rest_budgets):
    """Bybit's answer to an IP over its limit is "403, access too frequent" and a 10-minute block: the next GET
    through the budget does not go out (the client's fallback gets a 429-like RestError at once)."""
    with Simulator(exchanges=["bybit"], rate_hz=1) as sim:
        sim.inject("bybit", "http_error", status=403, body="access too frequent")
        sym = rest.resolve("bybit", "BTC/USDT")
        try:
            rest.fetch_depth(sim.rest_url("bybit"), sym, 5, timeout=5)
            raise AssertionError("the injected 403 did not come")
        except rest.RestError as e:
            assert e.status == 403
        sent = sim.stats("bybit")["rest_requests"]
        t0 = time.monotonic()
        try:
            rest.fetch_depth(sim.rest_url("bybit"), sym, 5, timeout=2)
            raise AssertionError("a GET went out during the block")
        except rest.RestError as e:
            assert e.status == 429 and "bybit" in str(e)
        assert time.monotonic() - t0 < 1.0 and sim.stats("bybit")["rest_requests"] == sent
        assert restbudget.RestBudget("bybit").usage()["blocked_s"] > 590
