"""The exchanges' per-IP REST limits, answered as the real ones answer them (SimConfig.rest_limit_scale > 0).

Weight is counted per budget (the engine's own table: each exchange's `limits.py`, via mdengine.restbudget.cost) in
fixed windows of the exchange's length that start on multiples of it (Binance's minutes start on the minute). Every
request is counted, whoever sends it, and `usage` gives the count for the answer's headers where an exchange reports
it (Binance's X-MBX-USED-WEIGHT-1M). With limits on, a request that would pass the limit gets 429 with Retry-After
(the rest of the window); `rest_ban_after` such 429s in one window get the "IP" banned: 418 with Retry-After
`rest_ban_s`, and every request is refused until the ban ends (Binance's escalation; the simulator applies it to
every exchange).
"""

from __future__ import annotations

import math

from mdengine import restbudget


class RestLimiter:
    def __init__(self, scale: float, ban_after: int = 3, ban_s: float = 120.0, window_s: float = 0.0) -> None:
        self.scale = scale
        self.enforce = scale > 0  # 0: count only (for the usage headers), never refuse
        self.ban_after = ban_after
        self.ban_s = ban_s
        self.window_s = window_s  # > 0: every budget's window (tests shorten minutes)
        self.banned_until = 0.0
        self._windows: dict[str, list[float]] = {}  # key -> [start, used, 429s]
        self.peak: dict[str, float] = {}  # key -> highest weight used in one window
        self.limits = {k: (lim * (scale if self.enforce else 1.0), window_s or win)
                       for k, (lim, win) in restbudget.budgets().items()}

    def _window(self, key: str, now: float) -> list[float]:
        window = self.limits[key][1]
        start = now // window * window
        w = self._windows.setdefault(key, [start, 0.0, 0.0])
        if w[0] != start:
            w[:] = [start, 0.0, 0.0]
        return w

    def check(self, path: str, now: float) -> tuple[int, int] | None:
        """None to serve `path` (its weight is counted), or (status, Retry-After seconds) to refuse it. `now` is
        the wall clock (seconds)."""
        found = restbudget.cost(path)
        if found is None:
            return None
        if self.enforce and now < self.banned_until:
            return 418, math.ceil(self.banned_until - now)
        key, weight = found
        limit, window = self.limits[key]
        w = self._window(key, now)
        if self.enforce and w[1] + weight > limit:
            w[2] += 1
            if w[2] >= self.ban_after:
                self.banned_until = now + self.ban_s
                return 418, math.ceil(self.ban_s)
            return 429, max(1, math.ceil(w[0] + window - now))
        w[1] += weight
        self.peak[key] = max(self.peak.get(key, 0.0), w[1])
        return None

    def usage(self, path: str, now: float) -> tuple[str, float] | None:
        """(budget key, weight counted in its current window) for the answer to `path`; None for a path no budget
        holds."""
        found = restbudget.cost(path)
        if found is None:
            return None
        return found[0], self._window(found[0], now)[1]

    def peak_ratio(self) -> float:
        """The highest weight used in one window over the limit, across budgets (> 1 never happens: refused)."""
        return max((used / self.limits[k][0] for k, used in self.peak.items()), default=0.0)
