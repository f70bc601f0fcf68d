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

import logging
import os
from collections.abc import Callable
from typing import Any

from .._native import speedups
from ..book import BookSide, LocalBook
from ..events import Event
from ..exchanges.base import Adapter
from ..store import layout as L
from ..store.writer import META_FIELDS, META_WORDS
from .publisher import Publisher, _Slot

FrameHandler = Callable[[str, "str | bytes", int], list[Event]]
_native = speedups()
_log = logging.getLogger("mdengine.feed.fastlane")

#: the members the lane reads and writes on the book side of the contract, by role (mdengine/_c/_lane.h, lane_roles);
#: the adapter names its symbol's in lane_spec()["members"]
BOOK_MEMBERS = {"bids": "bids", "asks": "asks", "update_id": "update_id", "exch_ts_ns": "exch_ts_ns",
                "watch_depth": "watch_depth", "top_dirty": "top_dirty"}
SIDE_MEMBERS = {"keys": "keys", "qty": "qty", "raw": "raw"}
SLOT_MEMBERS = {"levels_published": "levels_published"}

#: the layout numbers the lane's C code is written for; it refuses to start unless they are these
LAYOUT = {"BOOK_HEADER_LENGTH": L.BOOK_HEADER_LENGTH, "LEVEL_LENGTH": L.LEVEL_LENGTH,
          "TRADE_RECORD_LENGTH": L.TRADE_RECORD_LENGTH, "BOOK_HEADER_STRUCT": L.BOOK_HEADER_STRUCT,
          "TRADE_STRUCT": L.TRADE_STRUCT, "META_WORDS": META_WORDS, "META_FIELDS": " ".join(META_FIELDS)}


def available() -> bool:
    """True when the C module with the Lane is built and MDENGINE_NO_LANE is not set."""
    return _native is not None and hasattr(_native, "Lane") and os.environ.get("MDENGINE_NO_LANE", "") in ("", "0")


def lane_args(adapter: Adapter, publisher: Publisher, spec: dict[str, Any]) -> tuple:
    """The arguments of `_speedups.Lane` for `adapter`'s lane spec, publishing through `publisher`: everything the
    C side reads, by name (mdengine/_c/_lane.h, Lane_init)."""
    w = publisher.w

    def target_of(sym: Any) -> dict[str, object] | None:
        """Where the lane publishes `sym`: its Publisher slot record, the writer's stores for the slot and the byte
        offsets of the slot's book_updates, messages, last_recv_ns and trades stats."""
        s = publisher.slots.get(sym.key)
        if s is None:
            return None
        return {"record": s, "slot": s.slot, **w.slot_stores(s.slot), "book_updates": s.book_updates << 3,
                "messages": s.messages << 3, "last_recv_ns": s.last_recv_ns << 3, "trades": s.trades << 3}

    full = {**spec, "types": {"symbol": spec["symbol"], "book": LocalBook, "side": BookSide, "slot": _Slot},
            "members": {"symbol": spec["members"], "book": BOOK_MEMBERS, "side": SIDE_MEMBERS, "slot": SLOT_MEMBERS}}
    store = {"generation": w.generation, "capacity": w.capacity, "depth": publisher.depth,
             "state_live": L.BookState.LIVE, "flag_truncated": L.BookFlags.TRUNCATED,
             "flag_crossed": L.BookFlags.CROSSED, "side_buy": L.Side.BUY, "side_sell": L.Side.SELL,
             "side_unknown": L.Side.UNKNOWN, "counter_book_updates": L.COUNTER_OFFSETS["book_updates"],
             "counter_trades": L.COUNTER_OFFSETS["trades"], "layout": LAYOUT}
    return adapter, type(adapter).on_frame, full, target_of, w.buf, w.meta, store


def attach(adapter: Adapter, publisher: Publisher) -> FrameHandler:
    """The function the feed loop calls for each frame: the lane's on_frame where the adapter offers a lane spec
    (and the writer writes with the C module), else the adapter's own on_frame. The publisher owns the lane
    (`publisher.lane`): it drops the lane's cached slots when symbols come and go, and closes it before the
    segment. A spec the C side refuses (a member, offset, rule kind or layout number it does not know) is logged
    and the feed runs on the Python path."""
    spec = adapter.lane_spec() if available() else None
    if spec is None or not publisher.w.writes_natively:  # a writer forced to pure Python keeps the Python path
        return adapter.on_frame
    try:
        lane = _native.Lane(*lane_args(adapter, publisher, spec))
    except (TypeError, ValueError, KeyError) as e:
        _log.error("%s: fast lane refused its spec, every frame takes the Python path: %s", adapter.exchange, e)
        return adapter.on_frame
    publisher.lane = lane
    return lane.on_frame
