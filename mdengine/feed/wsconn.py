"""One WebSocket connection of the feed: websocket-client for the handshake and for sending, our own reads.

Reading is ours end to end: one `recv_into` of up to 256 KiB into a buffer kept for the connection serves
many frames, and `next_frame()` parses server frames (RFC 6455 §5.2: unmasked, no extension negotiated)
straight out of it. websocket-client's own reader makes one `recv` per header, length and payload and builds
and validates an ABNF object per frame (~13 µs per frame on a cold path here, ~3 µs with this reader);
`recv(256 KiB)` instead of `recv_into` would allocate and free 256 KiB per call (8 µs hot, ~27 µs cold).
"No data yet" surfaces as BlockingIOError / SSLWantReadError, which the loop treats as "back to select";
a partial frame stays in the buffer until the rest arrives.

Memory is bounded by what the exchange can really send: a frame or a fragmented message longer than the
connection's `max_message` (the adapter's MAX_MESSAGE_BYTES, or config) is refused as soon as its header says
so, before it is buffered; a message of more than MAX_FRAGMENTS fragments too. A payload is handed out as a view
of the receive buffer (the loop decodes text straight from it: one copy, not two), fragments are appended to one
growing buffer (linear in the message's size, however many fragments), and a buffer grown for a big message is
given back once it is consumed.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable

import websocket

from .timing import Backoff, TokenBucket

RECV_SIZE = 1 << 18
DEFAULT_MAX_MESSAGE = 4 << 20  # bytes; Adapter.MAX_MESSAGE_BYTES is the same default
MAX_FRAGMENTS = 16_384  # fragments of one message; exchanges send whole messages, a flood of fragments is an attack
SEND_TIMEOUT_S = 5.0
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
ABNF = websocket.ABNF

IDLE, CONNECTING, OPEN, CLOSED = "idle", "connecting", "open", "closed"
_NO_BUFFER = memoryview(bytearray(0))


class MessageTooLarge(websocket.WebSocketProtocolException):
    """A frame or a fragmented message over the connection's limit (size or fragment count)."""


