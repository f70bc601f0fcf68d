"""docs/layout.md's offset tables, generated from layout.py so the spec cannot drift from the code.

    python -m mdengine.store.layout_doc            print every table
    python -m mdengine.store.layout_doc --check    list where docs/layout.md differs (exit 1 if it does)
    python -m mdengine.store.layout_doc --write    rewrite the tables in docs/layout.md in place

Each table in the doc follows a marker line ``<!-- layout-table: NAME -->``. The Offset, Size, Type and
Constant columns come from layout.py: dtype fields from the numpy dtypes, header words from their constants,
whose type is the first type word (``int64``, ``uint32``, ...) in the constant's comment (or in the comment of
the constant it is the offset of, as for MAGIC), or ``char[N]`` when an ``X_LENGTH`` sits beside ``X_OFFSET``.
Bytes no field covers become ``(reserved)`` rows. The Meaning column is prose: `--write` keeps the doc's
text for each constant and gives a new field ``TODO: describe``, which the test refuses.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable

import numpy as np

from . import layout as L

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "layout.md")
MARKER = re.compile(r"^<!-- layout-table: (\w+) -->$")
COLUMNS = "| Offset | Size | Type | Constant | Meaning |"
RESERVED = "(reserved)"
RESERVED_MEANING = "reserved: zero so far; a later minor version may define it"
TODO = "TODO: describe"
TYPE_SIZES = {"int64": 8, "uint64": 8, "float64": 8, "int32": 4, "uint32": 4, "int16": 2, "uint16": 2,
              "int8": 1, "uint8": 1}
NUMPY_TYPES = {"<i8": "int64", "<u8": "uint64", "<u4": "uint32", "<i4": "int32", "<f8": "float64", "|i1": "int8",
               "|u1": "uint8", "<u2": "uint16", "<i2": "int16"}
DTYPE_MIRRORS = {"DIR_": L.DIRECTORY_DTYPE, "BOOK_": L.BOOK_HEADER_DTYPE, "TRADE_": L.TRADE_DTYPE}

Row = tuple[int, str, str, str]
"""(offset, size, type, constant): the columns of a table row that layout.py decides."""


def _comment_types() -> dict[str, str]:
    """Constant name -> the first type word in the comment on its line in layout.py."""
    found = {}
    for line in inspect.getsource(L).splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)\s*=[^#]*#(.*)$", line)
        if m and (t := re.search(r"\b(u?int(?:8|16|32|64)|float64)\b", m.group(2))):
            found[m.group(1)] = t.group(1)
    return found


def _with_reserved(fields: list[tuple[int, int, str, str]], length: int, what: str) -> list[Row]:
    """Rows for `fields` (offset, size in bytes, type, constant) in offset order, a reserved row for every gap
    up to `length`; raises ValueError if two fields overlap or one runs past the end."""
    rows: list[Row] = []
    at = 0
    for off, size, type_, const in sorted(fields):
        if off < at:
            raise ValueError(f"{what}: {const} at {off} overlaps the field before it (which ends at {at})")
        if off > at:
            rows.append((at, str(off - at), "bytes", RESERVED))
        rows.append((off, str(size), type_, const))
        at = off + size
    if at > length:
        raise ValueError(f"{what}: fields end at {at}, past its {length} bytes")
    if at < length:
        rows.append((at, str(length - at), "bytes", RESERVED))
    return rows


def _dtype_fields(dtype: np.dtype, name: str) -> list[tuple[int, int, str, str]]:
    out = []
    for field in dtype.names:
        dt, off = dtype.fields[field][:2]
        out.append((off, dt.itemsize, NUMPY_TYPES.get(dt.str, f"char[{dt.itemsize}]"), f"{name}.{field}"))
    return out


def _word(name: str, types: dict[str, str]) -> tuple[int, int, str, str]:
    """A constant-defined field: its offset, size, type and name, as layout.py states them."""
    offset = getattr(L, name)
    stem = name[:-len("_OFFSET")]
    if isinstance(getattr(L, stem + "_LENGTH", None), int):
        n = getattr(L, stem + "_LENGTH")
        return offset, n, f"char[{n}]", name
    type_ = types.get(name) or types.get(stem)
    if type_ is None:
        raise ValueError(f"layout.{name} states no type: put it first in the constant's comment (# int64, ...)")
    return offset, TYPE_SIZES[type_], type_, name


def _offsets(names: list[str]) -> list[str]:
    return [n for n in names if n.endswith("_OFFSET") and isinstance(getattr(L, n), int)]


def header_names() -> list[str]:
    """The header's offset constants: those layout.py defines before HEADER_LENGTH (its header section)."""
    names = list(vars(L))
    return _offsets(names[:names.index("HEADER_LENGTH")])


