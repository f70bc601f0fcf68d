"""The publisher skips rebuilding levels when an update left the published top levels alone; the store
must still equal the book's top levels after every event, whatever the update touched."""

from hypothesis import given, settings
from hypothesis import strategies as st

from mdengine.book import LocalBook
from mdengine.events import BookChanged, BookInvalid
from mdengine.feed.publisher import Publisher
from mdengine.store import SegmentReader, SegmentWriter, shm
from mdengine.symbols import Instrument

DEPTH = 5
INST = Instrument("okx", "SPOT", "BTC-USDT", "BTC/USDT", 0, "BTC", "USDT", tick_size=1.0)

prices = st.integers(min_value=1, max_value=40)
qtys = st.sampled_from(["0", "1", "2.5", "3"])
level_changes = st.lists(st.tuples(prices, qtys), max_size=6)
step = st.tuples(st.sampled_from(["update", "update", "update", "snapshot", "invalid"]), level_changes, level_changes)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=25))
def test_store_equals_book_top_after_every_event(steps):
    ns = "tpub" + str(abs(hash(str(steps))) % 10**6)
    writer = SegmentWriter(ns, "okx", create=True, max_symbols=2, book_capacity=8, trade_capacity=8)
    reader = SegmentReader(ns, "okx")
    try:
        pub = Publisher(writer, "okx", depth=DEPTH)
        pub.add(INST)
        handle = reader.book("BTC/USDT")
        book = LocalBook()
        book.apply_snapshot([[str(p), "1"] for p in range(20, 10, -1)], [[str(p), "1"] for p in range(21, 31)])
        for i, (kind, bids, asks) in enumerate(steps):
            # bids live below 21 and asks above 20 so the book never crosses
            b = [[str(min(p, 20)), q] for p, q in bids]
            a = [[str(max(p, 21)), q] for p, q in asks]
            if kind == "invalid":
                pub.on_event(BookInvalid(INST.key, "gap", "test"))
                continue
            if kind == "snapshot":
                book.apply_snapshot([lv for lv in b if lv[1] != "0"], [lv for lv in a if lv[1] != "0"])
            else:
                book.apply_update(b, a)
            book.update_id = i + 1
            pub.on_event(BookChanged(INST.key, book, recv_ts_ns=1))
            snap = handle.snapshot(DEPTH)
            assert snap.update_id == i + 1
            assert [tuple(x) for x in snap.bids.tolist()] == book.bids.top(DEPTH)
            assert [tuple(x) for x in snap.asks.tolist()] == book.asks.top(DEPTH)
    finally:
        reader.close()
        writer.close()
        for name in shm.list_names(ns):
            shm.unlink(name)


def test_deep_change_publishes_header_only(namespace):
    writer = SegmentWriter(namespace, "okx", create=True, max_symbols=2, book_capacity=8, trade_capacity=8)
    try:
        pub = Publisher(writer, "okx", depth=2)
        pub.add(INST)
        book = LocalBook()
        book.apply_snapshot([["10", "1"], ["9", "1"], ["8", "1"]], [["11", "1"], ["12", "1"], ["13", "1"]])
        pub.on_event(BookChanged(INST.key, book, recv_ts_ns=1))
        calls = []
        real = writer.publish_top
        writer.publish_top = lambda *a, **k: (calls.append(a), real(*a, **k))  # count full publishes
        book.apply_update([["7", "2"]], [["14", "2"]])  # below the published depth
        pub.on_event(BookChanged(INST.key, book, recv_ts_ns=2))
        assert calls == []
        book.apply_update([["10", "5"]], [])  # the best bid
        pub.on_event(BookChanged(INST.key, book, recv_ts_ns=3))
        assert len(calls) == 1
    finally:
        writer.close()


def test_data_the_store_cannot_hold_is_counted_not_raised(namespace):
    """An update id or time past int64, or a float trade id (exchange data gone wrong), must not take the feed down:
    nothing of it is written, it is counted as malformed, and the next good update publishes the whole book."""
    from mdengine.events import TradesReceived
    from mdengine.store import layout as L

    for native in (True, False):
        ns = f"{namespace}{int(native)}"
        writer = SegmentWriter(ns, "okx", create=True, native=native, max_symbols=2, book_capacity=8,
                               trade_capacity=8)
        reader = SegmentReader(ns, "okx")
        try:
            pub = Publisher(writer, "okx", depth=DEPTH)
            pub.add(INST)
            book = LocalBook()
            book.apply_snapshot([["10", "1"]], [["11", "1"]])
            book.update_id, book.exch_ts_ns = 7, 1_000
            pub.on_event(BookChanged(INST.key, book, 5))
            slots = slice(writer.view.slot_base(0), writer.view.text_area)  # the text area gets the error text
            before = bytes(writer.buf[slots])
            book.apply_update([["9", "2"]], [])
            for uid, ts in ((1 << 70, 2_000), (8, 1 << 64)):
                book.update_id, book.exch_ts_ns = uid, ts
                pub.on_event(BookChanged(INST.key, book, 6))
            pub.on_event(TradesReceived(INST.key, [(1, 2, 3.0, 4.0, 5.5, 1, 0)]))  # a float id
            pub.on_event(TradesReceived(INST.key, [(1 << 80, 2, 3.0, 4.0, 5, 1, 0)]))
            assert bytes(writer.buf[slots]) == before  # nothing of it reached the slot
            assert reader.view.counters()["malformed"] == 4
            assert "unpublishable" in reader.view.last_error()[1]
            book.update_id, book.exch_ts_ns = 9, 3_000
            pub.on_event(BookChanged(INST.key, book, 7))
            snap = reader.book("BTC/USDT").snapshot(DEPTH)
            assert snap.update_id == 9 and snap.bids.tolist() == [[10.0, 1.0], [9.0, 2.0]]
            assert snap.state == L.BookState.LIVE
        finally:
            reader.close()
            writer.close()
            shm.unlink(writer.name)
