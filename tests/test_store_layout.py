"""docs/layout.md against mdengine/store/layout.py, and the layout's own invariants."""

from __future__ import annotations

import itertools
import os
import re
import struct

import pytest

from mdengine.store import layout as L
from mdengine.store import layout_doc

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
FIELD_ROWS = [r for r in ROWS if r[3] != layout_doc.RESERVED]


def _doc() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def _type_size(type_: str) -> int | None:
    m = re.fullmatch(r"(\w+)\[(\d+)\]", type_)
    if m:
        return int(m.group(2)) * (1 if m.group(1) == "char" else TYPE_SIZES[m.group(1)])
    return TYPE_SIZES.get(type_)


def test_the_doc_tables_equal_the_tables_generated_from_layout_py():
    """Every offset, size, type and reserved range, in order; a missing or extra field fails. To fix:
    `python -m mdengine.store.layout_doc --write`, then describe any new field in its Meaning cell."""
    assert layout_doc.problems(_doc()) == []


def test_the_doc_has_all_its_tables():
    assert len(ROWS) >= 80
    names = {r[3] for r in ROWS}
    for dtype_name in ("DIRECTORY_DTYPE", "BOOK_HEADER_DTYPE", "TRADE_DTYPE"):
        for field in getattr(L, dtype_name).names:
            assert f"{dtype_name}.{field}" in names, f"{dtype_name}.{field} is not documented"
    for name in L.COUNTER_NAMES:
        assert f"COUNTER_OFFSETS[{name}]" in names
    for name in L.STAT_NAMES:
        assert f"STAT_OFFSETS[{name}]" in names or name.startswith("reserved")
    for k in layout_doc.header_names():
        assert k in names, f"layout.{k} is not in docs/layout.md"


@pytest.mark.parametrize("offset,size,type_,constant", FIELD_ROWS, ids=[r[3] for r in FIELD_ROWS])
def test_each_documented_offset_size_and_type_matches_layout_py(offset, size, type_, constant):
    """An independent reading of each row (not through layout_doc): the constant it names has that offset."""
    if m := re.fullmatch(r"(\w+_DTYPE)\.(\w+)", constant):
        dt, off = getattr(L, m.group(1)).fields[m.group(2)]
        assert offset == off
        assert int(size) == dt.itemsize
        assert type_ == NUMPY_TYPES.get(dt.str, f"char[{dt.itemsize}]")
        return
    if m := re.fullmatch(r"(COUNTER|STAT)_OFFSETS\[(\w+)(?:\.\.(\w+))?\]", constant):
        offsets = getattr(L, f"{m.group(1)}_OFFSETS")
        assert offset == offsets[m.group(2)]
        if m.group(3):
            assert offset + int(size) == offsets[m.group(3)] + 8
    else:
        assert offset == getattr(L, constant), f"docs say {constant} = {offset}, layout.py {getattr(L, constant)}"
    if size.isdigit() and _type_size(type_) is not None:
        assert int(size) == _type_size(type_)


@pytest.mark.parametrize("name", list(layout_doc.TABLES))
def test_each_generated_table_covers_its_bytes_once(name):
    """Fields and reserved rows tile each structure: no overlap, no unlisted byte."""
    rows = layout_doc.TABLES[name]()
    sized = [(off, int(size)) for off, size, _, _ in rows if size.isdigit()]
    for (off, size), (next_off, _) in itertools.pairwise(sized):
        assert off + size == next_off, f"{name}: bytes {off + size}..{next_off} are neither a field nor reserved"
    starts = {"counters": L.COUNTERS_OFFSET, "stats": L.SLOT_STATS_OFFSET}
    assert sized[0][0] == starts.get(name, 0)
    ends = {"header": L.HEADER_LENGTH, "directory": L.DIR_ENTRY_LENGTH, "book": L.BOOK_HEADER_LENGTH + L.LEVEL_LENGTH,
            "ring": L.RING_HEADER_LENGTH, "trade": L.TRADE_RECORD_LENGTH, "slot": L.SLOT_BOOK_COPIES_OFFSET,
            "counters": L.COUNTERS_OFFSET + 8 * len(L.COUNTER_NAMES), "stats": L.SLOT_STATS_OFFSET + L.STATS_LENGTH,
            "text": L.TEXT_AREA_LENGTH, "perp_slot": L.PERP_RECORDS_OFFSET, "perp_record": L.PERP_RECORD_LENGTH}
    assert sized[-1][0] + sized[-1][1] == ends[name]


def _without_row(text: str, constant: str) -> str:
    return "\n".join(line for line in text.splitlines() if f"`{constant}`" not in line) + "\n"


