"""OKX's names: native ids and the REST market."""

from __future__ import annotations

from ...core.types import MarketKind

MARKET_KINDS = {"spot": MarketKind.SPOT, "swap": MarketKind.LINEAR}  # market name (any case) -> kind


def native_id(base: str, quote: str, kind: int) -> str:
    """``BTC-USDT`` on spot, ``BTC-USDT-SWAP`` for perpetual swaps."""
    return f"{base}-{quote}" if kind == MarketKind.SPOT else f"{base}-{quote}-SWAP"


def rest_market(kind: int) -> str | None:
    """One REST base serves every OKX market (None: none for this kind; every kind resolve lets through has one)."""
    return "okx"
