"""Futex wake-ups on the publish counter: a reader process sleeping on its read-only mapping is woken by the
writer's wake_readers(), not by its timeout; no wake, no return before the timeout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from mdengine.store import futex
from mdengine.store import layout as L
from mdengine.store.reader import SegmentReader
from mdengine.store.writer import SegmentWriter

pytestmark = pytest.mark.skipif(not futex.AVAILABLE, reason="no futex syscall on this platform")

_SLEEPER = textwrap.dedent("""
    import sys, time
    from mdengine.store import futex
    from mdengine.store import layout as L
    from mdengine.store.reader import SegmentReader
    readers = [SegmentReader(sys.argv[1], ex) for ex in sys.argv[3:]]
    words = [(futex.address_of(r.view.buf, L.PUBLISH_COUNTER_OFFSET), r.view.publish_counter) for r in readers]
    print("ready", flush=True)
    t0 = time.monotonic()
    if sys.argv[2] == "one":
        futex.wait(words[0][0], words[0][1], 10.0)
    else:
        futex.wait_any(words, time.monotonic_ns() + 10 * 10**9)
    print(time.monotonic() - t0, flush=True)
""")


def _sleeper(namespace: str, mode: str, exchanges: list[str]) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _SLEEPER, namespace, mode, *exchanges], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # let it reach the kernel: a wake before the sleep would be a value change, also fine
    return p


def _writer(namespace: str, exchange: str) -> SegmentWriter:
    w = SegmentWriter(namespace, exchange, create=True, max_symbols=2, book_capacity=5, trade_capacity=16)
    w.set_running()
    return w


@pytest.mark.parametrize("mode", ["one", "any"])
def test_a_publish_and_wake_readers_wake_a_sleeping_reader_process(namespace, mode):
    writers = [_writer(namespace, ex) for ex in ("ex0", "ex1")]
    try:
        slot = writers[-1].add_symbol("spot", "BTCUSDT", "BTC/USDT")
        p = _sleeper(namespace, mode, ["ex1"] if mode == "one" else ["ex0", "ex1"])
        writers[-1].publish_book(slot, [(1.0, 1.0)], [(2.0, 1.0)], update_id=1)
        writers[-1].wake_readers()
        slept = float(p.stdout.readline())
        p.wait(10)
        assert slept < 5.0, f"the reader slept {slept:.2f} s: the wake-up did not reach it"
    finally:
        for w in writers:
            w.close()


def test_no_wake_means_the_reader_sleeps_to_its_timeout(namespace):
    w = _writer(namespace, "ex")
    r = SegmentReader(namespace, "ex")
    try:
        addr = futex.address_of(r.view.buf, L.PUBLISH_COUNTER_OFFSET)
        seen = r.view.publish_counter
        t0 = time.monotonic()
        futex.wait(addr, seen, 0.2)
        assert time.monotonic() - t0 >= 0.15
        # a value that is no longer there: the kernel refuses to sleep
        t0 = time.monotonic()
        futex.wait(addr, seen + 1, 5.0)
        assert time.monotonic() - t0 < 1.0
        # wake_readers() with nothing published since the last call makes no system call and wakes nobody
        w.wake_readers()
        assert w._woken == r.view.publish_counter
    finally:
        r.close()
        w.close()


def test_writer_stores_its_minor_version_and_readers_see_it(namespace):
    w = _writer(namespace, "ex")
    r = SegmentReader(namespace, "ex")
    try:
        assert r.view.layout_version == (L.LAYOUT_MAJOR, L.LAYOUT_MINOR) and L.LAYOUT_MINOR >= 1
    finally:
        r.close()
        w.close()
