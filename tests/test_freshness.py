"""Freshness with a real segment written from this process: stale_after, the feed's heartbeat interval, the owner's
DEAD mark, the stale reason, and what `mdengine status` makes of them (issues #20 and #21)."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from mdengine.client import BookBuffer, Client, StaleBookError, UnknownSymbol
from mdengine.engine.status import StatusSampler, render_text
from mdengine.store import SegmentWriter, layout
from mdengine.store.writer import mark_dead

S = 1_000_000_000


@pytest.fixture
def writer(namespace):
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=4, book_capacity=5, trade_capacity=16)
    w.set_running()
    w.heartbeat()
    yield w
    w.close()


def _book(w: SegmentWriter, native: str, unified: str, recv_ns: int, uid: int = 1) -> int:
    slot = w.add_symbol("SPOT", native, unified)
    w.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=uid, recv_ts_ns=recv_ns)
    return slot


def test_max_age_is_data_age_only_and_the_heartbeat_timeout_comes_from_the_feed(namespace, writer):
    writer.set_freshness(3.0, 0.5)
    slot = _book(writer, "BTC-USDT", "BTC/USDT", time.time_ns())
    with Client(namespace, max_age=0.1) as c:
        book = c.book("okx", "BTC/USDT")
        served = 0
        for uid in range(2, 22):
            writer.heartbeat(time.time_ns() - S // 5)  # 0.2 s old: well within 4 of the feed's 0.5 s beats
            writer.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=uid, recv_ts_ns=time.time_ns())
            try:
                top = book.top()
            except StaleBookError as e:  # only a busy machine's delay may make the data itself too old
                assert "older than max_age" in e.reason, e.reason
                continue
            assert top.source == "shm" and not top.stale and top.reason == "" and top.update_id == uid
            served += 1
        assert served > 0
        writer.heartbeat(time.time_ns() - 5 * S // 2)  # five of its intervals: the feed is stuck
        time.sleep(0.02)  # past the client's health cache
        writer.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=99, recv_ts_ns=time.time_ns())
        with pytest.raises(StaleBookError, match="heartbeat 2.5 s old") as info:
            book.top()
        assert "limit 2 s" in info.value.reason


def test_a_quiet_book_on_a_confirmed_connection_is_live_a_silent_connection_is_stale_with_why(namespace, writer):
    writer.set_freshness(1.0, 0.05)
    now = time.time_ns()
    quiet = _book(writer, "BTC-USDT", "BTC/USDT", now - 5 * S)  # unchanged for 5 s ...
    writer.confirm(quiet, now)  # ... but its connection answered a ping just now
    silent = _book(writer, "ETH-USDT", "ETH/USDT", now - 5 * S)
    writer.confirm(silent, now - 2 * S)  # nothing at all for 2 s
    with Client(namespace) as c:
        top = c.top("okx", "BTC/USDT")
        assert not top.stale and top.state == "live" and top.age_s >= 5
        top = c.top("okx", "ETH/USDT")
        assert top.stale and top.state == "live" and top.bid == 100.0  # flagged, still served
        assert "nothing received from the exchange for 2.0 s (stale_after_s 1)" in top.reason
        buf = c.book("okx", "ETH/USDT").read_into(BookBuffer(3))
        assert buf.stale and "nothing received" in buf.reason
        depth = c.snapshot("okx", "ETH/USDT")
        assert depth.stale and "nothing received" in depth.reason
    with Client(namespace, max_age=60.0) as strict, pytest.raises(StaleBookError, match="nothing received"):
        strict.top("okx", "ETH/USDT")
    with StatusSampler(namespace) as sampler:
        feed = sampler.sample()["feeds"][0]
    states = {s["symbol"]: s["state"] for s in feed["symbols"]}
    assert states == {"BTC/USDT": "live", "ETH/USDT": "stale"} and feed["stale_after_s"] == 1.0


def test_a_perp_record_follows_the_confirmations_of_its_own_connection(namespace, writer):
    """Layout 1.5: a perpetual's book and perp data may ride different connections (Binance USDⓈ-M /public and
    /market), each confirmed in its own word; a silent one stales only its own data. A writer of 1.4 (minor 4)
    confirmed both in confirmed_ns, which the reader then falls back to."""
    import struct

    writer.set_freshness(1.0, 0.05)
    now = time.time_ns()
    slot = writer.add_symbol("SWAP", "BTC-USDT-SWAP", "BTC/USDT:USDT", kind=layout.MarketKind.LINEAR)
    writer.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=1, recv_ts_ns=now - 5 * S)
    writer.publish_perp(slot, mark_price=100.5, recv_ts_ns=now - 5 * S)
    writer.confirm(slot, now)  # the book's connection answered just now ...
    writer.confirm_perp(slot, now - 2 * S)  # ... the perp data's has been silent for 2 s
    with Client(namespace) as c:
        assert not c.top("okx", "BTC/USDT:USDT").stale
        p = c.perp("okx", "BTC/USDT:USDT")
        assert p.stale and p.state == "live" and p.mark_price == 100.5
        assert "nothing received from the exchange for 2.0 s" in p.reason
    writer.confirm_perp(slot, time.time_ns())  # and the other way round
    writer.q[(writer.view.slot_base(slot) + layout.STAT_OFFSETS["confirmed_ns"]) >> 3] = now - 2 * S
    with Client(namespace) as c:
        assert c.top("okx", "BTC/USDT:USDT").stale and not c.perp("okx", "BTC/USDT:USDT").stale
    struct.pack_into("<I", writer.buf, layout.LAYOUT_MINOR_OFFSET, 4)  # a 1.4 writer: confirmed_ns is the perp's too
    with Client(namespace) as c:
        p = c.perp("okx", "BTC/USDT:USDT")
        assert p.stale and "nothing received from the exchange for 2.0 s" in p.reason


def test_the_owners_dead_mark_makes_books_stale_at_once_and_names_the_cause(namespace, writer):
    _book(writer, "BTC-USDT", "BTC/USDT", time.time_ns())
    with Client(namespace) as c:
        book = c.book("okx", "BTC/USDT")
        assert not book.top().stale
        assert not mark_dead(writer.name, os.getpid() + 1)  # another pid: not this segment's writer
        assert mark_dead(writer.name, os.getpid())
        time.sleep(0.02)  # past the client's health cache (5 ms)
        top = book.top()
        assert top.stale and "died" in top.reason
    assert writer.view.writer_state == layout.WriterState.DEAD
    with StatusSampler(namespace) as sampler:
        feed = sampler.sample()["feeds"][0]
    assert feed["state"] == "dead" and feed["symbols"][0]["state"] == "stale"
    writer.close()  # a clean detach after all: stopped, and never marked dead over it
    assert not mark_dead(writer.name, os.getpid())


def test_status_says_starting_or_degraded_lists_pending_and_prints_the_whole_error(namespace, writer):
    a = writer.add_symbol("SPOT", "BTC-USDT", "BTC/USDT")
    b = writer.add_symbol("SPOT", "ETH-USDT", "ETH/USDT")
    writer.publish_state(a, layout.BookState.SYNCING)
    writer.publish_state(b, layout.BookState.SYNCING)
    error = ("instrument list http://127.0.0.1:1/api/v5/public/instruments?instType=SPOT: HTTP 404; "
             "its symbols are unavailable, and this sentence goes on well past fifty-six bytes")
    writer.record_error(error)
    sup = {"pid": 1, "feeds": [{"exchange": "okx", "pid": os.getpid(), "state": "running", "restarts": 0,
                                "symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]}]}
    with StatusSampler(namespace) as sampler:
        status = sampler.sample(sup)
        feed = status["feeds"][0]
        assert feed["state"] == "starting"  # running, but nothing live yet: not "running"
        assert feed["pending"] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]  # SOL: configured, never listed
        assert feed["last_error"]["text"] == error
        assert json.loads(json.dumps(status))["feeds"][0]["last_error"]["text"] == error
        text = render_text(status)
        assert f"last error okx: {error}\n" in text and "pending okx: BTC/USDT, ETH/USDT, SOL/USDT" in text
        writer.publish_book(a, [(100.0, 1.0)], [(101.0, 2.0)], update_id=1, recv_ts_ns=time.time_ns())
        feed = sampler.sample(sup)["feeds"][0]
        assert feed["state"] == "running" and feed["pending"] == ["ETH/USDT", "SOL/USDT"]
        writer.publish_state(a, layout.BookState.RESYNCING)
        assert sampler.sample(sup)["feeds"][0]["state"] == "degraded"  # was live, has nothing live now


def _until(pred, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (v := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return v


def test_handles_and_unbound_handles_follow_a_recreated_segment(namespace):
    from mdengine.store import shm

    old = SegmentWriter(namespace, "okx", create=True, max_symbols=4, book_capacity=5, trade_capacity=16)
    old.set_running()
    old.heartbeat()
    slot = _book(old, "BTC-USDT", "BTC/USDT", time.time_ns())
    old.append_trades(slot, [(1, 1, 100.0, 1.0, i, 1, 0) for i in range(5)])
    with Client(namespace) as c, Client(namespace, rest_fallback=True, endpoints={"okx": "http://127.0.0.1:9"}) as fb:
        eth_later = fb.book("okx", "ETH/USDT")  # not in this engine: unbound (it would serve REST)
        book = c.book("okx", "BTC/USDT")
        stream = c.trade_stream("okx", "BTC/USDT", start="earliest")
        assert len(stream.poll().records) == 5
        old.append_trades(slot, [(1, 1, 100.0, 1.0, i, 1, 0) for i in range(5, 8)])  # never read: lost at restart
        old.close()
        shm.unlink(old.name)  # what a supervisor does on shutdown; the next one creates the name again
        assert book.top().stale
        new = SegmentWriter(namespace, "okx", create=True, max_symbols=4, book_capacity=5, trade_capacity=16)
        try:
            new.set_running()
            new.heartbeat()
            eth = _book(new, "ETH-USDT", "ETH/USDT", time.time_ns(), uid=70)  # only the new engine has ETH
            btc = _book(new, "BTC-USDT", "BTC/USDT", time.time_ns(), uid=42)
            new.append_trades(btc, [(2, 2, 200.0, 2.0, 100 + i, -1, 0) for i in range(2)])
            top = _until(lambda: (t := book.top()).update_id == 42 and t, "the Book to follow")
            assert not top.stale and top.bid == 100.0 and c.statistics().follows == 1
            got = stream.poll()
            assert got.reset and got.lost == 3 and got.records["trade_id"].tolist() == [100, 101]
            assert got.records["price"].tolist() == [200.0, 200.0]
            later = stream.poll()
            assert not later.reset and len(later.records) == 0 and stream.statistics().resets == 1
            assert new.view.entry(eth).native == "ETH-USDT"
            _until(lambda: _header_uid(eth_later) == 70, "the unbound handle to find its symbol in the new engine")
        finally:
            new.close()


def _header_uid(book) -> int | None:
    try:
        return book.header().update_id
    except UnknownSymbol:
        return None


def test_a_perp_field_group_gone_quiet_is_named_in_stale_fields_while_the_mark_stays_live(namespace, writer):
    """Layout 1.6: a perp record merged from several channels (OKX) dates each field group; a group older than the
    bound the writer published is named in stale_fields (with its age in the reason) while the record, its mark and
    age_s stay live; a group without a bound never is. A 1.5 segment has one time for all: every age is the record's."""
    import struct

    writer.set_freshness(30.0, 0.05)
    writer.set_perp_freshness({"mark": 30.0, "index": 1.0, "open_interest": 2.0})  # funding: no bound of its own
    now = time.time_ns()
    slot = writer.add_symbol("SWAP", "BTC-USDT-SWAP", "BTC/USDT:USDT", kind=layout.MarketKind.LINEAR)
    writer.publish_perp(slot, index_price=100.0, recv_ts_ns=now - 3 * S)  # index-tickers, then quiet
    writer.publish_perp(slot, funding_rate=1e-4, recv_ts_ns=now - 50 * S)
    writer.publish_perp(slot, mark_price=100.5, recv_ts_ns=now)  # mark-price goes on
    writer.confirm_perp(slot, now)
    with Client(namespace) as c:
        p = c.perp("okx", "BTC/USDT:USDT")
        assert not p.stale and p.state == "live" and p.age_s < 3.0, p
        assert p.stale_fields == ("index_price",), p
        assert 3.0 <= p.index_age_s < 6.0 and p.funding_age_s >= 50.0 and p.open_interest_age_s == math.inf
        assert math.isnan(p.open_interest)  # never received: absent, not stale
        assert "index not received for 3." in p.reason and "stale after 1 s" in p.reason, p.reason
        writer.publish_perp(slot, index_price=100.1, open_interest=7.0, recv_ts_ns=time.time_ns())
        p = c.perp("okx", "BTC/USDT:USDT")
        assert p.stale_fields == () and p.reason == "" and p.index_age_s < 2.0 and p.open_interest == 7.0, p
        time.sleep(2.2)  # open interest (bound 2 s) goes quiet; index and mark come on
        writer.heartbeat()
        writer.confirm_perp(slot, time.time_ns())
        writer.publish_perp(slot, index_price=100.2, mark_price=100.6, recv_ts_ns=time.time_ns())
        time.sleep(0.02)  # past the client's health cache
        p = c.perp("okx", "BTC/USDT:USDT")
        assert p.stale_fields == ("open_interest",) and not p.stale and p.open_interest == 7.0, p
        assert p.open_interest_age_s > 2.0 and p.age_s < 2.0
    struct.pack_into("<I", writer.buf, layout.LAYOUT_MINOR_OFFSET, 5)  # a 1.5 writer: no group times
    with Client(namespace) as c:
        p = c.perp("okx", "BTC/USDT:USDT")
        assert p.stale_fields == () and p.index_age_s == p.funding_age_s == p.open_interest_age_s == p.age_s, p


