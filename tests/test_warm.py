"""The warm-up pass (Adapter.warm + Publisher.warm): it replays a frame on scratch copies, and changes nothing.

Every adapter is driven live by the simulator's pure wire formats (perf/feed_throughput.Harness: the adapter, a
Publisher on a real segment, an in-memory exchange); after each frame the real path took, the same frame is
replayed as a warm-up pass. The adapter's whole state (pickled), the segment's bytes and the books must be
exactly as before, and the replay must have taken the hot path (a BookChanged for every book frame, on a copy
equal to the real book, no verdict against it), or it would warm nothing.
"""

from __future__ import annotations

import os
import pickle
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.book import LocalBook
from mdengine.events import BookChanged, BookInvalid, ProtocolError, TradesReceived
from mdengine.store import layout as L

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "perf"))
from feed_throughput import Harness  # noqa: E402

EXCHANGES = ("binance", "okx", "bybit", "bitget")


def _levels(book: LocalBook) -> tuple:
    return tuple((s.keys, s.qty, s.raw) for s in (book.bids, book.asks))


@pytest.fixture(params=EXCHANGES)
def live(request):
    h = Harness(request.param)
    h.start_simulated()
    assert h.live == len(h.keys) > 0, f"{request.param}: {h.live} of {len(h.keys)} books live"
    yield h
    h.close()


def test_a_warm_pass_replays_every_frame_on_copies_and_changes_nothing(live):
    h = live
    a, pub = h.adapter, h.pub
    book_frames = replayed_books = real_trades = replayed_trades = passes = 0
    for conn, text in h.render(25):
        passes += 1
        real = a.on_frame(conn, text, time.time_ns())
        h.handle(real)
        state, segment = pickle.dumps(a), bytes(h.writer.buf)
        books = {k: _levels(b) for k, b in a.books.items()}
        events = a.warm(conn, text, time.time_ns())
        pub.warm(events)
        assert pickle.dumps(a) == state, f"{h.exchange}: warm() changed the adapter on {text[:120]}"
        counters = L.COUNTER_OFFSETS["warm_passes"]
        after = bytearray(h.writer.buf)
        after[counters:counters + 8] = segment[counters:counters + 8]  # the one word a pass may change
        assert bytes(after) == segment, f"{h.exchange}: warm() wrote into the feed's segment"
        assert {k: _levels(b) for k, b in a.books.items()} == books
        assert not [e for e in events if not isinstance(e, BookChanged | TradesReceived)], (text[:120], events)
        real_books = {e.key for e in real if isinstance(e, BookChanged)}
        warm_books = {e.key: e.book for e in events if isinstance(e, BookChanged)}
        assert real_books <= set(warm_books), f"{h.exchange}: a frame the feed published was not replayed"
        for key in real_books:  # the replay took the hot path to the very book the feed holds
            assert warm_books[key] is not a.books[key] and _levels(warm_books[key]) == books[key]
            assert warm_books[key].update_id == a.books[key].update_id
        book_frames += len(real_books)
        replayed_books += len(warm_books)
        real_trades += sum(len(e.trades) for e in real if isinstance(e, TradesReceived))
        replayed_trades += sum(len(e.trades) for e in events if isinstance(e, TradesReceived))
    assert book_frames > 20
    assert replayed_trades == real_trades
    assert h.writer.view.counters()["warm_passes"] == passes
    # The scratch publisher really published (into its own memory): one publish per book or trade batch.
    scratch = pub._scratch
    assert scratch is not None and scratch.w.view.publish_counter >= replayed_books
    assert scratch.w.name.startswith("(private")


def _a_replayable_book_frame(h: Harness) -> tuple[str, str]:
    """Deliver rendered frames until one that a warm-up pass replays as a book."""
    for conn, text in h.render(10):
        h.deliver([(conn, text)])
        if any(isinstance(e, BookChanged) for e in h.adapter.warm(conn, text, 1)):
            return conn, text
    raise AssertionError(f"{h.exchange}: no book frame to replay in 10 steps")


def test_warm_pass_count_is_the_only_trace_in_the_segment(live):
    h = live
    conn, text = _a_replayable_book_frame(h)
    before = h.writer.view.counters()
    for _ in range(3):
        h.pub.warm(h.adapter.warm(conn, text, time.time_ns()))
    after = h.writer.view.counters()
    assert after.pop("warm_passes") == before.pop("warm_passes") + 3
    assert after == before


def test_frames_that_are_not_market_data_replay_nothing(live):
    h = live
    a = h.adapter
    conn = next(iter(h.sessions))
    state = pickle.dumps(a)
    for text in ('{"op":"pong","success":true}', '{"event":"subscribe","arg":{"channel":"books"}}',
                 '{"id":1,"result":null}', "pong", "{", "[1,2]", '{"topic":"orderbook.50.NOPE","data":{}}',
                 '{"arg":{"channel":"books","instId":"NOPE","instType":"SPOT"},"data":[{}]}',
                 '{"stream":"nope@depth@100ms","data":{}}'):
        assert a.warm(conn, text, 1) == [], text
        assert a.warm("no-such-conn", text, 1) == []
    assert pickle.dumps(a) == state


