"""OKX's default endpoints and its one REST market."""

from __future__ import annotations

DEFAULT_ENDPOINTS: dict[str, str] = {"ws": "wss://ws.okx.com:8443", "rest": "https://www.okx.com"}
DEFAULT_REST: dict[str, str] = {"okx": DEFAULT_ENDPOINTS["rest"]}  # REST market -> base URL
