"""Binance's names: native ids and the REST market of each market kind."""

from __future__ import annotations

from ...core.types import MarketKind

MARKET_KINDS = {"spot": MarketKind.SPOT, "usdm": MarketKind.LINEAR}  # market name (any case) -> kind


def native_id(base: str, quote: str, kind: int) -> str:
    """``BTCUSDT`` on spot and USDⓈ-M alike."""
    return f"{base}{quote}"


def rest_market(kind: int) -> str | None:
    """``binance-spot`` or ``binance-usdm``; None for coin-margined (COIN-M has no REST fallback)."""
    return {MarketKind.SPOT: "binance-spot", MarketKind.LINEAR: "binance-usdm"}.get(kind)
