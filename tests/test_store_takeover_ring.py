"""A writer killed mid-batch can leave a record whose payload is new but whose index field is still the old,
valid-looking one. The next writer must make sure no reader ever returns such a record."""

import struct

from mdengine.store import SegmentReader, SegmentWriter
from mdengine.store import layout as L

CAP = 8


def test_takeover_rejects_a_record_cut_mid_write_that_kept_its_old_index(namespace):
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=1, book_capacity=4, trade_capacity=CAP)
    slot = w.add_symbol("SPOT", "BTC-USDT", "BTC/USDT")
    w.append_trades(slot, [(1, 1, 100.0 + i, 1.0, i, 1, 0) for i in range(CAP)])  # ring full: indices 0..7
    # Simulate a crash in the middle of the next batch (indices 8, 9): tail_intent raised, record 8's
    # payload overwritten in slot 0, its index field still 0 (the old record's), tail never raised.
    ring = w.view.slot_base(slot) + w.view.geometry.ring
    records = ring + L.RING_HEADER_LENGTH
    w.q[(ring + L.RING_TAIL_INTENT_OFFSET) >> 3] = CAP + 2
    struct.pack_into("<qqdd", w.buf, records, 9, 9, 999.0, 9.0)  # torn: new price, old index 0 at +48
    w.close(clean=False)  # the "killed" writer just goes away

    r = SegmentReader(namespace, "okx")
    try:
        early = r.trades("BTC/USDT", start=0)
        got, lost = early.poll()  # during the crash window: slots 0 and 1 are rejected by tail_intent
        assert 999.0 not in got["price"].tolist() and lost == 2

        w2 = SegmentWriter(namespace, "okx")  # takeover
        try:
            late = r.trades("BTC/USDT", start=0)
            got, lost = late.poll()  # after takeover tail_intent == tail again; both slots the unfinished
            assert 999.0 not in got["price"].tolist()  # batch may have touched (0 and 1) are still rejected
            assert got["index"].tolist() == list(range(2, CAP)) and lost == 2
            w2.append_trades(slot, [(2, 2, 200.0, 1.0, 100, -1, 0)])  # the ring moves on normally
            got, lost = late.poll()
            assert got["price"].tolist() == [200.0] and got["index"].tolist() == [CAP] and lost == 0
        finally:
            w2.close()
    finally:
        r.close()
