"""Crash semantics and segment lifecycle: SIGKILLed writers, takeover, who may unlink, mode, ENOSPC."""

from __future__ import annotations

import errno
import os
import random
import stat
import sys
import time

import numpy as np
import pytest
import store_helpers as H

from mdengine.store import (
    BookState,
    LayoutError,
    SegmentExists,
    SegmentNotFound,
    SegmentReader,
    SegmentWriter,
    WriterState,
    create_segment,
    layout,
    list_names,
    shm,
    unlink,
)
from mdengine.store import writer as writer_module
from mdengine.store.segment import check_memory_model

DEPTH = 8


def _path(name: str) -> str:
    return os.path.join(shm.SHM_DIR, name)


def _wait(predicate, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _copy_rows(seg: SegmentReader, slot: int) -> np.ndarray:
    """Both raw book copies of a slot, as rows for H.bad_rows."""
    base = seg.view.slot_base(slot)
    g = seg.view.geometry
    raw = np.frombuffer(seg.view.buf, np.uint8)
    rows = np.stack([raw[base + c:base + c + g.copy_length].copy() for c in (g.copy0, g.copy1)])
    del raw
    return rows


# --------------------------------------------------------------------------- SIGKILL, many times
@pytest.mark.slow
@pytest.mark.parametrize("latch", H.LATCHES)
def test_sigkilled_writers_never_tear_a_read_and_each_successor_takes_over(namespace, tmp_path, latch):
    name = create_segment(namespace, H.EXCHANGE, max_symbols=2, book_capacity=DEPTH, trade_capacity=64)
    inode = os.stat(_path(name)).st_ino
    rng = random.Random(20240611)
    stop_file = str(tmp_path / "stop")
    writer = H.spawn("book-writer", latch=latch, ns=namespace, depth=DEPTH)
    generation = writer.next()["generation"]
    reader = H.spawn("book-reader", ns=namespace, depth=DEPTH, writer_depth=DEPTH, reads=0, watch=True,
                     seconds=120, stop_file=stop_file, batch=256)
    seg = SegmentReader(namespace, H.EXCHANGE)
    book = seg.book(H.UNIFIED)
    seq_i = seg.view.slot_base(book.entry.slot) >> 3
    odd_at_kill = 0
    kills = 8
    try:
        while reader.next(30)["seen"] != [generation, BookState.LIVE]:
            pass
        for _ in range(kills):
            _wait(lambda g=generation: book.header().state == BookState.LIVE and book.header().generation == g,
                  what="the writer to publish")
            time.sleep(rng.uniform(0.005, 0.1))
            writer.kill()
            odd_at_kill += seg.view.q[seq_i] & 1
            # Phase 2, writer dead: the segment is intact, the last complete book is still served.
            assert os.stat(_path(name)).st_ino == inode
            assert not seg.writer_alive()
            last = book.header()
            assert last.state == BookState.LIVE and last.generation == generation
            snap = book.snapshot()
            assert snap.header.update_id == last.update_id
            # Phase 3, a new process takes over: STALE, same data, next generation, held until "go".
            writer = H.spawn("book-writer", latch=latch, ns=namespace, depth=DEPTH, wait_go=True)
            ready = writer.next()
            assert ready["generation"] == generation + 1 and ready["start_u"] == last.update_id + 1
            generation += 1
            stale = book.header()
            assert (stale.state, stale.generation, stale.update_id) == (BookState.STALE, generation, last.update_id)
            assert seg.writer_alive() and seg.view.writer_state == WriterState.STARTING
            assert not H.bad_rows(_copy_rows(seg, book.entry.slot), DEPTH, DEPTH).any()
            while reader.next(30)["seen"] != [generation, BookState.STALE]:
                pass
            # Phase 4: fresh data from the new generation.
            writer.send("go")
            _wait(lambda u=last.update_id: book.header().update_id > u, what="fresh data after takeover")
            assert book.header().state == BookState.LIVE and seg.view.writer_state == WriterState.RUNNING
    finally:
        writer.terminate()
        open(stop_file, "w").close()
    writer.finish()
    result = reader.finish(60)
    book = None  # drop its views of the mapping before closing it
    seg.close()
    summary = f"{result=} {odd_at_kill=}"
    assert result["torn"] == 0 and result["reads"] > 0, summary
    assert result["generations"] == list(range(1, generation + 1)), summary
    assert {BookState.LIVE, BookState.STALE} <= set(result["states"]), summary
    assert result["dead_seen"] > 0, summary
    assert os.stat(_path(name)).st_ino == inode and list_names(namespace) == [name]
    assert unlink(name) and list_names(namespace) == []


# --------------------------------------------------------------------------- takeover repair, step by step
def _publish(w: SegmentWriter, slot: int, u: int) -> None:
    flat, nb, na = H.versioned_flat(u, DEPTH)
    w.publish_levels(slot, flat, nb, na, update_id=u)


def _tear(w: SegmentWriter, slot: int, copy: str, u: int) -> None:
    """Write the first half of book `u` over one copy, as a writer killed mid-memcpy leaves it."""
    flat, nb, na = H.versioned_flat(u, DEPTH)
    staged = bytearray(layout.book_copy_length(DEPTH))
    layout_struct = writer_module._BOOK_HEADER  # noqa: SLF001
    layout_struct.pack_into(staged, 0, u, 0, 0, 0, nb, na, BookState.LIVE, 0, w.generation, u)
    layout.levels_struct(len(flat) // 4).pack_into(staged, layout.BOOK_HEADER_LENGTH, *flat)
    g = w.view.geometry
    start = w.view.slot_base(slot) + (g.copy0 if copy == "copy0" else g.copy1)
    half = len(staged) // 2
    w.buf[start:start + half] = staged[:half]


@pytest.mark.parametrize("killed_in", ["copy0", "copy1"])
def test_takeover_never_points_readers_at_a_half_written_copy(namespace, killed_in):
    """The dead writer left copy 0 half-written with the latch odd, or copy 1 half-written with it even.
    At every line the new writer executes, the copy the latch selects must be one complete book."""
    w = SegmentWriter(namespace, H.EXCHANGE, create=True, max_symbols=1, book_capacity=DEPTH, trade_capacity=8)
    slot = w.add_symbol(H.MARKET, H.NATIVE, H.UNIFIED)
    for u in (1, 2, 3):
        _publish(w, slot, u)
    seq_i = w.view.slot_base(slot) >> 3
    if killed_in == "copy0":
        w.q[seq_i] += 1  # the odd store, then death halfway through copy 0
        _tear(w, slot, "copy0", 4)
        complete = 3
    else:
        _publish(w, slot, 4)  # copy 0 holds 4 and the latch is even...
        _tear(w, slot, "copy1", 5)  # ...then death halfway through copy 1
        complete = 4
    w.close(clean=False)

    seg = SegmentReader(namespace, H.EXCHANGE)
    g = seg.view.geometry
    base = seg.view.slot_base(slot)
    raw = np.frombuffer(seg.view.buf, np.uint8)
    violations = []

    def selected_is_whole(where: str) -> None:
        s = seg.view.q[seq_i]
        c = base + (g.copy1 if s & 1 else g.copy0)
        row = raw[c:c + g.copy_length].copy()[None, :]
        if H.bad_rows(row, DEPTH, DEPTH).any():
            violations.append((where, s))

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != writer_module.__file__:
            return None

        def local(frame, event, arg):
            if event == "line":
                selected_is_whole(f"{frame.f_code.co_name}:{frame.f_lineno}")
            return local

        return local

    selected_is_whole("before takeover")
    sys.settrace(tracer)
    try:
        w2 = SegmentWriter(namespace, H.EXCHANGE)
    finally:
        sys.settrace(None)
    assert violations == [], f"readers were sent to a half-written copy at {violations}"
    book = seg.book(H.UNIFIED)
    h = book.header()
    assert (h.state, h.update_id, h.generation) == (BookState.STALE, complete, 2)
    assert not H.bad_rows(_copy_rows(seg, slot), DEPTH, DEPTH).any()
    assert seg.view.q[seq_i] % 2 == 0
    _publish(w2, slot, complete + 1)
    assert book.header().update_id == complete + 1 and book.header().state == BookState.LIVE
    raw = book = None
    w2.close()
    seg.close()


def test_takeover_drops_a_half_appended_trade_batch(namespace):
    w = SegmentWriter(namespace, H.EXCHANGE, create=True, max_symbols=1, book_capacity=4, trade_capacity=8)
    slot = w.add_symbol(H.MARKET, H.NATIVE, H.UNIFIED)
    w.append_trades(slot, [H.trade(i) for i in range(5)])
    ring = w.view.slot_base(slot) + w.view.geometry.ring
    w.q[(ring + layout.RING_TAIL_INTENT_OFFSET) >> 3] = 8  # died after raising the intent, before the tail
    w.close(clean=False)
    with SegmentReader(namespace, H.EXCHANGE) as seg:
        tr = seg.trades(H.UNIFIED, start=0)
        w2 = SegmentWriter(namespace, H.EXCHANGE)
        assert w2.q[(ring + layout.RING_TAIL_INTENT_OFFSET) >> 3] == 5
        w2.append_trades(slot, [H.trade(i) for i in range(5, 7)])
        recs, lost = tr.poll()
        assert lost == 0 and recs["index"].tolist() == list(range(7)) and H.bad_trades(recs) == 0
        del tr
        w2.close()


# --------------------------------------------------------------------------- who may unlink
@pytest.mark.slow
def test_exiting_readers_and_writers_do_not_unlink_but_a_plain_shared_memory_does(namespace):
    """The control segment is attached with a plain SharedMemory, whose resource tracker unlinks it at
    exit (gh-82300): its disappearance proves the tracker ran, so ours surviving means something."""
    control = shm.segment_name(namespace, "control")
    shm.create(control, 4096).close()
    proc = H.spawn("attach-and-exit", ns=namespace, control=control)
    assert proc.finish(60)["generation"] == 1
    _wait(lambda: control not in list_names(namespace), what="the resource tracker to unlink the control")
    time.sleep(0.2)  # the tracker unlinks everything it holds in one pass; let that pass end
    name = shm.segment_name(namespace, H.EXCHANGE)
    assert list_names(namespace) == [name]
    with SegmentReader(namespace, H.EXCHANGE) as seg:
        assert seg.view.writer_state == WriterState.STOPPED and not seg.writer_alive()
        assert [e.native for e in seg.symbols()] == [H.NATIVE]


def test_segments_are_private_and_only_unlink_removes_them(namespace):
    w = SegmentWriter(namespace, H.EXCHANGE, create=True, max_symbols=1, book_capacity=4, trade_capacity=8)
    name = w.name
    assert stat.S_IMODE(os.stat(_path(name)).st_mode) == 0o600
    slot = w.add_symbol(H.MARKET, H.NATIVE, H.UNIFIED)
    w.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=7)
    with pytest.raises(SegmentExists):
        create_segment(namespace, H.EXCHANGE)
    seg = SegmentReader(namespace, H.EXCHANGE)
    book = seg.book(H.UNIFIED)
    w.close()
    assert list_names(namespace) == [name]
    assert unlink(name) is True and unlink(name) is False
    assert list_names(namespace) == []
    assert book.top() == (100.0, 1.0, 101.0, 2.0)  # a mapping outlives the name
    del book
    seg.close()
    with pytest.raises(SegmentNotFound, match="is an engine running"):
        SegmentReader(namespace, H.EXCHANGE)
    with pytest.raises(SegmentNotFound):
        SegmentWriter(namespace, H.EXCHANGE)


def test_creation_that_cannot_be_backed_fails_with_enospc_and_leaves_nothing(namespace):
    vfs = os.statvfs(shm.SHM_DIR)
    if not vfs.f_blocks:
        pytest.skip("/dev/shm has no size limit, so fallocate would really try to allocate")
    # More symbols x ring than /dev/shm holds: tmpfs refuses the fallocate up front, without allocating.
    max_symbols = layout.MAX_SYMBOLS
    size = layout.segment_size(max_symbols, 50, layout.MAX_TRADE_CAPACITY)
    if size <= vfs.f_blocks * vfs.f_frsize:
        pytest.skip(f"/dev/shm ({vfs.f_blocks * vfs.f_frsize} B) can hold a {size} B segment")
    with pytest.raises(OSError, match="enlarge /dev/shm") as err:
        create_segment(namespace, H.EXCHANGE, max_symbols=max_symbols, trade_capacity=layout.MAX_TRADE_CAPACITY)
    assert err.value.errno == errno.ENOSPC
    assert list_names(namespace) == []


# --------------------------------------------------------------------------- refusing what cannot be read
def test_attaching_something_that_is_not_a_ready_segment_is_a_layout_error(namespace):
    name = shm.segment_name(namespace, H.EXCHANGE)
    shm.create(name, 4096).close()  # zero-filled: what a reader sees before the creator writes the magic
    with pytest.raises(LayoutError, match="bad magic"):
        SegmentReader(namespace, H.EXCHANGE)
    unlink(name)
    w = SegmentWriter(namespace, H.EXCHANGE, create=True, max_symbols=1, book_capacity=4, trade_capacity=8)
    w.q[layout.LAYOUT_MAJOR_OFFSET >> 3] = layout.LAYOUT_MAJOR + 1  # major (and minor, 0) in one word
    with pytest.raises(LayoutError, match=f"layout version {layout.LAYOUT_MAJOR + 1}.0"):
        SegmentReader(namespace, H.EXCHANGE)
    w.close()


def test_weakly_ordered_cpus_are_refused_unless_allowed(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    monkeypatch.delenv("MDENGINE_ALLOW_WEAK_MEMORY", raising=False)
    with pytest.raises(RuntimeError, match="MDENGINE_ALLOW_WEAK_MEMORY=1"):
        check_memory_model()
    check_memory_model(allow_weak=True)
    monkeypatch.setenv("MDENGINE_ALLOW_WEAK_MEMORY", "1")
    check_memory_model()
