"""Bitget's names: native ids, futures product types and the REST market."""

from __future__ import annotations

from ...core.types import MarketKind

MARKET_KINDS = {"spot": MarketKind.SPOT, "usdt-futures": MarketKind.LINEAR, "usdc-futures": MarketKind.LINEAR,
                "coin-futures": MarketKind.INVERSE}  # market name (any case) -> kind


def native_id(base: str, quote: str, kind: int) -> str:
    """``BTCUSDT`` on spot and futures alike."""
    return f"{base}{quote}"


def product_type(kind: int, settle: str) -> str:
    """The v2 mix ``productType`` of a futures market."""
    if kind == MarketKind.INVERSE:
        return "COIN-FUTURES"
    return "USDC-FUTURES" if settle == "USDC" else "USDT-FUTURES"


def rest_market(kind: int) -> str | None:
    """One REST base serves every Bitget market."""
    return "bitget"
