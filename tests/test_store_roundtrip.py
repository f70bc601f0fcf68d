"""Property tests of the store's encoding, in one process: books, directory and ring cursor arithmetic."""

from __future__ import annotations

import math
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.store import (
    BookBuffer,
    BookFlags,
    BookState,
    MarketKind,
    SegmentReader,
    SegmentWriter,
    SlotState,
    StoreFull,
    layout,
)

CAP = 12
EX = "rt"
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

prices = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False)
qtys = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)
sides = st.lists(st.tuples(prices, qtys), max_size=CAP + 3)


@pytest.fixture
def pair(namespace):
    w = SegmentWriter(namespace, EX, create=True, max_symbols=4, book_capacity=CAP, trade_capacity=16)
    seg = SegmentReader(namespace, EX)
    yield w, seg
    seg.close()
    w.close()


def _padding_ok(levels: np.ndarray, n: int, col: int) -> bool:
    return bool(np.isnan(levels[n:, col]).all() and (levels[n:, col + 1] == 0).all())


@SETTINGS
@given(books=st.lists(st.tuples(sides, sides), min_size=1, max_size=6), read_depth=st.integers(1, CAP + 4))
def test_published_books_read_back_equal_clamped_and_padded(pair, books, read_depth):
    w, seg = pair
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    book = seg.book("BTC/USDT")
    full, part = BookBuffer(CAP), BookBuffer(read_depth)
    for update_id, (bids, asks) in enumerate(books, start=1000):  # deep then shallow must not leave residue
        w.publish_book(slot, bids, asks, update_id=update_id, exch_ts_ns=5, recv_ts_ns=6)
        nb, na = min(len(bids), CAP), min(len(asks), CAP)
        snap = book.snapshot()
        assert snap.bids.tolist() == [list(x) for x in bids[:CAP]]
        assert snap.asks.tolist() == [list(x) for x in asks[:CAP]]
        h = snap.header
        assert (h.update_id, h.exch_ts_ns, h.recv_ts_ns, h.n_bids, h.n_asks, h.state) == \
            (update_id, 5, 6, nb, na, BookState.LIVE)
        assert bool(h.flags & BookFlags.TRUNCATED) == (len(bids) > CAP or len(asks) > CAP)
        assert bool(h.flags & BookFlags.CROSSED) == bool(nb and na and bids[0][0] >= asks[0][0])
        book.read_into(full)
        assert _padding_ok(full.levels, nb, 0) and _padding_ok(full.levels, na, 2)
        book.read_into(part)
        d = min(read_depth, CAP)
        assert (part.n_bids, part.n_asks) == (min(nb, d), min(na, d))
        assert part.bids.tolist() == [list(x) for x in bids[:min(nb, d)]]
        top = book.top()
        want = (*(bids[0] if nb else (math.nan, 0.0)), *(asks[0] if na else (math.nan, 0.0)))
        assert np.array_equal(np.array(top), np.array(want), equal_nan=True)
        assert book.top_full()[:10] == tuple(h.__dict__.values())


@pytest.mark.parametrize("limit", [0, -1])
def test_a_retry_limit_below_one_is_refused(pair, limit):
    """Every read makes one attempt before it counts retries, so a limit that allows none is a configuration error."""
    w, seg = pair
    with pytest.raises(ValueError, match="retry_limit must be at least 1"):
        SegmentReader(seg.namespace, EX, retry_limit=limit)


def test_publish_levels_rejects_books_that_do_not_fit(pair):
    w, _ = pair
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    with pytest.raises(ValueError, match="do not fit capacity 12"):
        w.publish_levels(slot, [1.0, 1.0, 2.0, 1.0] * (CAP + 1), 1, 1, update_id=1)
    with pytest.raises(ValueError, match="3 bids"):
        w.publish_levels(slot, [1.0, 1.0, 2.0, 1.0] * 2, 3, 1, update_id=1)


