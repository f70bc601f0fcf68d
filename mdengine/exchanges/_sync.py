"""Per-symbol sync state for the WebSocket-snapshot exchanges (OKX, Bybit, Bitget).

Two rules, as in h11's state module:
1. Only a snapshot (or a message the exchange defines as one) makes a symbol LIVE; updates never do.
2. A failure (gap, checksum, reset, crossed, disconnect) moves that one symbol out of LIVE and nothing else.

    UNSYNCED --subscribe--> AWAITING --snapshot--> LIVE --fail--> INVALID --snapshot--> LIVE
    any --close--> UNSYNCED;  AWAITING/INVALID --refused--> FAILED --subscribe--> AWAITING

An illegal transition is a bug in the adapter (AdapterError), with every coordinate in the message.
"""

from __future__ import annotations

from ..book import LocalBook
from ..core.events import SymbolKey
from ..symbols import Instrument
from .base import AdapterError

UNSYNCED, AWAITING, LIVE, INVALID, FAILED = "unsynced", "awaiting", "live", "invalid", "failed"

_TRANSITIONS: dict[tuple[str, str], str] = {
    (UNSYNCED, "subscribe"): AWAITING,
    (FAILED, "subscribe"): AWAITING,
    (AWAITING, "subscribe"): AWAITING,
    (INVALID, "subscribe"): INVALID,
    (LIVE, "subscribe"): INVALID,  # an explicit resubscribe throws the current book away
    (AWAITING, "snapshot"): LIVE,
    (INVALID, "snapshot"): LIVE,
    (LIVE, "snapshot"): LIVE,
    (LIVE, "fail"): INVALID,
    (AWAITING, "fail"): INVALID,  # e.g. a bad checksum on the very first snapshot
    (INVALID, "fail"): INVALID,
    (AWAITING, "refused"): FAILED,
    (INVALID, "refused"): FAILED,
    (LIVE, "refused"): FAILED,
    (FAILED, "refused"): FAILED,
}


#: SymbolSync's members the feed's C fast lane reads or writes, by role (Adapter.lane_spec()["members"])
LANE_MEMBERS = {"state": "state", "book": "book", "seq": "seq", "channel": "channel"}


class SymbolSync:
    """One subscribed symbol: its book, where it is carried and how far it is synced."""

    __slots__ = ("inst", "key", "book", "state", "seq", "conn", "channel", "ever_live",
                 "trade_last_ts", "trade_seen")

    def __init__(self, inst: Instrument, conn: str, channel: str) -> None:
        self.inst = inst
        self.key: SymbolKey = inst.key
        self.book = LocalBook()
        self.state = UNSYNCED
        self.seq = -1  # last validated sequence number (exchange-specific meaning)
        self.conn = conn
        self.channel = channel  # the exchange's book channel/topic for this symbol
        self.ever_live = False
        self.trade_last_ts = -1
        self.trade_seen: set[str] = set()

    def process(self, event: str) -> str:
        """Apply `event` ("subscribe", "snapshot", "fail", "refused", "close") and return the new state."""
        if event == "close":
            self.state = UNSYNCED
            return self.state
        new = _TRANSITIONS.get((self.state, event))
        if new is None:
            raise AdapterError(f"{self.key}: illegal sync transition {event!r} in state {self.state!r}")
        if new == LIVE:
            self.ever_live = True
        self.state = new
        return new

    @property
    def live(self) -> bool:
        return self.state == LIVE
