"""REST depth snapshots read in C (book.parse_depth_snapshot) against orjson + the pure-Python side builder.

The rule under test: whatever the C reader accepts, it reads exactly as orjson.loads + `_py_side_replace` do
(same floats, bit for bit, same wire strings, a price sent twice keeping its last quantity); whatever it cannot
be sure of, it refuses (None), and the Binance adapter then takes the orjson path, so the adapter's events,
states, books and counters are the same with the fast path on or off.
"""

import dataclasses
import json
import random

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mdengine import book as B
from mdengine.events import FetchRest, OpenConnection
from mdengine.exchanges import binance
from mdengine.exchanges.binance import BinanceAdapter
from mdengine.limits import sane
from mdengine.store.layout import MarketKind
from mdengine.symbols import Instrument, InstrumentIndex

needs_c = pytest.mark.skipif(B.IMPLEMENTATION != "c", reason="mdengine._speedups is not built or turned off")


def exact(side):
    """A side with its floats as hex, so 0.0 and -0.0 (or any rounding difference) tell apart."""
    keys, qty, raw = side
    return [k.hex() for k in keys], [q.hex() for q in qty], list(raw)


def reference(body):
    """The slow path's reading: orjson, then the pure-Python side builder; raises where the adapter would."""
    d = orjson.loads(body)
    last, bids, asks = d["lastUpdateId"], d["bids"], d["asks"]
    assert last.__class__ is int and bids.__class__ is list and asks.__class__ is list
    ts = d.get("E")
    return (last, ts if ts.__class__ is int else None, exact(B._py_side_replace(bids, -1.0)),
            exact(B._py_side_replace(asks, 1.0)))


def fast(body):
    got = B.parse_depth_snapshot(body)
    return None if got is None else (got[0], got[1], exact(got[2]), exact(got[3]))


# ----------------------------------------------------------------------------- the recorded bodies
@pytest.fixture(scope="module")
def recorded_bodies(binance_recording):
    return [e["data"] for e in binance_recording if e["kind"] == "http" and "/depth" in e["url"]]


@needs_c
def test_parse_depth_snapshot_reads_the_recorded_bodies_as_orjson_and_side_replace_do(recorded_bodies):
    assert len(recorded_bodies) == 4
    for text in recorded_bodies:
        want = reference(text)
        assert fast(text.encode()) == want
        assert fast(text) == want  # an ASCII str as well as bytes
        assert len(want[2][0]) > 100 and len(want[3][0]) > 100


def test_parse_depth_snapshot_is_None_without_the_C_module(monkeypatch):
    monkeypatch.setattr(B, "_depth_snapshot", None)
    assert B.parse_depth_snapshot(b'{"lastUpdateId":1,"bids":[],"asks":[]}') is None


# ----------------------------------------------------------------------------- generated bodies
WS = ["", " ", "\n", "\t", "\r\n  "]
# a small price grid spelt several ways, so prices repeat; zero spelt with both signs (keys 0.0 and -0.0 merge)
price = st.one_of(
    st.builds(lambda t, f: f.format(t), st.integers(1, 40), st.sampled_from(["{}", "{}.0", "{}.50", "0{}", "+{}"])),
    st.sampled_from(["0", "-0", "0.000", "60000.01000000", "0.00006547", "-3.5", "9007199254740992"]))
qty = st.sampled_from(["0", "0.000", "-0", "1", "2.5", "0.00100000", "3.14159", "123456.78901234", "672.00000000",
                       "1234567.12345678", ".5", "5."])
json_value = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.sampled_from(
    [0.5, -1.25, "x", "", "a b", "0.1"]), lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["k", "E", "bids"]), inner, max_size=2), max_leaves=6)
level = st.tuples(price, qty).map(list) | st.tuples(price, qty, json_value).map(list)
levels = st.lists(level, max_size=25)


def side_in_order(lv, bid):
    """The level list sorted as Binance sends it (best first), so the no-sort path is taken too."""
    return sorted(lv, key=lambda x: -float(x[0]) if bid else float(x[0]))


