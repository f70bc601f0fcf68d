"""Freshness against real engines (`python -m mdengine run` on the simulator): a silent connection, a killed feed,
a restarted engine (SIGTERM, and kill -9 of supervisor and feeds), and REST going where the engine goes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from test_supervisor import RESTART, attach, exchange_toml, live_book, wait_for

from mdengine.client import Client, StaleBookError
from mdengine.engine.control import ControlError, is_running, request
from mdengine.engine.status import StatusSampler
from mdengine.sim import Simulator
from mdengine.store import layout as L

pytestmark = pytest.mark.slow
SYMBOL = "BTC/USDT"
LIVE_S = 60.0  # spawn, instruments over REST, snapshot, on a busy 2-core machine
FOLLOW_S = 10.0  # the promise is 1 s after the new feed publishes; 10x headroom


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=7, exchanges=["okx"], rate_hz=20.0) as s:
        yield s


class Run:
    """One `mdengine run` on a config file, with its own log; `stop` ends it (and its feeds) whatever happens."""

    count = 0

    def __init__(self, namespace, tmp_path, toml, *args):
        Run.count += 1
        self.namespace = namespace
        config = tmp_path / f"engine{Run.count}.toml"
        config.write_text(f'namespace = "{namespace}"\n' + toml)
        self.log_path = tmp_path / f"supervisor{Run.count}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the child writes to it until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "mdengine", "run", "--config", str(config), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: is_running(namespace) or self.proc.poll() is not None, 30, "the supervisor to listen")
        assert self.proc.poll() is None, self.log_text()

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def feed_pids(self):
        try:
            return [f["pid"] for f in request(self.namespace, {"op": "status"})["feeds"] if f["pid"]]
        except ControlError:
            return []

    def stop(self, sig=signal.SIGTERM):
        pids = self.feed_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids:  # never leave a feed behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture
def run(namespace, tmp_path):
    runs = []

    def start(toml, *args):
        r = Run(namespace, tmp_path, toml, *args)
        runs.append(r)
        return r

    yield start
    for r in runs:
        r.stop()
        print(r.log_text())  # shown only if the test failed


def _live(book) -> bool:
    top = book.top()
    return top.state == "live" and not top.stale


# --------------------------------------------------------------------------- silent connection
def test_a_silent_connection_is_stale_within_stale_after_with_the_reason_then_replaced(sim, run, namespace):
    engine = run(RESTART + exchange_toml("okx", sim, [SYMBOL], stale_after_s=2.0))
    with attach(namespace, "okx") as reader:
        live_book(reader, SYMBOL)
    with Client(namespace) as c, StatusSampler(namespace) as sampler:
        book = c.book("okx", SYMBOL)
        wait_for(lambda: _live(book), LIVE_S, "a live book")
        sim.inject("okx", "silent", seconds=15.0)  # the socket stays open; nothing (not even pongs) comes back
        start = time.monotonic()
        reasons, statuses, stale_at, live_again = [], set(), None, None
        while time.monotonic() - start < 14.0:
            top = book.top()
            if top.stale:
                stale_at = stale_at or time.monotonic() - start
                reasons.append(top.reason)
                statuses.add(sampler.sample()["feeds"][0]["symbols"][0]["state"])
            elif stale_at is not None and top.state == "live":
                live_again = time.monotonic() - start
                break
            time.sleep(0.01)
    print(f"stale after {stale_at} s, live again after {live_again} s; reasons {sorted(set(reasons))}")
    assert stale_at is not None and stale_at < 12.0, "a silent connection was served as fresh"
    assert any(r.startswith("nothing received from the exchange") for r in reasons), reasons
    assert "stale" in statuses  # `mdengine status` says stale too, not live
    # live again while the fault still silences the old connection: the feed probed and replaced it
    assert live_again is not None, "the silent connection was not replaced"
    assert "replacing the connection" in engine.log_text()


def test_a_quiet_book_on_a_healthy_connection_stays_live(sim, run, namespace):
    run(RESTART + exchange_toml("okx", sim, [SYMBOL], stale_after_s=2.0))
    with attach(namespace, "okx") as reader:
        live_book(reader, SYMBOL)
        with Client(namespace) as c:
            book = c.book("okx", SYMBOL)
            wait_for(lambda: _live(book), LIVE_S, "a live book")
            reconnects = reader.view.counters()["reconnects"]
            sim.pause()  # no market data at all; the exchange still answers pings
            try:
                start, stale = time.monotonic(), []
                while time.monotonic() - start < 6.0:  # three times stale_after
                    top = book.top()
                    if top.stale:
                        stale.append(top.reason)
                    time.sleep(0.02)
                assert book.top().age_s > 5.0  # quiet indeed
            finally:
                sim.resume()
        assert stale == [] and reader.view.counters()["reconnects"] == reconnects


# --------------------------------------------------------------------------- a killed feed
def test_a_killed_feed_is_marked_dead_by_the_supervisor_at_once(sim, run, namespace):
    slow_restart = RESTART.replace("backoff_initial_s = 0.1", "backoff_initial_s = 2.0").replace(
        "backoff_max_s = 0.5", "backoff_max_s = 2.0")
    engine = run(slow_restart + exchange_toml("okx", sim, [SYMBOL]))
    with attach(namespace, "okx") as reader, Client(namespace) as c:
        live_book(reader, SYMBOL)
        book = c.book("okx", SYMBOL)
        wait_for(lambda: _live(book), LIVE_S, "a live book")
        with Client(namespace, max_age=0.1) as strict:  # data age only: the feed's 0.2 s heartbeat is fine
            refusals = []
            for _ in range(100):
                try:
                    strict.top("okx", SYMBOL)
                except StaleBookError as e:
                    refusals.append(e.reason)
                time.sleep(0.005)
        assert not [r for r in refusals if "older than max_age" not in r], refusals
        [pid] = engine.feed_pids()
        assert reader.view.writer_pid == pid
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        while reader.view.writer_state != L.WriterState.DEAD and time.monotonic() - killed < 5.0:
            pass
        marked = time.monotonic() - killed
        was_dead = reader.view.writer_state == L.WriterState.DEAD
        while not book.top().stale and time.monotonic() - killed < 5.0:
            pass
        seen = time.monotonic() - killed
        top = book.top()
    print(f"DEAD mark {marked * 1e3:.1f} ms after kill -9, a client saw stale {seen * 1e3:.1f} ms after")
    assert was_dead, "the supervisor did not mark the dead feed"
    assert top.stale and "died" in top.reason
    assert "its books are marked stale" in engine.log_text()


# --------------------------------------------------------------------------- a restarted engine
def _restart_and_follow(sim, run, namespace, kill: bool):
    toml = RESTART + exchange_toml("okx", sim, [SYMBOL])
    first = run(toml)
    with attach(namespace, "okx") as reader:
        live_book(reader, SYMBOL)
    c = Client(namespace)
    spinner, sleeper = Client(namespace), Client(namespace)
    try:
        book = c.book("okx", SYMBOL)
        stream = c.trade_stream("okx", SYMBOL)
        wait_for(lambda: _live(book), LIVE_S, "a live book")
        wait_for(lambda: len(stream.poll().records), 30, "trades")
        seen = {}  # reader -> monotonic time it read a live book of the new engine
        old_pids = first.feed_pids()

        def follow(client: Client, name: str, spin: bool) -> None:
            b = client.book("okx", SYMBOL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and name not in seen:
                client.wait(0.5, [b], spin=spin)
                if first_gone.is_set() and _live(b) and b._seg.reader.view.writer_pid not in old_pids:
                    seen[name] = time.monotonic()

        first_gone = threading.Event()
        threads = [threading.Thread(target=follow, args=(spinner, "spinning wait()", True), daemon=True),
                   threading.Thread(target=follow, args=(sleeper, "blocking wait()", False), daemon=True)]
        for t in threads:
            t.start()
        if kill:  # no cleanup at all: the supervisor and its feeds die at once, the segment stays
            first.proc.kill()
            for pid in old_pids:
                os.kill(pid, signal.SIGKILL)
            first.proc.wait()
        else:
            first.stop(signal.SIGTERM)
        first_gone.set()
        wait_for(lambda: all(not psutil.pid_exists(p) for p in old_pids), 30, "the old feeds to be gone")
        wait_for(lambda: book.top().stale, 10, "the old engine's book to be stale")
        second = run(toml)
        with attach(namespace, "okx") as reader:
            live_book(reader, SYMBOL)
            published = time.monotonic()  # the new feed's first live book (or a little after)
            new_pid = reader.view.writer_pid
        wait_for(lambda: _live(book), FOLLOW_S, "the Book handle to follow the new engine")
        seen["top()"] = time.monotonic()
        for t in threads:
            t.join(FOLLOW_S)
        assert book._seg.reader.view.writer_pid == new_pid and c.statistics().follows == 1
        for name in ("spinning wait()", "blocking wait()"):
            assert name in seen, f"{name} never followed the new engine"
        print({k: round(v - published, 3) for k, v in seen.items()}, "s after the new feed was seen live")
        assert all(v - published < FOLLOW_S for v in seen.values())

        # the trade cursor crossed the restart: the break is reported, and what follows is the new ring's trades
        got = wait_for(lambda: (t := stream.poll()).reset and t, FOLLOW_S, "the trade stream to report the reset")
        assert got.source == "shm" and got.lost >= 0 and stream.statistics().resets == 1
        recs = got.records
        if len(recs) == 0:
            recs = wait_for(lambda: (r := stream.poll().records).size and r, 30, "new trades")
        assert (recs["index"] == range(recs["index"][0], recs["index"][0] + len(recs))).all()
        assert all(math.isfinite(p) and 1_000 < p < 1_000_000 for p in recs["price"]) and (recs["qty"] > 0).all()
        assert not stream.poll().reset  # reported once
        second.stop()
    finally:
        for client in (c, spinner, sleeper):
            client.close()


def test_handles_follow_an_engine_restarted_after_sigterm(sim, run, namespace):
    _restart_and_follow(sim, run, namespace, kill=False)


def test_handles_follow_an_engine_restarted_after_kill_9_of_supervisor_and_feeds(sim, run, namespace):
    _restart_and_follow(sim, run, namespace, kill=True)


# --------------------------------------------------------------------------- REST where the engine goes
def test_rest_fallback_and_recent_trades_use_the_endpoints_the_engine_publishes(sim, run, namespace):
    run(RESTART + exchange_toml("okx", sim, [SYMBOL]))  # endpoints from engine.toml, not --sim
    with attach(namespace, "okx") as reader:
        live_book(reader, SYMBOL)
        published = reader.view.rest_endpoints()
    assert published == {"okx": sim.endpoints()["okx"][1].rstrip("/")}
    assert request(namespace, {"op": "status"}).get("sim_endpoints") is None  # nothing else to learn it from
    with Client(namespace, rest_fallback=True) as c:
        top = c.top("okx", "ETH/USDT")  # not subscribed: served by REST, from the simulator
        assert top.source == "rest" and 0 < top.bid < top.ask
        trades = c.recent_trades("okx", "ETH/USDT", 5)
        assert trades.source == "rest" and len(trades.records) > 0
        assert c.statistics().rest_reads == 2 and c.statistics().rest_failures == 0


# --------------------------------------------------------------------------- perpetual data (layout 1.4)
def test_perp_data_is_live_under_an_engine_and_stale_at_once_when_its_feed_is_killed(sim, run, namespace):
    """`mdengine run` carries a perpetual's perp data by default (perp = true); a kill -9 of the feed makes the
    record stale with the books' reason, never dead data served as live; perp = false leaves it empty."""
    slow_restart = RESTART.replace("backoff_initial_s = 0.1", "backoff_initial_s = 2.0").replace(
        "backoff_max_s = 0.5", "backoff_max_s = 2.0")
    perp = "BTC/USDT:USDT"
    engine = run(slow_restart + exchange_toml("okx", sim, [perp]))
    with attach(namespace, "okx") as reader, Client(namespace) as c:
        live_book(reader, perp)
        p = wait_for(lambda: (x := c.perp("okx", perp)) and not x.stale and x.open_interest > 0 and x, LIVE_S,
                     "live perp stats")
        assert p.mark_price > 0 and p.index_price > 0 and p.next_funding_ns > time.time_ns()
        [pid] = engine.feed_pids()
        os.kill(pid, signal.SIGKILL)
        p = wait_for(lambda: (x := c.perp("okx", perp)).stale and x, 5.0, "stale perp stats")
        assert "died" in p.reason or "gone" in p.reason, p


def test_perp_false_leaves_the_perp_record_empty(sim, run, namespace):
    perp = "BTC/USDT:USDT"
    run(RESTART + exchange_toml("okx", sim, [perp], perp=False))
    with attach(namespace, "okx") as reader, Client(namespace) as c:
        live_book(reader, perp)
        time.sleep(1.0)  # OKX pushes mark-price every 200 ms when it is subscribed
        p = c.perp("okx", perp)
        assert p.stale and p.state == "empty" and math.isnan(p.mark_price), p
