"""The feed as a real child process against the simulator, read back through SegmentReader.

One feed process serves several tests of this module (each looks at counter deltas), so the set stays fast on a
busy two-core machine; faults that need their own start conditions get their own feed or simulator.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import pytest

from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges.binance import BinanceAdapter
from mdengine.feed import run_feed
from mdengine.sim import Simulator
from mdengine.store import SegmentReader, WriterState

pytestmark = pytest.mark.slow
SPOT, USDM = "binance-spot", "binance-usdm"


def wait(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class FeedProc:
    """A feed child process (spawned, so it shares nothing with pytest) plus a reader of its segment."""

    def __init__(self, namespace: str, cfg: ExchangeConfig) -> None:
        ctx = mp.get_context("spawn")
        self.ready = ctx.Event()
        self.ctl, child = ctx.Pipe()
        self.proc = ctx.Process(target=run_feed, args=(namespace, cfg, child, self.ready), daemon=True)
        self.proc.start()
        assert self.ready.wait(60), "feed did not attach its segment"
        self.reader = SegmentReader(namespace, cfg.name)
        self._id = 0

    def counter(self, name: str) -> int:
        return self.reader.view.counters()[name]

    def stat(self, symbol: str, name: str, market: str | None = None) -> int:
        return self.reader.view.stats(self.reader.entry(symbol, market).slot)[name]

    def state(self, symbol: str, market: str | None = None) -> str:
        """The book's state, or "absent" if the symbol has no active slot (never added, or removed)."""
        if not any(e.unified == symbol and market in (None, e.market) for e in self.reader.symbols()):
            return "absent"
        return self.reader.book(symbol, market).header().state_name

    def wait_live(self, *symbols: str, timeout: float = 20.0) -> None:
        try:
            wait(lambda: all(self.state(s) == "live" for s in symbols), timeout, f"{symbols} live")
        except AssertionError:
            os.kill(self.proc.pid, signal.SIGUSR1)  # the feed dumps its threads' stacks into the captured stderr
            time.sleep(0.5)
            raise

    def last_error(self) -> str:
        return self.reader.view.last_error()[1]

    def request(self, op: str, symbol: str | None = None, market: str | None = None) -> dict:
        self._id += 1
        self.ctl.send({"id": self._id, "op": op, "symbol": symbol, "market": market})
        assert self.ctl.poll(30), f"no answer to {op} {symbol}"
        reply = self.ctl.recv()
        assert reply["id"] == self._id
        return reply

    def stop(self) -> int | None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        return self.proc.exitcode

    def close(self) -> None:
        self.stop()
        self.reader.close()
        self.ctl.close()


def matches_model(feed: FeedProc, sim: Simulator, market: str, symbol: str, native: str, depth: int = 20) -> bool:
    """With the simulator paused: the published book equals the model's top `depth` levels."""
    uid, bids, asks = sim.model_book(market, native, depth)
    snap = feed.reader.book(symbol).snapshot(depth)
    return (snap.update_id == uid and snap.bids.tolist() == [[float(p), float(q)] for p, q in bids]
            and snap.asks.tolist() == [[float(p), float(q)] for p, q in asks])


def assert_matches_model(feed, sim, market, symbol, native):
    sim.pause()
    try:
        wait(lambda: matches_model(feed, sim, market, symbol, native), 10, f"{symbol} equal to the model")
    finally:
        sim.resume()


def config(sim: Simulator, symbols: list[str], **kw) -> ExchangeConfig:
    return ExchangeConfig("binance", symbols=symbols, endpoints=BinanceAdapter.sim_endpoints(sim.endpoints()),
                          book_depth=20, book_capacity=20, **kw)


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=5, rate_hz=20, exchanges=[SPOT, USDM]) as s:
        yield s


