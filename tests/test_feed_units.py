"""Feed pieces on their own: backoff, send budget, the buffered frame reader, the loop's frame path, the publisher."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

import pytest
import websocket
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.sync.server import serve

from mdengine.book import LocalBook
from mdengine.events import (
    BookChanged,
    BookInvalid,
    OpenConnection,
    ProtocolError,
    SubscribeFailed,
    TradesReceived,
)
from mdengine.exchanges.base import Adapter
from mdengine.feed import FeedLoop, LoopOptions, Publisher
from mdengine.feed.timing import Backoff, TokenBucket
from mdengine.feed.wsconn import WOULD_BLOCK, WsConn
from mdengine.store import BookFlags, BookState, SegmentReader, SegmentWriter
from mdengine.store.layout import MarketKind
from mdengine.symbols import Instrument


# ----------------------------------------------------------------------------- timing
def test_Backoff_doubles_up_to_the_cap_with_jitter_and_resets():
    b = Backoff(0.25, 2.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    b.reset()
    assert b.next() == 0.25
    low = Backoff(0.25, 2.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.125, 0.25, 0.5]  # never below half, never zero
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_TokenBucket_keeps_any_one_second_window_at_rate_plus_one():
    bucket = TokenBucket(4.0)
    sent = [t / 1000 for t in range(3000) if bucket.take(t / 1000)]
    worst = max(sum(1 for s in sent if t <= s <= t + 1.0) for t in sent)  # closed one-second windows
    assert worst <= 5 and len(sent) in (12, 13)
    b = TokenBucket(4.0)
    assert b.take(10.0) and not b.take(10.1)
    assert b.wait(10.1) == pytest.approx(0.15)


# ----------------------------------------------------------------------------- the buffered reader
def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _attached() -> tuple[WsConn, socket.socket, socket.socket]:
    """A WsConn reading from one end of a socket pair; the test writes server frames into the other."""
    a, b = socket.socketpair()
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
    ws.sock, ws.connected = a, True
    c = WsConn("t", "ws://x", Backoff(), 1.0)
    c.attach(ws, time.monotonic())
    return c, a, b


def _drain(c: WsConn, first: list | None = None) -> list:
    """Every complete message buffered or readable now: (opcode, text/bytes), control frames as they come.
    `first` keeps the opcode of a message whose fragments span calls."""
    out, first = [], first if first is not None else [None]
    while True:
        try:
            op, fin, payload = c.next_frame()
        except WOULD_BLOCK:
            return out
        if op >= 8:
            out.append((op, bytes(payload)))  # a view of the receive buffer: valid until the next call
        else:
            first[0] = op or first[0]  # a continuation carries opcode 0: the message's is its first frame's
            msg = c.message(op, fin, payload)
            if msg is not None:
                out.append((first[0], msg))


def test_WsConn_reader_reassembles_frames_split_anywhere():
    c, a, b = _attached()
    payloads = [b"x" * 5, b"y" * 300, b"z" * 70_000, b'{"a":1}', b"w" * 600_000]  # the last: over the buffer
    wire = b"".join(server_frame(1, p) for p in payloads)
    got = []
    for i in range(0, len(wire), 997):  # odd chunks: headers and payloads cut at every kind of boundary
        b.sendall(wire[i:i + 997])
        got += [m for _, m in _drain(c)]
    assert got == [p.decode() for p in payloads] and c.nbytes == len(wire) and not c.has_buffered()
    b.close()
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        c.next_frame()
    a.close()


_TLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")  # a self-signed cert for localhost


def test_WsConn_reader_over_tls_reassembles_frames_across_records():
    """wss:// is what real exchanges speak: through TLS a read returns at most one record (<= 16 KiB) and "no data
    yet" is SSLWantReadError; frames cut across records and reads still come out whole, and the loop's rule
    (select only when has_buffered() is False) does not stall."""
    import ssl

    a, b = socket.socketpair()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(os.path.join(_TLS_DIR, "localhost-cert.pem"),
                               os.path.join(_TLS_DIR, "localhost-key.pem"))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    payloads = [b"x" * 5, b"y" * 300, b"z" * 70_000, b'{"a":1}', b"w" * 600_000]
    wire = b"".join(server_frame(1, p) for p in payloads)

    def serve() -> None:
        with server_ctx.wrap_socket(b, server_side=True) as tls:
            for i in range(0, len(wire), 5000):
                tls.sendall(wire[i:i + 5000])
            time.sleep(1.0)

    server = threading.Thread(target=serve)
    server.start()
    tls = client_ctx.wrap_socket(a, server_hostname="localhost")  # handshake while blocking, then hand it over
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
    ws.sock, ws.connected = tls, True
    c = WsConn("t", "wss://x", Backoff(), 1.0)
    c.attach(ws, time.monotonic())
    got, deadline = [], time.monotonic() + 10
    try:
        while len(got) < len(payloads):
            assert time.monotonic() < deadline, [len(p) for p in got]
            try:
                got.append(bytes(c.next_frame()[2]))
            except WOULD_BLOCK:
                if not c.has_buffered():  # only then may the loop go back to select
                    select.select([tls], [], [], 0.5)
    finally:
        server.join(10)
        tls.close()
    assert got == payloads and c.nbytes == len(wire)


_messages = st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=300), st.integers(1, 4),
                               st.booleans()), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(messages=_messages, chunk=st.integers(1, 2000))
def test_WsConn_reader_returns_every_message_whatever_the_fragmentation_and_chunking(messages, chunk):
    """Each message is cut into 1-4 fragments, with a ping between fragments when asked; the wire is then
    written in chunks of any size. Text comes back as str, binary as bytes, pings in place."""
    wire, want = b"", []
    for op, body, parts, ping in messages:
        cuts = [len(body) * k // parts for k in range(parts + 1)]
        for k in range(parts):
            wire += server_frame(op if k == 0 else 0, body[cuts[k]:cuts[k + 1]], fin=k == parts - 1)
            if ping and k == 0 and parts > 1:  # between two fragments of the message
                wire += server_frame(0x9, b"p")
                want.append((0x9, b"p"))
        want.append((op, body.decode("utf-8", "surrogateescape") if op == 1 else body))
    c, a, b = _attached()
    got, first = [], [None]
    try:
        for i in range(0, len(wire), chunk):
            b.sendall(wire[i:i + chunk])
            got += _drain(c, first)
    finally:
        a.close()
        b.close()
    assert got == want


@pytest.mark.parametrize("frame, error", [
    (bytes([0x81, 0x85]) + b"mask" + b"hello", "a mask"),
    (bytes([0xC1, 0x01]) + b"x", "RSV bits set"),
    (bytes([0x81, 127]) + struct.pack("!Q", 1 << 40), "over"),
])
def test_WsConn_reader_refuses_frames_a_server_must_not_send(frame, error):
    c, a, b = _attached()
    b.sendall(frame)
    with pytest.raises(websocket.WebSocketProtocolException, match=error):
        c.next_frame()
    a.close()
    b.close()


def test_WsConn_message_refuses_a_broken_fragment_sequence():
    c, a, b = _attached()
    with pytest.raises(websocket.WebSocketProtocolException, match="without a message"):
        c.message(0, True, b"x")
    assert c.message(1, False, b"a") is None and c.in_message
    with pytest.raises(websocket.WebSocketProtocolException, match="inside a fragmented one"):
        c.message(1, True, b"b")
    with pytest.raises(websocket.WebSocketProtocolException, match="reserved opcode"):
        c.message(3, True, b"")
    a.close()
    b.close()


# ----------------------------------------------------------------------------- the loop's frame path
class EchoAdapter(Adapter):
    """Records what the loop hands it; opens one connection."""

    exchange = "test"

    def __init__(self, url: str) -> None:
        super().__init__(None)
        self.url = url
        self.frames: list = []
        self.closed: list[str] = []
        self.opened = threading.Event()

    @classmethod
    def instrument_requests(cls, endpoints, markets=None):
        return []

    @classmethod
    def parse_instruments(cls, request_id, body):
        return [], []

    def subscribe(self, inst):
        return []

    def unsubscribe(self, key):
        return []

    def on_open(self, conn):
        self.opened.set()
        return []

    def on_close(self, conn, reason):
        self.closed.append(reason)
        return []

    def on_frame(self, conn, data, recv_ns):
        self.frames.append(data)
        return []

    def on_rest(self, request_id, status, body, recv_ns):
        return []

    def silence_timeout(self, conn):
        return 0.0


class NullSink:
    def __init__(self):
        self.lost = []

    def on_event(self, ev):
        pass

    def connection_lost(self, conn, url, reason, requested, symbols):
        self.lost.append(reason)

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_FeedLoop_passes_text_fragments_and_binary_answers_pings_and_taps():
    pongs = []

    def handler(conn):
        conn.send(["{\"part\":", "1}"])  # a fragmented text message
        conn.send(b"\x00\x01")
        pongs.append(conn.ping(b"hello"))
        conn.send("{}")
        time.sleep(0.5)

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/x"
        adapter, sink, taps = EchoAdapter(url), NullSink(), []
        loop = FeedLoop(adapter, sink, options=LoopOptions(backoff_initial_s=5.0),
                        tap=lambda *args: taps.append(args[:3]))
        t = threading.Thread(target=loop.run)
        t.start()
        try:
            loop.submit(lambda: loop.dispatch([OpenConnection("c", url)])).result(5)
            deadline = time.monotonic() + 10
            while len(adapter.frames) < 3 or not adapter.closed:
                assert time.monotonic() < deadline, (adapter.frames, adapter.closed)
                time.sleep(0.02)
            assert adapter.frames == ['{"part":1}', b"\x00\x01", "{}"]
            assert pongs[0].wait(5)  # the loop echoed the ping
            assert "closed by server (code 1000" in adapter.closed[0]
            assert [k for k, _, _ in taps][:4] == ["connect", "recv", "recv", "recv"] and taps[-1][0] == "disconnect"
            assert loop.submit(lambda: loop.connections()).result(5) == {"c": "idle"}  # waiting to reconnect
        finally:
            loop.stop()
            t.join(10)
        assert not t.is_alive()


class _RawWsServer:
    """A bare TCP server that completes the WebSocket handshake and then writes `frames` as they are (so they can
    break the protocol), on every connection; `accepted` counts connections, `close()` stops it."""

    def __init__(self, frames: bytes) -> None:
        self.frames = frames
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.lsock.getsockname()[1]}/x"
        self.accepted: list[int] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve_forever, name="raw-ws-server", daemon=True)
        self._thread.start()

    def _serve_forever(self) -> None:
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.append(1)
            try:
                self._answer(conn)
            except OSError:  # the client went away: wait for the next one
                pass

    def _answer(self, conn: socket.socket) -> None:
        import base64
        import hashlib

        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:  # the client went away before its handshake
                break
            request += chunk
        if b"\r\n\r\n" not in request:
            return
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.frames)

    def close(self) -> None:
        # close() alone leaves a thread blocked in accept() on Linux (it holds its own reference to the file);
        # shutdown() wakes it with an error, so its thread ends here rather than outliving the test.
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        self._thread.join(10)
        assert not self._thread.is_alive()
        for conn in self._conns:
            conn.close()


@pytest.mark.parametrize("bad, reason", [
    (bytes([0x81, 0x85]) + b"mask" + b"hello", "a mask"),
    (bytes([0x89, 126]) + struct.pack("!H", 200) + b"p" * 200, "over 125 bytes"),
    (server_frame(0, b"orphan"), "without a message"),
])
def test_FeedLoop_drops_a_connection_that_breaks_the_protocol_says_why_and_reconnects(bad, reason):
    server = _RawWsServer(server_frame(1, b'{"ok":1}') + bad)
    url, accepted = server.url, server.accepted
    adapter, sink = EchoAdapter(url), NullSink()
    loop = FeedLoop(adapter, sink, options=LoopOptions(backoff_initial_s=0.05, backoff_max_s=0.1))
    t = threading.Thread(target=loop.run)
    t.start()
    try:
        loop.submit(lambda: loop.dispatch([OpenConnection("c", url)])).result(5)
        deadline = time.monotonic() + 10
        while len(accepted) < 2 or len(sink.lost) < 2:
            assert time.monotonic() < deadline, (accepted, sink.lost)
            time.sleep(0.02)
        assert adapter.frames[:2] == ['{"ok":1}', '{"ok":1}']  # the good frame before it, on each connection
        assert "WebSocketProtocolException" in sink.lost[0] and reason in sink.lost[0]
    finally:
        loop.stop()
        t.join(10)
        server.close()
    assert not t.is_alive()


@pytest.mark.parametrize("busy_poll_s", [0.0, 0.4])
def test_FeedLoop_busy_poll_keeps_polling_after_a_frame_instead_of_sleeping(busy_poll_s):
    import psutil

    def handler(conn):
        conn.send("{}")
        time.sleep(2.0)

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/x"
        adapter = EchoAdapter(url)
        loop = FeedLoop(adapter, NullSink(), options=LoopOptions(busy_poll_s=busy_poll_s))
        selects: list[tuple[float, float | None]] = []  # (when, timeout) of every select() the loop makes
        real_select = loop._sel.select

        def select(timeout=None):
            selects.append((time.monotonic(), timeout))
            return real_select(timeout)

        loop._sel.select = select
        t = threading.Thread(target=loop.run)
        t.start()

        def loop_cpu_s() -> float:
            return next(x.user_time + x.system_time for x in psutil.Process().threads() if x.id == t.native_id)

        try:
            loop.submit(lambda: loop.dispatch([OpenConnection("c", url)])).result(5)
            deadline = time.monotonic() + 10
            while not adapter.frames:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            before, start = loop_cpu_s(), time.monotonic()
            time.sleep(0.5)  # the server is silent: a polling loop polls through this, a blocking one sleeps
            used, end = loop_cpu_s() - before, time.monotonic()
            assert adapter.frames == ["{}"]
            window = [timeout for when, timeout in selects if start <= when <= end]
            polls = sum(timeout == 0 for timeout in window)
            # Behaviour, not speed: busy polling is select() without a timeout, call after call (hundreds of
            # thousands in 0.4 s on a quiet core; 100 is what a thread with a sliver of a busy core still makes).
            # Without it the loop blocks until its next 50 ms tick and uses (next to) no CPU.
            if busy_poll_s:
                assert polls >= 100, (polls, len(window))
            else:
                assert polls == 0 and len(window) <= 0.5 / 0.05 + 3, window
                assert used < 0.1, used
            # and the loop still answers posted work while it polls
            assert loop.submit(lambda: loop.connections()).result(5) == {"c": "open"}
        finally:
            loop.stop()
            t.join(10)
        assert not t.is_alive()


# ----------------------------------------------------------------------------- publisher on a real segment
BTC = Instrument("binance", "spot", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT", tick_size=0.01)


@pytest.fixture
def segment(namespace):
    w = SegmentWriter(namespace, "binance", create=True, max_symbols=4, book_capacity=5, trade_capacity=16)
    r = SegmentReader(namespace, "binance")
    yield w, r
    r.close()
    w.close()


def test_Publisher_turns_events_into_store_writes_and_counters(segment):
    w, r = segment
    pub = Publisher(w, "binance", depth=3)
    pub.add(BTC)
    reader = r.book("BTC/USDT")
    assert reader.header().state_name == "syncing"
    book = LocalBook()
    book.apply_snapshot([[str(100 - i), "1"] for i in range(5)], [["101", "2"]])
    book.update_id, book.exch_ts_ns = 7, 5
    pub.on_event(BookChanged(BTC.key, book, 123))
    snap = reader.snapshot()
    assert snap.bids.tolist() == [[100.0, 1.0], [99.0, 1.0], [98.0, 1.0]] and snap.asks.tolist() == [[101.0, 2.0]]
    assert snap.header.state == BookState.LIVE and snap.header.flags & BookFlags.TRUNCATED
    assert (snap.update_id, snap.header.recv_ts_ns) == (7, 123)
    pub.on_event(TradesReceived(BTC.key, [(1, 2, 100.0, 0.5, 9, 1, 0)]))
    assert r.trades("BTC/USDT", start="earliest").poll()[0]["trade_id"].tolist() == [9]
    pub.on_event(BookInvalid(BTC.key, "gap", "U=5"))
    assert reader.header().state_name == "resyncing"
    pub.on_event(ProtocolError("spot/0", "invalid JSON: {"))
    c = r.view.counters()
    assert (c["book_updates"], c["trades"], c["gaps"], c["resyncs"], c["malformed"]) == (1, 1, 1, 1, 1)
    assert r.view.stats(r.entry("BTC/USDT").slot)["gaps"] == 1 and "invalid JSON" in r.view.last_error()[1]
    pub.close()
    assert reader.header().state_name == "stale"
    pub.on_event(SubscribeFailed(BTC.key, "spot/0", "code 2: refused"))
    assert r.view.counters()["subscribe_errors"] == 1 and r.symbols() == []
    pub.on_event(BookChanged(BTC.key, book, 1))  # a late event for a removed symbol is ignored


def test_WsConn_close_sends_a_close_frame_with_the_reason():
    got = []

    def handler(conn):
        try:
            for _ in conn:
                pass
        finally:
            got.append((conn.close_code, conn.close_reason))

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
        ws.connect(f"ws://127.0.0.1:{server.socket.getsockname()[1]}/")
        c = WsConn("c", "ws://x", Backoff(), 1.0)
        c.attach(ws, time.monotonic())
        c.close(reason="feed stopping")
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    assert got == [(1000, "feed stopping")] and c.ws is None and c.state == "idle"


def test_FeedLoop_submit_never_loses_a_wakeup_under_concurrent_posters():
    """Calls posted from other threads (REST answers, finished connects, control requests) must all run.

    Regression: the loop cleared its "woken" flag before draining the wake socket, so a post racing the
    drain left the flag set with no byte pending, and every later post skipped its wake-up: a restarted
    feed then sat with its connect result queued until something else woke it.
    """
    loop = FeedLoop(EchoAdapter("ws://127.0.0.1:9/x"), NullSink())
    t = threading.Thread(target=loop.run)
    t.start()
    failures: list[str] = []

    def poster(n: int) -> None:
        for i in range(n):
            try:
                loop.submit(lambda: None).result(timeout=5)
            except Exception as e:  # a lost wake-up shows as a timeout here
                failures.append(f"call {i}: {type(e).__name__}")
                return

    try:
        posters = [threading.Thread(target=poster, args=(1500,)) for _ in range(4)]
        for p in posters:
            p.start()
        for p in posters:
            p.join(60)
        assert not failures, failures
    finally:
        loop.stop()
        t.join(10)


class WarmAdapter(EchoAdapter):
    """EchoAdapter that records warm-up passes (or fails them, with `fail`)."""

    def __init__(self, url: str, fail: bool = False) -> None:
        super().__init__(url)
        self.fail = fail
        self.warmed: list[tuple[str, str]] = []

    def warm(self, conn, data, recv_ns):
        self.warmed.append((conn, data))
        if self.fail:
            raise RuntimeError("bug in warm")
        return []


class ErrorSink(NullSink):
    def __init__(self):
        super().__init__()
        self.errors: list[str] = []
        self.warm_calls = 0

    def error(self, text):
        self.errors.append(text)

    def warm(self, events):
        self.warm_calls += 1


def _one_frame_then_silence(adapter_factory, options, tap=None):
    def handler(conn):
        conn.send('{"n":1}')
        time.sleep(1.5)  # longer than any test below runs: no close, so no reconnect and no second frame

    server = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/x"
    adapter, sink = adapter_factory(url), ErrorSink()
    loop = FeedLoop(adapter, sink, options=options, tap=tap)
    t = threading.Thread(target=loop.run)
    t.start()
    loop.submit(lambda: loop.dispatch([OpenConnection("c", url)])).result(5)
    deadline = time.monotonic() + 10
    while not adapter.frames:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return server, loop, t, adapter, sink


def test_FeedLoop_warms_with_the_last_frame_while_idle_then_stops_after_warm_for_s():
    taps: list[str] = []
    server, loop, t, adapter, sink = _one_frame_then_silence(
        WarmAdapter, LoopOptions(warm_interval_s=0.01, warm_for_s=0.4), tap=lambda kind, *a: taps.append(kind))
    try:
        time.sleep(0.8)
        n = len(adapter.warmed)
        # One pass per 10 ms during the 0.4 s after the frame: ~40 on a quiet machine, never more than 40 (+ slack
        # for the clock reads); the lower bound only says it warmed, with 10x room for a busy machine.
        assert 4 <= n <= 45, n
        assert set(adapter.warmed) == {("c", '{"n":1}')}
        assert sink.warm_calls == n and loop.submit(lambda: loop.warm_passes).result(5) == n
        time.sleep(0.3)
        assert len(adapter.warmed) == n  # silent longer than warm_for_s: asleep again
        assert adapter.frames == ['{"n":1}'] and taps.count("recv") == 1  # passes are not frames
    finally:
        loop.stop()
        t.join(10)
        server.shutdown()
    assert not t.is_alive()


def test_FeedLoop_a_failing_warm_pass_is_reported_once_and_warming_stops():
    server, loop, t, adapter, sink = _one_frame_then_silence(
        lambda url: WarmAdapter(url, fail=True), LoopOptions(warm_interval_s=0.01))
    try:
        time.sleep(0.3)
        assert len(adapter.warmed) == 1
        assert len(sink.errors) == 1 and "warm-up pass: RuntimeError: bug in warm" in sink.errors[0]
        assert loop.submit(lambda: loop.connections()).result(5) == {"c": "open"}  # the feed lives on
    finally:
        loop.stop()
        t.join(10)
        server.shutdown()
    assert not t.is_alive()


def test_FeedLoop_does_not_replay_a_frame_longer_than_WARM_MAX_CHARS(monkeypatch):
    from mdengine.feed import loop as loop_module

    monkeypatch.setattr(loop_module, "WARM_MAX_CHARS", 5)  # the test frame, '{"n":1}', is 7 characters
    server, loop, t, adapter, sink = _one_frame_then_silence(WarmAdapter, LoopOptions(warm_interval_s=0.01))
    try:
        time.sleep(0.2)
        assert adapter.frames == ['{"n":1}'] and adapter.warmed == []
    finally:
        loop.stop()
        t.join(10)
        server.shutdown()


def test_FeedLoop_without_warm_interval_never_warms():
    server, loop, t, adapter, sink = _one_frame_then_silence(WarmAdapter, LoopOptions())
    try:
        time.sleep(0.2)
        assert adapter.warmed == [] and sink.warm_calls == 0
    finally:
        loop.stop()
        t.join(10)
        server.shutdown()


# ----------------------------------------------------------------------------- message limits
def _run_loop_against(frames: bytes, **options):
    """A FeedLoop connected to a raw server writing `frames` on every connection; yields (adapter, sink, accepted)
    once the caller's condition is met (see callers), then stops the loop."""
    server = _RawWsServer(frames)
    url, accepted = server.url, server.accepted
    adapter, sink = EchoAdapter(url), NullSink()
    loop = FeedLoop(adapter, sink, options=LoopOptions(backoff_initial_s=0.05, backoff_max_s=0.1, **options))
    t = threading.Thread(target=loop.run)
    t.start()
    loop.submit(lambda: loop.dispatch([OpenConnection("c", url)])).result(5)

    def stop():
        loop.stop()
        t.join(10)
        server.close()
        assert not t.is_alive()

    return adapter, sink, accepted, stop


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_FeedLoop_joins_the_most_fragments_allowed_in_linear_time():
    """16,384 one-byte fragments (the cap) took ~2 s when every fragment re-summed the ones before (quadratic);
    joined in one growing buffer they take a few ms. The bound has >10x headroom over a busy machine's figure."""
    from mdengine.feed.wsconn import MAX_FRAGMENTS

    body = b'"' + b"x" * (MAX_FRAGMENTS - 2) + b'"'
    wire = server_frame(1, body[:1], fin=False) + b"".join(server_frame(0, body[i:i + 1], fin=i == len(body) - 1)
                                                           for i in range(1, len(body)))
    t0 = time.monotonic()
    adapter, sink, _, stop = _run_loop_against(wire + server_frame(1, b"{}"))
    try:
        _wait(lambda: len(adapter.frames) >= 2, 30, (len(adapter.frames), sink.lost))
        elapsed = time.monotonic() - t0
    finally:
        stop()
    assert adapter.frames[:2] == [body.decode(), "{}"] and not sink.lost
    assert elapsed < 1.0, elapsed  # ~0.02 s here; the quadratic join took 2 s for the same message