def test_state_changes_republish_the_same_levels(pair):
    w, seg = pair
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    book = seg.book("BTC/USDT")
    w.publish_state(slot, BookState.SYNCING)
    assert book.header().state == BookState.SYNCING and book.header().n_bids == 0
    w.publish_book(slot, [(10.0, 1.0)], [(11.0, 2.0)], update_id=9)
    w.publish_state(slot, BookState.RESYNCING)
    h = book.header()
    assert (h.state, h.update_id, h.version, book.top()) == (BookState.RESYNCING, 9, 3, (10.0, 1.0, 11.0, 2.0))


ascii_text = st.text(alphabet=string.ascii_letters + string.digits + "/-_:.", min_size=1)


@SETTINGS
@given(entries=st.lists(st.tuples(ascii_text.filter(lambda s: len(s) <= layout.DIR_MARKET_LENGTH),
                                  ascii_text.filter(lambda s: len(s) <= layout.DIR_NATIVE_LENGTH),
                                  ascii_text.filter(lambda s: len(s) <= layout.DIR_UNIFIED_LENGTH),
                                  st.sampled_from([MarketKind.SPOT, MarketKind.LINEAR, MarketKind.INVERSE]),
                                  prices, prices, prices),
                        min_size=1, max_size=4, unique_by=lambda e: (e[0], e[1])))
def test_directory_entries_round_trip(namespace, entries):
    ex = "d" + format(abs(hash(tuple(entries))) % 10**6, "06d")
    with SegmentWriter(namespace, ex, create=True, max_symbols=4, book_capacity=2, trade_capacity=2) as w, \
            SegmentReader(namespace, ex) as seg:
        for i, (market, native, unified, kind, tick, lot, cval) in enumerate(entries):
            assert w.add_symbol(market, native, unified, kind=kind, tick_size=tick, lot_size=lot,
                                contract_value=cval) == i
        got = [(e.market, e.native, e.unified, e.kind, e.tick_size, e.lot_size, e.contract_value)
               for e in seg.symbols()]
        assert got == entries
        assert all(e.state == SlotState.ACTIVE and e.added_ns > 0 for e in seg.symbols())
        market, native = entries[0][:2]
        assert w.add_symbol(market, native, "AGAIN") == 0  # the same (market, native) keeps its slot
        w.remove_symbol(0)
        assert seg.view.entry(0).state == SlotState.REMOVED and len(seg.symbols()) == len(entries) - 1
        assert len(seg.symbols(active_only=False)) == len(entries)
    from mdengine.store import unlink

    unlink(w.name)


def test_directory_rejects_long_names_and_a_full_segment(pair):
    w, seg = pair
    with pytest.raises(ValueError, match="longer than 32 bytes"):
        w.add_symbol("spot", "X" * 33, "X/Y")
    for i in range(4):
        w.add_symbol("spot", f"S{i}", f"S{i}/USDT")
    with pytest.raises(StoreFull, match="all 4 symbol slots"):
        w.add_symbol("spot", "S4", "S4/USDT")
    with pytest.raises(KeyError, match="has: S0/USDT, S1/USDT"):
        seg.book("NOPE")


def test_counters_stats_heartbeat_and_errors_are_visible_to_readers(pair):
    w, seg = pair
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    w.count("gaps", 3)
    w.set_counter("reconnects", 7)
    w.stat(slot, "resyncs", 2)
    w.record_error("x" * 100)
    w.heartbeat(123)
    w.set_running()
    c = seg.view.counters()
    assert (c["gaps"], c["reconnects"], c["errors"]) == (3, 7, 1)
    assert seg.view.stats(slot)["resyncs"] == 2
    assert seg.view.last_error()[1] == "x" * 100  # whole (1.3: the text area), not cut at the header's 56 bytes
    head = layout.LAST_ERROR_TEXT_OFFSET
    assert bytes(seg.view.buf[head:head + layout.LAST_ERROR_TEXT_LENGTH]) == b"x" * layout.LAST_ERROR_TEXT_LENGTH
    assert seg.view.heartbeat_ns == 123 and seg.heartbeat_age_ns(200) == 77
    assert seg.writer_alive() and seg.view.writer_state == layout.WriterState.RUNNING


