"""The shared REST budget: one token bucket per exchange budget, shared by real processes through shared memory."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from mdengine import restbudget as rb


@pytest.fixture
def scope(_private_rest_budgets):
    return _private_rest_budgets


def test_each_exchange_weighs_its_endpoints_as_documented():
    assert rb.cost("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=100") == ("binance-spot", 5.0)
    assert rb.cost("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000") == ("binance-spot", 50.0)
    assert rb.cost("https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5000") == ("binance-spot", 250.0)
    assert rb.cost("http://127.0.0.1:9/api/v3/depth?symbol=BTCUSDT") == ("binance-spot", 5.0)  # default 100
    assert rb.cost("https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=1000") == ("binance-usdm", 20.0)
    assert rb.cost("https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT") == ("binance-usdm", 10.0)  # 500
    assert rb.cost("https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=50") == ("binance-usdm", 2.0)
    assert rb.cost("https://api.binance.com/api/v3/exchangeInfo") == ("binance-spot", 20.0)
    assert rb.cost("https://www.okx.com/api/v5/market/books?instId=BTC-USDT&sz=400") == ("okx-books", 1.0)
    assert rb.cost("https://api.bybit.com/v5/market/orderbook?category=spot") == ("bybit", 1.0)
    assert rb.cost("https://api.bitget.com/api/v2/mix/market/merge-depth?symbol=X") == ("bitget-mix-books", 1.0)
    assert rb.cost("https://api.bitget.com/api/v2/spot/market/fills?symbol=X") == ("bitget-spot-trades", 1.0)
    assert rb.budgets()["bitget-spot-trades"] == (10.0, 1.0)  # spot fills: 10/s, the other endpoints 20/s
    assert rb.cost("https://fapi.binance.com/fapi/v1/openInterest?symbol=BTCUSDT") == ("binance-usdm", 1.0)
    assert rb.cost("https://example.com/elsewhere") is None
    assert rb.budgets()["binance-spot"] == (6000.0, 60.0)


def _hammer(sc: str, seconds: float, out) -> None:
    import os
    os.environ[rb.SCOPE_ENV] = sc
    b = rb.RestBudget("okx-books")
    granted, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        if b.reserve(1.0) == 0.0:
            granted += 1.0
    out.put(granted)


def test_processes_share_one_bucket_and_never_exceed_the_safe_allowance(scope):
    """Three processes take okx-books tokens (40 per 2 s) as fast as they can: together they get what one bucket
    allows (its burst plus its refill), not three times it."""
    b = rb.RestBudget("okx-books")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    seconds = 3.0
    procs = [ctx.Process(target=_hammer, args=(scope, seconds, out)) for _ in range(3)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    total = sum(out.get(timeout=60) for _ in procs)
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(30)
    allowed = b.capacity + b.rate * 1e9 * elapsed  # burst + refill over the whole run (spawn time included)
    assert total <= allowed + 1e-6, (total, allowed)
    # and it was a contest: each process alone would have got the capacity at least (the bucket started full)
    assert total >= b.capacity, total
    u = b.usage()
    assert u["granted_weight"] == total and u["requests"] == total
    assert u["peak_window_used"] <= rb.SAFETY * b.limit


def test_a_429_blocks_every_process_for_its_retry_after(scope):
    a = rb.RestBudget("binance-usdm")
    other = rb.RestBudget("binance-usdm")  # another process's view is the same file
    assert a.reserve(10.0) == 0.0
    a.penalise(429, 2.0)
    wait = other.reserve(1.0)
    assert 1.5 < wait <= 2.0
    assert other.usage()["penalties"] == 1 and other.usage()["last_penalty_status"] == 429
    with pytest.raises(rb.BudgetExhausted, match="binance-usdm"):
        other.acquire(1.0, timeout=0.2)
    a.penalise(418, None)  # no Retry-After: Binance's shortest ban
    assert other.reserve(1.0) > rb.BAN_418_S - 5


def test_acquire_paces_a_storm_to_the_refill_rate(scope):
    b = rb.RestBudget("bitget-spot-books", limit=40.0, window_s=1.0)  # safe 36/s: burst 9, refill 27/s
    t0 = time.monotonic()
    for _ in range(9 + 27):
        b.acquire(1.0, timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.9, elapsed  # the 27 beyond the burst waited for the refill
    assert b.usage()["waits"] > 0


def test_a_bad_scope_is_refused(monkeypatch):
    monkeypatch.setenv(rb.SCOPE_ENV, "../etc")
    with pytest.raises(ValueError, match="scope"):
        rb.scope()


def test_a_binance_snapshot_storm_asks_for_the_deepest_snapshots_that_fit_one_window():
    from mdengine.exchanges.binance import limits as bl

    # USDⓈ-M: 20 % of 2,400 = 480 weight per minute for the storm; depth weighs 2 (<= 50), 5, 10, 20 (1000)
    assert bl.storm_weight("usdm") == 480.0 and bl.storm_weight("spot") == 1200.0
    # the storm fits what the box's budget grants at once, so its books need not wait for refills
    assert bl.STORM_SHARE <= rb.SAFETY * rb.BURST_SHARE
    assert bl.snapshot_limit("usdm", 1000, 20, storm=1) == 1000  # a single resync: as configured
    assert bl.snapshot_limit("usdm", 1000, 20, storm=24) == 1000  # 24 x 20 = 480 fits
    assert bl.snapshot_limit("usdm", 1000, 20, storm=25) == 500  # 25 x 10 fits, 25 x 20 does not
    assert bl.snapshot_limit("usdm", 1000, 20, storm=96) == 100  # 96 x 5 = 480
    assert bl.snapshot_limit("usdm", 1000, 20, storm=97) == 50  # 97 x 2: the lightest that holds 20 levels
    assert bl.snapshot_limit("usdm", 1000, 20, storm=5000) == 50  # nothing fits: the lightest, over several minutes
    assert bl.snapshot_limit("usdm", 1000, 300, storm=400) == 500  # never below the published depth (300 levels)
    assert bl.snapshot_limit("usdm", 50, 20, storm=1) == 50  # configured lighter already: kept
    assert bl.snapshot_limit("usdm", 5, 20, storm=1) == 20  # configured below the book's depth: the book wins
    # spot: 1,200 per minute; 1-100 weighs 5, 101-500 25, 501-1000 50, 1001-5000 250
    assert bl.snapshot_limit("spot", 1000, 50, storm=24) == 1000  # 24 x 50 = 1,200
    assert bl.snapshot_limit("spot", 1000, 50, storm=48) == 500  # 48 x 25
    assert bl.snapshot_limit("spot", 1000, 50, storm=49) == 100  # 49 x 5
    assert bl.snapshot_limit("spot", 1000, 50, storm=1500) == 100  # the lightest step, at its deepest
    assert bl.snapshot_limit("spot", 1000, 200, storm=1500) == 500  # 200 levels need the 25-weight step
    assert bl.snapshot_limit("spot", 5000, 50, storm=4) == 5000  # 4 x 250 = 1,000
    assert bl.snapshot_limit("spot", 5000, 50, storm=5) == 1000  # 5 x 250 = 1,250 does not fit
    assert bl.snapshot_limit("spot", 700, 50, storm=1) == 700  # any spot limit is valid
    # a smaller window (a test's simulator, or a box that keeps more for other tools) asks for lighter ones sooner
    assert bl.snapshot_limit("usdm", 1000, 20, storm=60, window_weight=180.0) == 50
    assert bl.snapshot_limit("usdm", 1000, 20, storm=9, window_weight=180.0) == 1000


def test_binance_reports_the_ips_used_weight_and_the_window_it_counts():
    from mdengine.exchanges.binance import limits as bl

    assert bl.server_usage("binance-usdm", {"X-MBX-USED-WEIGHT-1M": "1234"}, 125.5, 60.0) == (1234.0, 180.0)
    assert bl.server_usage("binance-spot", {"x-mbx-used-weight-1m": "7", "Content-Type": "a"}, 60.0, 60.0) == \
        (7.0, 120.0)
    assert bl.server_usage("binance-spot", {"X-MBX-USED-WEIGHT-1M": "x"}, 0.0, 60.0) is None
    assert bl.server_usage("binance-spot", {"X-MBX-USED-WEIGHT-1M": "-3"}, 0.0, 60.0) is None
    assert bl.server_usage("binance-spot", {}, 0.0, 60.0) is None
    assert bl.server_usage("binance-connect", {"X-MBX-USED-WEIGHT-1M": "3"}, 0.0, 60.0) is None


def test_the_bucket_adopts_the_servers_count_when_it_is_higher(scope):
    """safe 900 per 60 s: burst 225, refill 675 a window. Times are set half-way through the next minute."""
    b = rb.RestBudget("binance-usdm", limit=1000.0, window_s=60.0)
    start = (time.time_ns() // 60_000_000_000 + 1) * 60_000_000_000
    now, end = start + 30_000_000_000, (start + 60_000_000_000) / 1e9
    assert b.reserve(100.0, now) == 0.0  # this box's own weight in the window: 100
    assert b.adopt(100.0, end, now) is False  # the server counted only ours: nothing to take
    # 350 more from other programs in 30 s: expected to spend 350 more by the window's end, which leaves
    # 900 - 450 - 350 = 100 of the 125 the bucket holds
    assert b.adopt(450.0, end, now) is True
    assert b.reserve(100.0, now) == 0.0
    assert 0.0 < b.reserve(1.0, now) < 1.0  # a refill wait, no more
    # they go faster: 500 of theirs so far, 500 more to come; 900 - 700 - 500 < 0: everyone waits out the window
    assert b.adopt(700.0, end, now) is True
    assert b.reserve(1.0, now) == 30.0
    u = b.usage()
    assert u["server_used"] == 700.0 and u["adoptions"] == 2 and u["held_s"] > 30
    assert "server counted more" in b.describe()
    assert b.adopt(5000.0, end - 60.0, now) is False  # a report from a window already over: ignored
    # early in a window one request of another program is not taken for a flood (its pace is over 15 s at least)
    other = rb.RestBudget("binance-spot", limit=1000.0, window_s=60.0)
    assert other.adopt(5.0, end, start + 1_000_000_000) is False


def test_observe_reads_the_exchanges_header_for_the_budget_of_the_url(scope):
    url = "https://fapi.binance.com/fapi/v1/depth?symbol=BTCUSDT&limit=100"
    b = rb.RestBudget("binance-usdm")
    assert rb.observe(url, {"X-MBX-USED-WEIGHT-1M": "2300"}) is True  # 2,300 of 2,400: past the safe 2,160
    assert b.reserve(1.0) > 0.0 and b.usage()["server_used"] == 2300.0
    assert rb.observe("https://api.bybit.com/v5/market/orderbook?category=spot",
                      {"X-Bapi-Limit-Status": "0", "X-Bapi-Limit": "10"}) is False  # per UID, not the IP's use
    assert rb.observe("https://example.com/x", {"X-MBX-USED-WEIGHT-1M": "9999"}) is False


def test_bybits_403_blocks_the_ip_for_ten_minutes_and_only_on_bybit(scope):
    """Bybit answers an IP over 600 requests per 5 s with "403, access too frequent" and blocks it 10 minutes
    (BY-DOC rate-limit.mdx); a 403 elsewhere is no limit answer."""
    assert rb.is_limit_answer("bybit", 403) and rb.is_limit_answer("bybit", 429)
    assert not rb.is_limit_answer("binance-spot", 403) and rb.is_limit_answer("binance-spot", 418)
    b = rb.RestBudget("bybit")
    b.penalise(403, None)
    assert 595.0 < b.reserve(1.0) <= 600.0
    b.unlink()
    b.close()
