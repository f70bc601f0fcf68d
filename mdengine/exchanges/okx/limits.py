"""OKX's REST limits: public market data is limited per IP and endpoint, in requests per 2 seconds.

GET /api/v5/market/books: 40 requests per 2 s; /api/v5/market/trades: 100 per 2 s; /api/v5/public/instruments:
20 per 2 s. Every request weighs 1; each endpoint has its own budget. A 429 carries code 50011.
"""

from __future__ import annotations

from collections.abc import Mapping

BUDGETS: dict[str, tuple[float, float]] = {"okx-books": (40.0, 2.0), "okx-trades": (100.0, 2.0),
                                           "okx-instruments": (20.0, 2.0), "okx-other": (20.0, 2.0),
                                           "okx-connect": (3.0, 1.0)}  # WebSocket connection requests per IP
_ENDPOINTS = {"/api/v5/market/books": "okx-books", "/api/v5/market/trades": "okx-trades",
              "/api/v5/public/instruments": "okx-instruments"}


def cost(path: str, params: Mapping[str, str]) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `path`; None if the path is not OKX's."""
    if not path.startswith("/api/v5/"):
        return None
    return _ENDPOINTS.get(path, "okx-other"), 1.0