def test_a_long_error_is_kept_whole_up_to_the_text_area_and_cut_between_characters(pair):
    w, seg = pair
    w.record_error("feed: " + "é" * 600)  # 1206 bytes of UTF-8
    text = seg.view.last_error()[1]
    assert text == "feed: " + "é" * ((layout.LAST_ERROR_LONG_LENGTH - 6) // 2)
    w.record_error("short")
    assert seg.view.last_error()[1] == "short"


def test_freshness_words_and_rest_endpoints_are_published(pair):
    w, seg = pair
    w.set_freshness(1.5, 0.2)
    w.set_rest_endpoints({"okx": "http://127.0.0.1:1234"})
    assert (seg.view.stale_after_ns, seg.view.heartbeat_interval_ns) == (1_500_000_000, 200_000_000)
    assert seg.view.rest_endpoints() == {"okx": "http://127.0.0.1:1234"}
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    w.confirm(slot, 50)
    w.confirm(slot, 40)  # never goes back
    assert seg.view.stats(slot)["confirmed_ns"] == 50


# --------------------------------------------------------------------------- ring cursor arithmetic
def _trade(i: int) -> tuple:
    return (i, i, i * 0.25, 1.0, i, 1, 0)


ops = st.lists(st.one_of(st.tuples(st.just("write"), st.integers(1, 40)),
                         st.tuples(st.just("poll"), st.sampled_from([None, 1, 3, 8, 16, 100]))), max_size=40)


@SETTINGS
@given(ops=ops, start=st.sampled_from(["latest", "earliest", 0, -5]), prefill=st.integers(0, 40))
def test_ring_returns_every_trade_once_in_order_or_counts_it_lost(pair, ops, start, prefill):
    w, seg = pair
    cap = 16
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    written = w.view.q[(w.view.slot_base(slot) + w.view.geometry.ring + layout.RING_TAIL_OFFSET) >> 3]

    def write(m: int) -> None:
        nonlocal written
        assert w.append_trades(slot, [_trade(written + j) for j in range(m)]) == min(m, cap)
        written += m

    write(prefill) if prefill else None
    if start == -5:  # an absolute cursor five trades back, as a saved cursor would be
        start = max(0, written - 5)
    tr = seg.trades("BTC/USDT", start=start)
    if start == "latest":
        assert tr.cursor == written
    elif start == "earliest":
        assert tr.cursor == max(0, written - cap)
    else:
        assert tr.cursor == start
    returned, lost_total, first = [], 0, tr.cursor
    buffers = {n: tr.new_buffer(n) for n in (1, 3, 8, 16, 100)}

    def poll(size):
        nonlocal lost_total
        before = tr.cursor
        recs, lost = tr.poll(None if size is None else buffers[size])
        # Exactly the records a lapped reader could not have: those older than written - cap.
        assert lost == max(0, written - cap - before)
        want = list(range(before + lost, before + lost + len(recs)))
        assert recs["index"].tolist() == want and recs["trade_id"].tolist() == want
        assert recs["price"].tolist() == [i * 0.25 for i in want]
        returned.extend(want)
        lost_total += lost

    for op, arg in ops:
        write(arg) if op == "write" else poll(arg)
    while tr.cursor < written:
        poll(100)
    assert returned == sorted(set(returned))
    assert lost_total + len(returned) == written - first
    assert tr.lost == lost_total
    recs, lost = tr.poll()
    assert len(recs) == 0 and lost == 0
    with pytest.raises(ValueError, match="start must be"):
        seg.trades("BTC/USDT", start=-1)
