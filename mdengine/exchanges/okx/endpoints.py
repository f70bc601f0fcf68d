"""OKX's default endpoints and its one REST market."""

from __future__ import annotations

DEFAULT_ENDPOINTS: dict[str, str] = {"ws": "wss://ws.okx.com:8443", "rest": "https://www.okx.com"}
# REST market -> (WebSocket base, REST base) of the real exchange, the shape of a simulator's endpoints()
MARKET_URLS: dict[str, tuple[str, str]] = {"okx": (DEFAULT_ENDPOINTS["ws"], DEFAULT_ENDPOINTS["rest"])}
DEFAULT_REST: dict[str, str] = {market: rest for market, (_, rest) in MARKET_URLS.items()}