def test_status_names_a_perp_field_group_gone_quiet(namespace, writer):
    """`mdengine status` / `top`: the PERP STALE column names the groups past their bound (layout 1.6), "-" if none."""
    writer.set_freshness(30.0, 0.05)
    writer.set_perp_freshness({"index": 1.0, "open_interest": 60.0})
    now = time.time_ns()
    slot = writer.add_symbol("SWAP", "BTC-USDT-SWAP", "BTC/USDT:USDT", kind=layout.MarketKind.LINEAR)
    writer.publish_book(slot, [(100.0, 1.0)], [(101.0, 2.0)], update_id=1, recv_ts_ns=now)
    writer.publish_perp(slot, index_price=100.0, open_interest=5.0, recv_ts_ns=now - 3 * S)
    writer.publish_perp(slot, mark_price=100.5, funding_rate=1e-4, recv_ts_ns=now)
    with StatusSampler(namespace) as sampler:
        status = sampler.sample()
    (row,) = status["feeds"][0]["symbols"]
    assert row["perp_stale"] == ["index"], row
    line = next(line for line in render_text(status).splitlines() if "BTC/USDT:USDT" in line)
    assert line.split()[-3] == "index", line
    writer.publish_perp(slot, index_price=100.1, recv_ts_ns=time.time_ns())
    with StatusSampler(namespace) as sampler:
        status = sampler.sample()
    assert status["feeds"][0]["symbols"][0]["perp_stale"] == []
    line = next(line for line in render_text(status).splitlines() if "BTC/USDT:USDT" in line)
    assert line.split()[-3] == "-", line


