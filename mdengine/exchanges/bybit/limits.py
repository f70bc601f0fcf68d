"""Bybit's REST limits: one IP limit over every HTTP request, 600 requests per 5 seconds (exceeding it blocks
the IP for 10 minutes, "403 access too frequent"). Every request weighs 1.
"""

from __future__ import annotations

from collections.abc import Mapping

BUDGETS: dict[str, tuple[float, float]] = {"bybit": (600.0, 5.0),
                                           "bybit-connect": (500.0, 300.0)}  # WebSocket connections per IP


def cost(path: str, params: Mapping[str, str]) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `path`; None if the path is not Bybit's."""
    return ("bybit", 1.0) if path.startswith("/v5/") else None
