"""Client against a real writer in another process: reads, trade cursors, staleness, wait().

Before a feed exists these drive a SegmentWriter from a helper process over a pipe (no mocks: real
processes and shared memory). test_client_engine.py runs the same client against a feed on the simulator.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

from mdengine.client import BookBuffer, Client, EngineNotFound, NoPerpData, StaleBookError, Top, UnknownSymbol
from mdengine.store import SegmentWriter, layout

CTX = mp.get_context("spawn")


def _host_main(conn) -> None:
    """Stand-in feeds: owns SegmentWriters (any namespace) and obeys (command, key, args) messages.

    Heartbeats every writer that is not silenced every 50 ms, like a feed's loop.
    """
    writers: dict[str, SegmentWriter] = {}
    silent: set[str] = set()
    lock = threading.Lock()

    def beat() -> None:
        while True:
            time.sleep(0.05)
            with lock:
                for key, w in writers.items():
                    if key not in silent:
                        w.heartbeat()

    threading.Thread(target=beat, daemon=True).start()
    conn.send("ready")
    while True:
        cmd, key, args = conn.recv()
        if cmd == "die":
            os._exit(0)
        with lock:
            try:
                conn.send(_host_command(writers, silent, cmd, key, args))
            except Exception as e:  # noqa: BLE001 - reported to the test
                conn.send(e)


def _host_command(writers: dict, silent: set, cmd: str, key: str, args: tuple):
    if cmd == "open":
        namespace, exchange, trade_capacity = args
        w = writers[key] = SegmentWriter(namespace, exchange, create=True, max_symbols=8, book_capacity=20,
                                         trade_capacity=trade_capacity)
        w.set_running()
        return None
    w = writers[key]
    if cmd == "add":
        return w.add_symbol(*args[:3], kind=args[3])
    if cmd == "book":
        slot, bids, asks, uid, recv_ns, delay, *wake = args
        if delay:
            time.sleep(delay)
        w.publish_book(slot, bids, asks, update_id=uid, recv_ts_ns=recv_ns or time.time_ns())
        if wake != [False]:
            w.wake_readers()  # as the feed loop does after each round
    elif cmd == "state":
        w.publish_state(*args)
        w.wake_readers()
    elif cmd == "trades":
        slot, trades, delay = args
        if delay:
            time.sleep(delay)
        n = w.append_trades(slot, trades)
        w.wake_readers()
        return n
    elif cmd == "perp":
        slot, fields, recv_ns = args
        w.publish_perp(slot, recv_ts_ns=recv_ns or time.time_ns(), exch_ts_ns=time.time_ns(), **fields)
        w.wake_readers()
    elif cmd == "liquidations":
        slot, liquidations = args
        n = w.append_liquidations(slot, liquidations)
        w.wake_readers()
        return n
    elif cmd == "silent":
        silent.add(key)
    elif cmd == "close":
        writers.pop(key).close()
    return None


class Host:
    """A process holding stand-in feeds; one per test session (spawning one per test is slow)."""

    def __init__(self) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=_host_main, args=(child,), daemon=True)
        self.proc.start()
        self.lock = threading.Lock()
        assert self.conn.poll(60), "writer host did not start"
        assert self.conn.recv() == "ready"

    def call(self, cmd: str, key: str, *args):
        with self.lock:
            self.conn.send((cmd, key, args))
            assert self.conn.poll(20), f"writer host did not answer {cmd}"
            answer = self.conn.recv()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join(10)


class Feed:
    """One stand-in feed (a SegmentWriter for namespace/exchange) living in a Host process."""

    def __init__(self, host: Host, namespace: str, exchange: str = "binance", trade_capacity: int = 64) -> None:
        self.host = host
        self.key = f"{namespace}/{exchange}"
        self.open = True
        host.call("open", self.key, namespace, exchange, trade_capacity)

    def call(self, cmd: str, *args):
        return self.host.call(cmd, self.key, *args)

    def add(self, market: str, native: str, unified: str, kind: int = layout.MarketKind.SPOT) -> int:
        return self.call("add", market, native, unified, kind)

    def book(self, slot: int, bid: float, ask: float, uid: int, recv_ns: int = 0, levels: int = 5,
             delay: float = 0.0, wake: bool = True) -> None:
        """Publish a book; wake=False skips the futex wake-up the feed loop makes after each round."""
        bids = [(bid - i, 1.0 + i) for i in range(levels)]
        asks = [(ask + i, 2.0 + i) for i in range(levels)]
        self.call("book", slot, bids, asks, uid, recv_ns, delay, wake)

    def trades(self, slot: int, ids: range, delay: float = 0.0) -> int:
        now = time.time_ns()
        return self.call("trades", slot, [(now, now, 100.0 + i, 0.5, i, 1 if i % 2 else -1, 0) for i in ids], delay)

    def stop(self) -> None:
        """Detach cleanly (the segment says the writer stopped)."""
        if self.open and self.host.proc.is_alive():
            self.call("close")
        self.open = False


@pytest.fixture(scope="session")
def writer_host():
    h = Host()
    yield h
    h.stop()


@pytest.fixture
def feed(writer_host, namespace):
    f = Feed(writer_host, namespace)
    yield f
    f.stop()


def _until(pred, timeout: float = 10.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------- attach and lookup
def test_Client_without_engine_raises_EngineNotFound(namespace):
    with pytest.raises(EngineNotFound, match=namespace):
        Client(namespace)


def test_Client_reads_top_snapshot_and_read_into(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 100.0, 101.0, uid=7)
    with Client(namespace) as c:
        book = c.book("binance", "BTC/USDT")
        top = book.top()
        assert isinstance(top, Top)
        assert (top.bid, top.bid_qty, top.ask, top.ask_qty) == (100.0, 1.0, 101.0, 2.0)
        assert (top.update_id, top.state, top.source, top.stale) == (7, "live", "shm", False)
        assert 0 <= top.age_s < 5
        snap = book.snapshot(3)
        assert snap.bids.tolist() == [[100.0, 1.0], [99.0, 2.0], [98.0, 3.0]]
        assert snap.asks.tolist() == [[101.0, 2.0], [102.0, 3.0], [103.0, 4.0]]
        assert (snap.update_id, snap.state, snap.source, snap.exchange, snap.symbol) == (
            7, "live", "shm", "binance", "BTC/USDT")
        buf = BookBuffer(4)
        levels = buf.levels
        assert book.read_into(buf) is buf and buf.levels is levels  # reused, not reallocated
        assert (buf.n_bids, buf.n_asks, buf.source, buf.state, buf.stale) == (4, 4, "shm", "live", False)
        assert buf.bids[:, 0].tolist() == [100.0, 99.0, 98.0, 97.0]
        assert book.header().update_id == 7
        feed.book(slot, 200.0, 201.0, uid=8)
        assert book.top().bid == 200.0 and book.read_into(buf).bids[0, 0] == 200.0
        assert c.book("binance", "BTC/USDT") is book  # handles are cached


def test_book_by_native_id_prefers_spot_and_unified_is_exact(namespace, feed):
    spot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    perp = feed.add("usdm", "BTCUSDT", "BTC/USDT:USDT", layout.MarketKind.LINEAR)
    feed.book(spot, 100.0, 101.0, uid=1)
    feed.book(perp, 500.0, 501.0, uid=2)
    with Client(namespace) as c:
        assert c.top("binance", "BTCUSDT").bid == 100.0
        assert c.top("binance", "btcusdt").bid == 100.0
        assert c.top("binance", "BTC/USDT:USDT").bid == 500.0
        assert c.top("binance", "BTCUSDT", market="usdm").bid == 500.0
        assert [e.unified for e in c.symbols("binance")] == ["BTC/USDT", "BTC/USDT:USDT"]


def test_unknown_symbol_and_exchange_raise_with_what_exists(namespace, feed):
    feed.add("spot", "BTCUSDT", "BTC/USDT")
    with Client(namespace) as c:
        with pytest.raises(UnknownSymbol, match=r"DOGE/USDT.*has: BTC/USDT"):
            c.book("binance", "DOGE/USDT")
        with pytest.raises(UnknownSymbol, match=r"'okx'.*has: binance"):
            c.book("okx", "BTC-USDT")


def test_Client_picks_up_symbols_and_segments_that_appear_later(namespace, feed):
    with Client(namespace) as c:
        with pytest.raises(UnknownSymbol):
            c.book("binance", "ETH/USDT")
        slot = feed.add("spot", "ETHUSDT", "ETH/USDT")
        feed.book(slot, 10.0, 11.0, uid=1)
        assert c.top("binance", "ETH/USDT").bid == 10.0
        okx = Feed(feed.host, namespace, "okx")
        try:
            s2 = okx.add("spot", "BTC-USDT", "BTC/USDT")
            okx.book(s2, 1.0, 2.0, uid=3)
            assert c.top("okx", "BTC/USDT").ask == 2.0
            assert c.exchanges == ["binance", "okx"]
        finally:
            okx.stop()


# ----------------------------------------------------------------------------- trades
def test_trades_returns_only_unseen_trades_per_cursor(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.trades(slot, range(0, 3))
    with Client(namespace) as c:
        first = c.trades("binance", "BTC/USDT")
        assert len(first.records) == 0 and first.source == "shm"  # a late joiner starts at the latest trade
        feed.trades(slot, range(3, 8))
        got = c.trades("binance", "BTC/USDT")
        assert got.records["trade_id"].tolist() == [3, 4, 5, 6, 7] and got.lost == 0
        assert got.records["side"].tolist() == [1, -1, 1, -1, 1]
        assert len(c.trades("binance", "BTC/USDT").records) == 0
        early = c.trade_stream("binance", "BTC/USDT", start="earliest")
        assert early.poll().records["trade_id"].tolist() == list(range(8))  # independent cursor
        assert c.recent_trades("binance", "BTC/USDT", 2).records["trade_id"].tolist() == [6, 7]


def test_trade_stream_lapped_by_writer_counts_lost(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    with Client(namespace) as c:
        s = c.trade_stream("binance", "BTC/USDT")
        feed.trades(slot, range(0, 100))  # the ring holds 64
        got = s.poll()
        assert got.lost == 36 and got.records["trade_id"].tolist() == list(range(36, 100))
        assert s.statistics().lost == 36 and s.statistics().received == 64
        assert c.statistics().trades_lost == 36  # summed over every stream of the client
        c.trades("binance", "BTC/USDT")
        feed.trades(slot, range(100, 200))
        assert c.trades("binance", "BTC/USDT").lost == 36
        assert s.poll().lost == 36
        assert c.statistics().trades_lost == 108


# ----------------------------------------------------------------------------- staleness
def test_state_not_live_is_stale_and_max_age_raises(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 100.0, 101.0, uid=1)
    feed.call("state", slot, layout.BookState.RESYNCING)
    with Client(namespace) as c:
        top = c.top("binance", "BTC/USDT")
        assert top.stale and top.state == "resyncing" and top.bid == 100.0  # flagged, still served
    with Client(namespace, max_age=5.0) as c:
        with pytest.raises(StaleBookError, match="resyncing"):
            c.top("binance", "BTC/USDT")
        with pytest.raises(StaleBookError):
            c.book("binance", "BTC/USDT").snapshot()
        with pytest.raises(StaleBookError):
            c.book("binance", "BTC/USDT").read_into(BookBuffer(5))
        assert c.statistics().stale_reads == 3


def test_data_older_than_max_age_raises(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 100.0, 101.0, uid=1, recv_ns=time.time_ns() - 10 * 10**9)
    with Client(namespace) as c:
        top = c.top("binance", "BTC/USDT")
        assert top.age_s >= 10 and not top.stale  # no max_age: old but live data is served as is
    with Client(namespace, max_age=2.0, heartbeat_timeout=30.0) as c:
        with pytest.raises(StaleBookError, match="older than max_age") as info:
            c.top("binance", "BTC/USDT")
        assert info.value.age_s >= 10
        feed.book(slot, 100.0, 101.0, uid=2)
        assert c.top("binance", "BTC/USDT").update_id == 2


def test_silent_writer_makes_a_live_book_stale(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 100.0, 101.0, uid=1)
    with Client(namespace, heartbeat_timeout=0.3) as c:
        book = c.book("binance", "BTC/USDT")
        assert not book.top().stale
        feed.call("silent")
        top = _until(lambda: (t := book.top()).stale and t, what="stale after silence")
        assert top.state == "live"  # the book's own state still says live


def test_dead_writer_makes_book_stale(namespace):
    host = Host()  # its own process: this test kills it
    try:
        feed = Feed(host, namespace)
        slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
        feed.book(slot, 100.0, 101.0, uid=1)
        with Client(namespace, heartbeat_timeout=60.0) as c:
            book = c.book("binance", "BTC/USDT")
            assert not book.top().stale
            host.conn.send(("die", "", ()))
            host.proc.join(10)
            top = _until(lambda: (t := book.top()).stale and t, what="stale after the writer died")
            assert top.state == "live" and c._segments["binance"].reason == "the feed process is gone"
    finally:
        host.stop()


def test_stopped_writer_makes_book_stale(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 100.0, 101.0, uid=1)
    feed.stop()
    with Client(namespace, max_age=60.0) as c, pytest.raises(StaleBookError, match="feed stopped"):
        c.top("binance", "BTC/USDT")


# ----------------------------------------------------------------------------- wait
def test_wait_wakes_on_book_publish(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    other = feed.add("spot", "ETHUSDT", "ETH/USDT")
    feed.book(slot, 100.0, 101.0, uid=1)
    with Client(namespace) as c:
        book = c.book("binance", "BTC/USDT")
        assert c.wait(0.05, [book]) == []  # nothing new since the handle was made
        for spin in (False, True):
            feed.book(other, 1.0, 2.0, uid=5)  # another symbol: must not wake a wait on `book`
            assert c.wait(0.05, [book], spin=spin) == []
            publisher = threading.Thread(target=feed.call, args=("book", slot, [(150.0, 1.0)], [(151.0, 1.0)], 9, 0,
                                                                  0.2))
            publisher.start()
            t0 = time.monotonic()
            assert c.wait(10.0, [book], spin=spin) == [book]
            assert time.monotonic() - t0 < 5
            assert book.top().bid == 150.0
            publisher.join(10)
        assert c.wait(0.01, [book]) == []  # reported once


def test_wait_on_trades_and_on_whole_namespace(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    with Client(namespace) as c:
        c.wait(0.01)  # absorb the publishes made so far
        stream = c.trade_stream("binance", "BTC/USDT")
        publisher = threading.Thread(target=feed.trades, args=(slot, range(3), 0.1))
        publisher.start()
        assert c.wait(10.0, [stream]) == [stream]
        publisher.join(10)
        assert c.wait(0.01, [stream]) == [stream]  # level-triggered until polled
        assert len(stream.poll().records) == 3
        assert c.wait(0.01, [stream]) == []
        assert c.wait(1.0) == ["binance"]  # the trade publish, seen by the namespace-wide wait
        assert c.wait(0.01) == []
        feed.book(slot, 1.0, 2.0, uid=1)
        assert c.wait(5.0) == ["binance"]


def test_wait_times_out(namespace, feed):
    feed.add("spot", "BTCUSDT", "BTC/USDT")
    with Client(namespace) as c:
        c.wait(0.01)
        for spin in (False, True):
            t0 = time.monotonic()
            assert c.wait(0.2, spin=spin) == []
            assert 0.15 < time.monotonic() - t0 < 5


_WAITER = textwrap.dedent("""
    import sys
    from mdengine.client import Client
    c = Client(sys.argv[1])
    c.wait(0.01)
    print("ready", flush=True)
    print(c.wait(8.0, spin=sys.argv[2] == "spin"), flush=True)
