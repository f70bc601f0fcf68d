"""Bybit's REST limits: one IP limit over every HTTP request, 600 requests per 5 seconds; exceeding it gets the IP
"403, access too frequent" and blocked for 10 minutes. Every request weighs 1.

bybit-exchange/docs `docs/v5/rate-limit/rate-limit.mdx` (BY-DOC, HEAD 072c197d, 2026-07-24), "HTTP IP limit" and
"Websocket IP limit" (at most 500 connections per 5 minutes per IP). Bybit's `X-Bapi-Limit`,
`X-Bapi-Limit-Status` and `X-Bapi-Limit-Reset-Timestamp` headers are its per-UID, per-endpoint API limit (the same
page, "API Rate Limit"), not the IP's use: public requests carry no UID, so the budget takes nothing from them.
"""

from __future__ import annotations

from collections.abc import Mapping

BUDGETS: dict[str, tuple[float, float]] = {"bybit": (600.0, 5.0),
                                           "bybit-connect": (500.0, 300.0)}  # WebSocket connections per IP
# answers that mean the IP is over its limit, beside 429 and 418, and how long they block it (seconds) when they
# carry no Retry-After: "403, access too frequent" and a 10-minute block (the same page, "HTTP IP limit")
BAN_STATUS: dict[int, float] = {403: 600.0}


def cost(path: str, params: Mapping[str, str]) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `path`; None if the path is not Bybit's."""
    return ("bybit", 1.0) if path.startswith("/v5/") else None
