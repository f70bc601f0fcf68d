"""REST GETs for the feed, on a small thread pool: the loop thread never waits for HTTP.

Answers come back through `post(fn)`, which the loop runs on its own thread. Retrying is the loop's
decision (`retryable`, `retry_after`), not this module's.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

USER_AGENT = "mdengine-feed/0.1"
Done = Callable[[int, bytes, float | None], None]  # (status (0 = transport error), body, Retry-After seconds)


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
                 timeout_s: float = 10.0) -> None:
        self._post = post
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mdengine-rest")
        self._closed = False

    def get(self, url: str, done: Done) -> None:
        """GET `url` on a worker; `done(status, body, retry_after)` then runs on the loop thread."""
        if not self._closed:
            self._pool.submit(self._fetch, url, done)

    def _fetch(self, url: str, done: Done) -> None:
        req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                status, body, ra = r.status, r.read(), None
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except OSError:
                body = b""
            status, ra = e.code, _retry_after(e.headers.get("Retry-After") if e.headers else None)
            e.close()
        except Exception as e:  # any transport failure becomes status 0 with its text
            status, body, ra = 0, f"{type(e).__name__}: {e}".encode(), None
        if not self._closed:
            self._post(lambda: done(status, body, ra))

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