""")


# The system call a blocked thread sits in (/proc/PID/syscall starts with its number; "running" if on a CPU).
_FUTEX_SYSCALL = {"x86_64": "202", "aarch64": "98"}.get(os.uname().machine)


def _idle_waiter(namespace: str, mode: str, env: dict[str, str], window: float = 2.0) -> tuple[float, list[str]]:
    """An idle waiter's CPU share over `window` seconds and the system calls sampled while it waits."""
    p = subprocess.Popen([sys.executable, "-c", _WAITER, namespace, mode], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, **env})
    try:
        assert p.stdout.readline().strip() == "ready"
        # from "ready" to the wait itself takes a busy machine some time: sample the wait, not the way into it
        settle = time.monotonic() + 10
        while _FUTEX_SYSCALL is not None and "MDENGINE_NO_FUTEX" not in env and time.monotonic() < settle:
            with open(f"/proc/{p.pid}/syscall") as f:
                if f.read().split()[0] == _FUTEX_SYSCALL:
                    break
            time.sleep(0.005)
        proc = psutil.Process(p.pid)
        t = proc.cpu_times()
        w0, c0 = time.monotonic(), t.user + t.system
        calls = []
        for _ in range(20):
            time.sleep(window / 20)
            with open(f"/proc/{p.pid}/syscall") as f:
                calls.append(f.read().split()[0])
        t = proc.cpu_times()
        return (t.user + t.system - c0) / (time.monotonic() - w0), calls
    finally:
        p.kill()
        p.wait(10)


