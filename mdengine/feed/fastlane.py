"""The fast lane: the C module's Lane in front of an adapter's on_frame (docs/feed.md, "The fast lane").

A feed spends most of its time on routine frames: a book update that follows the last one on a LIVE book, a trade.
For those, the Python path (adapter.on_frame -> events -> Publisher) costs several microseconds of interpreter
work around a few hundred nanoseconds of real work. `mdengine._speedups.Lane` does the whole of it in one C call:
decode, sequence check, book update on the adapter's own LocalBook, publish through the writer's own latch, trade
ring and counters. It declines every other frame before touching anything, and the adapter handles it as before.

The adapter stays the authority: it says which dict it routes by, which state is LIVE and what to do when an
applied update fails a check (`Adapter.lane_spec`); the Publisher says where each symbol's slot is (`target_of`).
The rule for sane prices and quantities is mdengine.limits': the C module reads its bounds from there when it loads,
and the lane declines any frame that breaks them, so the adapter reports it as malformed and resyncs the symbol.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .._native import speedups
from ..events import Event
from ..exchanges.base import Adapter
from ..store import layout as L
from .publisher import Publisher, _Slot

FrameHandler = Callable[[str, "str | bytes", int], list[Event]]
_native = speedups()


def available() -> bool:
    """True when the C module with the Lane is built and MDENGINE_NO_LANE is not set."""
    return _native is not None and hasattr(_native, "Lane") and os.environ.get("MDENGINE_NO_LANE", "") in ("", "0")


def attach(adapter: Adapter, publisher: Publisher) -> FrameHandler:
    """The function the feed loop calls for each frame: the lane's on_frame where the adapter offers a lane spec
    (and the writer writes with the C module), else the adapter's own on_frame. The publisher owns the lane: it
    drops the lane's cached slots when symbols come and go, and closes it before the segment."""
    spec = adapter.lane_spec() if available() else None
    w = publisher.w
    if spec is None or w._latch is None:  # noqa: SLF001 - a writer forced to pure Python keeps the Python path
        return adapter.on_frame

    def target_of(sym: object) -> tuple | None:
        """Where the lane publishes `sym`: its Publisher slot record, the slot, the writer's staging copy, the latch
        and ring offsets, the ring mask, then the byte offsets of its book_updates, messages, last_recv_ns and
        trades stats."""
        s = publisher.slots.get(sym.key)  # type: ignore[attr-defined]
        if s is None:
            return None
        i = s.slot
        return (s, i, w._staging(i), w._latch_offsets_of(i), w._ring_offsets_of(i), w._ring_mask,  # noqa: SLF001
                s.book_updates << 3, s.messages << 3, s.last_recv_ns << 3, s.trades << 3)

    store = (w.generation, w.capacity, publisher.depth, L.BookState.LIVE, L.BookFlags.TRUNCATED, L.BookFlags.CROSSED,
             L.Side.BUY, L.Side.SELL, L.Side.UNKNOWN, L.COUNTER_OFFSETS["book_updates"], L.COUNTER_OFFSETS["trades"])
    lane = _native.Lane(spec["exchange"], adapter, type(adapter).on_frame, spec["routes"], spec["live"],
                        spec["kinds"], spec["verdict"], target_of, (*spec["types"], _Slot), w.buf, w.meta, store)
    publisher.lane = lane
    return lane.on_frame
