"""Perpetual-futures data in the store (layout 1.4): the latched perp record and the liquidation ring."""

from __future__ import annotations

import math
import struct
import time

import pytest
import store_helpers as H

from mdengine.store import NoPerpData, SegmentReader, SegmentWriter, create_segment
from mdengine.store import layout as L


def _writer(namespace: str, **kw) -> tuple[SegmentWriter, int, int]:
    w = SegmentWriter(namespace, H.EXCHANGE, create=True, max_symbols=4, book_capacity=5, trade_capacity=16, **kw)
    spot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    perp = w.add_symbol(H.PERP_MARKET, H.PERP_NATIVE, H.PERP_UNIFIED, kind=L.MarketKind.LINEAR)
    return w, spot, perp


def test_a_perp_record_round_trips_and_partial_updates_merge(namespace):
    w, _, slot = _writer(namespace)
    with SegmentReader(namespace, H.EXCHANGE) as r:
        pr = r.perp(H.PERP_UNIFIED)
        rec = pr.read()
        assert rec[9] == L.BookState.EMPTY  # nothing published yet: the state says so (the client refuses it)
        w.publish_perp(slot, mark_price=100.5, funding_rate=1e-4, exch_ts_ns=5, recv_ts_ns=6)
        w.publish_perp(slot, index_price=100.25, open_interest=12.0, next_funding_ns=123)  # another channel
        mark, index, funding, next_rate, next_ns, oi, exch, recv, pub, state, gen, version, *groups = pr.read()
        assert (mark, index, funding, next_ns, oi) == (100.5, 100.25, 1e-4, 123, 12.0)
        assert math.isnan(next_rate)  # never published: absent, not faked
        assert (exch, recv, state, gen, version) == (5, 6, L.BookState.LIVE, w.generation, 2)
        assert pub > 0
        assert groups == [6, 0, 6, 0]  # (1.6) mark and funding came at 6; index and open interest carried no time
        fields = struct.unpack(L.PERP_STRUCT, bytes(r.view.buf[r.view.perp_base(slot) + L.PERP_COPY1_OFFSET:][
            :L.PERP_RECORD_LENGTH]))
        assert fields[:6] == (mark, index, funding, fields[3], next_ns, oi)  # copy 1 caught up
    w.close()


def test_each_field_group_keeps_its_own_receive_time_and_the_writer_publishes_their_bounds(namespace):
    """(1.6) A group's receive time moves only with a frame carrying (or confirming) it; the record's recv_ts_ns
    follows the latest frame; group_recv_ns dates a group without moving the record's time."""
    w, _, slot = _writer(namespace)
    w.set_perp_freshness({"index": 120.0, "funding": 180.0, "open_interest": 2.5})
    with SegmentReader(namespace, H.EXCHANGE) as r:
        pr = r.perp(H.PERP_UNIFIED)
        w.publish_perp(slot, mark_price=1.0, recv_ts_ns=10)
        w.publish_perp(slot, index_price=1.0, recv_ts_ns=20)
        w.publish_perp(slot, mark_price=1.5, recv_ts_ns=30)  # index goes quiet, mark goes on
        w.publish_perp(slot, open_interest=5.0, group_recv_ns=40)  # polled: the record's time stays
        rec = pr.read()
        assert rec[7] == 30 and rec[12:16] == (30, 20, 0, 40)
        w.publish_perp(slot, mark_price=2.0, recv_ts_ns=50, confirms=("index", "funding"))  # a delta vouching
        assert pr.read()[12:16] == (50, 50, 50, 40)
        w.publish_perp_state(slot, L.BookState.STALE)  # a state change keeps the times
        assert pr.read()[12:16] == (50, 50, 50, 40)
        bounds = struct.unpack_from(L.PERP_GROUP_STALE_MS_FORMAT, r.view.buf, L.PERP_MARK_STALE_MS_OFFSET)
        assert bounds == (0, 120_000, 180_000, 2500)  # ms; 0: mark has no bound of its own
        with pytest.raises(ValueError, match="unknown perp field groups"):
            w.set_perp_freshness({"oi": 1.0})
    w.close()


