"""Exchanges: one package per exchange (`mdengine.exchanges.<name>`), holding all the engine knows about it.

Each package has its sans-I/O adapter (`adapter.py`, exposed as `ADAPTER`) and the modules the rest of the engine asks
instead of naming exchanges itself: `endpoints`, `naming`, `rest`, `instruments` and `recording` (see
docs/adding-an-exchange.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._wire import trade_id  # the engine's one trade-id mapping (REST answers map ids as the feed does)
from .base import Adapter, AdapterError

EXCHANGES = ("binance", "okx", "bybit", "bitget")


def exchange(name: str) -> ModuleType:
    """The package of exchange `name` (imported on first use, so a feed loads only its own).

    Raises ValueError for a name not in EXCHANGES.
    """
    if name not in EXCHANGES:
        raise ValueError(f"unknown exchange {name!r}; supported: {', '.join(EXCHANGES)}")
    return importlib.import_module(f"{__name__}.{name}")


def get_adapter(name: str) -> type[Adapter]:
    """The adapter class for exchange `name`."""
    return exchange(name).ADAPTER


def recording_rules(name: str) -> ModuleType:
    """What exchange `name`'s recordings say (`exchanges/<name>/recording.py`): frame routing, symbols, options."""
    exchange(name)  # raises ValueError for an unknown name
    return importlib.import_module(f"{__name__}.{name}.recording")


__all__ = ["EXCHANGES", "Adapter", "AdapterError", "exchange", "get_adapter", "recording_rules", "trade_id"]
