"""The engine's core: types and normalized events shared by every layer, importing none of them.

`types` holds MarketKind, Side, TradeFlags and the packed level record; `events` what an adapter tells the
feed loop. The store, the book, the adapters and the client import these; this package imports nothing of
mdengine's own (tests/test_layers.py checks it).
"""

from .types import MarketKind, Side, TradeFlags

__all__ = ["MarketKind", "Side", "TradeFlags"]
