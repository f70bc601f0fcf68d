"""The engine's core vocabulary: market kinds, trade sides and flags, and the packed level record.

These sit below every other layer: the book, the adapters and the store all take them from here, so the
sans-I/O pieces never import the shared-memory store. Their numeric values are part of the shared-memory
layout (`mdengine.store.layout` re-exports them, and docs/layout.md documents them): never renumber.
"""

from __future__ import annotations

import functools
import struct


class MarketKind:
    SPOT = 0
    LINEAR = 1  # linear perpetual or future, settled in the quote currency
    INVERSE = 2  # inverse contract, settled in the base currency
    OPTION = 3


class Side:
    UNKNOWN = 0
    BUY = 1  # the taker (aggressor) bought
    SELL = -1


class TradeFlags:
    ID_HASHED = 1  # the exchange id was not an integer (e.g. a UUID); trade_id is a 63-bit hash


# A book level as published: four little-endian float64 [bid_px, bid_qty, ask_px, ask_qty].
# The perp record's field groups (layout 1.6: one receive time each), what one exchange channel delivers together;
# defined here so adapters can name them without importing the store (layout.PERP_GROUPS is this tuple).
PERP_GROUPS = ("mark", "index", "funding", "open_interest")

LEVEL_LENGTH = 32
LEVEL_BID_PX, LEVEL_BID_QTY, LEVEL_ASK_PX, LEVEL_ASK_QTY = 0, 1, 2, 3  # float64 index in a level


@functools.cache
def levels_struct(n: int) -> struct.Struct:
    """The struct of `n` levels in the level layout: [bid_px, bid_qty, ask_px, ask_qty] * n, little-endian."""
    return struct.Struct(f"<{4 * n}d")
