"""One WebSocket connection of the feed: websocket-client for the handshake and for sending, our own reads.

Reading is ours end to end: one `recv_into` of up to 256 KiB into a buffer kept for the connection serves
many frames, and `next_frame()` parses server frames (RFC 6455 §5.2: unmasked, no extension negotiated)
straight out of it. websocket-client's own reader makes one `recv` per header, length and payload and builds
and validates an ABNF object per frame (~13 µs per frame on a cold path here, ~3 µs with this reader);
`recv(256 KiB)` instead of `recv_into` would allocate and free 256 KiB per call (8 µs hot, ~27 µs cold).
"No data yet" surfaces as BlockingIOError / SSLWantReadError, which the loop treats as "back to select";
a partial frame stays in the buffer until the rest arrives.
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
MAX_FRAME = 1 << 26  # a longer frame is a protocol error (the largest exchange snapshots are a few MB)
SEND_TIMEOUT_S = 5.0
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
ABNF = websocket.ABNF

IDLE, CONNECTING, OPEN, CLOSED = "idle", "connecting", "open", "closed"
_NO_BUFFER = memoryview(bytearray(0))


class WsConn:
    """State of one named connection. Mutated on the loop thread only (the connect worker posts back)."""

    def __init__(self, name: str, url: str, backoff: Backoff, rate: float) -> None:
        self.name = name
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
        self._frags: list[bytes] = []

    # ------------------------------------------------------------------ connecting (worker thread)
    def connect_async(self, timeout_s: float, post: Callable[[Callable[[], None]], None],
                      done: Callable[[WsConn, int, websocket.WebSocket | None, str | None], None]) -> None:
        """Handshake on a worker thread; `done(conn, attempt, ws or None, error)` then runs on the loop thread."""
        self.attempt += 1
        self.state = CONNECTING
        self.connect_started = time.monotonic()
        attempt, url = self.attempt, self.url

        def work() -> None:
            ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
            try:
                ws.connect(url, timeout=timeout_s, suppress_origin=True)
            except Exception as e:  # reported to the loop, which backs off and retries
                ws.shutdown()
                err = f"{type(e).__name__}: {e}"
                post(lambda: done(self, attempt, None, err))
                return
            post(lambda: done(self, attempt, ws, None))

        threading.Thread(target=work, name=f"mdengine-connect-{self.name}", daemon=True).start()

    def attach(self, ws: websocket.WebSocket, now: float) -> socket.socket:
        """Take over a connected WebSocket: non-blocking socket, buffered reader. Returns the socket to select on."""
        sock = ws.sock
        assert sock is not None
        sock.setblocking(False)
        self.ws, self.sock = ws, sock
        self._rmem = memoryview(bytearray(RECV_SIZE))  # a fresh one: a previous giant frame's buffer is gone
        self._rpos = self._rend = 0
        self._frag_op, self._frags = None, []
        self.state = OPEN
        self.opened_at = self.last_recv = self.last_ping = now
        self.healthy = self.rotation_asked = False
        self.outq.clear()
        self.bucket = TokenBucket(self.bucket.rate)
        return sock

    # ------------------------------------------------------------------ reading (loop thread)
    def next_frame(self) -> tuple[int, bool, bytes]:
        """The next complete frame as (opcode, fin, payload). Raises BlockingIOError / SSLWantReadError when no
        complete frame is buffered and the socket has nothing more, WebSocketConnectionClosedException at EOF,
        WebSocketProtocolException on a frame a server must not send."""
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
                    end = pos + head + n
                    if end <= self._rend:
                        self._rpos = end
                        return b0 & 0x0F, b0 & 0x80 != 0, mem[pos + head:end].tobytes()
                    if head + n > MAX_FRAME:
                        raise websocket.WebSocketProtocolException(f"frame of {n} bytes is over {MAX_FRAME}")
                    if end > len(mem):
                        self._make_room(head + n)
            elif pos and pos == self._rend:
                self._rpos = self._rend = 0  # all parsed: read into the start again
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

    def message(self, opcode: int, fin: bool, payload: bytes) -> str | bytes | None:
        """Assemble a data frame into a message: the text (str) or binary (bytes) once complete, else None.
        (The loop handles a complete text frame, the usual case, without calling this.)"""
        if opcode == ABNF.OPCODE_CONT:
            if self._frag_op is None:
                raise websocket.WebSocketProtocolException("continuation frame without a message to continue")
            self._frags.append(payload)
        elif opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY):
            if self._frag_op is not None:
                raise websocket.WebSocketProtocolException("a new message inside a fragmented one")
            self._frag_op, self._frags = opcode, [payload]
        else:
            raise websocket.WebSocketProtocolException(f"reserved opcode {opcode:#x}")
        if not fin:
            if sum(map(len, self._frags)) > MAX_FRAME:
                raise websocket.WebSocketProtocolException(f"fragmented message over {MAX_FRAME} bytes")
            return None
        op, data = self._frag_op, b"".join(self._frags)
        self._frag_op, self._frags = None, []
        # invalid UTF-8 is let through (surrogateescape) and fails in the JSON parser, with the frame logged
        return data.decode("utf-8", "surrogateescape") if op == ABNF.OPCODE_TEXT else data

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
        self._frag_op, self._frags = None, []
        if ws is not None:
            ws.shutdown()