class WsConn:
    """State of one named connection. Mutated on the loop thread only (the connect worker posts back)."""

    def __init__(self, name: str, url: str, backoff: Backoff, rate: float,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.name = name
        self.max_message = max_message
        self.url = url
        self.state = IDLE
        self.wanted = True
        self.ws: websocket.WebSocket | None = None
        self.sock: socket.socket | None = None
        self.attempt = 0  # bumped per connect attempt; a late answer for an older attempt is ignored
        self.opens = 0  # successful handshakes so far (more than one: reconnects)
        self.backoff = backoff
        self.bucket = TokenBucket(rate)
        self.outq: deque[tuple[int, bytes | str]] = deque()  # (opcode, payload) waiting for a send token
        self.flush_scheduled = False
        self.retry_at = 0.0
        self.connect_started = 0.0
        self.opened_at = 0.0
        self.last_recv = 0.0
        self.last_ping = 0.0
        self.healthy = False  # open long enough that the backoff was reset
        self.rotation_asked = False  # the adapter was asked to replace this connection (rotate_after)
        self.nbytes = 0  # raw bytes read, taken by the loop for the counters
        self._rmem = _NO_BUFFER  # receive buffer while open (frames are parsed in place); freed on close
        self._rpos = self._rend = 0  # unparsed bytes are _rmem[_rpos:_rend]
        self._frag_op: int | None = None  # opcode of the fragmented message being assembled
        self._frags = bytearray()  # its payload so far
        self._nfrags = 0
        self._connecting: tuple[threading.Thread, websocket.WebSocket] | None = None  # the last handshake's

    # ------------------------------------------------------------------ connecting (worker thread)
    def connect_async(self, timeout_s: float, post: Callable[[Callable[[], None]], None],
                      done: Callable[[WsConn, int, websocket.WebSocket | None, str | None], None]) -> None:
        """Handshake on a worker thread; `done(conn, attempt, ws or None, error)` then runs on the loop thread."""
        self.attempt += 1
        self.state = CONNECTING
        self.connect_started = time.monotonic()
        attempt, url = self.attempt, self.url
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)

        def work() -> None:
            try:
                ws.connect(url, timeout=timeout_s, suppress_origin=True)
            except Exception as e:  # reported to the loop, which backs off and retries
                ws.shutdown()
                err = f"{type(e).__name__}: {e}"
                post(lambda: done(self, attempt, None, err))
                return
            post(lambda: done(self, attempt, ws, None))

        self._connecting = (threading.Thread(target=work, name=f"mdengine-connect-{self.name}", daemon=True), ws)
        self._connecting[0].start()

    def abort_connect(self, timeout_s: float = 2.0) -> None:
        """End a handshake in flight and wait (up to `timeout_s`) for its thread: the loop is stopping, so nobody
        would take the socket it may still return. Shutting the socket down wakes the thread's blocking read
        (closing it would not); a socket it connects meanwhile is caught on the next pass."""
        if self._connecting is None:
            return
        thread, ws = self._connecting
        self._connecting = None
        deadline = time.monotonic() + timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            sock = ws.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            thread.join(0.05)
        ws.shutdown()  # whatever it finished with is closed, not left to the garbage collector

    def attach(self, ws: websocket.WebSocket, now: float) -> socket.socket:
        """Take over a connected WebSocket: non-blocking socket, buffered reader. Returns the socket to select on."""
        sock = ws.sock
        assert sock is not None
        sock.setblocking(False)
        self.ws, self.sock = ws, sock
        self._rmem = memoryview(bytearray(RECV_SIZE))  # a fresh one: a previous giant frame's buffer is gone
        self._rpos = self._rend = 0
        self._frag_op, self._frags, self._nfrags = None, bytearray(), 0
        self.state = OPEN
        self.opened_at = self.last_recv = self.last_ping = now
        self.healthy = self.rotation_asked = False
        self.outq.clear()
        self.bucket = TokenBucket(self.bucket.rate)
        return sock

    # ------------------------------------------------------------------ reading (loop thread)
    def next_frame(self) -> tuple[int, bool, memoryview]:
        """The next complete frame as (opcode, fin, payload). The payload is a view of the receive buffer, valid
        until the next call (copy what you keep). Raises BlockingIOError / SSLWantReadError when no complete
        frame is buffered and the socket has nothing more, WebSocketConnectionClosedException at EOF,
        WebSocketProtocolException on a frame a server must not send, MessageTooLarge on a frame over
        `max_message` (before reading its payload)."""
        while True:
            mem, pos = self._rmem, self._rpos
            avail = self._rend - pos
            if avail >= 2:
                b0, b1 = mem[pos], mem[pos + 1]
                n, head = b1 & 0x7F, 2
                if n == 126:
                    if avail >= 4:
                        n, head = mem[pos + 2] << 8 | mem[pos + 3], 4
                    else:
                        head = 0
                elif n == 127:
                    if avail >= 10:
                        n, head = int.from_bytes(mem[pos + 2:pos + 10], "big"), 10
                    else:
                        head = 0
                if head:
                    if b1 & 0x80 or b0 & 0x70:
                        raise websocket.WebSocketProtocolException(
                            f"server frame with {'a mask' if b1 & 0x80 else 'RSV bits set'} (byte 0 {b0:#04x})")
                    if n > self.max_message:  # before any of it is buffered
                        raise MessageTooLarge(f"frame of {n} bytes is over this connection's limit of "
                                              f"{self.max_message} bytes (max_message_bytes)")
                    end = pos + head + n
                    if end <= self._rend:
                        self._rpos = end
                        return b0 & 0x0F, b0 & 0x80 != 0, mem[pos + head:end]
                    if end > len(mem):
                        self._make_room(head + n)
            elif pos and pos == self._rend:
                self._rpos = self._rend = 0  # all parsed: read into the start again
                if len(mem) > RECV_SIZE:  # give back what a big message made us grow to
                    self._rmem = memoryview(bytearray(RECV_SIZE))
            self._fill()

    def _make_room(self, frame_size: int) -> None:
        """Move the partial frame to the start of the buffer, growing the buffer if the frame is larger."""
        pos, end = self._rpos, self._rend
        if frame_size > len(self._rmem):
            bigger = memoryview(bytearray(max(frame_size, 2 * len(self._rmem))))
            bigger[:end - pos] = self._rmem[pos:end]
            self._rmem = bigger
        else:
            self._rmem[:end - pos] = self._rmem[pos:end]
        self._rpos, self._rend = 0, end - pos

    def _fill(self) -> None:
        end = self._rend
        if end == len(self._rmem):
            self._make_room(len(self._rmem))
            end = self._rend
        k = self.sock.recv_into(self._rmem[end:])  # raises BlockingIOError / SSLWantReadError when drained
        if not k:
            raise websocket.WebSocketConnectionClosedException("connection closed by the server (EOF)")
        self.nbytes += k
        self._rend = end + k

    def message(self, opcode: int, fin: bool, payload: bytes | memoryview) -> str | bytes | None:
        """Assemble a data frame into a message: the text (str) or binary (bytes) once complete, else None.
        Linear in the message's size; raises MessageTooLarge past `max_message` bytes or MAX_FRAGMENTS fragments.
        (The loop handles a complete text frame, the usual case, without calling this.)"""
        if opcode == ABNF.OPCODE_CONT:
            if self._frag_op is None:
                raise websocket.WebSocketProtocolException("continuation frame without a message to continue")
        elif opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
            if self._frag_op is not None:
                raise websocket.WebSocketProtocolException("a new message inside a fragmented one")
            if fin:  # a whole message in one frame
                return str(payload, "utf-8", "surrogateescape") if opcode == ABNF.OPCODE_TEXT else bytes(payload)
            self._frag_op = opcode
        else:
            raise websocket.WebSocketProtocolException(f"reserved opcode {opcode:#x}")
        self._nfrags += 1
        if len(self._frags) + len(payload) > self.max_message or self._nfrags > MAX_FRAGMENTS:
            size, count = len(self._frags) + len(payload), self._nfrags
            self._frag_op, self._frags, self._nfrags = None, bytearray(), 0
            raise MessageTooLarge(f"fragmented message over this connection's limit ({count} fragments, {size} "
                                  f"bytes so far; limits {MAX_FRAGMENTS} fragments, {self.max_message} bytes)")
        self._frags += payload
        if not fin:
            return None
        op, data = self._frag_op, self._frags
        self._frag_op, self._frags, self._nfrags = None, bytearray(), 0
        # invalid UTF-8 is let through (surrogateescape) and fails in the JSON parser, with the frame logged
        return str(data, "utf-8", "surrogateescape") if op == ABNF.OPCODE_TEXT else bytes(data)

    @property
    def in_message(self) -> bool:
        """A fragmented message is being assembled."""
        return self._frag_op is not None

    def has_buffered(self) -> bool:
        """Bytes already read from the kernel (ours, or the TLS layer's) that select() will not announce."""
        if self._rpos < self._rend:
            return True
        sock = self.sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    # ------------------------------------------------------------------ sending (loop thread)
    def send_now(self, opcode: int, payload: bytes | str) -> None:
        """Send one frame, briefly blocking: control messages are small and rare, never on the frame path."""
        sock, ws = self.sock, self.ws
        assert sock is not None and ws is not None
        sock.settimeout(SEND_TIMEOUT_S)
        try:
            ws.send(payload, opcode)
        finally:
            if self.sock is not None:
                sock.setblocking(False)

    def close(self, status: int = websocket.STATUS_NORMAL, reason: str = "") -> None:
        """Best-effort close frame, then drop the socket. Never raises."""
        ws = self.ws
        if ws is not None and ws.sock is not None:
            try:
                ws.sock.settimeout(0.2)
                ws.send_close(status, reason.encode()[:120])
            except Exception:  # the peer may be gone already
                pass
        self.close_quietly()

    def close_quietly(self) -> None:
        """Drop the socket without a close frame (it is broken or the peer has gone)."""
        ws = self.ws
        self.ws = self.sock = None
        self.state = IDLE
        self.outq.clear()
        self._rmem, self._rpos, self._rend = _NO_BUFFER, 0, 0  # closed connections linger in the loop's table
        self._frag_op, self._frags, self._nfrags = None, bytearray(), 0
        if ws is not None:
            ws.shutdown()
