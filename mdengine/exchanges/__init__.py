"""Exchange adapters (sans-I/O). One module per exchange, each exposing its `Adapter` subclass as `ADAPTER`."""

from __future__ import annotations

import importlib
from types import ModuleType

from .base import Adapter, AdapterError

EXCHANGES = ("binance", "okx", "bybit", "bitget")


def get_adapter(exchange: str) -> type[Adapter]:
    """The adapter class for `exchange` (imported on first use, so a feed loads only its own)."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; supported: {', '.join(EXCHANGES)}")
    return importlib.import_module(f"{__name__}.{exchange}").ADAPTER


__all__ = ["EXCHANGES", "Adapter", "AdapterError", "get_adapter", "recording_rules"]


def recording_rules(exchange: str) -> ModuleType:
    """What `exchange`'s recordings say (`exchanges/<name>/recording.py`): frame routing, symbols, options."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}; supported: {', '.join(EXCHANGES)}")
    return importlib.import_module(f"{__name__}.{exchange}.recording")
