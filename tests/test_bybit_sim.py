"""Bybit feed process against the simulator: real sockets and shared memory.

Bybit inverse books used to resync every few seconds on the simulator: it numbered every model step, so a step
that changed nothing a topic shows left a hole in that topic's `u` and the feed saw a gap.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid

import pytest

from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges import get_adapter
from mdengine.feed.process import run_feed
from mdengine.sim import Simulator
from mdengine.store import shm
from mdengine.store.layout import BookState
from mdengine.store.reader import SegmentReader

pytestmark = pytest.mark.slow

SYMBOLS = {"BTC/USD:BTC": "inverse/BTCUSD", "BTC/USDT:USDT": "linear/BTCUSDT"}
RATE_HZ = 25.0
WATCH_S = 5.0
DEPTH = 20


def _until(pred, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return v


def test_inverse_and_linear_books_stay_live_without_resyncs_at_25_updates_a_second():
    ns = "t" + uuid.uuid4().hex[:8]
    with Simulator(seed=7, exchanges=["bybit"], symbols=list(SYMBOLS), rate_hz=RATE_HZ) as sim:
        cfg = ExchangeConfig(name="bybit", symbols=list(SYMBOLS), markets=["linear", "inverse"], book_depth=DEPTH,
                             endpoints=get_adapter("bybit").sim_endpoints(sim.endpoints()), max_symbols=8,
                             book_capacity=DEPTH, trade_capacity=1024)
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=run_feed, args=(ns, cfg), kwargs={"ready": ready, "log_level": "WARNING"},
                           daemon=True)
        proc.start()
        reader = None
        try:
            assert ready.wait(30), "bybit feed did not start"
            reader = SegmentReader(ns, "bybit")

            def stats(sym: str) -> dict[str, int]:
                return reader.view.stats(reader.entry(sym).slot)

            def live(sym: str) -> bool:
                try:
                    return reader.book(sym).header().state == BookState.LIVE
                except KeyError:
                    return False

            for sym in SYMBOLS:
                _until(lambda sym=sym: live(sym), f"{sym} live")
            before = {sym: stats(sym) for sym in SYMBOLS}
            t0 = time.monotonic()
            while time.monotonic() - t0 < WATCH_S:
                for sym in SYMBOLS:
                    assert live(sym), f"{sym} left LIVE: {stats(sym)}"
                time.sleep(0.02)
            for sym in SYMBOLS:
                now = stats(sym)
                assert now["gaps"] == before[sym]["gaps"] and now["resyncs"] == before[sym]["resyncs"], (sym, now)
                # the book kept moving: at least a fifth of the 125 steps the simulator made reached it
                assert now["book_updates"] - before[sym]["book_updates"] >= RATE_HZ * WATCH_S / 5, (sym, now)
            sim.pause()  # and what it holds is the market's book, with the topic's own update id
            try:
                for sym, key in SYMBOLS.items():
                    def exact(sym=sym, key=key) -> bool:
                        seq, bids, asks = sim.model_book("bybit", key, DEPTH)
                        snap = reader.book(sym).snapshot(DEPTH)
                        return (snap.state == BookState.LIVE and snap.update_id == seq
                                and snap.bids.tolist() == [[float(p), float(q)] for p, q in bids]
                                and snap.asks.tolist() == [[float(p), float(q)] for p, q in asks])
                    _until(exact, f"{sym} == the simulator's book", 5.0)
            finally:
                sim.resume()
        finally:
            if reader is not None:
                reader.close()
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            for name in shm.list_names(ns):
                shm.unlink(name)
