"""Bybit's default endpoints and its one REST market."""

from __future__ import annotations

DEFAULT_ENDPOINTS: dict[str, str] = {"ws": "wss://stream.bybit.com", "rest": "https://api.bybit.com"}
DEFAULT_REST: dict[str, str] = {"bybit": DEFAULT_ENDPOINTS["rest"]}  # REST market -> base URL