def test_liquidations_go_through_a_ring_with_a_cursor_and_a_lost_count(namespace):
    w, _, slot = _writer(namespace, liquidation_capacity=8)
    with SegmentReader(namespace, H.EXCHANGE) as r:
        lr = r.liquidations(H.PERP_UNIFIED)
        assert lr.capacity == 8
        w.append_liquidations(slot, [(i, i, 100.0 + i, 0.5, 0, -1, 0) for i in range(3)])
        recs, lost = lr.poll()
        assert list(recs["price"]) == [100.0, 101.0, 102.0] and lost == 0 and set(recs["side"]) == {-1}
        assert len(lr.poll()[0]) == 0
        w.append_liquidations(slot, [(i, i, 200.0 + i, 1.0, 0, 1, 0) for i in range(20)])  # laps the reader
        recs, lost = lr.poll()
        assert lost == 12 and list(recs["price"]) == [200.0 + i for i in range(12, 20)]
        trades = r.trades("BTC/USDT:USDT", start="earliest").poll()[0]
        assert len(trades) == 0  # liquidations never land in the trade ring
    w.close()


def test_a_spot_symbol_has_no_perp_record_and_asking_is_a_clear_error(namespace):
    w, spot, _ = _writer(namespace)
    with SegmentReader(namespace, H.EXCHANGE) as r:
        with pytest.raises(NoPerpData, match="not a perpetual"):
            r.perp("BTC/USDT")
        with pytest.raises(NoPerpData, match="not a perpetual"):
            r.liquidations("BTC/USDT")
    with pytest.raises(ValueError, match="not a perpetual"):
        w.publish_perp(spot, mark_price=1.0)
    with pytest.raises(ValueError, match="not a perpetual"):
        w.append_liquidations(spot, [(1, 1, 1.0, 1.0, 0, 1, 0)])
    assert not w.has_perp(spot)
    w.close()


def test_a_segment_without_a_perp_area_says_so(namespace):
    """A segment created by a writer before 1.4 has 0 in PERP_AREA_OFFSET: the perp data is refused by name."""
    w, _, slot = _writer(namespace)
    w.publish_perp(slot, mark_price=1.0)
    struct.pack_into("<III", w.buf, L.PERP_AREA_OFFSET_OFFSET, 0, 0, 0)
    with SegmentReader(namespace, H.EXCHANGE) as r:
        with pytest.raises(NoPerpData, match="no perpetual data"):
            r.perp(H.PERP_UNIFIED)
        assert r.book(H.PERP_UNIFIED).header().state == L.BookState.EMPTY  # books still read
    w.close()


def test_the_slots_are_unchanged_so_older_readers_stay_correct():
    """1.4 only appended the perp area: the slot geometry and every offset before it are those of 1.3."""
    g = L.SlotGeometry(50, 4096)
    assert g.size == L.SlotGeometry(50, 4096).size == 50 * 32 * 2 + 64 * 2 + 192 + 128 + 4096 * 64
    size_13 = L.slots_offset(32) + 32 * g.size + L.TEXT_AREA_LENGTH
    assert L.perp_area_offset(32, 50, 4096) == size_13
    assert L.segment_size(32, 50, 4096) == size_13 + 32 * L.perp_slot_size(L.DEFAULT_LIQUIDATION_CAPACITY)
    for bad in (0, 3, 1 << 17):
        with pytest.raises(ValueError, match="liquidation capacity"):
            L.perp_slot_size(bad)


def test_a_successor_repairs_a_perp_record_left_mid_write_and_marks_it_stale(namespace):
    w, _, slot = _writer(namespace)
    w.publish_perp(slot, mark_price=7.0, exch_ts_ns=1, recv_ts_ns=1)
    base = w.view.perp_base(slot)
    seq_i = (base + L.PERP_SEQ_OFFSET) >> 3
    w.q[seq_i] += 1  # killed after the odd store: copy 0 half-written
    w.buf[base + L.PERP_COPY0_OFFSET:base + L.PERP_COPY0_OFFSET + 8] = struct.pack("<d", 99.0)
    ring = base + L.PERP_RING_OFFSET
    w.q[(ring + L.RING_TAIL_INTENT_OFFSET) >> 3] += 2  # and mid-way through a liquidation batch
    w.close(clean=False)
    successor = SegmentWriter(namespace, H.EXCHANGE)
    with SegmentReader(namespace, H.EXCHANGE) as r:
        rec = r.perp(H.PERP_UNIFIED).read()
        assert rec[0] == 7.0 and rec[9] == L.BookState.STALE and rec[10] == successor.generation
        assert successor.q[seq_i] % 2 == 0
        assert successor.q[(ring + L.RING_TAIL_INTENT_OFFSET) >> 3] == successor.q[(ring + L.RING_TAIL_OFFSET) >> 3]
        successor.publish_perp(slot, funding_rate=2e-4)  # merges into the repaired record
        rec = r.perp(H.PERP_UNIFIED).read()
        assert (rec[0], rec[2], rec[9]) == (7.0, 2e-4, L.BookState.LIVE)
    successor.close()


