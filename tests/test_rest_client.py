"""The feed's REST client against real sockets on 127.0.0.1: answers reach the loop, and closing it (the feed
stopping) abandons a request in flight at once instead of leaving its worker waiting out the timeout."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from mdengine.events import FetchRest
from mdengine.feed import FeedLoop, LoopOptions
from mdengine.feed.http import RestClient
from tests.test_feed_units import EchoAdapter, NullSink

TIMEOUT_S = 30.0  # the client's; a worker that waits it out outlives every bound below
GONE_S = 3.0  # a tenth of it, for the workers to end after close (quiet: a few ms)


def rest_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mdengine-rest")]


def assert_workers_end() -> None:
    deadline = time.monotonic() + GONE_S
    for t in rest_workers():
        t.join(max(0.0, deadline - time.monotonic()))
    assert rest_workers() == [], "a REST worker outlived close()"


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ok":
            self.send_response(200)
            body = b'{"ok":1}'
        else:
            self.send_response(429)
            self.send_header("Retry-After", "7")
            body = b'{"code":-1003}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_answers_and_errors_reach_the_loop_with_their_headers():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    posted: list = []
    answers: list = []
    seen: list = []
    client = RestClient(posted.append, timeout_s=TIMEOUT_S, on_headers=lambda url, h: seen.append((url, h)))
    try:
        for path in ("/ok", "/limited"):
            client.get(base + path, lambda *a: answers.append(a))
        deadline = time.monotonic() + 10
        while len(posted) < 4:
            assert time.monotonic() < deadline, posted
            time.sleep(0.01)
        for fn in posted:
            fn()
        assert sorted(answers) == [(200, b'{"ok":1}', None), (429, b'{"code":-1003}', 7.0)]
        assert sorted(url for url, _ in seen) == [base + "/limited", base + "/ok"]
        assert all(h["Content-Length"] for _, h in seen)
        posted.clear()
        client.get(f"http://127.0.0.1:{_closed_port()}/x", lambda *a: answers.append(a))
        deadline = time.monotonic() + 10
        while not posted:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        posted[0]()
        assert answers[-1][0] == 0 and b"refused" in answers[-1][1]  # a transport error is status 0
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        serving.join(5)
    assert_workers_end()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _stalled_request(scheme: str) -> tuple[socket.socket, str]:
    """A server that takes the connection and what the client sends, and never answers."""
    lsock = socket.create_server(("127.0.0.1", 0))
    return lsock, f"{scheme}://127.0.0.1:{lsock.getsockname()[1]}/api/v3/depth"


def _accept_request(lsock: socket.socket) -> socket.socket:
    lsock.settimeout(10)
    conn, _ = lsock.accept()
    conn.settimeout(10)
    assert conn.recv(4096)  # the GET (http) or the TLS ClientHello (https): the client now waits for us
    return conn


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_close_abandons_a_request_waiting_for_its_answer(scheme):
    """An answer (http) or a TLS handshake (https) that never comes: close() ends the worker at once, and the
    request is neither answered nor reported as a failure to a loop that is gone."""
    lsock, url = _stalled_request(scheme)
    posted: list = []
    client = RestClient(posted.append, timeout_s=TIMEOUT_S)
    conn = None
    try:
        client.get(url, lambda *a: pytest.fail("answered after close"))
        conn = _accept_request(lsock)
        t = time.monotonic()
        client.close()
        closed_in = time.monotonic() - t
        assert_workers_end()
        assert closed_in < GONE_S
        assert posted == []
        client.get(url, lambda *a: None)  # a closed client takes no more requests
        assert rest_workers() == [] and posted == []
    finally:
        client.close()
        if conn is not None:
            conn.close()
        lsock.close()


class _RestSink(NullSink):
    def __init__(self):
        super().__init__()
        self.rest: list = []

    def rest_done(self, url, status, error, retry_in):
        self.rest.append((url, status, error))


def test_stopping_the_feed_loop_ends_its_rest_request_in_flight():
    """The feed loop stops while its depth snapshot GET waits for a stalled server: run() returns, the worker
    is gone within a tenth of the REST timeout, and nothing is counted as a failed GET."""
    lsock, url = _stalled_request("http")
    sink = _RestSink()
    loop = FeedLoop(EchoAdapter("ws://127.0.0.1:9/x"), sink, options=LoopOptions(rest_timeout_s=TIMEOUT_S))
    runner = threading.Thread(target=loop.run)
    runner.start()
    conn = None
    try:
        loop.submit(lambda: loop.fetch(FetchRest("depth", url), lambda *a: [])).result(5)
        conn = _accept_request(lsock)
        loop.stop()
        runner.join(10)
        assert not runner.is_alive()
        assert_workers_end()
        assert sink.rest == []
    finally:
        loop.stop()
        runner.join(10)
        if conn is not None:
            conn.close()
        lsock.close()