def body_names() -> list[str]:
    """The offset constants defined after the header section: slot, ring and dtype-mirroring words."""
    names = list(vars(L))
    return _offsets(names[names.index("HEADER_LENGTH"):])


def text_names() -> list[str]:
    """The text area's offset constants: those layout.py defines from TEXT_SEQ_OFFSET to TEXT_AREA_LENGTH."""
    names = list(vars(L))
    return _offsets(names[names.index("TEXT_SEQ_OFFSET"):names.index("TEXT_AREA_LENGTH")])


def unplaced() -> list[str]:
    """Offset constants no table accounts for: neither header, slot, ring or text-area words, nor dtype field
    mirrors."""
    out = []
    texts = set(text_names())
    for n in body_names():
        if n in texts:
            continue
        prefix = n.split("_", 1)[0] + "_"
        if n == "DIRECTORY_OFFSET" or prefix in ("SLOT_", "RING_", "PERP_"):
            continue
        dtype = DTYPE_MIRRORS.get(prefix)
        if dtype is None or getattr(L, n) not in {f[1] for f in dtype.fields.values()}:
            out.append(n)
    return out


def header_rows() -> list[Row]:
    types = _comment_types()
    fields = [(L.COUNTERS_OFFSET, 8 * len(L.COUNTER_NAMES), f"int64[{len(L.COUNTER_NAMES)}]", "COUNTERS_OFFSET")]
    fields += [_word(n, types) for n in header_names() if n != "COUNTERS_OFFSET"]
    rows = _with_reserved(fields, L.HEADER_LENGTH, "segment header")
    return [*rows, (L.DIRECTORY_OFFSET, f"{L.DIR_ENTRY_LENGTH} × max_symbols", "bytes", "DIRECTORY_OFFSET")]


def counter_rows() -> list[Row]:
    return [(L.COUNTER_OFFSETS[n], "8", "int64", f"COUNTER_OFFSETS[{n}]") for n in L.COUNTER_NAMES]


def directory_rows() -> list[Row]:
    return _with_reserved(_dtype_fields(L.DIRECTORY_DTYPE, "DIRECTORY_DTYPE"), L.DIR_ENTRY_LENGTH, "directory entry")


def slot_rows() -> list[Row]:
    types = _comment_types()
    fields = [(L.SLOT_STATS_OFFSET, L.STATS_LENGTH, f"int64[{len(L.STAT_NAMES)}]", "SLOT_STATS_OFFSET")]
    fields += [_word(n, types) for n in body_names() if n.startswith("SLOT_")
               and n not in ("SLOT_STATS_OFFSET", "SLOT_BOOK_COPIES_OFFSET")]
    rows = _with_reserved(fields, L.SLOT_BOOK_COPIES_OFFSET, "slot")
    return [*rows, (L.SLOT_BOOK_COPIES_OFFSET, "copy_length", "bytes", "SLOT_BOOK_COPIES_OFFSET")]


def stat_rows() -> list[Row]:
    rows: list[Row] = []
    names = list(L.STAT_NAMES)
    while names:
        name = names.pop(0)
        if name.startswith("reserved"):  # a run of reserved words is one row
            run = [name]
            while names and names[0].startswith("reserved"):
                run.append(names.pop(0))
            rows.append((L.STAT_OFFSETS[name], str(8 * len(run)), f"int64[{len(run)}]",
                         f"STAT_OFFSETS[{run[0]}..{run[-1]}]"))
        else:
            rows.append((L.STAT_OFFSETS[name], "8", "int64", f"STAT_OFFSETS[{name}]"))
    return rows


def book_rows() -> list[Row]:
    rows = _with_reserved(_dtype_fields(L.BOOK_HEADER_DTYPE, "BOOK_HEADER_DTYPE"), L.BOOK_HEADER_LENGTH,
                          "book header")
    return [*rows, (L.BOOK_HEADER_LENGTH, str(L.LEVEL_LENGTH), "float64[4]", "BOOK_HEADER_LENGTH")]


def ring_rows() -> list[Row]:
    types = _comment_types()
    fields = [_word(n, types) for n in body_names() if n.startswith("RING_")]
    return _with_reserved(fields, L.RING_HEADER_LENGTH, "trade ring header")


def text_rows() -> list[Row]:
    types = _comment_types()
    return _with_reserved([_word(n, types) for n in text_names()], L.TEXT_AREA_LENGTH, "text area")


