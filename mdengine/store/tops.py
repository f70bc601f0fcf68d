"""Every top of a segment in one vectorised read: one row per symbol, each row read under its own latch.

The latch protocol of layout.py, applied to all rows at once with numpy: read every row's ``book_seq``, gather
the first words of the copy each one names (``copy[book_seq & 1]``), read every ``book_seq`` again, and keep a
row only if its counter did not move. Rows whose counter moved are read again, alone, until they hold still, so
no row mixes two states and no Python loop runs over the rows. Rows are consistent each on its own, not with
each other (they are different books).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import ReadContention
from . import layout as L
from .reader import SegmentReader

# One row of `TopsReader.read()`.
TOPS_DTYPE = np.dtype([
    ("bid", "<f8"), ("bid_qty", "<f8"), ("ask", "<f8"), ("ask_qty", "<f8"),  # NaN price, 0 qty: an empty side
    ("age", "<f8"),  # seconds since the local receive time of the frame behind this state (inf: never published)
    ("update_id", "<i8"),
    ("recv_ts_ns", "<i8"),  # local receive time (the publish time if the writer recorded none)
    ("version", "<i8"),  # the slot's latch counter: changes with every publish
    ("state", "<u4"),  # layout.BookState
    ("slot", "<u4"),
    ("live", "?"),  # state is LIVE (a Client also requires a healthy writer and a confirmed connection)
    ("symbol", "U40"),  # unified symbol, e.g. "BTC/USDT:USDT"
    ("market", "U16"),
])
# The four prices and sizes are adjacent in a row, in a level's order: one strided copy fills them.
assert [TOPS_DTYPE.fields[f][1] for f in ("bid", "bid_qty", "ask", "ask_qty")] == [
    8 * L.LEVEL_BID_PX, 8 * L.LEVEL_BID_QTY, 8 * L.LEVEL_ASK_PX, 8 * L.LEVEL_ASK_QTY]

# A book copy's first words (header and level 0), as int64 words: what a top needs.
_TOP_WORDS = (L.BOOK_HEADER_LENGTH + L.LEVEL_LENGTH) >> 3
_UPDATE_ID, _RECV, _PUB, _STATE_WORD = (L.BOOK_UPDATE_ID_OFFSET >> 3, L.BOOK_RECV_TS_OFFSET >> 3,
                                        L.BOOK_PUB_TS_OFFSET >> 3, L.BOOK_STATE_OFFSET >> 3)
_LEVEL0 = L.BOOK_HEADER_LENGTH >> 3
_STATE_SHIFT = (L.BOOK_STATE_OFFSET & 7) * 8  # the uint32 state inside its int64 word (little-endian)
DEFAULT_RETRY_ROUNDS = 100_000


class TopsReader:
    """The top of every active book of one segment (optionally one market, or a set of symbols).

    Keep it: it resolves the rows once, and again only when the directory changes (two word reads per call
    tell). `read()` returns a new TOPS_DTYPE array; `versions()` the rows' latch counters (what wait() compares
    to see which books changed). `close()` before closing the SegmentReader (its views pin the mapping).
    """

    def __init__(self, seg: SegmentReader, market: str | None = None, symbols: Iterable[str] | None = None,
                 *, retry_rounds: int = DEFAULT_RETRY_ROUNDS) -> None:
        view = seg.view
        self.segment = seg
        self.market = market
        self.wanted = None if symbols is None else {s.upper() for s in symbols}
        self.retry_rounds = retry_rounds
        self.retries = 0  # rows read again because their latch moved during a read
        self.row_changes = 0  # times the rows were resolved again (the directory changed)
        g, n, size = view.geometry, view.max_symbols, view.slot_size
        words = np.frombuffer(view.buf, dtype="<i8", count=view.segment_size >> 3)
        # Strided views over the slots (no copy): every slot's latch counter, both copies' first words, and the
        # confirmed_ns stat. Indexing them with the rows' slot numbers gathers whole runs per row.
        first = view.slots_offset >> 3
        self._seqs = as_strided(words[first + (L.SLOT_BOOK_SEQ_OFFSET >> 3):], (n,), (size,), writeable=False)
        self._tops = as_strided(words[first + (g.copy0 >> 3):], (n, 2, _TOP_WORDS), (size, g.copy1 - g.copy0, 8),
                                writeable=False)
        self._conf = as_strided(words[first + (L.STAT_OFFSETS["confirmed_ns"] >> 3):], (n,), (size,),
                                writeable=False)
        self._dir_mark: tuple[int, int] | None = None
        self._slots = np.empty(0, dtype=np.intp)
        self._template = np.zeros(0, dtype=TOPS_DTYPE)
        self.refresh()

    def close(self) -> None:
        """Drop the views of the mapping (the SegmentReader cannot unmap while they exist)."""
        self._seqs = self._tops = self._conf = None

    # ------------------------------------------------------------------ rows
    def refresh(self) -> bool:
        """Re-read the directory if it changed since the last look; True if the rows changed."""
        view = self.segment.view
        q = view.q
        mark = (q[L.DIRECTORY_VERSION_OFFSET >> 3], q[L.DIRECTORY_COUNT_OFFSET >> 3])
        if mark == self._dir_mark:
            return False
        entries = [e for e in view.entries() if e.active and self._selected(e.unified, e.native, e.market)]
        self._dir_mark = mark if not mark[0] & 1 else None  # odd: a change was under way, look again next time
        self._slots = np.array([e.slot for e in entries], dtype=np.intp)
        t = np.zeros(len(entries), dtype=TOPS_DTYPE)
        t["symbol"] = [e.unified for e in entries]
        t["market"] = [e.market for e in entries]
        t["slot"] = self._slots
        self._template, self._template_bytes = t, t.view(np.uint8)
        self.row_changes += 1
        return True

    def _selected(self, unified: str, native: str, market: str) -> bool:
        if self.market is not None and market.lower() != self.market.lower():
            return False
        return self.wanted is None or unified.upper() in self.wanted or native.upper() in self.wanted

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def symbols(self) -> np.ndarray:
        return self._template["symbol"]

    # ------------------------------------------------------------------ reads
    def versions(self) -> np.ndarray:
        """Every row's latch counter (one gather; no latch needed: each is one aligned word)."""
        return self._seqs[self._slots]

    def confirmed_ns(self) -> np.ndarray:
        """Every row's `confirmed_ns` stat: when its connection last received anything (0 before layout 1.3)."""
        return self._conf[self._slots]

    def read(self, now_ns: int | None = None) -> np.ndarray:
        """A TOPS_DTYPE row per book, each consistent (read under its own latch). Raises ReadContention if some
        row's latch moved during each of `retry_rounds` reads of it."""
        self.refresh()
        seqs, tops, slots = self._seqs, self._tops, self._slots
        s1 = seqs[slots]
        block = tops[slots, s1 & 1]  # copy[book_seq & 1] of every row: header and level 0
        s2 = seqs[slots]
        moved = np.flatnonzero(s1 != s2)
        rounds = 0
        while len(moved):  # only the rows a publish overlapped, again, until each holds still
            rounds += 1
            if rounds > self.retry_rounds:
                raise ReadContention(f"{self.segment.exchange}: {len(moved)} books changed during each of "
                                     f"{self.retry_rounds} reads; is the writer looping?")
            self.retries += len(moved)
            rows = slots[moved]
            a = seqs[rows]
            again = tops[rows, a & 1]
            still = a == seqs[rows]
            block[moved[still]] = again[still]
            s1[moved[still]] = a[still]
            moved = moved[~still]
        now = time.time_ns() if now_ns is None else now_ns
        n = len(slots)
        out = np.empty(n, dtype=TOPS_DTYPE)
        raw = out.view(np.uint8)
        raw[:] = self._template_bytes  # symbol, market, slot (a flat copy: the strings cost no more)
        size = TOPS_DTYPE.itemsize
        if not n:
            return out
        np.ndarray((n, 4), "<f8", raw, strides=(size, 8))[:] = block[:, _LEVEL0:_LEVEL0 + 4].view("<f8")
        recv = block[:, _RECV]
        if not recv.all():  # a writer that records no receive time: its publish time
            recv = np.where(recv != 0, recv, block[:, _PUB])
        out["recv_ts_ns"] = recv
        age = (now - recv) * 1e-9
        if not recv.all():  # never published
            age[recv == 0] = np.inf
        out["age"] = age
        state = block[:, _STATE_WORD] >> _STATE_SHIFT & 0xFFFF_FFFF
        out["state"] = state
        out["live"] = state == L.BookState.LIVE
        out["update_id"] = block[:, _UPDATE_ID]
        out["version"] = s1
        return out


__all__ = ["TOPS_DTYPE", "TopsReader"]
