"""The C store writes (`_speedups.latch_publish`, `ring_append`) write what the pure-Python ones write.

Two segments get the same publishes, one through each writer; every slot's latch counter, both book copies,
its trade ring and the segment's counters must be equal afterwards, but for the publish timestamps (each
writer reads the clock itself: checked to be recent instead).
"""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdengine.store import SegmentWriter, shm
from mdengine.store import layout as L
from mdengine.store import writer as W

pytestmark = pytest.mark.skipif(W._latch_publish is None, reason="mdengine._speedups is not built")

CAP = 6
level = st.tuples(st.floats(1, 1e6, allow_nan=False), st.floats(0.001, 1e3, allow_nan=False))
book = st.tuples(st.lists(level, max_size=CAP + 2), st.lists(level, max_size=CAP + 2))
trade = st.tuples(st.integers(0, 2**62), st.integers(0, 2**62), st.floats(allow_nan=False), st.floats(0, 1e9),
                  st.integers(-2**63, 2**63 - 1), st.sampled_from([-1, 0, 1]), st.integers(0, 255))
op = st.one_of(
    st.tuples(st.just("trades"), st.integers(0, 1), st.lists(trade, max_size=20)),
    st.tuples(st.just("book"), st.integers(0, 1), book, st.integers(0, 2**40), st.integers(0, 2**62)),
    st.tuples(st.just("header"), st.integers(0, 1), st.integers(0, 2**40), st.integers(0, 2**62)),
    st.tuples(st.just("state"), st.integers(0, 1), st.integers(0, len(L.BookState.NAMES) - 1)),
)


def _segment_words(w: SegmentWriter) -> dict:
    """What a reader can see of the books: per slot the latch word and both copies (pub_ts masked)."""
    out = {"publish_counter": w.q[L.PUBLISH_COUNTER_OFFSET >> 3],
           "last_latency": w.q[L.COUNTER_OFFSETS["last_latency_ns"] >> 3] > 0}
    g = w.view.geometry
    for slot in range(2):
        base = w.view.slot_base(slot)
        copies = []
        for c in (g.copy0, g.copy1):
            raw = bytearray(w.buf[base + c:base + c + g.copy_length])
            pub = struct.unpack_from("<q", raw, 24)[0]
            assert pub == 0 or abs(pub - time.time_ns()) < 60e9  # a real clock reading
            raw[24:32] = bytes(8)
            copies.append(bytes(raw))
        ring = base + g.ring
        out[slot] = (w.q[(base + L.SLOT_BOOK_SEQ_OFFSET) >> 3], copies,
                     w.q[(base + L.STAT_OFFSETS["last_latency_ns"]) >> 3] > 0,
                     bytes(w.buf[ring:ring + L.RING_HEADER_LENGTH + g.trade_capacity * L.TRADE_RECORD_LENGTH]))
    return out


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, min_size=1, max_size=30))
def test_c_and_python_latches_write_the_same_segment(ops):
    writers = []
    try:
        for native in (True, False):
            ns = f"tnat{int(native)}{abs(hash(str(ops))) % 10**5}"
            w = SegmentWriter(ns, "okx", create=True, native=native, max_symbols=2, book_capacity=CAP,
                              trade_capacity=8)
            for sym in ("A", "B"):
                w.add_symbol("SPOT", sym, sym)
            writers.append(w)
        for o in ops:
            for w in writers:
                if o[0] == "trades":
                    assert w.append_trades(o[1], iter(o[2])) == min(len(o[2]), 8)
                elif o[0] == "book":
                    _, slot, (bids, asks), uid, recv = o
                    w.publish_book(slot, sorted(bids, reverse=True), sorted(asks), update_id=uid, recv_ts_ns=recv)
                elif o[0] == "header":
                    _, slot, uid, recv = o
                    if w.last_book(slot) is not None:
                        w.publish_header(slot, update_id=uid, recv_ts_ns=recv)
                else:
                    w.publish_state(o[1], o[2])
            assert _segment_words(writers[0]) == _segment_words(writers[1])
    finally:
        for w in writers:
            name = w.name
            w.close()
            shm.unlink(name)


def test_c_ring_append_checks_every_trade_before_the_first_store(namespace):
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=1, book_capacity=CAP, trade_capacity=8)
    try:
        slot = w.add_symbol("SPOT", "A", "A")
        ring = w.view.slot_base(slot) + w.view.geometry.ring
        before = bytes(w.buf[ring:ring + L.RING_HEADER_LENGTH + 8 * L.TRADE_RECORD_LENGTH])
        good = (1, 2, 3.0, 4.0, 5, 1, 0)
        for bad in ((1, 2, 3.0, 4.0, 5, 300, 0), (1, 2, "x", 4.0, 5, 1, 0), (1, 2, 3.0), 7):
            with pytest.raises((TypeError, OverflowError)):
                w.append_trades(slot, [good, bad])
        assert bytes(w.buf[ring:ring + L.RING_HEADER_LENGTH + 8 * L.TRADE_RECORD_LENGTH]) == before
        assert w.append_trades(slot, [list(good)]) == 1  # a list does as a tuple (as on the Python path)
        assert w.append_trades(slot, [good] * 11) == 8  # a batch over the ring keeps its newest 8
        assert w.q[(ring + L.RING_TAIL_OFFSET) >> 3] == 12
    finally:
        w.close()


def test_c_latch_refuses_offsets_outside_the_segment(namespace):
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=1, book_capacity=CAP, trade_capacity=8)
    try:
        slot = w.add_symbol("SPOT", "A", "A")
        good = w._latch_offsets_of(slot)
        raw = w._staging(slot)
        size = len(w.buf)
        for bad in ((size,) + good[1:], good[:1] + (size - 64,) + good[2:], good[:3] + (3,) + good[4:]):
            with pytest.raises(ValueError):
                W._latch_publish(w.buf, raw, bad, 64 + CAP * 32, 1, 0, 0, 0, 0, 0, 0, 1, 1)
        with pytest.raises(ValueError):  # longer than the staging copy
            W._latch_publish(w.buf, raw, good, len(raw) + 32, 1, 0, 0, 0, 0, 0, 0, 1, 1)
    finally:
        w.close()