@pytest.mark.parametrize("what, wire, reason", [
    ("a frame whose header says 60 MB (nothing more is sent: it must not wait for it)",
     bytes([0x81, 127]) + struct.pack("!Q", 60 << 20) + b"x" * 1000, "frame of 62914560 bytes is over"),
    ("a frame one byte over", server_frame(1, b"y" * 4097), "frame of 4097 bytes is over"),
    ("fragments adding up to more", b"".join(server_frame(1 if i == 0 else 0, b"z" * 1000, fin=False)
                                             for i in range(5)), "fragmented message over"),
    ("more fragments than allowed", server_frame(1, b"[", fin=False) + server_frame(0, b"", fin=False) * 20_000,
     "16385 fragments"),
])
def test_FeedLoop_refuses_a_message_over_the_limit_counts_it_and_replaces_the_connection(what, wire, reason):
    adapter, sink, accepted, stop = _run_loop_against(server_frame(1, b'{"ok":1}') + wire, max_message_bytes=4096)
    try:
        _wait(lambda: len(accepted) >= 2 and len(sink.lost) >= 2, 30, (accepted, sink.lost))
        conn = adapter  # the good frame before it arrives on every connection
        assert conn.frames[:2] == ['{"ok":1}', '{"ok":1}']
    finally:
        stop()
    assert "MessageTooLarge" in sink.lost[0] and reason in sink.lost[0], (what, sink.lost[0])
    assert "limit" in sink.lost[0]