def test_a_symbol_that_is_not_live_is_not_replayed(live):
    """A resyncing book has nothing worth warming, and replaying onto it could only mislead."""
    h = live
    a = h.adapter
    conn, text = _a_replayable_book_frame(h)
    a.on_close(conn, "test")
    state = pickle.dumps(a)
    assert a.warm(conn, text, 1) == []
    assert pickle.dumps(a) == state


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_damaged_frames_never_raise_and_never_change_state(live, data):
    """Warm-up may be handed any frame the loop saw, including broken ones: no exception, no state change."""
    h = live
    a = h.adapter
    if not hasattr(h, "_samples"):
        h._samples = h.render(3)
    conn, text = data.draw(st.sampled_from(h._samples))
    cut = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(max_size=4))
    damaged = text[:cut] + junk + text[cut + len(junk):]
    state = pickle.dumps(a)
    events = a.warm(conn, damaged, 1)
    assert isinstance(events, list)
    assert not [e for e in events if isinstance(e, ProtocolError)]
    assert pickle.dumps(a) == state
    for e in events:
        if isinstance(e, BookInvalid):  # a verdict on the scratch copy only: the real book is still live
            assert a.is_live(e.key)


# ----------------------------------------------------------------------------- a real feed process
def _feed(ns: str, sim, warm_ms: float):
    import multiprocessing as mp

    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges import get_adapter
    from mdengine.feed.loop import LoopOptions
    from mdengine.feed.process import run_feed

    cfg = ExchangeConfig(name="bybit", symbols=["BTC/USDT", "BTC/USDT:USDT"], markets=["spot", "linear"],
                         book_depth=20, book_capacity=20, trade_capacity=1024, heartbeat_interval_s=0.2,
                         endpoints=get_adapter("bybit").sim_endpoints(sim.endpoints()), warm_interval_ms=warm_ms)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=run_feed, args=(ns, cfg), daemon=True, name=f"feed-warm-{warm_ms}",
                       kwargs={"ready": ready, "log_level": "WARNING", "options": LoopOptions(warm_for_s=0.5)})
    proc.start()
    assert ready.wait(30)
    return proc


def _until(pred, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return v


@pytest.mark.slow
def test_a_feed_warms_while_idle_keeps_its_books_exact_and_sleeps_after_silence(monkeypatch):
    # The pass replays frames that took the Python path; with the fast lane most frames do not (they are not
    # replayed: tests/test_fastlane.py), so these feeds run without it.
    monkeypatch.setenv("MDENGINE_NO_LANE", "1")
    from mdengine.sim import Simulator
    from mdengine.store import shm
    from mdengine.store.layout import BookState, WriterState
    from mdengine.store.reader import SegmentReader

    with Simulator(seed=3, exchanges=["bybit"], symbols=["BTC/USDT", "BTC/USDT:USDT"], rate_hz=20.0) as sim:
        warm_ns, cold_ns = "tw" + os.urandom(3).hex(), "tc" + os.urandom(3).hex()
        procs = [_feed(warm_ns, sim, 1.0), _feed(cold_ns, sim, 0.0)]
        readers = [SegmentReader(warm_ns, "bybit"), SegmentReader(cold_ns, "bybit")]
        try:
            def live(r):
                try:
                    return all(r.book(s).header().state == BookState.LIVE for s in ("BTC/USDT", "BTC/USDT:USDT"))
                except KeyError:
                    return False

            for r in readers:
                _until(lambda r=r: live(r), "books live")
            warm, cold = (r.view.counters for r in readers)
            p0, t0 = warm()["warm_passes"], time.monotonic()
            time.sleep(1.0)
            p1, t1 = warm()["warm_passes"], time.monotonic()
            # 20 frames/s per symbol leaves the loop idle most of the time: a pass about every ms of it (several
            # hundred a second on a quiet machine); the bound says it warms, with 10x room for a busy one.
            assert (p1 - p0) / (t1 - t0) > 20, (p0, p1)
            assert cold()["warm_passes"] == 0
            # The books a warm feed publishes are still exactly the market's.
            sim.pause()
            for sym, key in (("BTC/USDT", "spot/BTCUSDT"), ("BTC/USDT:USDT", "linear/BTCUSDT")):
                def exact(sym=sym, key=key):
                    seq, bids, asks = sim.model_book("bybit", key, 20)
                    snap = readers[0].book(sym).snapshot(20)
                    return (snap.state == BookState.LIVE and snap.update_id == seq
                            and [tuple(x) for x in snap.bids.tolist()] == [(float(p), float(q)) for p, q in bids]
                            and [tuple(x) for x in snap.asks.tolist()] == [(float(p), float(q)) for p, q in asks])
                _until(exact, f"{sym} == the simulator's book", 5.0)
            # Silent for longer than warm_for_s (0.5 s here): the loop stops warming and sleeps.
            time.sleep(1.0)
            quiet = warm()["warm_passes"]
            time.sleep(0.5)
            assert warm()["warm_passes"] == quiet
            for name in ("gaps", "resyncs", "checksum_failures", "malformed", "errors"):
                assert warm()[name] == cold()[name] == 0, name
            sim.resume()
            _until(lambda: warm()["warm_passes"] > quiet + 50, "warming again once frames flow")
            # SIGTERM: a clean stop (the private segment is closed too) leaves the writer STOPPED, not RUNNING
            for p in procs:
                p.terminate()
                p.join(10)
            for r in readers:
                assert r.view.writer_state == WriterState.STOPPED, r.view.writer_state
        finally:
            sim.resume()
            for r in readers:
                r.close()
            for p in procs:
                p.terminate()
                p.join(10)
            for ns in (warm_ns, cold_ns):
                for name in shm.list_names(ns):
                    shm.unlink(name)