@pytest.mark.skipif(_FUTEX_SYSCALL is None, reason="futex system call number known for x86-64 and arm64 only")
def test_blocking_wait_sleeps_in_a_futex_and_uses_almost_no_cpu_when_idle(namespace, feed):
    feed.add("spot", "BTCUSDT", "BTC/USDT")
    share, calls = _idle_waiter(namespace, "block", {})
    # Behaviour, not speed: the waiter sits in the futex system call most of the time (it leaves it every 100 ms
    # for its slow path, and on a busy machine waits its turn for a core after each wake, so a sample may catch it
    # elsewhere), and an idle sleeper's CPU time does not grow with the machine's load.
    assert calls.count(_FUTEX_SYSCALL) > len(calls) // 2, calls
    assert share < 0.05, f"idle blocking wait used {share:.1%} of a core"
    # Negative control: where futexes are off, the same waiter polls with sleeps and is never in a futex.
    share, calls = _idle_waiter(namespace, "block", {"MDENGINE_NO_FUTEX": "1"}, 1.0)
    assert _FUTEX_SYSCALL not in calls, calls


_LATENCY_WAITER = textwrap.dedent("""
    import sys, time
    from mdengine.client import Client
    c = Client(sys.argv[1], max_sleep=0.05)
    book = c.book("binance", "BTC/USDT")
    c.wait(0.01, [book])
    print("ready", flush=True)
    lat = []
    for _ in range(int(sys.argv[2])):
        if c.wait(5.0, [book]):
            lat.append(time.time_ns() - book.header().recv_ts_ns)
    print(" ".join(str(x / 1e6) for x in lat), flush=True)
""")