@pytest.fixture(scope="module")
def feed(sim, tmp_path_factory):
    import uuid

    from mdengine.store import shm

    ns = "f" + uuid.uuid4().hex[:8]
    f = FeedProc(ns, config(sim, ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "NOPE/USDT"]))
    try:
        f.wait_live("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT")
        yield f
    finally:
        f.close()
        for name in shm.list_names(ns):
            shm.unlink(name)


@pytest.fixture(autouse=True)
def _clean_sim(request):
    yield
    if "sim" in request.fixturenames:
        s = request.getfixturevalue("sim")
        s.clear_faults()
        s.resume()


# ----------------------------------------------------------------------------- one shared feed
def test_feed_syncs_spot_and_usdm_books_equal_to_the_model(feed, sim):
    assert feed.reader.writer_alive() and feed.reader.view.writer_state == WriterState.RUNNING
    assert feed.reader.heartbeat_age_ns() < 5e9  # beats every 0.5 s: 10x room for a busy machine
    assert_matches_model(feed, sim, SPOT, "BTC/USDT", "BTCUSDT")
    assert_matches_model(feed, sim, USDM, "BTC/USDT:USDT", "BTCUSDT")
    ring = feed.reader.trades("BTC/USDT:USDT", start="earliest")
    trades, lost = wait(lambda: (lambda t: t if len(t[0]) else None)(ring.poll()), what="USDⓈ-M trades")
    assert lost == 0 and set(trades["side"]) <= {1, -1}
    assert (trades["price"] > 0).all() and (trades["trade_id"] > 0).all()
    c = feed.reader.view.counters()
    assert c["messages"] > 0 and c["bytes_received"] > 0 and c["book_updates"] > 0 and c["rest_requests"] >= 5


def test_unknown_symbol_is_an_error_and_the_others_carry_on(feed):
    assert feed.counter("subscribe_errors") >= 1  # NOPE/USDT in the configuration
    assert feed.state("NOPE/USDT") == "absent"
    before = feed.counter("subscribe_errors")
    reply = feed.request("subscribe", "FOO/BAR")
    assert not reply["ok"] and "unknown symbol 'FOO/BAR'" in reply["error"]
    wait(lambda: feed.counter("subscribe_errors") == before + 1, what="subscribe_errors + 1")
    assert "FOO/BAR" in feed.last_error()
    bad = feed.request("launch", "BTC/USDT")
    assert not bad["ok"] and "op in" in bad["error"]


def test_runtime_subscribe_list_unsubscribe_without_reconnecting(feed):
    reconnects = feed.counter("reconnects")
    reply = feed.request("subscribe", "SOLUSDT")  # a native id means spot; no wait_s: answered at once
    assert reply == {"id": reply["id"], "ok": True, "error": None, "symbol": "SOL/USDT", "market": "spot",
                     "native": "SOLUSDT", "live": False}
    feed.wait_live("SOL/USDT")
    listed = {s["symbol"]: s["live"] for s in feed.request("list")["symbols"]}
    assert listed["SOL/USDT"] and listed["BTC/USDT"] and "NOPE/USDT" not in listed
    # A burst of control work: 6 SUBSCRIBE/UNSUBSCRIBE frames at once. The simulator, like Binance, cuts a spot
    # connection that sends more than 5 messages a second; the send budget spreads them out.
    for op in ("unsubscribe", "subscribe") * 3:
        assert feed.request(op, "SOL/USDT")["ok"]
    feed.wait_live("SOL/USDT")
    assert feed.request("unsubscribe", "SOL/USDT")["ok"]
    wait(lambda: feed.state("SOL/USDT") == "absent", what="SOL/USDT removed")
    time.sleep(1.0)  # a cut for the message rate would show up as a reconnect by now
    assert feed.counter("reconnects") == reconnects


def test_malformed_frame_is_counted_and_skipped(feed, sim):
    malformed, resyncs, reconnects = feed.counter("malformed"), feed.counter("resyncs"), feed.counter("reconnects")
    sim.inject(SPOT, "malformed_json")
    wait(lambda: feed.counter("malformed") == malformed + 1, what="malformed + 1")
    assert "invalid JSON" in feed.last_error()
    time.sleep(0.3)
    assert feed.state("BTC/USDT") == "live" and feed.state("ETH/USDT") == "live"
    assert (feed.counter("resyncs"), feed.counter("reconnects")) == (resyncs, reconnects)


