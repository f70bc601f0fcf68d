"""Pure timing helpers of the feed loop: reconnect backoff and the per-connection send budget."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Capped exponential delay with "equal jitter" (half fixed, half random), reset after a healthy period.

    Delays: initial, 2x, 4x ... up to `maximum`, each drawn from [d/2, d], so a fleet of feeds that lost the
    exchange together does not reconnect in lockstep, and no delay is ever zero.
    """

    def __init__(self, initial: float = 0.25, maximum: float = 30.0, factor: float = 2.0,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial ({initial}) <= maximum ({maximum})")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.rng = rng
        self.attempts = 0

    def next(self) -> float:
        d = min(self.maximum, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return d * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.attempts = 0


class TokenBucket:
    """At most `rate` sends per second, with a burst of `capacity` (default 1: evenly spaced sends).

    With capacity 1 a rolling one-second window holds at most rate + 1 sends, so a limit of N messages per
    second (Binance counts pings and pongs too) is kept with rate = N - 1.
    """

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        if rate <= 0:
            raise ValueError(f"send rate must be > 0, not {rate}")
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self.stamp is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend a token if one is available at `now` (monotonic seconds)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds from `now` until the next token."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)