def test_WsConn_gives_back_a_buffer_grown_for_a_big_message():
    c, a, b = _attached()
    c.max_message = 3 << 20
    sender = threading.Thread(target=b.sendall, args=(server_frame(1, b"q" * (2 << 20)),))
    sender.start()  # more than the socket holds: written while we read
    got = None
    while got is None:
        try:
            got = bytes(c.next_frame()[2])
        except WOULD_BLOCK:
            select.select([a], [], [], 5)
    sender.join(10)
    assert len(got) == 2 << 20 and len(c._rmem) >= 2 << 20
    b.sendall(server_frame(1, b"small"))
    while True:
        try:
            assert bytes(c.next_frame()[2]) == b"small"
            break
        except WOULD_BLOCK:
            select.select([a], [], [], 5)
    assert len(c._rmem) <= 1 << 18  # back to the usual receive buffer
    a.close()
    b.close()


def test_FeedLoop_stop_ends_a_handshake_in_flight_and_its_thread():
    """A connection still in its handshake when the loop stops: the connect thread must end with the loop, not
    wait out its timeout (30 s here) and then hand a connected socket to a loop that is gone. The server takes
    the TCP connection (the kernel's backlog) and never answers the WebSocket handshake."""
    lsock = socket.create_server(("127.0.0.1", 0))
    url = f"ws://127.0.0.1:{lsock.getsockname()[1]}/x"
    loop = FeedLoop(EchoAdapter(url), NullSink(), options=LoopOptions(connect_timeout_s=30.0))
    t = threading.Thread(target=loop.run)
    t.start()
    try:
        loop.submit(lambda: loop.dispatch([OpenConnection("c", url)])).result(5)
        deadline = time.monotonic() + 10
        while not (connecting := [x for x in threading.enumerate() if x.name == "mdengine-connect-c"]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # well into its handshake: TCP is up, the server never answers
        assert loop.submit(lambda: loop.connections()).result(5) == {"c": "connecting"}
        loop.stop()
        t.join(10)
        assert not t.is_alive()
        connecting[0].join(3)  # a tenth of its timeout; the server still holds the connection
        assert not connecting[0].is_alive()
    finally:
        loop.stop()
        lsock.close()  # resets the connection still in its backlog, which ends a handshake left waiting