def _blocking_wake_ms(namespace: str, feed, slot: int, wake: bool, gap: float) -> list[float]:
    """ms from each publish to a blocking wait() in another process returning; publishes `gap` s apart."""
    n = 15
    p = subprocess.Popen([sys.executable, "-c", _LATENCY_WAITER, namespace, str(n)], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        for i in range(n):
            feed.book(slot, 100.0 + i, 101.0 + i, uid=100 + i, delay=gap, wake=wake)
        return [float(x) for x in p.stdout.readline().split()]
    finally:
        p.kill()
        p.wait(10)


def test_blocking_wait_is_woken_by_the_publish_not_by_its_next_poll(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 99.0, 100.0, uid=1)
    woken = _blocking_wake_ms(namespace, feed, slot, wake=True, gap=0.03)
    # Negative control: publishes without the writer's futex wake-up. A sleeping waiter then sees each one only
    # when its sleep times out for the slow path, 100 ms after its wait began: 130 ms apart, so none coalesce and
    # the lateness steps by 70 ms modulo 100 (0-100 ms, evenly; under 10 ms at most 2 times in 15). Woken by the
    # publish it returns within 0.2-0.5 ms on a quiet machine: the 10 ms bound leaves over 20x for a busy one.
    unwoken = _blocking_wake_ms(namespace, feed, slot, wake=False, gap=0.13)
    assert len(woken) == len(unwoken) == 15
    median = [sorted(lat)[7] for lat in (woken, unwoken)]
    assert median[0] < 10.0 <= median[1], f"median ms late: woken {woken}, not woken {unwoken}"


def test_blocking_wait_falls_back_to_polling_when_the_futex_call_fails(namespace, feed, caplog):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 99.0, 100.0, uid=1)
    with Client(namespace) as c:
        book = c.book("binance", "BTC/USDT")
        c.wait(0.01, [book])
        c._segments["binance"].wake_addr = 8  # an unmapped address: the kernel answers EFAULT
        publisher = threading.Thread(target=feed.call, args=("book", slot, [(150.0, 1.0)], [(151.0, 1.0)], 9, 0,
                                                              0.2))
        publisher.start()
        try:
            assert c.wait(10.0, [book]) == [book] and book.top().bid == 150.0
        finally:
            publisher.join(10)
        assert c._futex is False and "futex wait failed" in caplog.text


