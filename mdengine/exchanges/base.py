"""The contract between an exchange adapter (sans-I/O) and the feed loop (all the I/O).

An adapter turns bytes into events and decides what to send; it owns each symbol's LocalBook and
sync state machine. It never opens sockets, sleeps, reads a clock or touches shared memory: time
comes in as the `recv_ns` argument, I/O goes out as request events (see mdengine.events).

The loop's side of the contract:
- at start: `start()`; for each FetchRest it GETs the url (with retry/backoff on 429/5xx, never
  on the frame path) and calls `on_rest`; for each OpenConnection it connects and calls `on_open`.
- every text/binary frame: `on_frame(conn, data, recv_ns)`; on close/error: `on_close(conn, reason)`.
- every `ping_interval(conn)` seconds of a connection's life it sends `ping_payload(conn)` (if not None);
  if nothing arrives for `silence_timeout(conn)` seconds it reconnects (watchdog).
- it sends at most `send_rate(conn)` frames per second on a connection (queueing the rest).
- runtime (un)subscription: `subscribe(inst)` / `unsubscribe(key)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from ..book import LocalBook
from ..core.events import Event, SymbolKey
from ..errors import AdapterError as AdapterError  # defined in the one error tree; importable from here
from ..symbols import Instrument, InstrumentIndex

#: the connection of a warm-up pass's stand-in symbol (see Adapter.warm): never open, so a verdict on it sends nothing
SCRATCH_CONN = "(warm-up)"


PERP_STALE_SLACK_S = 5.0  # added to two push intervals before a perp field group is called stale


class Adapter(ABC):
    #: exchange name, as used in segment names and config ("binance", "okx", "bybit", "bitget")
    exchange: str = ""
    #: endpoint name -> default base URL (real exchange). Config overrides any of them.
    DEFAULT_ENDPOINTS: Mapping[str, str] = {}
    #: the largest WebSocket message the exchange really sends (its biggest snapshot is tens of KB), with room to
    #: spare; a larger one is refused before it is buffered and the connection replaced (config: max_message_bytes)
    MAX_MESSAGE_BYTES: int = 4 << 20

    def __init__(self, instruments: InstrumentIndex, endpoints: Mapping[str, str] | None = None, *,
                 book_depth: int = 50, book_mode: str = "diff", trades: bool = True, perp: bool = True,
                 perp_stale_after_s: Mapping[str, float] | None = None) -> None:
        self.instruments = instruments
        self.endpoints = {**self.DEFAULT_ENDPOINTS, **(endpoints or {})}
        self.book_depth = book_depth
        self.book_mode = book_mode
        self.trades_enabled = trades
        #: perpetual data (mark, index, funding, open interest, liquidations) for derivative symbols, where the
        #: adapter implements it (docs/exchanges.md says which)
        self.perp_enabled = perp
        #: per perp field group, an override of `perp_stale_after()` (adapter option; e.g. a simulator run faster)
        self.perp_stale_after_override = dict(perp_stale_after_s or {})
        self.books: dict[SymbolKey, LocalBook] = {}

    #: per perp field group (layout.PERP_GROUPS), the most seconds the exchange documents between two pushes of it
    #: (its package says where); a group absent here comes with (or is confirmed by) every frame of the record
    PERP_PUSH_EVERY_S: Mapping[str, float] = {}

    def perp_stale_after(self, n_symbols: int = 1) -> dict[str, float]:
        """Per perp field group, the age in seconds past which readers call it stale (the writer publishes it, layout
        1.6): two documented push intervals and PERP_STALE_SLACK_S (one push missed, one in flight, a busy host), or
        the `perp_stale_after_s` option's value. n_symbols: how many symbols the feed carries (for polled groups)."""
        out = {g: 2 * every + PERP_STALE_SLACK_S for g, every in self.PERP_PUSH_EVERY_S.items() if every > 0}
        out.update(self.perp_stale_after_override)
        return out

    # ------------------------------------------------------------------ instruments (pure helpers)
    @classmethod
    @abstractmethod
    def instrument_requests(cls, endpoints: Mapping[str, str], markets: list[str] | None = None) -> list[Event]:
        """FetchRest requests for the exchange's instrument lists (the loop answers via `parse_instruments`)."""

    @classmethod
    @abstractmethod
    def parse_instruments(cls, request_id: str, body: bytes) -> tuple[list[Instrument], list[Event]]:
        """Instruments from one instrument-list response, plus follow-up requests (e.g. the next page)."""

    @classmethod
    def native_instrument(cls, native: str, market: str | None = None) -> Instrument | None:
        """An instrument for a native id no instrument list names (the list failed, or is an old copy), with tick
        and lot size unknown (0.0, and so is a contract value that varies by contract), or None when `native` is not
        a plain id of this exchange. A bare id means spot, as in `InstrumentIndex.resolve`; `market` picks another."""
        return None

    @classmethod
    def sim_endpoints(cls, sim: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        """Endpoint overrides pointing at a local simulator, from its {market name: (ws_url, rest_url)}."""
        return {}

    def rest_bases(self) -> dict[str, str]:
        """The REST base URLs this adapter uses, keyed by the client's REST market (mdengine.rest): endpoint
        "rest" is the exchange's own market ("okx"), "<m>_rest" is "<exchange>-<m>" ("spot_rest" of binance:
        "binance-spot"). The feed publishes them so clients' REST fallback goes where the feed goes."""
        out = {}
        for key, url in self.endpoints.items():
            if key == "rest":
                out[self.exchange] = url
            elif key.endswith("_rest"):
                out[f"{self.exchange}-{key[:-5]}"] = url
        return out

    # ------------------------------------------------------------------ subscriptions
    @abstractmethod
    def subscribe(self, inst: Instrument) -> list[Event]:
        """Start book (and trades) for `inst`: creates its book and returns OpenConnection/Send/FetchRest."""

    @abstractmethod
    def unsubscribe(self, key: SymbolKey) -> list[Event]:
        """Stop a symbol; its book is dropped."""

    def start(self) -> list[Event]:
        """Requests to issue once instruments are known and initial subscriptions were made."""
        return []

    # ------------------------------------------------------------------ connection events
    @abstractmethod
    def on_open(self, conn: str) -> list[Event]:
        """`conn` connected: return its subscription frames."""

    @abstractmethod
    def on_close(self, conn: str, reason: str) -> list[Event]:
        """`conn` closed: every symbol carried on it is invalid until resynced (BookInvalid kind='disconnect')."""

    @abstractmethod
    def on_frame(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        """One frame received. Malformed input yields ProtocolError events, never an exception."""

    def warm(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]:
        """Handle `data` (a market-data frame `on_frame` already took) again on scratch copies of the symbol's
        book and sequence state, and return the events, which refer to those copies. Nothing of this adapter
        changes: no book, sequence, subscription or request state, and no message to send. The feed loop calls
        it while idle to keep the frame path's code and data in the CPU caches (docs/feed.md, "Warm-up").
        Frames that are not book or trade data yield []; so does every adapter that does not implement it."""
        return []

    def lane_spec(self) -> dict[str, Any] | None:
        """What the feed's C fast lane (mdengine/feed/fastlane.py) needs to take this adapter's routine frames, or
        None (every frame comes to `on_frame`). Keys: "exchange" (the lane's decoder), "routes" (the dict on_frame
        routes by, read live), "live" (the LIVE state object), "kinds" (route kinds, Binance), "chains" (the
        exchange's sequencing rules, mdengine.exchanges._sequencing.Chain: the one the adapter applies, or several,
        told apart by the symbol's "chain" member), "symbol" (the symbol-state class), "members" (role -> that
        class's member, for each role the lane reads: state, book, seq or applied and last_trade, channel, chain)
        and "verdict" (sym, recv_ns, checksum) -> events, called after an update the lane applied failed a check.
        An adapter that offers one promises that every frame the lane takes would have had the same effect through
        `on_frame` and the Publisher (tests/test_fastlane.py checks it); the lane refuses to start on a spec it
        cannot read, and the feed then runs on `on_frame` alone."""
        return None

    @abstractmethod
    def on_rest(self, request_id: str, status: int, body: bytes, recv_ns: int) -> list[Event]:
        """Answer to a FetchRest (status 0 = transport error; body then holds the error text)."""

    # ------------------------------------------------------------------ heartbeats and limits
    def ping_interval(self, conn: str) -> float:
        return 0.0  # seconds between client pings; 0 = the exchange pings us (answered by the loop)

    def ping_payload(self, conn: str) -> str | None:
        return None

    def silence_timeout(self, conn: str) -> float:
        return 30.0

    def send_rate(self, conn: str) -> float:
        return 5.0

    def poll(self, now: float) -> list[Event]:
        """Called by the loop on every tick (about 20 times a second) with the monotonic time in seconds: requests
        that are due on a schedule, such as REST-only data polled at an interval (Binance open interest)."""
        return []

    def rotate_after(self, conn: str) -> float:
        """Seconds a connection may stay open before the loop asks `on_rotate(conn)` to replace it (0: never).
        For exchanges that cut every connection after a fixed time (Binance: 24 h)."""
        return 0.0

    def on_rotate(self, conn: str) -> list[Event]:
        """`conn` is about to reach its end of life: open a successor carrying the same streams, and close
        `conn` once the successor has taken over, so the books never go through a resync."""
        return []

    def symbols_on(self, conn: str) -> list[SymbolKey]:
        """Symbols whose data arrives on `conn` (for logs and for marking them stale on disconnect)."""
        return []

    def freshness_on(self, conn: str) -> tuple[list[SymbolKey], list[SymbolKey]]:
        """(symbols whose books, symbols whose perp data arrive on `conn`): what that connection's silence makes
        stale. By default both are `symbols_on(conn)`: an exchange that sends perp data on its book's connection."""
        keys = self.symbols_on(conn)
        return keys, keys

    def is_live(self, key: SymbolKey) -> bool:
        """True when the symbol's book is synced and validated."""
        return False
