"""OKX, Bybit and Bitget against the local simulator: one real feed process per exchange, real sockets and
shared memory. One simulator serves the module; each test injects the same fault on all three markets at
once and waits until every feed has recovered, counted it, and left the other symbols alone.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import uuid
from collections.abc import Callable

import pytest

from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges import get_adapter
from mdengine.feed.process import run_feed
from mdengine.sim import Simulator
from mdengine.store import shm
from mdengine.store.layout import BookState
from mdengine.store.reader import SegmentReader

pytestmark = pytest.mark.slow

EXCHANGES = ("okx", "bybit", "bitget")
# the simulator's model key of each test symbol, per market
SIM_KEY = {
    "okx": {"BTC/USDT": "BTC-USDT", "ETH/USDT": "ETH-USDT", "BTC/USDT:USDT": "BTC-USDT-SWAP"},
    "bybit": {"BTC/USDT": "spot/BTCUSDT", "ETH/USDT": "spot/ETHUSDT", "BTC/USDT:USDT": "linear/BTCUSDT"},
    "bitget": {"BTC/USDT": "SPOT/BTCUSDT", "ETH/USDT": "SPOT/ETHUSDT", "BTC/USDT:USDT": "USDT-FUTURES/BTCUSDT"},
}
MARKETS = {"okx": ["SPOT", "SWAP"], "bybit": ["spot", "linear"], "bitget": ["SPOT", "USDT-FUTURES"]}
SYMBOLS = ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT"]
TARGET, OTHER = "BTC/USDT", "ETH/USDT"
DEPTH = 20
TIMEOUT = 20.0


def wait_for(pred: Callable[[], object], what: str, timeout: float = TIMEOUT) -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Feed:
    def __init__(self, ns: str, ex: str, sim: Simulator) -> None:
        self.ex = ex
        cfg = ExchangeConfig(name=ex, symbols=[*SYMBOLS, "DOGE/USDT"], markets=MARKETS[ex], book_depth=DEPTH,
                             endpoints=get_adapter(ex).sim_endpoints(sim.endpoints()), max_symbols=8,
                             book_capacity=DEPTH, trade_capacity=1024, heartbeat_interval_s=0.2,
                             silence_timeout_s=3.0)
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        self.proc = ctx.Process(target=run_feed, args=(ns, cfg), kwargs={"ready": ready, "log_level": "WARNING"},
                                name=f"feed-{ex}", daemon=True)
        self.proc.start()
        assert ready.wait(30), f"{ex} feed did not start"
        self.reader = SegmentReader(ns, ex)

    def counters(self) -> dict[str, int]:
        return self.reader.view.counters()

    def stats(self, sym: str) -> dict[str, int]:
        return self.reader.view.stats(self.reader.entry(sym).slot)

    def live(self, sym: str) -> bool:
        try:
            return self.reader.book(sym).header().state == BookState.LIVE
        except KeyError:
            return False

    def matches_model(self, sim: Simulator, sym: str) -> bool:
        seq, bids, asks = sim.model_book(self.ex, SIM_KEY[self.ex][sym], DEPTH)
        snap = self.reader.book(sym).snapshot(DEPTH)
        return (snap.state == BookState.LIVE and snap.update_id == seq
                and [tuple(x) for x in snap.bids.tolist()] == [(float(p), float(q)) for p, q in bids]
                and [tuple(x) for x in snap.asks.tolist()] == [(float(p), float(q)) for p, q in asks])

    def close(self) -> None:
        self.reader.close()
        self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=7, exchanges=list(EXCHANGES), symbols=SYMBOLS, rate_hz=20.0) as s:
        yield s


@pytest.fixture(scope="module")
def feeds(sim):
    ns = "t" + uuid.uuid4().hex[:8]
    started: dict[str, Feed] = {}
    try:
        for ex in EXCHANGES:
            started[ex] = Feed(ns, ex, sim)
        for f in started.values():
            for sym in SYMBOLS:
                wait_for(lambda f=f, sym=sym: f.live(sym), f"{f.ex} {sym} live")
        yield started
    finally:
        for f in started.values():
            f.close()
        for name in shm.list_names(ns):
            shm.unlink(name)


def all_synced(sim: Simulator, feeds: dict[str, Feed]) -> None:
    """Freeze the market and require every feed's book to equal the simulator's (the truth)."""
    sim.pause()
    try:
        for f in feeds.values():
            for sym in SYMBOLS:
                wait_for(lambda f=f, sym=sym: f.matches_model(sim, sym), f"{f.ex} {sym} == model", 5.0)
    finally:
        sim.resume()


def inject_and_recover(sim, feeds, fault: str, stat: dict[str, str], exchanges=EXCHANGES, **params) -> None:
    """Inject `fault` on TARGET in each market; wait until its per-symbol `stat[ex]` counter rose and it is live
    again; the OTHER symbol must not have been resynced meanwhile."""
    before = {ex: (feeds[ex].stats(TARGET)[stat[ex]], feeds[ex].stats(OTHER)["resyncs"]) for ex in exchanges}
    for ex in exchanges:
        sim.inject(ex, fault, symbol=SIM_KEY[ex][TARGET], **params)
    for ex in exchanges:
        f = feeds[ex]
        wait_for(lambda f=f, ex=ex: f.stats(TARGET)[stat[ex]] > before[ex][0], f"{ex} {fault} counted")
        wait_for(lambda f=f: f.live(TARGET), f"{ex} {TARGET} live again")
        assert f.stats(OTHER)["resyncs"] == before[ex][1], f"{ex}: {OTHER} was disturbed by {fault}"
        assert f.live(OTHER)
    all_synced(sim, feeds)


def test_feeds_sync_to_the_model_and_count_the_unknown_symbol(sim, feeds):
    all_synced(sim, feeds)
    for f in feeds.values():
        assert f.counters()["subscribe_errors"] >= 1  # DOGE/USDT is not listed
        entry = f.reader.entry("BTC/USDT:USDT")
        assert entry.contract_value > 0
        wait_for(lambda f=f: f.stats(TARGET)["trades"] > 0, f"{f.ex} trades")
    assert feeds["okx"].reader.entry("BTC/USDT:USDT").contract_value == 0.01  # ctVal: sizes are contracts


def test_sequence_gap_resyncs_one_symbol(sim, feeds):
    # Bitget v2 has no pseq: a skipped update shows up as a checksum mismatch
    inject_and_recover(sim, feeds, "skip_sequence", {"okx": "gaps", "bybit": "gaps", "bitget": "checksum_failures"})


def test_bad_checksum_resyncs_one_symbol(sim, feeds):
    inject_and_recover(sim, feeds, "corrupt_checksum", {"okx": "checksum_failures", "bitget": "checksum_failures"},
                       exchanges=("okx", "bitget"))  # Bybit sends no checksum


def test_sequence_reset_resyncs_one_symbol(sim, feeds):
    inject_and_recover(sim, feeds, "seq_reset", dict.fromkeys(EXCHANGES, "resyncs"))


def test_crossed_book_resyncs_one_symbol(sim, feeds):
    inject_and_recover(sim, feeds, "crossed_book", dict.fromkeys(EXCHANGES, "resyncs"))


def test_malformed_frame_is_counted_and_books_stay_live(sim, feeds):
    before = {ex: (f.counters()["malformed"], f.stats(TARGET)["resyncs"]) for ex, f in feeds.items()}
    for ex in EXCHANGES:
        sim.inject(ex, "malformed_json")
    for ex, f in feeds.items():
        wait_for(lambda f=f, ex=ex: f.counters()["malformed"] > before[ex][0], f"{ex} malformed counted")
        assert f.stats(TARGET)["resyncs"] == before[ex][1] and f.live(TARGET)


@pytest.mark.parametrize(("fault", "params"), [("drop", {}), ("silent", {"seconds": 8.0})])
def test_lost_connection_reconnects_and_resyncs(sim, feeds, fault, params):
    before = {ex: f.counters()["reconnects"] for ex, f in feeds.items()}
    for ex in EXCHANGES:
        sim.inject(ex, fault, **params)
    for ex, f in feeds.items():
        wait_for(lambda f=f, ex=ex: f.counters()["reconnects"] > before[ex], f"{ex} reconnect after {fault}")
        for sym in SYMBOLS:
            wait_for(lambda f=f, sym=sym: f.live(sym), f"{ex} {sym} live after {fault}")
    sim.clear_faults()
    all_synced(sim, feeds)


def test_refused_subscription_drops_that_symbol_only(sim, feeds):
    """Last: ETH is gone afterwards. The exchange refuses it when the feed resubscribes after a reconnect."""
    before = {ex: (f.counters()["subscribe_errors"], f.counters()["reconnects"]) for ex, f in feeds.items()}
    for ex in EXCHANGES:
        sim.inject(ex, "refuse_subscription", symbol=SIM_KEY[ex][OTHER])
        sim.inject(ex, "drop")
    for ex, f in feeds.items():
        wait_for(lambda f=f, ex=ex: f.counters()["subscribe_errors"] > before[ex][0], f"{ex} refusal counted")
        assert f.counters()["reconnects"] > before[ex][1]
        wait_for(lambda f=f: f.live(TARGET) and f.live("BTC/USDT:USDT"), f"{ex} other symbols live")
        assert not f.live(OTHER)
