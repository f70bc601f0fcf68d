"""Bitget's REST limits: public market endpoints allow 20 requests per second per IP, each endpoint on its own
(spot orderbook, futures merge-depth, instrument lists, trades). Every request weighs 1.
"""

from __future__ import annotations

from collections.abc import Mapping

BUDGETS: dict[str, tuple[float, float]] = {"bitget-spot": (20.0, 1.0), "bitget-mix": (20.0, 1.0),
                                           "bitget-connect": (300.0, 300.0)}  # WebSocket connections per IP


def cost(path: str, params: Mapping[str, str]) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `path`; None if the path is not Bitget's."""
    if path.startswith("/api/v2/spot/"):
        return "bitget-spot", 1.0
    if path.startswith("/api/v2/mix/"):
        return "bitget-mix", 1.0
    return None
