"""The directory's seqlock (layout 1.3): a reader never keeps a copy of an entry taken while the writer was
rewriting it, and a writer killed inside a change is repaired by the next one."""

from __future__ import annotations

import store_helpers as H

from mdengine.store import SegmentReader, SegmentWriter, create_segment
from mdengine.store import layout as L


def test_a_rewritten_entry_is_never_read_half_old_half_new(namespace):
    create_segment(namespace, H.EXCHANGE, max_symbols=4, book_capacity=4, trade_capacity=8)
    first = SegmentWriter(namespace, H.EXCHANGE)
    first.add_symbol(H.MARKET, H.NATIVE, "AAA/USDT", tick_size=0.5, lot_size=1.0)
    first.close()
    writer = H.spawn("directory-rewriter", ns=namespace, seconds=60)
    reader = SegmentReader(namespace, H.EXCHANGE)
    try:
        writer.next()
        version = L.DIRECTORY_VERSION_OFFSET >> 3
        copies, moved, mixed = 0, 0, []
        start = reader.view.q[version]
        while copies < 30_000 or moved < 1_000:  # until the writer has changed the entry under us often
            (e,) = reader.view.entries()
            copies += 1
            moved = (reader.view.q[version] - start) // 2
            if (e.unified, e.tick_size, e.lot_size) not in H.DIRECTORY_IDENTITIES:
                mixed.append((e.unified, e.tick_size, e.lot_size))
        assert not mixed, f"{len(mixed)} of {copies} copies mixed two identities, e.g. {mixed[:3]}"
        assert e.market == H.MARKET and e.native == H.NATIVE and e.active
    finally:
        writer.terminate()
        rewrites = writer.finish()["rewrites"]
        reader.close()
    assert rewrites >= 1_000


def test_a_writer_killed_inside_a_change_is_repaired_by_the_next_writer(namespace):
    w = SegmentWriter(namespace, H.EXCHANGE, create=True, max_symbols=4, book_capacity=4, trade_capacity=8)
    slot = w.add_symbol(H.MARKET, H.NATIVE, H.UNIFIED, tick_size=0.5)
    version = L.DIRECTORY_VERSION_OFFSET >> 3
    assert w.q[version] % 2 == 0, "a finished change leaves the version even"
    w.q[version] += 1  # what a writer killed between its two bumps leaves behind
    reader = SegmentReader(namespace, H.EXCHANGE)
    try:
        (e,) = reader.view.entries()  # bounded retries, then the copy: market, native and state never tear
        assert (e.slot, e.native, e.unified) == (slot, H.NATIVE, H.UNIFIED)
        w.close()
        successor = SegmentWriter(namespace, H.EXCHANGE)
        assert successor.q[version] % 2 == 0, "the next writer lets readers in again"
        successor.close()
    finally:
        reader.close()
