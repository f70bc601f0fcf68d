"""mdengine._speedups (C) against book.py's pure-Python functions: same containers, same results, same errors.

Every operation runs on two copies of a side, one per implementation, and the containers must stay equal:
the aligned lists of sorted keys, quantities and wire strings, the `touched` answer, the packed bytes and
the checksum.
"""

import math
import os
import shutil
import subprocess
import sys
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mdengine import book as B

C = B.C_IMPLEMENTATION
PY = B.PYTHON_IMPLEMENTATION
needs_c = pytest.mark.skipif(C is None, reason="mdengine._speedups is not built (no C compiler at install?)")

# prices on a small grid so updates hit existing levels; several spellings of one price ("5", "5.0", "5.00")
ticks = st.integers(min_value=1, max_value=60)
spelling = st.sampled_from(["{}", "{}.0", "{}.00", "{}.5"])
price = st.builds(lambda t, f: f.format(t), ticks, spelling)
qty = st.sampled_from(["0", "0.0", "1", "2.5", "0.001", "3.14159", "1e-3", "10"])
levels = st.lists(st.tuples(price, qty).map(list), max_size=12)
bad_value = st.sampled_from(["x", "", "1..2", None, 3, [1], "nan?", "nan", "-NaN"])


def fresh() -> dict:
    return {"keys": [], "qty": [], "raw": []}


def state(side: dict) -> tuple:
    return list(side["keys"]), list(side["qty"]), list(side["raw"])


def run(impl: dict, op: str, *args):
    try:
        return "ok", impl[op](*args)
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return "error", type(e)


@needs_c
@settings(max_examples=300, deadline=None)
@given(bid=st.booleans(), snapshot=levels, steps=st.lists(st.tuples(levels, st.integers(0, 8)), max_size=15))
@example(bid=True, snapshot=[["5", "1"], ["5.0", "2"]], steps=[([["5.00", "0"], ["5", "0"]], 1)])
def test_updates_leave_the_same_side(bid, snapshot, steps):
    sign = -1.0 if bid else 1.0
    sides = []
    for impl in (PY, C):
        keys, qty, raw = impl["side_replace"](snapshot, sign)
        sides.append({"keys": keys, "qty": qty, "raw": raw})
    assert state(sides[0]) == state(sides[1])
    model = {}  # the reference: key -> (qty, "price:qty"), last write wins, zero deletes
    for px, q in snapshot:
        if float(q):
            model[sign * float(px)] = (float(q), f"{px}:{q}")
    for lv, watch in steps:
        answers = [impl["side_update"](s["keys"], s["qty"], s["raw"], bid, lv, watch)
                   for impl, s in zip((PY, C), sides, strict=True)]
        assert answers[0] is answers[1]
        assert state(sides[0]) == state(sides[1])
        for px, q in lv:
            k = sign * float(px)
            if float(q):
                model[k] = (float(q), f"{px}:{q}")
            else:
                model.pop(k, None)
        keys = sorted(model)
        assert state(sides[1]) == (keys, [model[k][0] for k in keys], [model[k][1] for k in keys])


@needs_c
@settings(max_examples=200, deadline=None)
@given(bids=levels, asks=levels, n=st.integers(0, 12), depth=st.integers(-3, 30), offset=st.integers(0, 40))
def test_packed_levels_and_checksum_are_the_same(bids, asks, n, depth, offset):
    b = PY["side_replace"](bids, -1.0)
    a = PY["side_replace"](asks, 1.0)
    dst = [bytearray(b"\xab" * (offset + 12 * 32)) for _ in range(2)]
    got = [impl["pack_top"](d, offset, b[0], b[1], a[0], a[1], n) for impl, d in zip((PY, C), dst, strict=True)]
    assert got[0] == got[1] == (min(n, len(b[0])), min(n, len(a[0])))
    assert dst[0] == dst[1]
    assert PY["checksum"](b[2], a[2], depth) == C["checksum"](b[2], a[2], depth)


@needs_c
def test_checksum_matches_zlib_on_an_okx_book():
    bids = [["3366.1", "7"], ["3366", "6"]]
    asks = [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]
    b, a = C["side_replace"](bids, -1.0), C["side_replace"](asks, 1.0)
    crc = zlib.crc32(b"3366.1:7:3366.8:9:3366:6:3368:8:3372:8")
    assert C["checksum"](b[2], a[2], 25) == (crc - (1 << 32) if crc >= 1 << 31 else crc)


@needs_c
@settings(max_examples=150, deadline=None)
@given(bid=st.booleans(), good=levels, bad=st.tuples(st.one_of(price, bad_value), st.one_of(qty, bad_value)),
       short=st.booleans(), at=st.integers(0, 12))