def encode(value, rnd):
    """JSON with whitespace drawn at every place JSON allows it."""
    ws = lambda: rnd.choice(WS)  # noqa: E731
    if isinstance(value, dict):
        return "{" + ws() + ("," + ws()).join(f"{json.dumps(k)}{ws()}:{ws()}{encode(v, rnd)}{ws()}"
                                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ws() + ("," + ws()).join(encode(v, rnd) + ws() for v in value) + "]"
    return json.dumps(value)


@st.composite
def bodies(draw):
    bids, asks = draw(levels), draw(levels)
    if draw(st.booleans()):
        bids, asks = side_in_order(bids, True), side_in_order(asks, False)
    members = [("lastUpdateId", draw(st.integers(0, 2**63 - 1))), ("bids", bids), ("asks", asks)]
    if draw(st.booleans()):
        members.append(("E", draw(st.integers(0, 2**62))))
    members += draw(st.lists(st.tuples(st.sampled_from(["T", "extra", "lastUpdate", "bids2"]), json_value),
                             max_size=2, unique_by=lambda m: m[0]))
    order = draw(st.permutations(members))
    return encode(dict(order), random.Random(draw(st.integers(0, 2**32)))).encode()


@needs_c
@settings(max_examples=400, deadline=None)
@given(body=bodies())
@example(body=b'{"lastUpdateId":7,"bids":[["0","1"],["-0","2"],["1","1"],["1.0","0"]],"asks":[["2","1"],["2.0","3"]]}')
@example(body=b'{"asks":[["3","1"],["2","1"],["2.00","5"]],"E":1,"T":2,"lastUpdateId":0,"bids":[]}')
def test_parse_depth_snapshot_equals_orjson_and_side_replace(body):
    try:
        want = reference(body)
    except ValueError:  # a level breaks mdengine.limits: the Python path refuses the snapshot, the C reader leaves it
        assert fast(body) is None
        return
    got = fast(body)
    # the C reader also leaves a snapshot to the Python path for a zero-quantity level at a bad price (the Python
    # path skips that level unread)
    assert got == want or (got is None and not all(sane(float(p), float(q)) for p, q, *_ in _levels_of(body)))


def _levels_of(body):
    d = orjson.loads(body)
    return d["bids"] + d["asks"]


@needs_c
@settings(max_examples=1000, deadline=None)
@given(px=st.from_regex(r"\A[+-]?[0-9]{0,20}(\.[0-9]{0,24})?\Z"), q=st.from_regex(r"\A[0-9]{1,17}\.?[0-9]{0,9}\Z"))
@example(px="12345678.12345678", q="99999999")
@example(px="9007199254740993", q="1")  # 2^53 + 1: not exact as a double, refused
def test_parse_depth_snapshot_reads_each_decimal_as_float_does(px, q):
    body = f'{{"lastUpdateId":1,"bids":[],"asks":[["{px}","{q}"]]}}'.encode()
    got = B.parse_depth_snapshot(body)
    if got is not None:
        assert fast(body) == reference(body)
        assert got[3][0] == ([float(px)] if float(q) else [])
    else:  # refused: only what the fast path cannot take exactly (no digit, 2^53 exceeded, > 22 decimals)
        digits = px.lstrip("+-").replace(".", "")
        assert not digits or int(digits) > 2**53 or len(digits) > 19 or len(px.partition(".")[2]) > 22 or \
            not q.replace(".", "") or int(q.replace(".", "")) > 2**53 or len(q.replace(".", "")) > 19 or \
            not sane(float(px), float(q))  # mdengine.limits: the Python path decides (skips or refuses it)


@needs_c
@pytest.mark.parametrize("body", [
    b'{"lastUpdateId":1,"bids":[["1\\u002e5","1"]],"asks":[]}',  # an escape in a price
    b'{"lastUpdateId":1,"bids":[["1.5","1e-3"]],"asks":[]}',  # an exponent in a quantity
    b'{"lastUpdateId":1,"bids":[],"asks":[],"E":1.5e12}',  # "E" not an integer
    b'{"lastUpdateId":1,"bids":[],"asks":[],"T":1e3}',  # an exponent in a skipped value
    b'{"lastUpdateId":1,"bids":[],"asks":[],"lastUpdateId":2}',  # a key twice (orjson keeps the last)
    b'{"lastUpdateId":1,"bids":[],"asks":[],"x":"\xc3\xa9"}',  # non-ASCII text
    b'{"lastUpdateId":1,"bid\\u0073":[],"asks":[]}',  # an escaped key
    b'{"lastUpdateId":1.0,"bids":[],"asks":[]}',
    b'{"lastUpdateId":9223372036854775808,"bids":[],"asks":[]}',  # beyond int64
    b'{"lastUpdateId":1,"bids":[[1.5,"1"]],"asks":[]}',  # a number for a price
    b'{"lastUpdateId":1,"bids":[["1","1234567890.12345678"]],"asks":[]}',  # more than 2^53 in its digits
    b'{"lastUpdateId":1,"bids":[["1","1"]],"asks":[],"more":{"a":[1,{"b":"\\n"}]}}',
    b'[{"lastUpdateId":1,"bids":[],"asks":[]}]',
    b'\xef\xbb\xbf{"lastUpdateId":1,"bids":[],"asks":[]}',
])
def test_parse_depth_snapshot_leaves_what_it_cannot_be_sure_of_to_orjson(body):
    assert B.parse_depth_snapshot(body) is None
    assert B.parse_depth_snapshot(body.decode("utf-8", "replace")) is None


@needs_c
@pytest.mark.parametrize("body", [
    b'{"lastUpdateId":1,"bids":[],"asks":[],}', b'{"lastUpdateId":1,"bids":[],"asks":[]} x',
    b'{"lastUpdateId":1,"bids":[["1","1",]],"asks":[]}', b'{"lastUpdateId":1,"bids":[["1","1",tru]],"asks":[]}',
    b'{"lastUpdateId":1,"bids":[],"asks":[],"x":NaN}', b'{"lastUpdateId":1,"bids":[],"asks":[],"x":01}',
    b'{"lastUpdateId":1,"bids":[],"asks":[],"x":"a\x01"}', b'{"lastUpdateId":1,"bids":[],"asks":[],"x":{1:2}}',
    b'{"lastUpdateId":1,"bids":[],"asks":[],"x":-}', b'{"lastUpdateId":1,"bids":[],"asks":[],"x":1.}',
    b'{"lastUpdateId":1,"bids":[],"asks":[],"x":' + b"1" * 400 + b"}", b'{"lastUpdateId":1,"bids":[]',
    b'{"lastUpdateId":1,"bids":[],"asks":[],"x":' + b"[" * 100 + b"]" * 100 + b"}",
])
def test_parse_depth_snapshot_refuses_what_orjson_refuses_or_would_read_otherwise(body):
    assert B.parse_depth_snapshot(body) is None


@needs_c
@settings(max_examples=400, deadline=None)
@given(body=bodies(), at=st.floats(0, 1), cut=st.integers(0, 3),
       put=st.sampled_from([b"", b",", b"]", b"[", b"}", b'"', b"\\", b"e", b"-", b".", b"0", b" ", b"\x00", b"\xff"]))
def test_parse_depth_snapshot_of_a_damaged_body_is_None_or_the_slow_path_reading(body, at, cut, put):
    i = int(at * len(body))
    body = body[:i] + put + body[i + cut:]
    got = fast(body)
    if got is not None:
        assert got == reference(body)


# ----------------------------------------------------------------------------- the adapter, fast path on and off
SPOT = Instrument("binance", "spot", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT")
PERP = Instrument("binance", "usdm", "BTCUSDT", "BTC/USDT:USDT", MarketKind.LINEAR, "BTC", "USDT", "USDT")


def comparable(x):
    """Events and books as plain values (a LocalBook compares by identity)."""
    if isinstance(x, B.LocalBook):
        return ("book", x.update_id, x.exch_ts_ns, x.top_dirty, exact((x.bids.keys, x.bids.qty, x.bids.raw)),
                exact((x.asks.keys, x.asks.qty, x.asks.raw)))
    if dataclasses.is_dataclass(x):
        return (type(x).__name__, *(comparable(getattr(x, f.name)) for f in dataclasses.fields(x)))
    if isinstance(x, list | tuple):
        return [comparable(v) for v in x]
    return x


def run_steps(inst, steps):
    """Diffs and snapshot bodies through one adapter; returns everything observable after each step."""
    a = BinanceAdapter(InstrumentIndex([inst]))
    conn = next(e.conn for e in a.subscribe(inst) if isinstance(e, OpenConnection))
    a.on_open(conn)
    sym, request, trace = a.syms[inst.key], None, []
    for kind, arg in steps:
        if kind == "diff":
            out = a.on_frame(conn, arg, 1)
        elif request is None:
            continue
        else:
            out = a.on_rest(request.request_id, 200, arg, 2)
        request = next((e for e in reversed(out) if isinstance(e, FetchRest)), request)
        trace.append((comparable(out), sym.state, sym.applied, sym.dropped, len(sym.buffer), comparable(sym.book)))
    return trace


def both_paths(monkeypatch, inst, steps):
    on = run_steps(inst, steps)
    with monkeypatch.context() as m:
        m.setattr(binance, "parse_depth_snapshot", lambda body: None)
        off = run_steps(inst, steps)
    assert on == off
    return on


def diff(U, u, pu=None, b=(("100.0", "1"),), a=(("101.0", "1"),), E=1_700_000_000_000):
    d = {"e": "depthUpdate", "E": E, "s": "BTCUSDT", "U": U, "u": u, "b": [list(x) for x in b],
         "a": [list(x) for x in a]}
    if pu is not None:
        d["pu"] = pu
    return ("diff", json.dumps({"stream": "btcusdt@depth@100ms", "data": d}))


def snap(last, bids=(("99.0", "5"), ("98", "1")), asks=(("102.0", "5"),), **extra):
    return ("snap", json.dumps({"lastUpdateId": last, "bids": [list(x) for x in bids],
                                "asks": [list(x) for x in asks], **extra}).encode())


SCENARIOS = {
    "bridged, unsorted levels with duplicates and zeros": [
        diff(10, 12), snap(11, bids=(("98", "1"), ("99.0", "5"), ("98.00", "2"), ("97", "0")),
                           asks=(("103", "1"), ("102.0", "5"), ("103.0", "0")))],
    "stale, then bridged": [diff(13, 15), snap(11), diff(16, 16), diff(17, 17), snap(14)],
    "ahead, then the bridging diff": [diff(10, 12), snap(20), diff(13, 19), diff(20, 22)],
    "a gap inside the buffer": [diff(10, 12), diff(14, 15), snap(11), snap(14)],
    "crossed after the snapshot": [diff(10, 12, b=(("200", "1"),)), snap(11)],
    "bad levels in the snapshot": [diff(10, 12), snap(11, bids=(("abc", "1"),)), diff(13, 14), snap(13)],
    "bad levels in a stale snapshot": [diff(13, 15), snap(11, bids=(("abc", "1"),))],
    "a NaN quantity": [diff(10, 12), snap(11, asks=(("102", "nan"),))],
    "invalid JSON": [diff(10, 12), ("snap", b'{"lastUpdateId":11,"bids":[['), diff(13, 13), snap(12)],
    "bids not a list": [diff(10, 12), ("snap", b'{"lastUpdateId":11,"bids":{},"asks":[]}')],
    "lastUpdateId a string": [diff(10, 12), ("snap", b'{"lastUpdateId":"11","bids":[],"asks":[]}')],
    "no lastUpdateId": [diff(10, 12), ("snap", b'{"bids":[],"asks":[]}')],
    "an E that is not an integer": [diff(10, 12), snap(11, E=1.5)],
    "exponent and escape": [diff(10, 12), ("snap", b'{"lastUpdateId":11,"bids":[["99","1e-3"],["9\\u0038","1"]],'
                                                   b'"asks":[["102","1"]]}')],
}
USDM_SCENARIOS = {
    "E and T, pu chains": [diff(10, 12, 9), diff(20, 25, 12), snap(11, E=1_700_000_000_123, T=1_700_000_000_120),
                           diff(31, 40, 25)],
    "a buffered diff without pu": [diff(10, 12, 9), ("diff", json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 13, "u": 14, "b": [], "a": []}})), snap(11, E=5)],
    "stale snapshot with E": [diff(20, 25, 12), snap(15, E=7), diff(30, 31, 25)],
}


