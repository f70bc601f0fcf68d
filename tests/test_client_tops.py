"""Whole-market reads: Client.tops() and BookSet against a real writer process on real shared memory."""

from __future__ import annotations

import time

import numpy as np
import pytest
import store_helpers as H

from mdengine.client import TOPS_DTYPE, Client
from mdengine.errors import UnknownSymbol
from mdengine.store import SegmentReader
from mdengine.store import layout as L
from mdengine.store.tops import TopsReader


def _torn(t: np.ndarray) -> np.ndarray:
    """Rows whose fields are not all the one state their update id names (see store_helpers.top_flat)."""
    u = t["update_id"].astype(np.float64)
    return (t["bid"] != u) | (t["bid_qty"] != u + 0.25) | (t["ask"] != u + 0.5) | (t["ask_qty"] != u + 0.75)


def test_tops_returns_every_book_once_with_its_own_state(namespace):
    w = H.spawn("tops-writer", ns=namespace, symbols=300, on_command=True)
    try:
        assert w.next(60)["u"] == 300
        with Client(namespace) as c:
            t = c.tops(H.EXCHANGE)
            assert t.dtype == TOPS_DTYPE and len(t) == 300
            assert sorted(t["symbol"]) == sorted(f"S{i}/USDT" for i in range(300))
            assert not _torn(t).any()
            assert t["live"].all() and (t["state"] == L.BookState.LIVE).all()
            assert ((t["age"] >= 0) & (t["age"] < 600)).all()
            spot = c.tops(H.EXCHANGE, market="spot")
            assert len(spot) == 150 and set(spot["market"]) == {"spot"}
            assert sorted(spot["symbol"]) == sorted(f"S{i}/USDT" for i in range(1, 300, 2))
            with pytest.raises(UnknownSymbol):
                c.tops("nosuchexchange")
    finally:
        w.stop()


def test_tops_rows_are_never_torn_while_a_writer_publishes_at_full_speed(namespace):
    """A writer process republishes 1,000 books round-robin as fast as it can; every row of every tops() must be
    one state. The negative control (the same gather without the latch: always copy 0, no re-check) runs
    against the same writer and must catch torn rows, or the zero proves nothing."""
    w = H.spawn("tops-writer", ns=namespace, symbols=1000, seconds=120)
    try:
        w.next(60)
        with Client(namespace) as c:
            bs = c.book_set(H.EXCHANGE)
            control = TopsReader(bs._seg.reader)  # a second view of the same segment, read without the latch
            reads = torn = control_torn = 0
            first = c.tops(H.EXCHANGE)["update_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (reads < 2000 or control_torn == 0):
                t = bs.tops()
                assert len(t) == 1000
                torn += int(_torn(t).sum())
                reads += 1
                blk = control._tops[control._slots, 0]
                lv = blk[:, 8:12].view("<f8")
                u = blk[:, 0].astype(np.float64)
                control_torn += int(((lv[:, 0] != u) | (lv[:, 3] != u + 0.75)).sum())
            last = t["update_id"]
            control.close()
    finally:
        w.stop()
    published = w.finish()["published"]
    summary = f"{reads=} {torn=} {control_torn=} {published=} retries={bs.reader.retries if bs.reader else '?'}"
    assert torn == 0, summary
    assert reads >= 2000, summary
    assert control_torn > 0, summary
    assert (last > first).all(), summary  # every book moved while we read


def test_wait_wakes_on_any_book_of_a_set_and_says_which(namespace):
    w = H.spawn("tops-writer", ns=namespace, symbols=400, on_command=True)
    try:
        w.next(60)
        with Client(namespace) as c:
            usdm = c.book_set(H.EXCHANGE, market="usdm")  # slots 0, 2, 4, ...
            assert len(usdm) == 200
            assert c.wait(0.05, [usdm]) == []  # nothing published yet
            for slot in (398, 0, 250):
                w.send(str(slot))
                assert w.next(30)["published"] == slot
                assert c.wait(30, [usdm]) == [usdm]
                t = usdm.tops()
                assert list(t["symbol"][usdm.changed]) == [f"S{slot}/USDT"]
            w.send("1")  # a spot book: not in the set
            w.next(30)
            assert c.wait(0.2, [usdm]) == []
    finally:
        w.stop()


def test_wait_on_sets_of_500_books_wakes_on_any_of_them_and_names_each_change(namespace):
    """The issue's size: sets of 500 books of a 1,000-book segment (one market; 500 listed symbols across both
    markets). wait() wakes for a change of any book of a set, names exactly the books that changed (two published
    before one wait: both), and ignores books outside the set."""
    w = H.spawn("tops-writer", ns=namespace, symbols=1000, on_command=True)
    try:
        w.next(60)
        with Client(namespace) as c:
            usdm = c.book_set(H.EXCHANGE, market="usdm")  # even slots
            listed = c.book_set(H.EXCHANGE, symbols=[f"S{i}/USDT" for i in range(250, 750)])
            assert len(usdm) == 500 and len(listed) == 500
            assert c.wait(0.05, [usdm, listed]) == []

            def publish(*slots: int) -> None:
                for slot in slots:
                    w.send(str(slot))
                    assert w.next(30)["published"] == slot

            for slot in (998, 0):
                publish(slot)
                assert c.wait(30, [usdm, listed]) == [usdm]
                assert list(usdm.tops()["symbol"][usdm.changed]) == [f"S{slot}/USDT"]
            publish(500)  # in both sets
            assert c.wait(30, [usdm, listed]) == [usdm, listed]
            assert list(usdm.tops()["symbol"][usdm.changed]) == list(listed.tops()["symbol"][listed.changed]) \
                == ["S500/USDT"]
            publish(2, 996)
            assert c.wait(30, [usdm, listed]) == [usdm]
            assert sorted(usdm.tops()["symbol"][usdm.changed]) == ["S2/USDT", "S996/USDT"]
            publish(999)  # a spot book outside both sets
            assert c.wait(0.2, [usdm, listed]) == []
            publish(749)  # spot, in the listed set only
            assert c.wait(30, [usdm, listed]) == [listed]
            assert list(listed.tops()["symbol"][listed.changed]) == ["S749/USDT"]
            assert c.wait(0.2, [usdm, listed]) == []
    finally:
        w.stop()


def test_tops_flags_rows_of_a_dead_writer(namespace):
    w = H.spawn("tops-writer", ns=namespace, symbols=50, on_command=True)
    try:
        w.next(60)
        with Client(namespace) as c:
            assert c.tops(H.EXCHANGE)["live"].all()
            w.kill()
            deadline = time.monotonic() + 30
            t = c.tops(H.EXCHANGE)
            while t["live"].any() and time.monotonic() < deadline:
                time.sleep(0.05)
                t = c.tops(H.EXCHANGE)
            assert len(t) == 50 and not t["live"].any()
            assert (t["state"] == L.BookState.LIVE).all()  # the bytes still say live: the client knows better
            assert not _torn(t).any()
    finally:
        w.stop()


def test_tops_reader_closes_before_its_segment(namespace):
    w = H.spawn("tops-writer", ns=namespace, symbols=4, on_command=True)
    try:
        w.next(60)
        seg = SegmentReader(namespace, H.EXCHANGE)
        r = TopsReader(seg)
        assert len(r.read()) == 4
        r.close()
        seg.close()  # BufferError if a view of the mapping were left
    finally:
        w.stop()
