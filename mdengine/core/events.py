"""What an exchange adapter tells the feed loop. Adapters return lists of these; the loop acts on them.

Adapters are sans-I/O: they never open sockets, read clocks or touch shared memory. Everything they
need done in the world comes out as one of the request events below (Send, OpenConnection,
CloseConnection, FetchRest); everything they learned comes out as a data or health event.
A symbol is identified by its key, ``(market, native_id)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..book import LocalBook

SymbolKey = tuple[str, str]  # (market, native id), e.g. ("spot", "BTCUSDT"), ("usdm", "BTCUSDT")


# ----------------------------------------------------------------------------- requests to the loop
@dataclass(slots=True)
class Send:
    """Send a text frame on connection `conn`."""

    conn: str
    payload: str


@dataclass(slots=True)
class OpenConnection:
    """Open (or keep open) WebSocket `conn` at `url`; the loop calls `on_open(conn)` once connected."""

    conn: str
    url: str


@dataclass(slots=True)
class CloseConnection:
    """Close `conn` (and reconnect it if `reconnect`), e.g. after an exchange's shutdown notice."""

    conn: str
    reason: str
    reconnect: bool = True


@dataclass(slots=True)
class FetchRest:
    """GET `url` off the hot path; the loop hands the answer back to `on_rest(request_id, ...)`."""

    request_id: str
    url: str
    key: SymbolKey | None = None


# ----------------------------------------------------------------------------- market data
@dataclass(slots=True)
class BookChanged:
    """`book` (owned by the adapter) is valid and changed: publish it now."""

    key: SymbolKey
    book: LocalBook
    recv_ts_ns: int


@dataclass(slots=True)
class TradesReceived:
    """New trades, oldest first: (exch_ts_ns, recv_ts_ns, price, qty, trade_id, side, flags) tuples,
    see `mdengine.store.layout.TRADE_DTYPE`. Sizes are in the exchange's units (contracts on derivatives)."""

    key: SymbolKey
    trades: list[tuple[int, int, float, float, int, int, int]]


@dataclass(slots=True)
class PerpStatsUpdate:
    """New values of a perpetual's perp record (mark_price, index_price, funding_rate, next_funding_rate,
    next_funding_ns, open_interest: the names of `mdengine.store.writer.PERP_FIELDS`). Only the fields this frame
    carried are present; the store merges them into the record. exch_ts_ns is 0 if the frame has no time.

    Each field group (layout.PERP_GROUPS) with a field here is dated recv_ts_ns in the record (layout 1.6); `confirms`
    names groups the frame vouches for without repeating them (a delta omits what did not change: Bybit's tickers);
    group_recv_ns, if set, dates the groups instead, leaving the record's own time alone (Binance's polled open
    interest, which must not make a silent markPrice stream look live)."""

    key: SymbolKey
    fields: dict[str, float | int]
    exch_ts_ns: int
    recv_ts_ns: int
    confirms: tuple[str, ...] = ()
    group_recv_ns: int = 0


@dataclass(slots=True)
class LiquidationsReceived:
    """New liquidation orders, oldest first: (exch_ts_ns, recv_ts_ns, price, qty, 0, side, 0) tuples (the trade
    record layout, trade_id 0); side is the liquidation order's side (a long position is liquidated by a SELL)."""

    key: SymbolKey
    liquidations: list[tuple[int, int, float, float, int, int, int]]


@dataclass(slots=True)
class PerpInvalid:
    """The symbol's perp stream was lost (its connection closed): the record is stale until the next update."""

    key: SymbolKey
    detail: str


# ----------------------------------------------------------------------------- health
@dataclass(slots=True)
class BookInvalid:
    """The symbol's book can no longer be trusted; the adapter has started a resync of that symbol only.

    kind: "gap" (sequence break), "checksum", "reset" (exchange restarted the sequence), "crossed",
    "disconnect", "stale_snapshot".
    """

    key: SymbolKey
    kind: str
    detail: str


@dataclass(slots=True)
class SymbolSynced:
    """The symbol's book went from syncing/resyncing to live."""

    key: SymbolKey


@dataclass(slots=True)
class SubscribeFailed:
    """The exchange refused a subscription (or the symbol is unknown)."""

    key: SymbolKey | None
    conn: str
    message: str


@dataclass(slots=True)
class ProtocolError:
    """A frame could not be understood (malformed JSON, unexpected shape). Counted; the frame is skipped."""

    conn: str
    message: str
    key: SymbolKey | None = None
    malformed: bool = True


@dataclass(slots=True)
class Notice:
    """Something worth a log line that needs no action (acks, pongs are not reported)."""

    conn: str
    message: str
    extra: dict = field(default_factory=dict)


Event = (Send | OpenConnection | CloseConnection | FetchRest | BookChanged | TradesReceived | PerpStatsUpdate
         | LiquidationsReceived | PerpInvalid | BookInvalid | SymbolSynced | SubscribeFailed | ProtocolError | Notice)

__all__ = ["BookChanged", "BookInvalid", "CloseConnection", "Event", "FetchRest", "LiquidationsReceived", "Notice",
           "OpenConnection", "PerpInvalid", "PerpStatsUpdate", "ProtocolError", "Send", "SubscribeFailed", "SymbolKey",
           "SymbolSynced", "TradesReceived"]
