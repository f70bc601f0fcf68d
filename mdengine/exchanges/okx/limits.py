"""OKX's REST limits: public market data is limited per IP and endpoint, in requests per 2 seconds.

okx.com/docs-v5 (OKX-DOC in shared/notes/exchanges.md §3.6; checked 2026-12-07):
- GET /api/v5/market/books: 40 per 2 s, per IP ("order-book-trading-market-data-get-order-book")
- GET /api/v5/market/trades: 100 per 2 s, per IP ("...-get-trades")
- GET /api/v5/public/instruments: 20 per 2 s, per IP and instType; one budget here for every instType, which is
  stricter than OKX and costs nothing (one request per market per refresh)
Any other public path gets 20 per 2 s, the market-data default. Every request weighs 1. A 429 carries code 50011.
OKX sends no header with the IP's use. WebSocket: 3 connection requests per second per IP.
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


# Push cadence of the perp channels (layout 1.6 per-group freshness), OKX-DOC public-data WebSocket pages (okx.com
# docs-v5, "Mark price channel", "Index tickers channel", "Funding rate channel", "Open interest channel"; as quoted
# in the docs' copies checked 2026-12-07), as the most seconds between two pushes of each group:
# - mark-price: every 200 ms when the mark changes, every 10 s when it does not -> 10
# - index-tickers: every 100 ms when it changes, otherwise once a minute -> 60
# - funding-rate: "pushed in 30s to 90s" -> 90
# - open-interest: "every 3 seconds when there are updates", nothing when there are none. OKX promises no push for
#   an unchanged open interest, so 60 here is mdengine's bound, not OKX's: a perpetual's open interest changes with
#   most fills, and a minute without one on a live swap is far rarer than a channel gone quiet. On a thin swap this
#   can call an unchanged open interest stale; its age says how old it is.
PERP_PUSH_EVERY_S: dict[str, float] = {"mark": 10.0, "index": 60.0, "funding": 90.0, "open_interest": 60.0}
