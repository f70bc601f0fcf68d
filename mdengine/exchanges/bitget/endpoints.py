"""Bitget's default endpoints and its one REST market."""

from __future__ import annotations

DEFAULT_ENDPOINTS: dict[str, str] = {"ws": "wss://ws.bitget.com", "rest": "https://api.bitget.com"}
DEFAULT_REST: dict[str, str] = {"bitget": DEFAULT_ENDPOINTS["rest"]}  # REST market -> base URL