def test_gap_resyncs_only_that_symbol(feed, sim):
    eth_gaps, eth_resyncs = feed.stat("ETH/USDT", "gaps"), feed.stat("ETH/USDT", "resyncs")
    btc_gaps = feed.stat("BTC/USDT", "gaps")
    gaps, reconnects = feed.counter("gaps"), feed.counter("reconnects")
    eth = feed.reader.book("ETH/USDT")
    sim.inject(SPOT, "skip_sequence", symbol="BTCUSDT")
    wait(lambda: feed.stat("BTC/USDT", "gaps") == btc_gaps + 1, what="a BTC/USDT gap")
    states = set()
    deadline = time.monotonic() + 10
    while feed.state("BTC/USDT") != "live" and time.monotonic() < deadline:
        states.add(eth.header().state_name)
        time.sleep(0.01)
    assert feed.state("BTC/USDT") == "live"
    assert states <= {"live"}  # ETH/USDT was published live throughout
    assert feed.counter("gaps") == gaps + 1 and feed.counter("reconnects") == reconnects
    assert (feed.stat("ETH/USDT", "gaps"), feed.stat("ETH/USDT", "resyncs")) == (eth_gaps, eth_resyncs)
    assert_matches_model(feed, sim, SPOT, "BTC/USDT", "BTCUSDT")


def test_dropped_connection_reconnects_and_resyncs(feed, sim):
    reconnects = feed.counter("reconnects")
    sim.inject(SPOT, "drop")
    wait(lambda: feed.counter("reconnects") > reconnects, what="a reconnect")
    assert "spot/0 lost" in feed.last_error()
    feed.wait_live("BTC/USDT", "ETH/USDT")
    assert feed.state("BTC/USDT:USDT") == "live"  # the USDⓈ-M connections were not touched
    assert_matches_model(feed, sim, SPOT, "ETH/USDT", "ETHUSDT")