def perp_slot_rows() -> list[Row]:
    """A perp slot (1.4): its latch line, two record copies, a ring header, then the liquidation records."""
    fields = [(L.PERP_SEQ_OFFSET, 8, "int64", "PERP_SEQ_OFFSET"),
              (L.PERP_COPY0_OFFSET, L.PERP_RECORD_LENGTH, "bytes", "PERP_COPY0_OFFSET"),
              (L.PERP_COPY1_OFFSET, L.PERP_RECORD_LENGTH, "bytes", "PERP_COPY1_OFFSET"),
              (L.PERP_RING_OFFSET, L.RING_HEADER_LENGTH, "bytes", "PERP_RING_OFFSET")]
    rows = _with_reserved(fields, L.PERP_RECORDS_OFFSET, "perp slot")
    return [*rows, (L.PERP_RECORDS_OFFSET, f"{L.TRADE_RECORD_LENGTH} × liquidation_capacity", "bytes",
                    "PERP_RECORDS_OFFSET")]


def perp_record_rows() -> list[Row]:
    return _with_reserved(_dtype_fields(L.PERP_DTYPE, "PERP_DTYPE"), L.PERP_RECORD_LENGTH, "perp record")


def trade_rows() -> list[Row]:
    return _with_reserved(_dtype_fields(L.TRADE_DTYPE, "TRADE_DTYPE"), L.TRADE_RECORD_LENGTH, "trade record")


TABLES: dict[str, Callable[[], list[Row]]] = {
    "header": header_rows, "counters": counter_rows, "directory": directory_rows, "slot": slot_rows,
    "stats": stat_rows, "book": book_rows, "ring": ring_rows, "trade": trade_rows, "text": text_rows,
    "perp_slot": perp_slot_rows, "perp_record": perp_record_rows,
}


# --------------------------------------------------------------------------- the doc
def parse_row(line: str) -> tuple[Row, str]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != 5:
        raise ValueError(f"a table row needs 5 cells: {line.strip()}")
    return (int(cells[0]), cells[1], cells[2], cells[3].strip("`")), cells[4]


def doc_tables(text: str) -> dict[str, list[tuple[Row, str]]]:
    """Every marked table of the doc: name -> [(row, meaning)]."""
    tables: dict[str, list[tuple[Row, str]]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = MARKER.match(line)
        if not m:
            continue
        rows = tables.setdefault(m.group(1), [])
        for row_line in lines[i + 3:]:  # the marker, the column names, the |---| line
            if not row_line.startswith("|"):
                break
            rows.append(parse_row(row_line))
    return tables


def render(name: str, meanings: dict[str, str]) -> list[str]:
    out = [f"<!-- layout-table: {name} -->", COLUMNS, "|---|---|---|---|---|"]
    for off, size, type_, const in TABLES[name]():
        meaning = RESERVED_MEANING if const == RESERVED else meanings.get(const, TODO)
        out.append(f"| {off} | {size} | {type_} | `{const}` | {meaning} |")
    return out


def problems(text: str) -> list[str]:
    """Where the doc's tables differ from layout.py (empty when they agree)."""
    found = []
    tables = doc_tables(text)
    for name, make in TABLES.items():
        if name not in tables:
            found.append(f"table {name!r} is missing (no '<!-- layout-table: {name} -->' line)")
            continue
        want, have = make(), [row for row, _ in tables[name]]
        differ = [f"table {name}: documented row {row} is not in layout.py" for row in have if row not in want]
        differ += [f"table {name}: layout.py has {row}, the doc does not" for row in want if row not in have]
        if not differ and have != want:
            differ.append(f"table {name}: rows are out of offset order, or repeated")
        found += differ
        found += [f"table {name}: {row[3]} has no meaning" for row, meaning in tables[name]
                  if not meaning or meaning == TODO]
    found += [f"unknown table {name!r}" for name in tables if name not in TABLES]
    found += [f"layout.{n} is in no table: define header words before HEADER_LENGTH" for n in unplaced()]
    offset_tables = sum(1 for line in text.splitlines() if line.replace(" ", "").startswith("|Offset|"))
    if offset_tables != len(tables):
        found.append(f"{offset_tables} tables have an Offset column but {len(tables)} are marked as generated")
    return found


def rewrite(text: str) -> str:
    """The doc with every marked table regenerated, keeping each constant's meaning."""
    meanings = {row[3]: meaning for rows in doc_tables(text).values() for row, meaning in rows}
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        out += render(m.group(1), meanings)
        i += 3
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if not os.path.exists(DOC):
        print(f"{os.path.normpath(DOC)} not found: run this from a source checkout of mdengine", file=sys.stderr)
        return 2
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    if "--check" in argv:
        found = problems(text)
        print("\n".join(found) or "docs/layout.md agrees with mdengine/store/layout.py")
        return 1 if found else 0
    if "--write" in argv:
        new = rewrite(text)
        if new != text:
            with open(DOC, "w", encoding="utf-8") as f:
                f.write(new)
        print("\n".join(problems(new)) or "docs/layout.md agrees with mdengine/store/layout.py")
        return 0
    meanings = {row[3]: meaning for rows in doc_tables(text).values() for row, meaning in rows}
    for name in TABLES:
        print("\n".join(render(name, meanings)), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
