"""Multi-process stress of the store: a real writer process, real reader processes, real shared memory.

Each run carries negative controls (broken readers in the same processes, against the same
writer): they must see torn data, otherwise a zero from the real reader would prove nothing.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import store_helpers as H

from mdengine.store import ReadContention, SegmentReader, create_segment, shm

pytestmark = pytest.mark.slow

DEPTH = 20


@pytest.mark.parametrize("latch", H.LATCHES)
def test_latch_reads_are_never_torn_while_broken_readers_are(namespace, latch):
    create_segment(namespace, H.EXCHANGE, max_symbols=2, book_capacity=DEPTH, trade_capacity=64)
    writer = H.spawn("book-writer", latch=latch, ns=namespace, depth=DEPTH)
    try:
        ready = writer.next(30)
        assert latch == "default" or ready["latch"] == "python", ready
        readers = [H.spawn("book-reader", ns=namespace, depth=DEPTH, writer_depth=DEPTH, reads=500_000,
                           controls=True, min_control_reads=20_000, seconds=40) for _ in range(2)]
        results = [r.finish(90) for r in readers]
    finally:
        writer.terminate()
    published = writer.finish()["published"]
    reads = sum(r["reads"] for r in results)
    summary = f"{published=} {results=}"
    assert reads >= 1_000_000, summary
    assert sum(r["torn"] for r in results) == 0, summary
    # The controls ran against the same writer in the same processes and must have caught it.
    assert sum(r["no_seqlock_torn"] for r in results) > 0, summary
    assert sum(r["no_recheck_torn"] for r in results) > 0, summary
    assert published > 10_000, summary


@pytest.mark.parametrize("latch", H.LATCHES)
def test_trade_ring_returns_each_trade_once_or_counts_it_lost(namespace, latch):
    cap, total = 64, 400_000
    naive_bad, runs = 0, []
    # The negative control (a reader without the tail_intent check lets overwritten records through) needs the
    # race to happen, which a busy machine makes rarer: rounds on a fresh segment repeat, each fully checked,
    # until it has happened.
    for _ in range(5):
        name = create_segment(namespace, H.EXCHANGE, max_symbols=1, book_capacity=5, trade_capacity=cap)
        # Attach the symbol before the reader starts so it finds it.
        H.spawn("ring-writer", ns=namespace, capacity=cap, total=0).finish()
        reader = H.spawn("ring-reader", ns=namespace, total=total, seconds=40, naive=True)
        writer = H.spawn("ring-writer", latch=latch, ns=namespace, capacity=cap, total=total)
        w = writer.finish(60)
        r = reader.finish(60)
        shm.unlink(name)
        summary = f"{w=} {r=}"
        runs.append(summary)
        assert w["written"] == total
        assert latch == "default" or w["ring"] == "python", w
        assert r["cursor"] == total, summary
        assert r["got"] + r["lost"] == total, summary
        assert r["bad"] == 0 and r["out_of_order"] == 0, summary
        assert r["lost"] > 0 and r["got"] > 0, summary  # the writer lapped the reader and the reader kept up too
        naive_bad += r["naive_bad"]
        if naive_bad:
            break
    assert naive_bad > 0, runs  # without the tail_intent check, overwritten records get through


def test_read_gives_up_with_a_clear_error_when_every_attempt_is_torn(namespace):
    """retry_limit=1 against a back-to-back writer: some reads must fail, with ReadContention."""
    create_segment(namespace, H.EXCHANGE, max_symbols=1, book_capacity=DEPTH, trade_capacity=64)
    writer = H.spawn("book-writer", ns=namespace, depth=DEPTH)
    try:
        writer.next(30)
        with SegmentReader(namespace, H.EXCHANGE, retry_limit=1) as seg:
            book = seg.book(H.UNIFIED)
            buf = H.RowBuffer(__import__("numpy").zeros(64 + 32 * DEPTH, "u1"), DEPTH)
            err = None
            for _ in range(2_000_000):
                try:
                    book.read_into(buf)
                except ReadContention as e:
                    err = e
                    break
            del buf
            assert err is not None, "2M reads with retry_limit=1 against a busy writer never failed"
            assert "changed during each of 1 reads" in str(err) and H.UNIFIED in str(err)
            assert book.retries >= 1
            del book
    finally:
        writer.terminate()
        writer.finish()


def _whole(method: str, got, buf) -> bool:
    """True if what `method` returned is one versioned book of the book-writer (see H.versioned_flat)."""
    if method == "top":
        bid, bid_qty, ask, ask_qty = got
        return (bid, ask, ask_qty) == (bid_qty * 1000, bid_qty * 1000 + 500, bid_qty + 0.5)
    if method == "top_full":
        u = got[0]
        return got[10:14] == (u * 1000.0, float(u), u * 1000.0 + 500, u + 0.5)
    row = np.frombuffer(buf.raw, "u1").reshape(1, -1)
    return not H.bad_rows(row, DEPTH, DEPTH).any()


@pytest.mark.parametrize("method", ["top", "top_full", "read_into"])
def test_book_read_retries_a_torn_copy_and_gives_up_after_retry_limit(namespace, method):
    """Against a back-to-back writer process: with retry_limit=2 a torn first copy is retried (retries counts it) and
    the book returned is whole; with retry_limit=1 a torn copy raises ReadContention after exactly one retry."""
    from mdengine.store.reader import BookBuffer

    create_segment(namespace, H.EXCHANGE, max_symbols=1, book_capacity=DEPTH, trade_capacity=64)
    writer = H.spawn("book-writer", ns=namespace, depth=DEPTH)
    try:
        writer.next(30)
        with SegmentReader(namespace, H.EXCHANGE, retry_limit=2) as two, \
                SegmentReader(namespace, H.EXCHANGE, retry_limit=1) as one:
            patient, hasty = two.book(H.UNIFIED), one.book(H.UNIFIED)
            while True:  # wait for the first publish (a read of this 2-attempt reader may itself be torn twice)
                try:
                    if patient.top_full()[0] != 0:
                        break
                except ReadContention:
                    pass
            buf = BookBuffer(DEPTH)
            read = getattr(patient, method)
            read_hasty = getattr(hasty, method)
            args = (buf,) if method == "read_into" else ()
            retried = broken = errors = reads = 0
            err = None
            give_up = time.monotonic() + 60
            while (not retried or err is None) and time.monotonic() < give_up:
                for _ in range(1000):
                    reads += 1
                    before = patient.retries
                    try:
                        got = read(*args)
                    except ReadContention:
                        assert patient.retries == before + 2  # both attempts torn: each counted
                        errors += 1
                    else:
                        if patient.retries == before + 1:
                            retried += 1
                            broken += not _whole(method, got, buf)
                        else:
                            assert patient.retries == before
                    before = hasty.retries
                    try:
                        read_hasty(*args)
                    except ReadContention as e:
                        err = e
                        assert hasty.retries == before + 1
                    else:
                        assert hasty.retries == before
            del read, read_hasty, patient, hasty, buf, args
    finally:
        writer.terminate()
        writer.finish()
    assert retried > 0, f"no {method} read needed a second copy in 60 s ({reads=} {errors=})"
    assert broken == 0, f"{broken} of {retried} retried {method} reads returned a torn book"
    assert err is not None and "changed during each of 1 reads" in str(err) and H.UNIFIED in str(err)
