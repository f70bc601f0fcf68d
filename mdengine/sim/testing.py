"""Test helpers around a real ``Simulator``: a small blocking WebSocket client and an HTTP GET."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.sync.client import ClientConnection, connect


class WsClient:
    """Blocking JSON-aware client (websockets' sync client; it answers server pings itself)."""

    def __init__(self, url: str) -> None:
        self._cm = connect(url, compression=None, open_timeout=5, max_size=None)
        self.ws: ClientConnection = self._cm.__enter__()

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv_text(self, timeout: float = 5.0) -> str:
        msg = self.ws.recv(timeout=timeout)
        return msg if isinstance(msg, str) else msg.decode()

    def recv(self, timeout: float = 5.0) -> Any:
        text = self.recv_text(timeout)
        return text if text in ("pong", "ping") else json.loads(text)

    def recv_until(self, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        """First message satisfying ``pred``; raises TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            msg = self.recv(left)
            if pred(msg):
                return msg

    def drain(self, quiet: float = 0.3) -> list[Any]:
        """Everything received until the socket is quiet for ``quiet`` s."""
        out = []
        while True:
            try:
                out.append(self.recv(quiet))
            except TimeoutError:
                return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """(status, headers, parsed JSON body) of a GET, without raising on 4xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")
