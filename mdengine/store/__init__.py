"""The shared-memory store: one segment per exchange, seqlocked books and trade rings.

`layout` is the spec; `SegmentWriter` is the one writer of a segment; `SegmentReader` attaches
read-only from any process.
"""

from . import layout
from .layout import BookFlags, BookState, MarketKind, Side, SlotState, TradeFlags, WriterState
from .reader import (
                     BookBuffer,
                     BookHeader,
                     BookReader,
                     BookSnapshot,
                     LiquidationReader,
                     NoPerpData,
                     PerpReader,
                     ReadContention,
                     SegmentReader,
                     TradeReader,
                     UnknownSymbol,
                     attach_all,
)
from .segment import LayoutError, SymbolEntry
from .shm import SegmentExists, SegmentNotFound, list_names, segment_name, unlink
from .writer import SegmentWriter, StoreFull, create_segment, process_start_ns

__all__ = [
    "BookBuffer", "BookFlags", "BookHeader", "BookReader", "BookSnapshot", "BookState", "LayoutError",
    "LiquidationReader", "MarketKind", "NoPerpData", "PerpReader", "ReadContention", "SegmentExists",
    "SegmentNotFound", "SegmentReader", "SegmentWriter", "Side", "SlotState", "StoreFull", "SymbolEntry",
    "TradeFlags", "TradeReader", "UnknownSymbol", "WriterState", "attach_all", "create_segment", "layout",
    "list_names", "process_start_ns", "segment_name", "unlink",
]
