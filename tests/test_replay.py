"""Record a simulated Binance session with a real feed process, replay it with `mdengine replay`, and check that
the replayed engine publishes exactly the books the recording implies at the same update ids."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges import get_adapter
from mdengine.recording.export import BookUpdate, Rebuild
from mdengine.recording.reader import RecordingReader
from mdengine.recording.replay import prepare_replay
from mdengine.store import SegmentReader, shm

CTX = mp.get_context("spawn")
DEPTH = 20
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
        except Exception:  # noqa: BLE001 - not there yet
            v = None
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _live_ids(namespace: str) -> dict[str, int] | None:
    r = SegmentReader(namespace, "binance")
    try:
        hs = {s: r.book(s, market="spot").header() for s in SYMBOLS}
        return {s: h.update_id for s, h in hs.items()} if all(h.state_name == "live" for h in hs.values()) else None
    finally:
        r.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A ~2 s Binance spot session against the simulator, recorded by the feed's own Recorder tap."""
    from mdengine.feed.process import run_feed
    from mdengine.sim import Simulator

    d = tmp_path_factory.mktemp("rec")
    ns = "trec" + str(os.getpid())
    sim = Simulator(seed=5, rate_hz=20.0, exchanges=["binance-spot"], symbols=list(SYMBOLS)).start()
    cfg = ExchangeConfig(name="binance", symbols=[f"{s[:3]}/USDT" for s in SYMBOLS], markets=["spot"],
                         book_depth=DEPTH, book_capacity=DEPTH, record_dir=str(d),
                         endpoints=get_adapter("binance").sim_endpoints(sim.endpoints()), heartbeat_interval_s=0.1)
    proc = CTX.Process(target=run_feed, args=(ns, cfg), kwargs={"log_level": "WARNING"}, daemon=True)
    proc.start()
    try:
        _until(lambda: _live_ids(ns), 60, "live books in the recorded session")
        time.sleep(2.0)  # the session's length: ~40 book messages per symbol at 20 Hz
    finally:
        proc.terminate()  # SIGTERM: the feed stops its loop and closes the recorder (last frame flushed)
        proc.join(20)
        if proc.is_alive():
            proc.kill()
        sim.stop()
        for name in shm.list_names(ns):
            shm.unlink(name)
    (name,) = os.listdir(d)
    return str(d / name)


def _reference(path: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Top-DEPTH books per (symbol, update id), from the recording fed through the adapter directly."""
    rb = Rebuild(path)
    out = {}
    for it in rb:
        if isinstance(it, BookUpdate):
            book = rb.adapter.books[it.key]
            out[(it.key[1], it.update_id)] = (np.array(book.bids.top(DEPTH)).reshape(-1, 2),
                                              np.array(book.asks.top(DEPTH)).reshape(-1, 2))
    return out



def stop_replay(proc: subprocess.Popen, ns: str) -> tuple[str, str]:
    """Stop an `mdengine replay` process as Ctrl-C would (killed if it hangs), unlink what it left in `ns`, and
    return its output."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for name in shm.list_names(ns):
        shm.unlink(name)
    return out, err

def test_recording_of_a_live_feed_has_every_kind_and_the_instrument_lists(recorded):
    r = RecordingReader(recorded)
    recs = list(r)
    assert recorded.endswith(".jsonl.zst") and not r.truncated and r.bad_lines == 0
    kinds = {x.kind for x in recs}
    assert {"connect", "send", "recv", "http"} <= kinds
    assert all(x.exchange == "binance" and x.ts_ns > 0 for x in recs)
    assert any("/api/v3/exchangeInfo" in x.url for x in recs if x.kind == "http")
    assert sum("/api/v3/depth" in x.url for x in recs if x.kind == "http") >= 2


def test_replay_publishes_the_recorded_books_at_the_same_update_ids(recorded, tmp_path):
    ref = _reference(recorded)
    last = {s: max(u for (n, u) in ref if n == s) for s in SYMBOLS}
    ns = "trep" + str(os.getpid())
    cmd = [sys.executable, "-m", "mdengine", "replay", recorded, "--speed", "1", "--namespace", ns,
           "--seconds", "60", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    try:
        reader = _until(lambda: SegmentReader(ns, "binance"), 60, "the replay's segment")
        try:
            books = _until(lambda: {s: reader.book(s, market="spot") for s in SYMBOLS}, 60, "the symbols")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any((s, last[s]) not in seen for s in SYMBOLS):
                for s, b in books.items():
                    snap = b.snapshot(DEPTH)
                    if snap.header.state_name == "live":
                        seen[(s, snap.update_id)] = (snap.bids, snap.asks)
                time.sleep(0.001)
        finally:
            reader.close()
    finally:
        out, err = stop_replay(proc, ns)
    assert proc.returncode == 0, err
    assert all((s, last[s]) in seen for s in SYMBOLS), "the replay never reached the recording's last update"
    assert len(ref) >= 40 and len(seen) >= 10  # sampled while replaying at the recorded pace
    for key, (bids, asks) in seen.items():
        assert key in ref, f"{key} was published by the replay but never by the recorded session"
        rb, ra = ref[key]
        assert np.array_equal(bids, rb) and np.array_equal(asks, ra), key


def test_prepare_replay_moves_simulator_urls_onto_real_hosts(recorded, tmp_path):
    plan = prepare_replay(recorded, str(tmp_path / "plain.jsonl"))
    assert plan.exchange == "binance" and plan.keys == [("spot", s) for s in SYMBOLS]
    urls = {x.url.split("/")[2] for x in RecordingReader(plan.path)}
    assert urls == {"stream.binance.com", "api.binance.com"}
