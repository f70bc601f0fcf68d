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
    assert rb.cost("https://api.bitget.com/api/v2/mix/market/merge-depth?symbol=X") == ("bitget-mix", 1.0)
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
    b = rb.RestBudget("bitget-spot", limit=40.0, window_s=1.0)  # safe 36/s: burst 9, refill 27/s
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


def test_a_binance_snapshot_storm_asks_for_lighter_snapshots_that_still_fill_the_book():
    from mdengine.exchanges.binance import limits as bl

    assert bl.snapshot_limit("usdm", 1000, 20, pending=1) == 1000  # no storm: as configured
    assert bl.snapshot_limit("usdm", 1000, 20, pending=bl.STORM_PENDING + 1) == 100  # weight 5, not 20
    assert bl.snapshot_limit("usdm", 1000, 300, pending=500) == 500  # still holds the published depth
    assert bl.snapshot_limit("spot", 1000, 50, pending=500) == 100  # weight 5, not 50
    assert bl.snapshot_limit("spot", 100, 50, pending=500) == 100  # nothing lighter to take
    assert bl.snapshot_limit("usdm", 50, 20, pending=500) == 50  # configured lighter already: kept