def test_read_into_does_not_allocate_arrays(namespace, feed):
    slot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    feed.book(slot, 100.0, 101.0, uid=1)
    with Client(namespace) as c:
        book, buf = c.book("binance", "BTC/USDT"), BookBuffer(10)
        book.read_into(buf)
        import tracemalloc

        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            book.read_into(buf)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown < 4096, f"1000 read_into calls kept {grown} bytes"
        assert not math.isnan(buf.bids[0, 0]) and np.all(buf.asks[:, 0] > buf.bids[:, 0].max())


# ----------------------------------------------------------------------------- perpetual data (layout 1.4)
def test_perp_reads_mark_funding_and_open_interest_with_freshness(namespace, feed):
    spot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    slot = feed.add("usdm", "BTCUSDT", "BTC/USDT:USDT", layout.MarketKind.LINEAR)
    with Client(namespace) as c:
        p = c.perp("binance", "BTC/USDT:USDT")
        assert p.stale and p.state == "empty" and p.reason == "no perp data published yet" and p.age_s == math.inf
        assert math.isnan(p.mark_price) and math.isnan(p.funding_rate) and p.next_funding_ns == 0  # not zeros
        feed.call("perp", slot, {"mark_price": 100.5, "index_price": 100.4, "funding_rate": 1e-4,
                                 "next_funding_ns": 1_700_000_000_000_000_000}, 0)
        p = c.perp("binance", "BTC/USDT:USDT")
        assert (p.mark_price, p.index_price, p.funding_rate, p.next_funding_ns) == \
            (100.5, 100.4, 1e-4, 1_700_000_000_000_000_000)
        assert math.isnan(p.next_funding_rate) and math.isnan(p.open_interest)  # absent, not zero
        assert not p.stale and p.state == "live" and 0 <= p.age_s < 5 and p.exch_ts_ns > 0
        feed.call("perp", slot, {"open_interest": 1234.5}, 0)
        p = c.perp("binance", "BTCUSDT", market="usdm")
        assert (p.mark_price, p.open_interest) == (100.5, 1234.5)
        with pytest.raises(NoPerpData, match="not a perpetual"):
            c.perp("binance", "BTC/USDT")
        with pytest.raises(NoPerpData, match="not a perpetual"):
            c.liquidations("binance", "BTC/USDT")
        assert spot != slot
    feed.call("perp", slot, {"mark_price": 101.0}, time.time_ns() - 10 * 10**9)
    with Client(namespace, max_age=2.0) as c, pytest.raises(StaleBookError, match="older than max_age"):
        c.perp("binance", "BTC/USDT:USDT")
    feed.stop()
    with Client(namespace) as c:
        p = c.perp("binance", "BTC/USDT:USDT")
        assert p.stale and p.reason == "the feed stopped" and p.mark_price == 101.0