def test_bad_levels_raise_the_same_error_and_leave_the_same_side(bid, good, bad, short, at):
    bad_level = [bad[0]] if short else list(bad)
    batch = good[:at] + [bad_level] + good[at:]
    sides = [fresh(), fresh()]
    results = [run(impl, "side_update", s["keys"], s["qty"], s["raw"], bid, batch, 3)
               for impl, s in zip((PY, C), sides, strict=True)]
    assert results[0] == results[1]
    assert results[0][0] == "ok" or results[0][1] in (ValueError, TypeError, IndexError)
    assert state(sides[0]) == state(sides[1])
    assert run(PY, "side_replace", batch, 1.0) == run(C, "side_replace", batch, 1.0)


@needs_c
def test_levels_given_as_tuples_iterators_and_floats():
    for impl in (PY, C):
        keys, qty, raw = impl["side_replace"](iter([("2", "1", "ignored"), ("1", "3")]), 1.0)
        assert (keys, qty, raw) == ([1.0, 2.0], [3.0, 1.0], ["1:3", "2:1"])
        assert impl["side_update"](keys, qty, raw, False, (lv for lv in [("2", "0")]), 0) is True
        assert keys == [1.0]
        # a float quantity is accepted by float(), but a level kept for checksums needs its wire strings
        assert run(impl, "side_update", keys, qty, raw, False, [["3", 1.5]], 0) == ("error", TypeError)


@needs_c
def test_pack_top_refuses_a_buffer_too_small_and_a_read_only_one():
    b, a = C["side_replace"]([["1", "1"], ["0.5", "1"]], -1.0), C["side_replace"]([["2", "1"]], 1.0)
    for impl in (PY, C):
        assert run(impl, "pack_top", bytearray(63), 0, b[0], b[1], a[0], a[1], 5) == ("error", ValueError)
        assert run(impl, "pack_top", bytearray(64), 1, b[0], b[1], a[0], a[1], 5) == ("error", ValueError)
        assert run(impl, "pack_top", bytes(64), 0, b[0], b[1], a[0], a[1], 5)[0] == "error"
    dst = bytearray(64)
    assert C["pack_top"](memoryview(dst), 0, b[0], b[1], a[0], a[1], 5) == (2, 1)
    row1 = memoryview(dst).cast("d")[4:8].tolist()
    assert row1[:2] == [0.5, 1.0] and math.isnan(row1[2]) and row1[3] == 0.0


@needs_c
def test_no_reference_is_leaked():
    keys, qty, raw = C["side_replace"]([[str(p), "1"] for p in range(1, 200)], 1.0)
    dst = bytearray(32 * 50)
    updates = [[str(p), "0" if p % 3 == 0 else "2"] for p in range(150, 250)] + [["x", "1"]]

    def churn():
        for i in range(300):
            try:
                C["side_update"](keys, qty, raw, False, updates, 20)
            except ValueError:
                pass
            C["side_update"](keys, qty, raw, False, [[str(p), "1"] for p in range(150, 250)], 20)
            C["pack_top"](dst, 0, keys, qty, keys, qty, 50)
            C["checksum"](raw, raw, 25)
            C["side_replace"]([[str(p), "1"] for p in range(i + 1, i + 51)], -1.0)

    churn()
    before = sys.getallocatedblocks()
    churn()
    assert sys.getallocatedblocks() - before < 100


def test_the_c_module_is_built_where_a_compiler_is():
    if os.environ.get("MDENGINE_NO_SPEEDUPS") or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here, or speedups disabled on purpose")
    assert B.IMPLEMENTATION == "c", "a C compiler is installed but mdengine._speedups was not built"


