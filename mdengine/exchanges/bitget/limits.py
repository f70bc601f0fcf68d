"""Bitget's REST limits: each public endpoint has its own limit, in requests per second per IP; every request weighs 1.

Documented per endpoint on bitget.com/api-doc (checked 2026-12-07; the figures agree across its mirrors):
- GET /api/v2/spot/market/orderbook: 20/s (spot/market/Get-Orderbook)
- GET /api/v2/spot/market/fills: 10/s (spot/market/Get-Recent-Trades)
- GET /api/v2/spot/public/symbols: 20/s (spot/market/Get-Symbols)
- GET /api/v2/mix/market/merge-depth: 20/s (contract/market/Get-Merge-Depth)
- GET /api/v2/mix/market/fills: 20/s (contract/market/Get-Recent-Fills)
- GET /api/v2/mix/market/contracts: 20/s (contract/market/Get-All-Symbols-Contracts)
Any other public path gets the lowest of these, 10/s. Bitget sends no header with the IP's use.
"""

from __future__ import annotations

from collections.abc import Mapping

BUDGETS: dict[str, tuple[float, float]] = {
    "bitget-spot-books": (20.0, 1.0), "bitget-spot-trades": (10.0, 1.0), "bitget-spot-symbols": (20.0, 1.0),
    "bitget-mix-books": (20.0, 1.0), "bitget-mix-trades": (20.0, 1.0), "bitget-mix-contracts": (20.0, 1.0),
    "bitget-other": (10.0, 1.0),
    "bitget-connect": (300.0, 300.0),  # WebSocket connections per IP
}
_ENDPOINTS = {"/api/v2/spot/market/orderbook": "bitget-spot-books", "/api/v2/spot/market/fills": "bitget-spot-trades",
              "/api/v2/spot/public/symbols": "bitget-spot-symbols",
              "/api/v2/mix/market/merge-depth": "bitget-mix-books", "/api/v2/mix/market/fills": "bitget-mix-trades",
              "/api/v2/mix/market/contracts": "bitget-mix-contracts"}


def cost(path: str, params: Mapping[str, str]) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `path`; None if the path is not Bitget's."""
    if not path.startswith("/api/v2/"):
        return None
    return _ENDPOINTS.get(path, "bitget-other"), 1.0