def test_liquidations_return_new_records_once_and_count_the_lost(namespace, feed):
    slot = feed.add("usdm", "ETHUSDT", "ETH/USDT:USDT", layout.MarketKind.LINEAR)
    with Client(namespace) as c:
        assert len(c.liquidations("binance", "ETH/USDT:USDT").records) == 0
        now = time.time_ns()
        feed.call("liquidations", slot, [(now + i, now, 2000.0 + i, 0.1, 0, -1, 0) for i in range(3)])
        got = c.liquidations("binance", "ETH/USDT:USDT")
        assert list(got.records["price"]) == [2000.0, 2001.0, 2002.0] and got.lost == 0
        assert list(got.records["side"]) == [-1] * 3 and got.records["exch_ts_ns"][2] == now + 2
        assert len(c.liquidations("binance", "ETH/USDT:USDT").records) == 0
        cap = layout.DEFAULT_LIQUIDATION_CAPACITY
        feed.call("liquidations", slot, [(now, now, 1.0 + i, 1.0, 0, 1, 0) for i in range(cap + 5)])
        got = c.liquidations("binance", "ETH/USDT:USDT")
        assert got.lost == 5 and len(got.records) == cap and got.records["price"][0] == 6.0


def test_wait_wakes_on_a_perp_update_and_on_a_liquidation(namespace, feed):
    slot = feed.add("usdm", "SOLUSDT", "SOL/USDT:USDT", layout.MarketKind.LINEAR)
    with Client(namespace) as c:
        perp = c.perp_handle("binance", "SOL/USDT:USDT")
        liq = c.liquidation_stream("binance", "SOL/USDT:USDT")
        assert c.wait(0.05, [perp, liq]) == []
        feed.call("perp", slot, {"mark_price": 150.0}, 0)
        assert c.wait(5.0, [perp, liq]) == [perp]
        assert c.wait(0.05, [perp, liq]) == []
        now = time.time_ns()
        feed.call("liquidations", slot, [(now, now, 149.0, 3.0, 0, 1, 0)])
        assert c.wait(5.0, [perp, liq]) == [liq]
        assert liq.poll().records["qty"][0] == 3.0
        assert c.wait(0.05, [perp, liq]) == []