@pytest.mark.parametrize("case", SCENARIOS)
def test_BinanceAdapter_snapshot_fast_path_changes_nothing_spot(monkeypatch, case):
    trace = both_paths(monkeypatch, SPOT, SCENARIOS[case])
    assert trace  # (and on == off, checked in both_paths)


@pytest.mark.parametrize("case", USDM_SCENARIOS)
def test_BinanceAdapter_snapshot_fast_path_changes_nothing_usdm(monkeypatch, case):
    both_paths(monkeypatch, PERP, USDM_SCENARIOS[case])


@needs_c
def test_BinanceAdapter_takes_the_fast_path_for_a_plain_snapshot(monkeypatch):
    calls = []
    real = B.parse_depth_snapshot
    monkeypatch.setattr(binance.adapter, "parse_depth_snapshot", lambda body: calls.append(real(body)) or calls[-1])
    run_steps(PERP, USDM_SCENARIOS["E and T, pu chains"])
    (got,) = calls
    assert got is not None and got[:2] == (11, 1_700_000_000_123)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.one_of(
    st.builds(lambda U, n: diff(U, U + n), st.integers(5, 30), st.integers(0, 3)),
    st.builds(lambda body: ("snap", body), bodies()),
    st.builds(lambda last, b, a: snap(last, b, a), st.integers(5, 30), levels, levels)), max_size=8))
def test_BinanceAdapter_snapshot_fast_path_changes_nothing_on_generated_steps(steps):
    with pytest.MonkeyPatch.context() as mp:
        both_paths(mp, SPOT, [diff(10, 12)] + steps)


def test_BinanceAdapter_replays_the_recording_the_same_with_the_fast_path_on_and_off(monkeypatch, binance_recording):
    from test_binance_recording import replay as replay_recording

    def replay():
        events = []
        a, _, _ = replay_recording(binance_recording, lambda out: events.append(comparable(out)))
        return events, {k: (s.state, s.applied, s.dropped, comparable(s.book)) for k, s in a.syms.items()}

    on = replay()
    monkeypatch.setattr(binance.adapter, "parse_depth_snapshot", lambda body: None)
    assert replay() == on
    assert sum(applied for _, applied, _, _ in on[1].values()) == 172
