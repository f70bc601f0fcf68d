"""REST GETs for the feed, on a small thread pool: the loop thread never waits for HTTP.

Answers come back through `post(fn)`, which the loop runs on its own thread. Retrying is the loop's
decision (`retryable`, `retry_after`), not this module's.
"""

from __future__ import annotations

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


class RestClient:
    def __init__(self, post: Callable[[Callable[[], None]], None], *, workers: int = 4,
                 timeout_s: float = 10.0, on_headers: Headers | None = None) -> None:
        self._post = post
        self._on_headers = on_headers  # runs on the loop thread too, before `done`
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mdengine-rest")
        self._closed = False

    def get(self, url: str, done: Done) -> None:
        """GET `url` on a worker; `done(status, body, retry_after)` then runs on the loop thread."""
        if not self._closed:
            self._pool.submit(self._fetch, url, done)

    def _fetch(self, url: str, done: Done) -> None:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
        headers: Mapping[str, str] | None = None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
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
        if self._closed:
            return
        on_headers = self._on_headers
        if on_headers is not None and headers is not None:
            answer = dict(headers.items())
            self._post(lambda: on_headers(url, answer))
        self._post(lambda: done(status, body, ra))

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
