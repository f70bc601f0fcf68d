"""Simulated sizes in each venue's unit: Bybit inverse sizes are whole contracts of 1 USD (BY-DOC: the inverse
ticker's bid1Size/ask1Size, openInterest and kline volume are in USD, e.g. BTCUSD ask1Size "9854"), not BTC."""

from __future__ import annotations

import statistics

import pytest

from mdengine import rest
from mdengine.sim import Simulator
from mdengine.sim.formats.perp import PerpModel
from mdengine.sim.listings import DEFAULTS
from mdengine.sim.market import BookModel
from mdengine.sim.testing import http_get

BYBIT_INVERSE = next(i for i in DEFAULTS["bybit"] if i.kind == "inverse")


def _usd_sizes(texts: list[str]) -> list[int]:
    assert all(t.isdigit() for t in texts), texts  # whole contracts: no decimals on the wire
    return [int(t) for t in texts]


def _assert_realistic_usd(sizes: list[int]) -> None:
    """Levels of a BTCUSD book hold some hundreds to some tens of thousands of USD, and vary."""
    assert 1_000 <= statistics.median(sizes) <= 100_000, statistics.median(sizes)
    assert len(set(sizes)) >= len(sizes) // 2 and max(sizes) >= 10 * min(sizes), sizes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bybit_inverse_model_sizes_are_usd_contracts(seed):
    model = BookModel(BYBIT_INVERSE, seed)
    for ts in range(300):
        model.step(ts)
    bids, asks = model.top(50)
    _assert_realistic_usd(_usd_sizes([q for _, q in bids + asks]))
    trades = [t.lots for t in model.trades]
    assert len(trades) > 20 and statistics.median(trades) >= 100 and len(set(trades)) > len(trades) // 2
    perp = PerpModel(model, seed)  # open interest in the same unit, far above one order even after an hour
    perp.advance(1_000)
    perp.advance(1_000 + 3_600_000)
    assert perp.open_interest_lots >= 100 * model.mean_lots


def test_bybit_inverse_sizes_from_the_simulator_rest():
    with Simulator(seed=4, exchanges=["bybit"], symbols=["BTC/USD:BTC"], rate_hz=50.0) as sim:
        base = sim.rest_url("bybit")
        book = rest.fetch_depth(base, rest.resolve("bybit", "BTC/USD:BTC"), 50)
        sizes = book.bids[:, 1].tolist() + book.asks[:, 1].tolist()
        assert all(s == int(s) for s in sizes)
        _assert_realistic_usd([int(s) for s in sizes])
        body = http_get(f"{base}/v5/market/orderbook?category=inverse&symbol=BTCUSD&limit=50")[2]["result"]
        _usd_sizes([q for _, q in body["b"] + body["a"]])
        info = http_get(f"{base}/v5/market/instruments-info?category=inverse")[2]["result"]["list"]
        assert [(i["symbol"], i["lotSizeFilter"]["qtyStep"]) for i in info] == [("BTCUSD", "1")]
        ticker = http_get(f"{base}/v5/market/tickers?category=inverse&symbol=BTCUSD")[2]["result"]["list"][0]
        oi, mark = _usd_sizes([ticker["openInterest"]])[0], float(ticker["markPrice"])
        assert oi >= 1_000_000  # USD
        assert float(ticker["openInterestValue"]) == pytest.approx(oi / mark, rel=1e-4)  # its value in BTC
