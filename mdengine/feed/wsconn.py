"""One WebSocket connection of the feed: websocket-client for the handshake and frame parsing, our own reads.

websocket-client parses frames through `frame_buffer.recv(n)`, which by default makes one `recv` syscall
per header, length and payload (and through a selector when the socket has a timeout). We hand it a
buffered, non-blocking reader instead: one `recv` of up to 256 KiB serves many frames, and "no data yet"
surfaces as BlockingIOError / SSLWantReadError, which the loop treats as "back to select". websocket-client's
frame_buffer keeps a half-read frame across those exceptions, so partial frames are safe.
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
SEND_TIMEOUT_S = 5.0
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

IDLE, CONNECTING, OPEN, CLOSED = "idle", "connecting", "open", "closed"


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
        self.nbytes = 0  # raw bytes read, taken by the loop for the counters
        self._rbuf = b""
        self._rpos = 0

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
        self._rbuf, self._rpos = b"", 0
        ws.frame_buffer.recv = self._recv
        self.state = OPEN
        self.opened_at = self.last_recv = self.last_ping = now
        self.healthy = False
        self.outq.clear()
        self.bucket = TokenBucket(self.bucket.rate)
        return sock

    # ------------------------------------------------------------------ reading (loop thread)
    def _recv(self, n: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            data = self.sock.recv(RECV_SIZE)  # raises BlockingIOError / SSLWantReadError when drained
            if not data:
                raise websocket.WebSocketConnectionClosedException("connection closed by the server (EOF)")
            self.nbytes += len(data)
            if len(data) <= n:
                self._rbuf, self._rpos = b"", 0
                return data
            buf, pos = data, 0
            self._rbuf = data
        end = pos + n
        self._rpos = end
        return buf[pos:end]

    def has_buffered(self) -> bool:
        """Bytes already read from the kernel (ours, or the TLS layer's) that select() will not announce."""
        if self._rpos < len(self._rbuf):
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
        if ws is not None:
            ws.shutdown()
