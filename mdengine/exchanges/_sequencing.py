"""Sequencing rules: when a book update follows the last one applied, written once per exchange.

Each exchange module holds its rule as a `Chain` constant; its adapter, its warm-up path (`Adapter.warm`) and the
C fast lane (through `Adapter.lane_spec()["chains"]`) all use that one object. The lane reads `kind` and the two
flags when it starts and implements only the kinds below, so a rule changed here changes what the lane takes (or it
refuses to start), never leaving an old copy behind (tests/test_fastlane.py).

An update carries `new`, the id the book is at once it is applied; some exchanges also send `first`, the id of its
first event (Binance spot `U`; Bybit's `u` serves as both), or `prev`, the id of the update before it (Binance
USDⓈ-M `pu`, OKX `prevSeqId`, Bitget `pseq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ChainKind(IntEnum):
    """How an update names its place in the chain. The values are the C lane's (mdengine/_c/_lane.h, CHAIN_*)."""

    #: it follows `last` when its first id is last + 1 (Binance spot, Bybit)
    NEXT_ID = 1
    #: it follows `last` when its previous id is `last` (Binance USDⓈ-M, OKX, Bitget)
    PREV_ID = 2


@dataclass(frozen=True)
class Chain:
    """One exchange's rule for a routine update: `follows` says whether it comes right after `last`."""

    kind: ChainKind
    #: the update may keep the id it follows (OKX sends seqId == prevSeqId when nothing changed)
    same_id_ok: bool = False
    #: an update without `prev` follows when it is newer (Bitget sends `pseq` only sometimes)
    prev_optional: bool = False

    def follows(self, last: int, new: int, first: int | None = None, prev: int | None = None) -> bool:
        """True when the update comes right after `last`: apply it. False: a duplicate, a gap or a reset, which
        the adapter tells apart."""
        if self.kind is ChainKind.NEXT_ID:
            return first is not None and first == last + 1 and new > last
        linked = prev == last if prev is not None else self.prev_optional
        return linked and (new >= last if self.same_id_ok else new > last)

    def predecessor(self, new: int, first: int | None = None, prev: int | None = None) -> int | None:
        """The `last` this update follows (the warm-up pass replays it on a copy set there), None when the update
        does not say."""
        if self.kind is ChainKind.NEXT_ID:
            return first - 1 if first.__class__ is int else None
        if prev.__class__ is int:
            return prev
        return new - 1 if self.prev_optional and new.__class__ is int else None
