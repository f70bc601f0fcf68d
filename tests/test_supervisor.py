"""The supervisor as a real process (`python -m mdengine run`) with real feed processes against the simulator.

Each test gets its own namespace and supervisor; the simulator (okx and bybit only, to keep the two shared
cores free) is shared by the module. Timings are shrunk with RestartPolicy fields in the config file.
"""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from mdengine.engine.control import ControlError, is_running, request
from mdengine.exchanges import get_adapter
from mdengine.sim import Simulator
from mdengine.store import LayoutError, SegmentNotFound, SegmentReader, list_names
from mdengine.store import layout as L

pytestmark = pytest.mark.slow
STALL_AFTER_S = 1.5
LIVE_TIMEOUT_S = 30.0  # first sync on a loaded 2-core machine: spawn, instruments over REST, snapshot


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=3, exchanges=["okx", "bybit"], rate_hz=10.0) as s:
        yield s


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def exchange_toml(name, sim, symbols, **extra):
    eps = get_adapter(name).sim_endpoints(sim.endpoints())
    lines = ["[[exchanges]]", f'name = "{name}"', f"symbols = {json.dumps(symbols)}",
             "endpoints = {" + ", ".join(f'{k} = "{v}"' for k, v in eps.items()) + "}",
             "max_symbols = 8", "book_capacity = 20", "book_depth = 20", "trade_capacity = 256",
             "heartbeat_interval_s = 0.2"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


class Engine:
    """A supervisor process on a config file; stopped (and its log shown on failure) by the fixture."""

    def __init__(self, namespace, tmp_path, toml, *args):
        self.namespace = namespace
        self.config = tmp_path / "engine.toml"
        self.config.write_text(toml)
        self.log_path = tmp_path / "supervisor.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - the child writes to it until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "mdengine", "run", "--config", str(self.config), *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: is_running(namespace) or self.proc.poll() is not None, 30, "the supervisor to listen")
        assert self.proc.poll() is None, self.log_text()

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def status(self):
        return request(self.namespace, {"op": "status"})

    def feed(self, exchange):
        return next(f for f in self.status()["feeds"] if f["exchange"] == exchange)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_engine(namespace, tmp_path):
    engines = []

    def start(toml, *args):
        engine = Engine(namespace, tmp_path, f'namespace = "{namespace}"\n' + toml, *args)
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        pids = []
        try:
            pids = [f["pid"] for f in engine.status()["feeds"] if f["pid"]]
        except ControlError:
            pass
        engine.stop(signal.SIGTERM)
        for pid in pids:  # never leave a feed behind, whatever happened
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(engine.log_text())  # pytest shows it only if the test failed


RESTART = f"""
[restart]
backoff_initial_s = 0.1
backoff_max_s = 0.5
stall_after_s = {STALL_AFTER_S}
max_restarts = 5
window_s = 60
"""


def attach(namespace, exchange):
    """A reader of the segment, once the supervisor has created it (it listens first: the lock)."""
    def try_attach():
        try:
            return SegmentReader(namespace, exchange)
        except (SegmentNotFound, LayoutError):  # not there yet, or being initialised
            return None

    return wait_for(try_attach, LIVE_TIMEOUT_S, f"segment {exchange}")


def live_book(reader, symbol):
    def check():
        try:
            book = reader.book(symbol)
        except KeyError:
            return None
        return book if book.header().state == L.BookState.LIVE else None

    return wait_for(check, LIVE_TIMEOUT_S, f"{reader.exchange} {symbol} to be live")


def replaced(engine, old_pid, timeout):
    return wait_for(lambda: (p := engine.feed("okx")["pid"]) not in (None, old_pid) and p, timeout, "a new feed")


def test_killed_then_stalled_feed_is_restarted_and_readers_keep_their_handles(sim, start_engine, namespace):
    engine = start_engine(RESTART + exchange_toml("okx", sim, ["BTC/USDT"]))
    reader = attach(namespace, "okx")  # opened before the kills, used after them
    try:
        book = live_book(reader, "BTC/USDT")
        before = book.header()
        old_pid = engine.feed("okx")["pid"]
        assert reader.view.writer_pid == old_pid and reader.writer_alive()

        # kill -9: restarted as a death (last_exit says signal 9, below), not as a stall; the book goes stale, then
        # live again under a new generation. (Quiet: replaced within ~0.3 s; the 10 s bound is only a timeout.)
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: not reader.writer_alive() or book.header().state != L.BookState.LIVE, 10, "staleness")
        new_pid = replaced(engine, old_pid, 10)
        wait_for(lambda: (h := book.header()).state == L.BookState.LIVE and h.generation > before.generation,
                 LIVE_TIMEOUT_S, "the book to be live again")
        assert reader.view.writer_pid == new_pid and reader.writer_alive()
        assert book.header().version > before.version
        bid, _, ask, _ = book.top()
        assert 0 < bid < ask
        feed = wait_for(lambda: (f := engine.feed("okx"))["state"] == "running" and f, 5, "state running")
        assert feed["restarts"] == 1 and "signal 9" in feed["last_exit"]

        # SIGSTOP (never SIGCONT): detected by the heartbeat, killed, replaced.
        generation = book.header().generation
        os.kill(new_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        third_pid = replaced(engine, new_pid, STALL_AFTER_S + 10)
        assert time.monotonic() - stopped >= STALL_AFTER_S * 0.9  # by the heartbeat, not by accident
        assert not psutil.pid_exists(new_pid)
        feed = engine.feed("okx")
        assert feed["restarts"] == 2 and "stalled" in feed["last_exit"]
        wait_for(lambda: (h := book.header()).state == L.BookState.LIVE and h.generation > generation,
                 LIVE_TIMEOUT_S, "the book to be live after the stall")
        assert reader.view.writer_pid == third_pid and reader.heartbeat_age_ns() < 2e9
    finally:
        reader.close()


def subscribe_from_another_process(namespace, exchange, symbol, timeout=30.0):
    code = ("import json, sys; from mdengine.engine.control import request; "
            f"print(json.dumps(request({namespace!r}, {{'op': 'subscribe', 'exchange': {exchange!r}, "
            f"'symbol': {symbol!r}, 'market': None}}, timeout={timeout})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_dynamic_subscribe_status_and_graceful_shutdown(sim, start_engine, namespace, capsys):
    # bybit is configured (endpoints) without symbols: its feed starts on the first subscribe.
    engine = start_engine(RESTART + exchange_toml("okx", sim, ["BTC/USDT"]) + exchange_toml("bybit", sim, []))
    okx = attach(namespace, "okx")
    try:
        live_book(okx, "BTC/USDT")
        assert list_names(namespace) == [f"mde-{namespace}-okx"]

        answer = subscribe_from_another_process(namespace, "okx", "ETH/USDT:USDT")
        assert answer["ok"] is True, answer
        assert (answer["symbol"], answer["native"], answer["exchange"]) == ("ETH/USDT:USDT", "ETH-USDT-SWAP", "okx")
        assert answer["live"] is True  # the answer waited for the first book
        live_book(okx, "ETH/USDT:USDT")
        assert subscribe_from_another_process(namespace, "okx", "ETH/USDT:USDT")["live"] is True  # already there
    finally:
        okx.close()

    # A symbol in the instrument list that the exchange itself refuses: the answer says so, with its message.
    sim.inject("okx", "refuse_subscription", symbol="ETH-USDT")
    answer = subscribe_from_another_process(namespace, "okx", "ETH/USDT")
    assert answer["ok"] is False and "ETH/USDT" in answer["error"], answer
    assert answer["error"] != "subscribe ETH/USDT: " and "60018" in answer["error"], answer

    answer = subscribe_from_another_process(namespace, "okx", "NOPE/USDT")
    assert answer["ok"] is False and "NOPE/USDT" in answer["error"]
    answer = subscribe_from_another_process(namespace, "kraken", "BTC/USDT")
    assert answer["ok"] is False and "kraken" in answer["error"]

    answer = subscribe_from_another_process(namespace, "bybit", "BTC/USDT")
    assert answer["ok"] is True, answer
    with attach(namespace, "bybit") as bybit:
        live_book(bybit, "BTC/USDT")

    # A second supervisor on the namespace refuses, and leaves the first one alone.
    second = subprocess.run([sys.executable, "-m", "mdengine", "run", "--config", str(engine.config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"a supervisor is already running for namespace {namespace!r}" in second.stderr
    assert engine.status()["ok"] and len(list_names(namespace)) == 2

    from mdengine.engine import cli

    pids = {f["exchange"]: f["pid"] for f in engine.status()["feeds"]}
    assert cli.main(["status", "--namespace", namespace, "--json", "--interval", "0.2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["supervisor"]["pid"] == engine.proc.pid
    feeds = {f["exchange"]: f for f in shown["feeds"]}
    assert {(f["exchange"], f["pid"], f["state"], f["restarts"]) for f in feeds.values()} == \
        {("okx", pids["okx"], "running", 0), ("bybit", pids["bybit"], "running", 0)}
    assert [(s["symbol"], s["state"]) for s in feeds["okx"]["symbols"]] == \
        [("BTC/USDT", "live"), ("ETH/USDT:USDT", "live")]
    assert all(s["age_s"] < 10 for s in feeds["okx"]["symbols"])

    # Graceful shutdown: feeds stopped, segments unlinked, the namespace free again.
    assert engine.stop(signal.SIGTERM) == 0
    assert list_names(namespace) == []
    assert not any(psutil.pid_exists(p) for p in pids.values())
    assert not is_running(namespace)


def test_crash_loop_gives_up_on_that_feed_only(sim, start_engine, namespace):
    policy = RESTART.replace("max_restarts = 5", "max_restarts = 1")
    engine = start_engine(policy + exchange_toml("okx", sim, ["BTC/USDT"]) + exchange_toml("bybit", sim, ["BTC/USDT"]))
    for _ in range(2):
        pid = wait_for(lambda: (f := engine.feed("okx"))["state"] in ("starting", "running") and f["pid"], 10,
                       "an okx feed")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: engine.feed("okx")["pid"] != p, 10, "the supervisor to notice")
    feed = wait_for(lambda: (f := engine.feed("okx"))["state"] == "failed" and f, 10, "okx to be marked failed")
    assert feed["pid"] is None and feed["restarts"] == 1
    assert "crash loop, giving up" in engine.log_text()
    bybit = engine.feed("bybit")
    assert bybit["state"] in ("starting", "running") and psutil.pid_exists(bybit["pid"])
    answer = request(namespace, {"op": "subscribe", "exchange": "okx", "symbol": "ETH/USDT"})
    assert answer["ok"] is False and "failed" in answer["error"]


def test_run_sim_serves_real_books_then_keep_segments_and_clean(start_engine, namespace, capsys):
    engine = start_engine(RESTART + '[[exchanges]]\nname = "okx"\nsymbols = ["BTC/USDT"]\n', "--sim",
                          "--sim-rate", "5", "--keep-segments")
    assert engine.status()["sim"] is True
    with attach(namespace, "okx") as reader:
        book = live_book(reader, "BTC/USDT")
        bid, _, ask, _ = book.top()
        assert 0 < bid < ask
    assert engine.stop(signal.SIGINT) == 0
    assert list_names(namespace) == [f"mde-{namespace}-okx"]  # kept for post-mortem
    from mdengine.engine import cli

    assert cli.main(["clean", "--namespace", namespace]) == 0
    assert "unlinked" in capsys.readouterr().out
    assert list_names(namespace) == []


def test_feeds_stop_when_the_supervisor_is_killed_and_clean_removes_its_segments(sim, start_engine, namespace,
                                                                                 capsys):
    engine = start_engine(RESTART + exchange_toml("okx", sim, ["BTC/USDT"]))
    with attach(namespace, "okx") as reader:
        live_book(reader, "BTC/USDT")
        pid = engine.feed("okx")["pid"]
        engine.stop(signal.SIGKILL)  # no cleanup at all
        wait_for(lambda: not psutil.pid_exists(pid), 15, "the orphaned feed to stop by itself")
        assert not reader.writer_alive()
    assert not is_running(namespace)  # the abstract socket died with the process
    assert list_names(namespace) == [f"mde-{namespace}-okx"]
    from mdengine.engine import cli

    assert cli.main(["clean", "--namespace", namespace]) == 0
    assert f"mde-{namespace}-okx: unlinked" in capsys.readouterr().out
    assert list_names(namespace) == []
