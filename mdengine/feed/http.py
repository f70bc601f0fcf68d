"""REST GETs for the feed, on a small thread pool: the loop thread never waits for HTTP.

Answers come back through `post(fn)`, which the loop runs on its own thread. Retrying is the loop's
decision (`retryable`, `retry_after`), not this module's. `close()` abandons the requests in flight: each
worker's socket is shut down (a blocking connect, TLS handshake or read returns at once; closing the socket
would not wake it), so stopping the loop does not wait for a slow server, and nothing reaches a stopped loop.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

USER_AGENT = "mdengine-feed/0.1"
Done = Callable[[int, bytes, float | None], None]  # (status (0 = transport error), body, Retry-After seconds)
Headers = Callable[[str, Mapping[str, str]], None]  # (url, the answer's headers)


def retryable(status: int) -> bool:
    """Transport errors, timeouts, rate limits (429, Binance's 418 ban) and server errors are worth retrying."""
    return status in (0, 408, 418, 429) or status >= 500


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date; the caller's backoff applies
        return None


class _Tracked:
    """A urllib handler whose connections open their sockets through `RestClient._connect`."""

    client: RestClient

    def do_open(self, http_class, req, **kwargs):
        connect = self.client._connect

        def connection(host, **args):
            conn = http_class(host, **args)
            conn._create_connection = connect  # http.client's own hook for making the socket
            return conn

        return super().do_open(connection, req, **kwargs)


class _HTTPHandler(_Tracked, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_Tracked, urllib.request.HTTPSHandler):
    pass


class RestClient:
    def __init__(self, post: Callable[[Callable[[], None]], None], *, workers: int = 4,
                 timeout_s: float = 10.0, on_headers: Headers | None = None) -> None:
        self._post = post
        self._on_headers = on_headers  # runs on the loop thread too, before `done`
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mdengine-rest")
        self._closed = False
        self._lock = threading.Lock()  # guards _closed, _wakers and _busy; held while posting an answer
        self._wakers: dict[threading.Thread, socket.socket] = {}  # worker -> a dup of its socket, to shut down
        self._busy: set[threading.Thread] = set()  # workers inside _fetch, joined by close()
        handlers = (_HTTPHandler(), _HTTPSHandler())
        for h in handlers:
            h.client = self
        self._opener = urllib.request.build_opener(*handlers)  # proxies and redirects as urlopen has them

    def get(self, url: str, done: Done) -> None:
        """GET `url` on a worker; `done(status, body, retry_after)` then runs on the loop thread."""
        if not self._closed:
            self._pool.submit(self._fetch, url, done)

    def _connect(self, address: tuple[str, int], timeout: float | None,
                 source_address: tuple[str, int] | None = None) -> socket.socket:
        """socket.create_connection, with each socket registered before it connects so close() can end it."""
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                self._register(sock)
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(addr)
                return sock
            except OSError as e:
                sock.close()
                if self._closed:
                    raise
                error = e
        raise error or OSError(f"no address for {host}")

    def _register(self, sock: socket.socket) -> None:
        # A dup shares the socket, so shutting it down ends the worker's connect, TLS handshake or read, and it
        # stays valid after TLS takes over (detaches) the worker's own socket object.
        with self._lock:
            if self._closed:
                raise OSError("REST client closed")
            old = self._wakers.pop(threading.current_thread(), None)
            self._wakers[threading.current_thread()] = sock.dup()
        if old is not None:  # the previous connection of this request (a redirect, another address)
            old.close()

    def _fetch(self, url: str, done: Done) -> None:
        me = threading.current_thread()
        with self._lock:
            if self._closed:
                return
            self._busy.add(me)
        try:
            self._fetch_once(url, done)
        finally:
            with self._lock:
                self._busy.discard(me)
                waker = self._wakers.pop(me, None)
            if waker is not None:
                waker.close()

    def _fetch_once(self, url: str, done: Done) -> None:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
        headers: Mapping[str, str] | None = None
        try:
            with self._opener.open(req, timeout=self.timeout_s) as r:
                status, body, ra, headers = r.status, r.read(), None, r.headers
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except OSError:
                body = b""
            status, ra = e.code, _retry_after(e.headers.get("Retry-After") if e.headers else None)
            headers = e.headers
            e.close()
        except Exception as e:  # any transport failure becomes status 0 with its text
            status, body, ra = 0, f"{type(e).__name__}: {e}".encode(), None
        with self._lock:  # a request close() abandoned is not answered, nor counted as the exchange's error
            if self._closed:
                return
            on_headers = self._on_headers
            if on_headers is not None and headers is not None:
                answer = dict(headers.items())
                self._post(lambda: on_headers(url, answer))
            self._post(lambda: done(status, body, ra))

    def close(self, wait_s: float = 2.0) -> None:
        """Abandon the requests in flight and wait (up to `wait_s`) for their workers to end. Only a name
        lookup cannot be interrupted; its worker ends when the lookup does and delivers nothing."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_s
        while True:  # again until they end: a socket registered but not yet connecting ignores the first one
            with self._lock:
                for waker in self._wakers.values():
                    try:
                        waker.shutdown(socket.SHUT_RDWR)
                    except OSError:  # not connecting yet (the next pass catches it) or already closed
                        pass
                busy = [t for t in self._busy if t.is_alive()]
            if not busy or time.monotonic() >= deadline:
                return
            busy[0].join(min(0.05, max(0.0, deadline - time.monotonic())))
