"""The supervisor's control channel: newline-delimited JSON over a Linux abstract Unix socket.

The socket is named ``\\0mdengine-<namespace>``. Binding it is the "one supervisor per namespace" lock:
the kernel refuses a second bind while the first process lives, and the name vanishes with the process
(no file to clean up after a SIGKILL).

Requests (one JSON object per line; one answer line per request, in order)::

    {"op": "ping"}
    {"op": "status"}
    {"op": "subscribe" | "unsubscribe", "exchange": "okx", "symbol": "BTC/USDT", "market": null,
     "timeout": 4.5}

``timeout`` (seconds, optional; `request` fills it in) bounds how long the supervisor waits for the feed,
which may still be starting (first subscription on an exchange starts its feed).
Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

Client side: `request(namespace, message)`. Server side: `ControlServer(namespace, handler)`; the handler
gets the request dict and returns the answer dict (it runs on the connection's thread; an exception
becomes an ``ok: false`` answer, never a dead server).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # a request longer than this is garbage, not a request
FORWARDED_OPS = ("subscribe", "unsubscribe")  # ops the supervisor relays to a feed process

Handler = Callable[[dict], dict]


class ControlError(RuntimeError):
    """No supervisor listens on the namespace, it did not answer in time, or it sent garbage."""


class SupervisorRunning(ControlError):
    """Another supervisor already owns the namespace (its control socket is bound)."""


def socket_address(namespace: str) -> str:
    """The abstract socket name of `namespace`'s supervisor (leading NUL: Linux abstract namespace)."""
    return f"\0mdengine-{namespace}"


def request(namespace: str, message: dict, timeout: float = 5.0) -> dict:
    """Send one request to `namespace`'s supervisor and return its answer.

    For subscribe/unsubscribe, the supervisor is told to answer a little before `timeout` (a
    ``"timeout"`` field is added unless present), so a slow feed yields ``ok: false`` rather than an
    exception. Returns the answer dict; ``answer["ok"]`` is False for a refused request (unknown symbol, ...), which
    is not an exception: the caller decides.
    Raises ControlError when no supervisor listens, the connection breaks, the answer is not JSON, or
    `timeout` seconds pass (a whole-request deadline, not per recv).
    """
    if message.get("op") in FORWARDED_OPS and "timeout" not in message:
        # Tell the supervisor our deadline so that it answers "feed did not answer" before we give up.
        message = {**message, "timeout": max(timeout - min(0.5, timeout * 0.1), 0.01)}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_address(namespace))
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise ControlError(f"no supervisor is running for namespace {namespace!r}") from exc
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(sock, timeout)
        except TimeoutError as exc:
            raise ControlError(f"supervisor of {namespace!r} did not answer within {timeout} s") from exc
        except OSError as exc:
            raise ControlError(f"control connection to {namespace!r} failed: {exc}") from exc
    finally:
        sock.close()
    if not line:
        raise ControlError(f"supervisor of {namespace!r} closed the connection without answering")
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"supervisor of {namespace!r} sent a non-JSON answer: {line[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise ControlError(f"supervisor of {namespace!r} sent a non-object answer: {answer!r}")
    return answer


def is_running(namespace: str, timeout: float = 2.0) -> bool:
    """True if a supervisor answers a ping on `namespace`."""
    try:
        return bool(request(namespace, {"op": "ping"}, timeout).get("ok"))
    except ControlError:
        return False


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    """One line (without the newline), b"" if the peer closed first. Deadline spans all recv calls."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ControlError(f"answer longer than {MAX_LINE} bytes")
    return bytes(buf[: buf.index(b"\n")])


class ControlServer:
    """Listens on `namespace`'s abstract socket and answers requests with `handler`.

    Raises SupervisorRunning from the constructor if the namespace is taken.
    """

    def __init__(self, namespace: str, handler: Handler) -> None:
        self.namespace = namespace
        self._handler = handler
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(socket_address(namespace))
        except OSError as exc:
            self._sock.close()
            raise SupervisorRunning(f"a supervisor is already running for namespace {namespace!r}") from exc
        self._sock.listen(16)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"control-{namespace}", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting and release the name (a new supervisor may bind it right after)."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buf = bytearray()
            while not self._closed.is_set():
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    i = buf.index(b"\n")
                    line, buf = bytes(buf[:i]), buf[i + 1 :]
                    if line.strip():
                        try:
                            conn.sendall(json.dumps(self.answer(line)).encode() + b"\n")
                        except OSError:
                            return
                if len(buf) > MAX_LINE:
                    conn.sendall(json.dumps({"ok": False, "error": "request too long"}).encode() + b"\n")
                    return

    def answer(self, line: bytes) -> dict:
        """The answer to one raw request line (bad JSON and handler errors become ok: false)."""
        try:
            message = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            return {"ok": False, "error": 'request must be a JSON object with a string "op"'}
        try:
            answer = self._handler(message)
        except Exception as exc:  # the server must survive any one bad request
            log.exception("control request %r failed", message.get("op"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(answer, dict):
            return {"ok": False, "error": "internal error: handler returned no answer"}
        return answer