def test_sigterm_stops_cleanly_and_marks_books_stale(feed):
    assert feed.stop() == 0
    assert feed.reader.view.writer_state == WriterState.STOPPED
    assert {feed.state(s) for s in ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT")} == {"stale"}


# ----------------------------------------------------------------------------- own start conditions
def test_snapshot_429_backs_off_then_syncs_and_silence_trips_the_watchdog(sim, namespace):
    sim.inject(SPOT, "http_429", path="/api/v3/depth", retry_after=1)
    f = FeedProc(namespace, config(sim, ["ETH/USDT"], trades=False, silence_timeout_s=1.0))
    try:
        f.wait_live("ETH/USDT")
        assert f.counter("rest_failures") == 1 and "GET 429" in f.last_error()
        assert ("http_429", None, None) in sim.fault_log(SPOT)
        reconnects = f.counter("reconnects")
        sim.inject(SPOT, "silent")  # the server keeps the socket open and sends nothing
        wait(lambda: f.counter("reconnects") > reconnects, 10, "a watchdog reconnect")
        assert "watchdog" in f.last_error()
        f.wait_live("ETH/USDT")
    finally:
        f.close()


def test_connections_are_replaced_before_their_time_limit_without_a_resync(sim, namespace, tmp_path):
    """Binance cuts every connection after 24 h; with rotate_after_s = 1 the feed replaces its connection
    every second or so: books stay live throughout, no snapshot is fetched again, no trade is stored twice,
    and the recording of it exports without a disconnect or a gap."""
    f = FeedProc(namespace, config(sim, ["BTC/USDT", "ETH/USDT"], options={"rotate_after_s": 1.0},
                                   record_dir=str(tmp_path)))
    try:
        f.wait_live("BTC/USDT", "ETH/USDT")
        stats0, resyncs, reconnects = sim.stats(SPOT), f.counter("resyncs"), f.counter("reconnects")
        ring = f.reader.trades("BTC/USDT", start="earliest")
        start = time.monotonic()  # watch 4.5 s, and on until two rotations (~2 s on a quiet machine) happened
        states = set()
        while time.monotonic() < start + 4.5 or sim.stats(SPOT)["connections"] < stats0["connections"] + 2:
            assert time.monotonic() < start + 60, (stats0, sim.stats(SPOT))
            states |= {f.state("BTC/USDT"), f.state("ETH/USDT")}
            time.sleep(0.02)
        stats = sim.stats(SPOT)
        assert states == {"live"}
        assert stats["rest_requests"] == stats0["rest_requests"]  # no depth snapshot: nothing resynced
        assert (f.counter("resyncs"), f.counter("reconnects")) == (resyncs, reconnects)
        wait(lambda: len(sim.connections(SPOT)) <= 2, what="each old connection closed")
        trades, lost = ring.poll()
        ids = trades["trade_id"].tolist()
        assert lost == 0 and len(ids) > 10 and ids == sorted(set(ids))  # none twice, in order
    finally:
        f.close()
    from mdengine.recording.export import Rebuild

    (name,) = os.listdir(tmp_path)
    rebuilt = Rebuild(tmp_path / name)
    out = list(rebuilt)
    st = rebuilt.stats
    assert st.frames > 100 and st.frames_unrouted == 0 and st.protocol_errors == 0
    assert sum(st.snapshots.values()) == 2  # the first sync of each book, nothing more
    markers = [type(x).__name__ for x in out[-2:]], [getattr(x, "kind", None) for x in out[-2:]]
    assert dict(st.markers) == {"disconnect": 2} and markers == (["Marker"] * 2, ["disconnect"] * 2), markers
    # (the only disconnect is the feed stopping, at the end)


def test_server_pings_are_answered_and_server_shutdown_reconnects(namespace):
    with Simulator(seed=9, rate_hz=20, exchanges=[SPOT, USDM], binance_spot_ping_interval=0.2,
                   binance_spot_ping_timeout=0.4) as s:
        f = FeedProc(namespace, config(s, ["BTC/USDT"]))
        try:
            f.wait_live("BTC/USDT")
            time.sleep(1.5)  # ~7 pings; an unanswered one closes the connection after 0.4 s
            assert f.counter("reconnects") == 0 and s.connections(SPOT)
            s.inject(SPOT, "server_shutdown", close_after=5)
            wait(lambda: f.counter("reconnects") == 1, 5, "a reconnect after serverShutdown")  # before the server cut
            f.wait_live("BTC/USDT")
        finally:
            f.close()


def test_cli_runs_a_feed_and_records_its_frames(sim, namespace, tmp_path):
    ep = BinanceAdapter.sim_endpoints(sim.endpoints())
    cmd = [sys.executable, "-m", "mdengine.feed", "--namespace", namespace, "--exchange", "binance",
           "--symbols", "ETH/USDT:USDT", "--markets", "usdm", "--book-capacity", "20", "--book-depth", "10",
           "--record-dir", str(tmp_path), "--log-level", "WARNING"]
    for k, v in ep.items():
        cmd += ["--endpoint", f"{k}={v}"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        r = wait(lambda: _attach(namespace), 60, "the segment")
        try:
            wait(lambda: r.symbols() and r.book("ETH/USDT:USDT").header().state_name == "live", 20, "live")
            assert r.book("ETH/USDT:USDT").snapshot().bids.shape == (10, 2)
        finally:
            r.close()
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    files = list(tmp_path.iterdir())
    assert files and all(f.stat().st_size > 0 for f in files), files


def _attach(namespace):
    try:
        return SegmentReader(namespace, "binance")
    except (FileNotFoundError, RuntimeError):
        return None


def test_feed_process_module_is_importable_without_side_effects():
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "mdengine.feed", "--help"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0 and "--endpoint" in out.stdout