def test_the_check_fails_on_a_missing_an_extra_or_a_moved_field(monkeypatch):
    text = _doc()
    assert any("GENERATION_OFFSET" in p for p in layout_doc.problems(_without_row(text, "GENERATION_OFFSET")))
    assert any("TRADE_DTYPE.side" in p for p in layout_doc.problems(_without_row(text, "TRADE_DTYPE.side")))
    extra = text.replace("| 192 | 8 | int64 | `PUBLISH_COUNTER_OFFSET` |",
                         "| 184 | 8 | int64 | `SPARE_OFFSET` | a field layout.py lacks |\n"
                         "| 192 | 8 | int64 | `PUBLISH_COUNTER_OFFSET` |")
    assert extra != text and any("SPARE_OFFSET" in p for p in layout_doc.problems(extra))
    monkeypatch.setattr(L, "OWNER_START_NS_OFFSET", L.OWNER_START_NS_OFFSET + 8)  # a field moved in layout.py
    assert any("OWNER_START_NS_OFFSET" in p for p in layout_doc.problems(text))
    monkeypatch.undo()
    monkeypatch.setattr(L, "NEW_FIELD_OFFSET", 184, raising=False)  # defined outside the header section
    assert any("NEW_FIELD_OFFSET" in p for p in layout_doc.problems(text))


def test_write_regenerates_the_tables_and_keeps_the_meanings():
    text = _doc()
    assert layout_doc.rewrite(text) == text
    broken = _without_row(text, "HEARTBEAT_NS_OFFSET").replace("| 8 | 4 | uint32 |", "| 8 | 8 | uint64 |")
    fixed = layout_doc.rewrite(broken)
    assert layout_doc.problems(fixed) == ["table header: HEARTBEAT_NS_OFFSET has no meaning"]
    assert fixed == text.replace(_meaning(text, "HEARTBEAT_NS_OFFSET"), layout_doc.TODO)


def _meaning(text: str, constant: str) -> str:
    line = next(line for line in text.splitlines() if f"| `{constant}` |" in line)
    return line.rsplit("|", 2)[1].strip()


def test_doc_states_the_magic_and_version():
    text = _doc()
    assert f"0x{L.MAGIC:016X}" in text and L.MAGIC.to_bytes(8, "little") == b"MDESHM1\0"
    assert text.splitlines()[0] == f"# mdengine shared-memory layout, version {L.LAYOUT_MAJOR}.{L.LAYOUT_MINOR}"
    history = re.findall(r"^\| (\d+)\.(\d+) \| .+ \|$", text, re.M)
    versions = [(int(a), int(b)) for a, b in history]
    assert versions == sorted(set(versions)) and versions[0] == (1, 0)
    assert versions[-1] == (L.LAYOUT_MAJOR, L.LAYOUT_MINOR), "describe the new version in docs/layout.md's table"


def test_structs_pack_exactly_their_dtypes():
    assert struct.calcsize(L.BOOK_HEADER_STRUCT) == L.BOOK_HEADER_DTYPE.itemsize == L.BOOK_HEADER_LENGTH
    assert struct.calcsize(L.TRADE_STRUCT) == L.TRADE_DTYPE.itemsize == L.TRADE_RECORD_LENGTH
    assert struct.calcsize(L.PERP_STRUCT) == L.PERP_DTYPE.itemsize == L.PERP_RECORD_LENGTH
    import numpy as np

    perp = (1.5, 2.5, 3.5, 4.5, 5, 6.5, 7, 8, 9, 2, 11, 12, 13, 14, 15, 16)
    rec = np.frombuffer(struct.pack(L.PERP_STRUCT, *perp), L.PERP_DTYPE)[0]
    assert tuple(rec[n] for n in L.PERP_DTYPE.names) == perp
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
    assert L.segment_size(3, book_capacity, trade_capacity) == L.slots_offset(3) + 3 * g.size + L.TEXT_AREA_LENGTH \
        + 3 * L.perp_slot_size(L.DEFAULT_LIQUIDATION_CAPACITY)
    for off in (L.PERP_SEQ_OFFSET, L.PERP_COPY0_OFFSET, L.PERP_RING_OFFSET, L.PERP_RECORDS_OFFSET,
                L.perp_slot_size(2), L.perp_area_offset(3, book_capacity, trade_capacity)):
        assert off % L.CACHE_LINE == 0


@pytest.mark.parametrize("args,match", [((0, 8), "book capacity 0"), ((5001, 8), "book capacity 5001"),
                                        ((5, 6), "power of two"), ((5, 1), "power of two"),
                                        ((5, 1 << 21), "power of two")])
def test_bad_capacities_are_refused_with_the_value(args, match):
    with pytest.raises(ValueError, match=match):
        L.check_capacities(*args)
    with pytest.raises(ValueError, match="max_symbols 0"):
        L.segment_size(0, 5, 8)
