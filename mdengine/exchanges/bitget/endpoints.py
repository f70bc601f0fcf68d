"""Bitget's default endpoints and its one REST market."""

from __future__ import annotations

DEFAULT_ENDPOINTS: dict[str, str] = {"ws": "wss://ws.bitget.com", "rest": "https://api.bitget.com"}
# REST market -> (WebSocket base, REST base) of the real exchange, the shape of a simulator's endpoints()
MARKET_URLS: dict[str, tuple[str, str]] = {"bitget": (DEFAULT_ENDPOINTS["ws"], DEFAULT_ENDPOINTS["rest"])}
DEFAULT_REST: dict[str, str] = {market: rest for market, (_, rest) in MARKET_URLS.items()}
