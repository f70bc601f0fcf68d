"""docs/layout.md against mdengine/store/layout.py, and the layout's own invariants."""

from __future__ import annotations

import os
import re
import struct

import pytest

from mdengine.store import layout as L

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "layout.md")
TYPE_SIZES = {"int64": 8, "uint64": 8, "uint32": 4, "float64": 8, "int8": 1, "uint8": 1}
NUMPY_TYPES = {"<i8": "int64", "<u8": "uint64", "<u4": "uint32", "<f8": "float64", "|i1": "int8", "|u1": "uint8"}


def _rows() -> list[tuple[int, str, str, str]]:
    """(offset, size, type, constant) of every row of every table whose first column is Offset."""
    rows, in_table = [], False
    with open(DOC) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
            if cells is None:
                in_table = False
            elif cells[0] == "Offset":
                assert cells[:4] == ["Offset", "Size", "Type", "Constant"], line
                in_table = True
            elif in_table and not set(cells[0]) <= set("-"):
                rows.append((int(cells[0]), cells[1], cells[2], cells[3].strip("`")))
    return rows


ROWS = _rows()


def _type_size(type_: str) -> int | None:
    m = re.fullmatch(r"(\w+)\[(\d+)\]", type_)
    if m:
        return int(m.group(2)) * (1 if m.group(1) == "char" else TYPE_SIZES[m.group(1)])
    return TYPE_SIZES.get(type_)


def test_the_doc_has_all_its_tables():
    assert len(ROWS) >= 80
    names = {r[3] for r in ROWS}
    for dtype_name in ("DIRECTORY_DTYPE", "BOOK_HEADER_DTYPE", "TRADE_DTYPE"):
        for field in getattr(L, dtype_name).names:
            assert f"{dtype_name}.{field}" in names, f"{dtype_name}.{field} is not documented"
    for name in L.COUNTER_NAMES:
        assert f"COUNTER_OFFSETS[{name}]" in names
    for name in L.STAT_NAMES:
        assert f"STAT_OFFSETS[{name}]" in names or name.startswith("reserved") and name != "reserved2"
    header_constants = [k for k, v in vars(L).items() if k.endswith("_OFFSET") and isinstance(v, int)
                        and not k.startswith(("DIR_", "BOOK_", "TRADE_", "LEVEL_"))]
    for k in header_constants:
        assert k in names, f"layout.{k} is not in docs/layout.md"


@pytest.mark.parametrize("offset,size,type_,constant", ROWS, ids=[r[3] for r in ROWS])
def test_each_documented_offset_size_and_type_matches_layout_py(offset, size, type_, constant):
    if m := re.fullmatch(r"(\w+_DTYPE)\.(\w+)", constant):
        dt, off = getattr(L, m.group(1)).fields[m.group(2)]
        assert offset == off
        assert int(size) == dt.itemsize
        assert type_ == NUMPY_TYPES.get(dt.str, f"char[{dt.itemsize}]")
        return
    if m := re.fullmatch(r"(COUNTER|STAT)_OFFSETS\[(\w+)\]", constant):
        assert offset == getattr(L, f"{m.group(1)}_OFFSETS")[m.group(2)]
    else:
        assert offset == getattr(L, constant), f"docs say {constant} = {offset}, layout.py {getattr(L, constant)}"
    if size.isdigit() and _type_size(type_) is not None:
        assert int(size) == _type_size(type_)


def test_doc_states_the_magic_and_version():
    with open(DOC) as f:
        text = f.read()
    assert f"0x{L.MAGIC:016X}" in text and L.MAGIC.to_bytes(8, "little") == b"MDESHM1\0"
    assert f"version {L.LAYOUT_MAJOR}.{L.LAYOUT_MINOR}" in text


def test_structs_pack_exactly_their_dtypes():
    assert struct.calcsize(L.BOOK_HEADER_STRUCT) == L.BOOK_HEADER_DTYPE.itemsize == L.BOOK_HEADER_LENGTH
    assert struct.calcsize(L.TRADE_STRUCT) == L.TRADE_DTYPE.itemsize == L.TRADE_RECORD_LENGTH
    assert L.DIRECTORY_DTYPE.itemsize == L.DIR_ENTRY_LENGTH
    consts = [L.BOOK_UPDATE_ID_OFFSET, L.BOOK_EXCH_TS_OFFSET, L.BOOK_RECV_TS_OFFSET, L.BOOK_PUB_TS_OFFSET,
              L.BOOK_N_BIDS_OFFSET, L.BOOK_N_ASKS_OFFSET, L.BOOK_STATE_OFFSET, L.BOOK_FLAGS_OFFSET,
              L.BOOK_GENERATION_OFFSET, L.BOOK_VERSION_OFFSET]
    assert [L.BOOK_HEADER_DTYPE.fields[n][1] for n in L.BOOK_HEADER_DTYPE.names] == consts
    assert L.TRADE_DTYPE.fields["index"][1] == L.TRADE_INDEX_OFFSET
    values = (1, 2, 3.5, 4.5, 5, -1, 1, 7)
    raw = struct.pack(L.TRADE_STRUCT, *values)
    import numpy as np

    rec = np.frombuffer(raw, L.TRADE_DTYPE)[0]
    assert tuple(rec[n] for n in L.TRADE_DTYPE.names) == values


@pytest.mark.parametrize("book_capacity,trade_capacity", [(1, 2), (20, 4096), (50, 4096), (5000, 1 << 20)])
def test_slot_geometry_keeps_polled_words_alone_on_their_cache_lines(book_capacity, trade_capacity):
    g = L.SlotGeometry(book_capacity, trade_capacity)
    for off in (g.copy0, g.copy1, g.ring, g.records, g.size):
        assert off % L.CACHE_LINE == 0
    assert g.copy1 - g.copy0 >= g.copy_length and g.ring - g.copy1 >= g.copy_length
    assert L.RING_TAIL_OFFSET - L.RING_TAIL_INTENT_OFFSET == L.CACHE_LINE
    for off in (L.SLOT_BOOK_SEQ_OFFSET, L.PUBLISH_COUNTER_OFFSET, L.DIRECTORY_COUNT_OFFSET, L.SLOT_STATS_OFFSET,
                L.COUNTERS_OFFSET, L.RING_HEADER_LENGTH, L.HEARTBEAT_NS_OFFSET - 32):
        assert off % L.CACHE_LINE == 0
    assert L.LAST_ERROR_TEXT_OFFSET + L.LAST_ERROR_TEXT_LENGTH == L.HEADER_LENGTH
    assert L.segment_size(3, book_capacity, trade_capacity) == L.slots_offset(3) + 3 * g.size + L.TEXT_AREA_LENGTH


@pytest.mark.parametrize("args,match", [((0, 8), "book capacity 0"), ((5001, 8), "book capacity 5001"),
                                        ((5, 6), "power of two"), ((5, 1), "power of two"),
                                        ((5, 1 << 21), "power of two")])
def test_bad_capacities_are_refused_with_the_value(args, match):
    with pytest.raises(ValueError, match=match):
        L.check_capacities(*args)
    with pytest.raises(ValueError, match="max_symbols 0"):
        L.segment_size(0, 5, 8)