@pytest.mark.slow
def test_perp_reads_are_never_torn_under_a_writer_process(namespace):
    create_segment(namespace, H.EXCHANGE, max_symbols=2, book_capacity=5, trade_capacity=16, liquidation_capacity=64)
    writer = H.spawn("perp-writer", ns=namespace, seconds=60)
    try:
        writer.next(30)
        with SegmentReader(namespace, H.EXCHANGE) as r:
            read = r.perp(H.PERP_UNIFIED).read
            lr = r.liquidations(H.PERP_UNIFIED, start=0)
            torn = reads = changes = got = lost = bad = control_torn = 0
            last = -1
            # the negative control: the same copy, field by field, without re-checking the latch counter after
            q, buf, base = r.view.q, r.view.buf, r.view.perp_base(r.entry(H.PERP_UNIFIED).slot)
            seq_i = (base + L.PERP_SEQ_OFFSET) >> 3
            mark_at, oi_at = L.PERP_DTYPE.fields["mark_price"][1], L.PERP_DTYPE.fields["open_interest"][1]
            # at least 300,000 reads, and on until the reads really raced the writer (a busy machine slows it)
            give_up = time.monotonic() + 60
            while ((reads < 300_000 or changes <= 1000 or got <= 1000 or not control_torn)
                   and time.monotonic() < give_up):
                c = base + (L.PERP_COPY1_OFFSET if q[seq_i] & 1 else L.PERP_COPY0_OFFSET)
                mark = struct.unpack_from("<d", buf, c + mark_at)[0]
                oi = struct.unpack_from("<d", buf, c + oi_at)[0]
                control_torn += mark > 0.25 and oi != (mark - 0.25) * 2.0
                rec = read()
                reads += 1
                u = rec[6]
                if u == 0:
                    continue
                want = H.perp_values(u)
                if rec[:6] != tuple(want[f] for f in ("mark_price", "index_price", "funding_rate",
                                                       "next_funding_rate", "next_funding_ns", "open_interest")):
                    torn += 1
                changes += u != last
                last = u
                if not reads & 255:
                    recs, n = lr.poll()
                    got += len(recs)
                    lost += n
                    bad += int((recs["price"] != recs["exch_ts_ns"]).sum())
    finally:
        writer.terminate()
    published = writer.finish()["published"]
    summary = f"{published=} {reads=} {changes=} {torn=} {got=} {lost=} {bad=} {control_torn=}"
    assert torn == 0 and bad == 0, summary
    assert control_torn > 0, summary  # the race was there to lose: a reader without the latch saw mixed records
    assert changes > 1000 and got > 1000, summary  # the reads really raced the writer
    assert got + lost <= published, summary


@pytest.mark.slow
def test_perp_read_retries_a_torn_copy_and_gives_up_after_retry_limit(namespace):
    """Against a back-to-back writer process: with retry_limit=2 a torn first copy is retried (retries counts it) and
    the record returned is whole; with retry_limit=1 a torn copy raises ReadContention after exactly one retry."""
    from mdengine.store import ReadContention

    create_segment(namespace, H.EXCHANGE, max_symbols=2, book_capacity=5, trade_capacity=16, liquidation_capacity=64)
    writer = H.spawn("perp-writer", ns=namespace, seconds=90)
    fields = ("mark_price", "index_price", "funding_rate", "next_funding_rate", "next_funding_ns", "open_interest")
    try:
        writer.next(30)
        with SegmentReader(namespace, H.EXCHANGE, retry_limit=2) as two, \
                SegmentReader(namespace, H.EXCHANGE, retry_limit=1) as one:
            patient, hasty = two.perp(H.PERP_UNIFIED), one.perp(H.PERP_UNIFIED)
            retried = torn = errors = 0
            err = None
            give_up = time.monotonic() + 60
            while (not retried or err is None) and time.monotonic() < give_up:
                before = patient.retries
                try:
                    rec = patient.read()
                except ReadContention:
                    assert patient.retries == before + 2  # both attempts torn: each counted
                    errors += 1
                else:
                    if patient.retries == before + 1 and rec[6]:
                        retried += 1
                        want = H.perp_values(rec[6])
                        torn += rec[:6] != tuple(want[f] for f in fields)
                before = hasty.retries
                try:
                    hasty.read()
                except ReadContention as e:
                    err = e
                    assert hasty.retries == before + 1
                else:
                    assert hasty.retries == before
            del patient, hasty
    finally:
        writer.terminate()
        writer.finish()
    assert retried > 0, f"no read needed a second copy in 60 s ({errors=})"
    assert torn == 0
    assert err is not None and "changed during each of 1 reads" in str(err) and H.PERP_UNIFIED in str(err)
