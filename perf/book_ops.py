"""The book's per-frame operations, C module (mdengine._speedups) against its pure-Python twin, in one process.

Each operation runs on the same 100-level book (a 1000-level snapshot for the build), timed with timeit, best of
`--repeat`; the ratio is Python time / C time. Without the C module only the Python column is printed.

Usage: python perf/book_ops.py [--quick] [--repeat N]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit

from mdengine import book as B
from mdengine.store import layout as L


def _book(levels: int) -> B.LocalBook:
    b = B.LocalBook()
    b.apply_snapshot([[f"{60000 - i * 0.5:.1f}", "1.25"] for i in range(levels)],
                     [[f"{60001 + i * 0.5:.1f}", "2.5"] for i in range(levels)])
    return b


def cases(impl: dict) -> dict:
    """name -> zero-argument callable doing one operation with `impl`'s functions."""
    b = _book(100)
    bid, ask = b.bids, b.asks
    dst = bytearray(L.BOOK_HEADER_LENGTH + 50 * L.LEVEL_LENGTH)
    pack, update, checksum, replace = impl["pack_top"], impl["side_update"], impl["checksum"], impl["side_replace"]
    # an update that changes, adds and removes levels near the top, then puts them back (the book stays 100 deep)
    there = [["60000.0", "3"], ["59995.25", "1"], ["59990.0", "0"]]
    back = [["60000.0", "1.25"], ["59995.25", "0"], ["59990.0", "1.25"]]
    snapshot = [[f"{60000 - i * 0.5:.1f}", "1.25000000"] for i in range(1000)]

    def update_and_back() -> None:
        update(bid.keys, bid.qty, bid.raw, True, there, 50)
        update(bid.keys, bid.qty, bid.raw, True, back, 50)

    return {
        "pack_top_50": lambda: pack(dst, L.BOOK_HEADER_LENGTH, bid.keys, bid.qty, ask.keys, ask.qty, 50),
        "pack_top_20": lambda: pack(dst, L.BOOK_HEADER_LENGTH, bid.keys, bid.qty, ask.keys, ask.qty, 20),
        "update_3_levels_twice": update_and_back,
        "checksum_25": lambda: checksum(bid.raw, ask.raw, 25),
        "snapshot_side_1000": lambda: replace(snapshot, -1.0),
    }


def time_us(fn, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a few seconds)")
    ap.add_argument("--repeat", type=int, default=None, help="timeit repeats, best one kept (default 7, quick 3)")
    args = ap.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    scale = 0.2 if args.quick else 1.0
    impls = {"python": B.PYTHON_IMPLEMENTATION}
    if B.C_IMPLEMENTATION is not None:
        impls["c"] = B.C_IMPLEMENTATION
    print(f"# book operations, best of {repeat}; book code in use: {B.IMPLEMENTATION}; python={sys.version.split()[0]}")
    result: dict = {"benchmark": "book_ops", "implementation": B.IMPLEMENTATION}
    names = list(cases(B.PYTHON_IMPLEMENTATION))
    for name in names:
        number = max(5, int((100 if name.startswith("snapshot") else 20_000) * scale))
        row = {k: time_us(cases(impl)[name], number, repeat) for k, impl in impls.items()}
        ratio = row["python"] / row["c"] if "c" in row else None
        line = "  ".join(f"{k} {v:9.2f} us" for k, v in row.items())
        print(f"{name:24s} {line}" + (f"  python/c {ratio:5.1f}x" if ratio else ""))
        for k, v in row.items():
            result[f"{name}_{k}_us"] = round(v, 3)
        if ratio:
            result[f"{name}_ratio"] = round(ratio, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
