"""Whole-market reads: every top of an exchange (or one of its markets) in one numpy array, and wait() on a set
of hundreds of books without a Python loop over them.

    with Client() as c:
        usdm = c.book_set("binance", market="usdm")   # keep it: rows are resolved once
        while True:
            c.wait(1.0, [usdm])                        # wakes when any of its books changes
            t = usdm.tops()                            # one row per symbol (store.tops.TOPS_DTYPE)
            spread = t["ask"] - t["bid"]
            print(t["symbol"][usdm.changed])           # the books that changed since the previous wake-up

`live` is true only for a row whose book state is live, whose writer is healthy, whose connection confirmed
within the feed's stale_after and whose age is within the Client's `max_age`: the same rule as Book.top(), per
row. Stale rows are returned flagged, never served from REST nor raised (a scan wants every row at once).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..store.tops import TOPS_DTYPE, TopsReader

if TYPE_CHECKING:
    from .shm import Client, _Segment


class BookSet:
    """Books of one exchange (every active one, one market's, or the listed symbols), read and waited on as one.

    Get it from `Client.book_set`; `Client.tops` keeps one per (exchange, market). Symbols subscribed or
    unsubscribed later join or leave the set on the next read (the directory is watched).
    """

    def __init__(self, client: Client, exchange: str, market: str | None = None,
                 symbols: Iterable[str] | None = None) -> None:
        self.client = client
        self.exchange = exchange
        self.market = market
        self.requested = None if symbols is None else list(symbols)
        self.reader: TopsReader | None = None
        self._seg: _Segment | None = None
        self._marks: np.ndarray | None = None
        self._fresh_until: float = 0  # wall ns before which no row can be silent (see tops())
        self._rows_seen = -1
        self.changed = np.zeros(0, dtype=bool)  # rows (of the last tops()) that changed before the last wake-up
        client._handles.add(self)

    # ------------------------------------------------------------------ binding (Client's handle protocol)
    @property
    def bound(self) -> bool:
        return self._seg is not None

    def _try_bind(self, force: bool = False) -> bool:
        seg = self.client._segment(self.exchange)
        if seg is None:
            return False
        self._attach(seg)
        return True

    def _attach(self, seg: _Segment) -> None:
        if self.reader is not None:
            self.reader.close()
        self._seg = seg
        self.reader = TopsReader(seg.reader, self.market, self.requested)
        self._fresh_until, self._rows_seen = 0, -1
        self._marks = self.reader.versions()

    def _rebind(self, seg: _Segment) -> bool:
        """Move to `seg`, the recreated segment of this exchange; every row counts as changed."""
        self._attach(seg)
        self._marks = None
        return True

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return 0 if self.reader is None else len(self.reader)

    def tops(self) -> np.ndarray:
        """One TOPS_DTYPE row per book, each read under its own latch; `live` as the module says."""
        if self.reader is None and not self._try_bind():
            return np.zeros(0, dtype=TOPS_DTYPE)
        now = time.time_ns()
        t = self.reader.read(now)
        seg = self._seg
        if not seg.healthy(now):
            t["live"] = False
        elif now > self._fresh_until or self.reader.row_changes != self._rows_seen:
            # Confirmations only move forward: once every row was heard from, none can be silent before the
            # oldest of them plus stale_after, and reads until then skip this.
            heard = np.maximum(self.reader.confirmed_ns(), t["recv_ts_ns"])
            silent = (now - heard) > seg.stale_ns
            if silent.any():
                t["live"] &= ~silent
                self._fresh_until = 0
            else:
                self._fresh_until = heard.min() + seg.stale_ns if len(heard) else 0
                self._rows_seen = self.reader.row_changes
        if self.client.max_age is not None:
            t["live"] &= t["age"] <= self.client.max_age
        if not t["live"].all() and self.client._follow(self):  # the engine was restarted: read the new one
            return self.tops()
        return t

    # ------------------------------------------------------------------ wait support (vectorised)
    def _changed(self) -> bool:
        if self._seg is None:
            return self._try_bind()
        if self.reader.refresh():  # rows joined or left: report the whole set
            self._marks = None
        if self._marks is None:
            return True
        v = self.reader.versions()
        return bool(((v != self._marks) & (v & 1 == 0)).any())  # odd: copy 0 is being written; wait for even

    def _ack(self) -> None:
        if self.reader is None:
            return
        v = self.reader.versions()
        self.changed = np.ones(len(v), dtype=bool) if self._marks is None or len(v) != len(self._marks) \
            else v != self._marks
        self._marks = v

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader, self._seg = None, None

    def __repr__(self) -> str:
        which = self.market or ("listed symbols" if self.requested is not None else "all markets")
        return f"<BookSet {self.exchange} {which}: {len(self)} books>"


__all__ = ["TOPS_DTYPE", "BookSet"]