def test_fmz_GetFundings_reads_the_perp_record(namespace, feed):
    from mdengine.client.fmz import Exchange

    slot = feed.add("usdm", "BTCUSDT", "BTC/USDT:USDT", layout.MarketKind.LINEAR)
    feed.call("perp", slot, {"mark_price": 100.5, "index_price": 100.4, "funding_rate": 1e-4,
                             "next_funding_ns": 1_700_000_000_123_000_000, "open_interest": 7.0}, 0)
    with Client(namespace) as c:
        ex = Exchange("binance", "BTC_USDT.swap", client=c)
        (f,) = ex.GetFundings()
        assert (f["Symbol"], f["Rate"], f["Time"], f["Interval"]) == ("BTC_USDT.swap", 1e-4, 1_700_000_000_123, None)
        assert f["Info"]["MarkPrice"] == 100.5 and f["Info"]["OpenInterest"] == 7.0 and not f["Info"]["Stale"]
        assert f["Info"]["StaleFields"] == []


def test_status_shows_the_funding_rate_and_the_time_to_the_next_funding(namespace, feed):
    from mdengine.engine.status import StatusSampler, render_text

    spot = feed.add("spot", "BTCUSDT", "BTC/USDT")
    slot = feed.add("usdm", "BTCUSDT", "BTC/USDT:USDT", layout.MarketKind.LINEAR)
    feed.book(spot, 100.0, 101.0, 1)
    feed.book(slot, 100.0, 101.0, 1)
    next_ns = time.time_ns() + (2 * 3600 + 5 * 60 + 30) * 10**9
    feed.call("perp", slot, {"funding_rate": 1e-4, "next_funding_ns": next_ns}, 0)
    with StatusSampler(namespace) as sampler:
        status = sampler.sample()
    rows = {s["symbol"]: s for f in status["feeds"] for s in f["symbols"]}
    assert rows["BTC/USDT:USDT"]["funding_rate"] == 1e-4
    assert 2 * 3600 + 5 * 60 <= rows["BTC/USDT:USDT"]["next_funding_s"] <= 2 * 3600 + 5 * 60 + 30
    assert rows["BTC/USDT"]["funding_rate"] is None and rows["BTC/USDT"]["next_funding_s"] is None  # spot: none
    text = render_text(status)
    perp_line = next(line for line in text.splitlines() if "BTC/USDT:USDT" in line)
    assert perp_line.split()[-2:] == ["0.0100%", "2h05m"], perp_line
    assert next(line for line in text.splitlines() if "BTC/USDT " in line).split()[-2:] == ["-", "-"]