def test_perp_handles_follow_a_recreated_segment(namespace):
    """A Perp and a LiquidationStream move to the new segment of a restarted engine, as books do: the perp record
    is read live there, and liquidations the old ring still held unread count as lost."""
    from mdengine.store import shm

    def engine() -> tuple[SegmentWriter, int]:
        w = SegmentWriter(namespace, "okx", create=True, max_symbols=4, book_capacity=5, trade_capacity=16)
        w.set_running()
        w.heartbeat()
        return w, w.add_symbol("SWAP", "BTC-USDT-SWAP", "BTC/USDT:USDT", kind=layout.MarketKind.LINEAR)

    old, slot = engine()
    old.publish_perp(slot, mark_price=100.0, recv_ts_ns=time.time_ns())
    old.append_liquidations(slot, [(1, 1, 99.0, 1.0, 0, -1, 0)])
    with Client(namespace) as c:
        perp = c.perp_handle("okx", "BTC/USDT:USDT")
        liq = c.liquidation_stream("okx", "BTC/USDT:USDT", start="earliest")
        assert perp.read().mark_price == 100.0 and len(liq.poll().records) == 1
        old.append_liquidations(slot, [(2, 2, 98.0, 1.0, 0, -1, 0)] * 2)  # never read: lost at the restart
        old.close()
        shm.unlink(old.name)
        _until(lambda: perp.read().stale, "the perp record stale once its feed stopped")  # health words: 5 ms cache
        new, slot = engine()
        try:
            new.publish_perp(slot, mark_price=200.0, recv_ts_ns=time.time_ns())
            new.append_liquidations(slot, [(3, 3, 201.0, 1.0, 0, 1, 0)])
            p = _until(lambda: (x := perp.read()).mark_price == 200.0 and x, "the Perp to follow")
            assert not p.stale
            got = liq.poll()
            assert got.lost == 2 and got.records["price"].tolist() == [201.0]
        finally:
            new.close()
