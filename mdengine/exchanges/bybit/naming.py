"""Bybit's names: native ids, categories and the REST market."""

from __future__ import annotations

from ...core.types import MarketKind

CATEGORY = {MarketKind.SPOT: "spot", MarketKind.LINEAR: "linear", MarketKind.INVERSE: "inverse"}  # v5 `category`


MARKET_KINDS = {category: kind for kind, category in CATEGORY.items()}  # market name (any case) -> kind


def native_id(base: str, quote: str, kind: int) -> str:
    """``BTCUSDT`` in every category."""
    return f"{base}{quote}"


def rest_market(kind: int) -> str | None:
    """One REST base serves every Bybit category."""
    return "bybit"
