"""What the client's reads return: Top, Depth, Trades, BookBuffer and the statistics snapshots.

Every result says where it came from (``source`` "shm" or "rest"), how old it is and whether it is stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import store as _store


class Top(NamedTuple):
    """Best bid/ask (NaN price, 0 qty for an empty side) and how trustworthy it is."""

    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    age_s: float  # now minus the local receive time of the frame behind this state (inf if never published)
    state: str  # "empty", "syncing", "live", "stale", "resyncing"; "rest" for a REST answer
    stale: bool
    update_id: int
    source: str  # "shm" or "rest"
    reason: str = ""  # why it is stale (or older than max_age); "" for a fresh read


class PerpStats(NamedTuple):
    """A perpetual's mark, index, funding and open interest (layout 1.4's perp record) and how trustworthy it is.

    A field the exchange does not publish is NaN (next_funding_ns: 0), never a made-up value. Served by the REST
    fallback (source "rest"): state "rest", every age the age of the REST answer, stale False.

    The record is assembled from several channels on some exchanges (OKX: one each for mark, index, funding and open
    interest; Binance: open interest over REST), so each field group has its own age (layout 1.6), and a group older
    than its exchange's documented push cadence allows is named in `stale_fields` (by its field names, e.g.
    ("open_interest",)) while `stale` and `age_s` go on describing the record and its mark: the values stay, so a
    trader can still see the last one, but must not take a field in `stale_fields` as current."""

    mark_price: float
    index_price: float
    funding_rate: float  # the current period's rate, as a fraction (0.0001 = 0.01 %)
    next_funding_rate: float  # the announced / predicted next rate; NaN where the exchange announces none
    next_funding_ns: int  # the next funding settlement, ns since the epoch (0: not published)
    open_interest: float  # in the exchange's unit (contracts or base)
    exch_ts_ns: int
    age_s: float  # now minus the local receive time of the latest mark price (before layout 1.6: of any field)
    stale: bool  # the books' rules (docs/client.md "Freshness"); "empty" before the first publish
    state: str = "live"
    reason: str = ""  # why it is stale (or older than max_age); "" for a fresh read
    source: str = "shm"  # "shm", or "rest" when served by the REST fallback (rest_fallback=True)
    # (1.6) the age of each other field group's latest frame: inf if that group never came (its fields are NaN);
    # before layout 1.6 all equal to age_s (one receive time for the whole record)
    index_age_s: float = math.inf
    funding_age_s: float = math.inf  # funding_rate, next_funding_rate, next_funding_ns
    open_interest_age_s: float = math.inf
    stale_fields: tuple[str, ...] = ()  # fields whose group is older than its exchange's cadence allows; () if none


class Liquidations(NamedTuple):
    """New liquidations (layout.TRADE_DTYPE records: price, qty, side, exch_ts_ns, ...; trade_id 0), oldest first,
    and how many this reader lost (the writer lapped it) since the last call."""

    records: np.ndarray
    lost: int
    source: str = "shm"


@dataclass(frozen=True)
class Depth:
    """A consistent copy of a book: bids and asks are (n, 2) float arrays of [price, qty], best first."""

    exchange: str
    symbol: str
    bids: np.ndarray
    asks: np.ndarray
    update_id: int
    exch_ts_ns: int
    recv_ts_ns: int
    pub_ts_ns: int
    state: str
    age_s: float
    stale: bool
    source: str  # "shm" or "rest"
    reason: str = ""  # why it is stale (or older than max_age); "" for a fresh read


class Trades(NamedTuple):
    """Trades (layout.TRADE_DTYPE records, oldest first) and how many this reader lost since the last poll."""

    records: np.ndarray
    lost: int
    source: str  # "shm" or "rest"
    # True on the first poll after the stream moved to a recreated segment (engine restart): trades the old feed
    # published after `lost` counted them are unknown, and the records come from the new ring's start
    reset: bool = False


def check_depth(depth: object) -> int:
    """`depth` if it is a level count (an int >= 1), else ValueError saying so."""
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"depth must be a whole number of levels >= 1 (or None for all), got {depth!r}")
    return int(depth)


class BookBuffer(_store.BookBuffer):
    """A reusable destination for `Book.read_into`; after a read it also says how fresh the data is."""

    def __init__(self, depth: int) -> None:
        super().__init__(check_depth(depth))
        self.source = "shm"
        self.age_s = math.inf
        self.state = "empty"
        self.stale = True
        self.reason = "not read yet"


@dataclass(frozen=True)
class ClientStatistics:
    """Counters of one Client since it was created (trio's `statistics()` style: a frozen snapshot)."""

    exchanges: tuple[str, ...]  # attached segments
    books: int  # book handles
    trade_streams: int
    stale_reads: int  # reads that found the data stale or older than max_age
    rest_reads: int  # reads served from REST
    rest_failures: int
    trades_lost: int  # overwritten before one of this client's trade streams could read them
    read_retries: int  # torn book copies discarded and re-read
    rescans: int  # times the namespace or a directory was scanned again
    follows: int = 0  # times a recreated segment (engine restart) was attached and handles moved to it


@dataclass(frozen=True)
class TradeStreamStatistics:
    cursor: int  # next ring index this stream will read
    tail: int  # ring index the writer will write next (-1 while not in shared memory)
    received: int
    lost: int
    resets: int = 0  # times the stream moved to a recreated segment (engine restart)