def test_mdengine_no_speedups_selects_the_python_code():
    env = dict(os.environ, MDENGINE_NO_SPEEDUPS="1")
    code = ("from mdengine import book as B; b = B.LocalBook(); b.apply_snapshot([['2', '1']], [['3', '1']]);"
            "b.apply_update([['2.5', '4']], []); print(B.IMPLEMENTATION, b.bids.top(2), b.checksum())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    crc = zlib.crc32(b"2.5:4:3:1:2:1")
    assert out.split()[0] == "python"
    assert out.strip().endswith(str(crc - (1 << 32) if crc >= 1 << 31 else crc))


@needs_c
@settings(max_examples=400, deadline=None)
@given(px=st.text(alphabet="0123456789.eE+-_ nifa", max_size=9), q=st.text(alphabet="0123456789.eE+-_ ", max_size=7))
@example(px="1_0", q=" 2 ")
@example(px="1e500", q="1e-400")
@example(px="-", q="1e")
@example(px="inf", q="+.5")
@example(px="nan", q="1")
@example(px="1", q="nan")
def test_number_strings_parse_as_float_does(px, q):
    """The C module parses plain decimals itself and hands the rest to float(): the outcomes must agree."""
    assert run(PY, "side_replace", [[px, q]], 1.0) == run(C, "side_replace", [[px, q]], 1.0)
    sides = [fresh(), fresh()]
    results = [run(impl, "side_update", s["keys"], s["qty"], s["raw"], False, [[px, q]], 0)
               for impl, s in zip((PY, C), sides, strict=True)]
    assert results[0] == results[1]
    assert state(sides[0]) == state(sides[1])


@pytest.mark.parametrize("impl", [PY, C] if C else [PY], ids=["python", "c"][: 2 if C else 1])
def test_a_level_that_is_not_a_number_is_refused_and_changes_nothing(impl):
    keys, qty, raw = impl["side_replace"]([["2", "1"], ["1", "1"]], 1.0)
    for bad in (["nan", "1"], ["1.5", "NaN"]):
        with pytest.raises(ValueError, match="not a valid price and quantity"):
            impl["side_update"](keys, qty, raw, False, [bad], 0)
        with pytest.raises(ValueError, match="not a valid price and quantity"):
            impl["side_replace"]([["3", "1"], bad], 1.0)
    assert (keys, qty, raw) == ([1.0, 2.0], [1.0, 1.0], ["1:1", "2:1"])


BAD_LEVELS = [["1.5", "1e400"], ["1e400", "1"], ["1.5", "-5"], ["-1.5", "1"], ["0", "1"], ["-0", "1"], ["-inf", "1"],
              ["1.5", "inf"], ["1e13", "1"], ["1.5", "2e15"], ["1e12", "1e15"]]


@pytest.mark.parametrize("impl", [PY, C] if C else [PY], ids=["python", "c"][: 2 if C else 1])
@pytest.mark.parametrize("bid", [True, False])
def test_a_level_outside_the_limits_is_refused_by_both_implementations(impl, bid):
    """mdengine.limits: a price in (0, PRICE_MAX], a quantity in [0, QTY_MAX]; zero quantity deletes a level."""
    from mdengine.limits import PRICE_MAX, QTY_MAX

    for px, q in BAD_LEVELS:
        ok = 0 < float(px) <= PRICE_MAX and 0 <= float(q) <= QTY_MAX
        keys, qty, raw = impl["side_replace"]([["2", "1"]], -1.0 if bid else 1.0)
        if ok:  # the bounds themselves are sane
            impl["side_update"](keys, qty, raw, bid, [[px, q]], 0)
            assert float(px) in [abs(k) for k in keys]
            continue
        with pytest.raises(ValueError, match="not a valid price and quantity"):
            impl["side_update"](keys, qty, raw, bid, [[px, q]], 0)
        with pytest.raises(ValueError, match="not a valid price and quantity"):
            impl["side_replace"]([["3", "1"], [px, q]], -1.0 if bid else 1.0)
        assert qty == [1.0] and raw == ["2:1"]
    # a zero quantity at a sane price deletes (a snapshot skips it); "-0" is zero
    keys, qty, raw = impl["side_replace"]([["2", "1"], ["3", "0"], ["4", "-0"]], 1.0)
    assert keys == [2.0]
    impl["side_update"](keys, qty, raw, False, [["2", "-0"]], 0)
    assert keys == []


@needs_c
def test_the_c_module_takes_its_limits_from_mdengine_limits():
    from mdengine import _speedups, limits

    assert _speedups.limits() == (limits.PRICE_MAX, limits.QTY_MAX)


@needs_c
@settings(max_examples=500, deadline=None)
@given(px=st.one_of(st.from_regex(r"[-+]?[0-9]{0,20}\.?[0-9]{0,26}", fullmatch=True),
                    st.floats(allow_nan=False, allow_infinity=False).map(repr),
                    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str)))
@example(px="9007199254740993")  # 2^53 + 1: past the exact-mantissa fast path
@example(px="0.1000000000000000055511151231257827")
@example(px="1.0000000000000002220446049250313")
@example(px="0.0000000000000000000001")  # 22 decimals
@example(px="0.00000000000000000000001")  # 23
@example(px="-0.0")
@example(px="5.")
@example(px=".5")
def test_decimal_strings_give_float_s_value_to_the_bit(px):
    """Prices as exchanges send them, and long ones: the C parser's value is float()'s, bit for bit."""
    py, c = run(PY, "side_replace", [[px, "1"]], 1.0), run(C, "side_replace", [[px, "1"]], 1.0)
    assert py[0] == c[0]
    if py[0] == "ok":
        assert [math.copysign(1, k) for k in py[1][0]] == [math.copysign(1, k) for k in c[1][0]]
        assert [k.hex() for k in py[1][0]] == [k.hex() for k in c[1][0]]


@needs_c
def test_a_level_whose_float_conversion_empties_the_list_does_not_crash_the_c_module():
    """float() of a level may run Python code; the C module works on its own copy of the levels."""
    levels = []

    class Emptying:  # a zero quantity (skipped, so never needs a wire string) that empties the levels
        def __float__(self):
            levels.clear()
            return 0.0

    levels.extend([[str(p), "1"] for p in range(1, 50)] + [["60", Emptying()]] + [[str(p), "1"] for p in range(70, 99)])
    keys, qty, raw = C["side_replace"](levels, 1.0)
    assert keys == [float(p) for p in [*range(1, 50), *range(70, 99)]]  # every level of the list as it was passed
    assert qty == [1.0] * len(keys) and len(raw) == len(keys)
