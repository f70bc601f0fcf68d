"""Fuzzing the feed's frame path: every adapter, with and without the C fast lane, fed damaged frames.

Frames come from the real recordings in tests/data (Binance spot, OKX) and from the simulator's wire formats
(mdengine/sim/formats, all four exchanges, rendered by perf/feed_throughput's in-memory harness). They are damaged at
the byte level (bit flips, cuts, insertions, truncation), at the number level (a price or size replaced by NaN,
Infinity, a negative, an overflow, garbage) and at the sequence level (dropped, repeated, swapped frames), by
hypothesis and by a seeded sweep. Each damaged stream goes through `on_frame` (the lane, or the adapter) and the
Publisher into a real segment, and after every frame:
- no exception escapes the frame path (the loop would survive one, but it would lose the frame and hide a bug);
- no published book is crossed or out of order (best bid < best ask, bids falling, asks rising);
- no published level is non-finite or negative (`test_..._finite_and_non_negative`, see its mark).
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.events import OpenConnection
from mdengine.feed import fastlane
from mdengine.store import SegmentReader
from mdengine.store.reader import BookBuffer
from mdengine.symbols import InstrumentIndex

PERF = Path(__file__).resolve().parent.parent / "perf"
DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("feed_throughput", PERF / "feed_throughput.py")
ft = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("feed_throughput", ft)
_spec.loader.exec_module(ft)

SIM_STEPS = 25  # simulator steps per source: ~250 frames over every market of the exchange
LANES = [False, True] if fastlane.available() else [False]
HOSTILE_NUMBERS = ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "-1", "-0.5", "-0", "0", "1e400", "-1e400",
                   "1e-400", "1e308", "99999999999999999999999999999", "", "1..2", "0x1F", "+5", ".5", "5.", " 7",
                   "1_000", "\u0663", "null", "true", "[]", "{}", '"'] + [str(-(10 ** k)) for k in (3, 9, 20)]
_NUMBER = re.compile(rb'-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')


# ----------------------------------------------------------------------------- sources of frames
class Source:
    """A stream of frames for one exchange and the way to start a harness that is in sync with it."""

    def __init__(self, name: str, exchange: str) -> None:
        self.name, self.exchange = name, exchange
        self.steps: list[tuple] = []  # ("recv", conn, text) or ("http",): answer the pending REST requests

    def harness(self, lane: bool):
        raise NotImplementedError


class Simulated(Source):
    def __init__(self, exchange: str) -> None:
        super().__init__(f"{exchange}-simulated", exchange)
        h = ft.Harness(exchange, lane=False)
        try:
            h.start_simulated()
            self.steps = [("recv", conn, text) for conn, text in h.render(SIM_STEPS)]
        finally:
            h.close()

    def harness(self, lane: bool):
        h = ft.Harness(self.exchange, lane=lane)
        h.start_simulated()  # seeded: in the state the frames above were rendered from
        return h


class Recorded(Source):
    def __init__(self, exchange: str) -> None:
        super().__init__(f"{exchange}-recorded", exchange)
        self.file, self.instruments = ft.RECORDED[exchange]
        with open(DATA / self.file, encoding="utf-8") as fh:
            self.lines = [json.loads(x) for x in fh if x.strip()]
        self.steps = [("recv", None, ln["data"]) if ln["kind"] == "recv" else ("http",)
                      for ln in self.lines if ln["kind"] in ("recv", "http")]

    def harness(self, lane: bool):
        h = ft.Harness(self.exchange, lane=lane)
        insts, options = self.instruments(h.cls)
        h.adapter = h.cls(InstrumentIndex(insts), book_depth=ft.DEPTH, **options)
        for ln in self.lines:
            if ln["kind"] == "http":
                u = urlsplit(ln["url"])
                h.rest_answers.setdefault((u.path, u.query), []).append(ln["data"].encode())
        h.conns = []
        for i in insts:
            h.pub.add(i)
            events = h.adapter.subscribe(i)
            h.conns += [e.conn for e in events if isinstance(e, OpenConnection)]
            h.handle(events)
        return h


@pytest.fixture(scope="module")
def sources():
    out = {s.name: s for s in (Recorded("binance"), Recorded("okx"))}
    for exchange in ("binance", "okx", "bybit", "bitget"):
        s = Simulated(exchange)
        out[s.name] = s
    return out


SOURCE_NAMES = ["binance-recorded", "okx-recorded", "binance-simulated", "okx-simulated", "bybit-simulated",
                "bitget-simulated"]


# ----------------------------------------------------------------------------- damage
def damage_bytes(text: str, kind: str, pos: int, arg) -> str:
    """One byte- or number-level mutation of a frame (positions wrap around the frame's length)."""
    raw = bytearray(text.encode("utf-8", "surrogateescape"))
    n = max(len(raw), 1)
    i = pos % n
    if kind == "flip" and raw:
        raw[i] ^= 1 << (arg % 8)
    elif kind == "delete":
        del raw[i:i + arg]
    elif kind == "insert":
        raw[i:i] = arg
    elif kind == "truncate":
        del raw[i:]
    elif kind == "duplicate":
        raw[i:i] = raw[i:i + 64]
    elif kind == "number":
        numbers = list(_NUMBER.finditer(raw))
        if numbers:
            m = numbers[pos % len(numbers)]
            raw[m.start():m.end()] = arg.encode()
    return raw.decode("utf-8", "surrogateescape")  # what the loop hands the adapter for invalid UTF-8


def damaged(steps: list[tuple], edits: list[tuple]) -> list[tuple]:
    """`steps` with `edits` applied: (index, (kind, pos, arg)) for a frame, (index, ("drop"|"repeat"|"swap",))."""
    steps = list(steps)
    for index, (kind, *rest) in edits:
        i = index % len(steps)
        if steps[i][0] != "recv":
            continue
        if kind == "drop":
            del steps[i]
        elif kind == "repeat":
            steps.insert(i, steps[i])
        elif kind == "swap":
            steps[i:i + 2] = steps[i:i + 2][::-1]
        else:
            _, conn, text = steps[i]
            steps[i] = ("recv", conn, damage_bytes(text, kind, *rest))
    return steps


_position = st.integers(0, 1 << 20)
_frame_edit = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(0, 7)),
    st.tuples(st.just("delete"), _position, st.integers(1, 64)),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("truncate"), _position, st.none()),
    st.tuples(st.just("duplicate"), _position, st.none()),
    st.tuples(st.just("number"), _position, st.sampled_from(HOSTILE_NUMBERS)),
    st.tuples(st.just("number"), _position, st.sampled_from(HOSTILE_NUMBERS)),  # twice as likely: the lane's parser
    st.tuples(st.sampled_from(["drop", "repeat", "swap"])),
)
EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), _frame_edit), min_size=1, max_size=10)


def sweep(steps: list[tuple], seed: int, rate: float = 0.15) -> list[tuple]:
    """A seeded pass that damages about `rate` of the frames, any way."""
    rnd = random.Random(seed)
    edits = []
    for i in range(len(steps)):
        if rnd.random() < rate:
            kind = rnd.choice(["flip", "delete", "insert", "truncate", "duplicate", "number", "number", "number",
                               "drop", "repeat", "swap"])
            pos = rnd.randrange(1 << 20)
            arg = {"flip": rnd.randrange(8), "delete": rnd.randrange(1, 64),
                   "insert": rnd.randbytes(rnd.randrange(1, 9)), "number": rnd.choice(HOSTILE_NUMBERS)}.get(kind)
            edits.append((i, (kind,) if kind in ("drop", "repeat", "swap") else (kind, pos, arg)))
    return damaged(steps, list(reversed(edits)))  # from the end: earlier indices stay valid


# ----------------------------------------------------------------------------- replay and check
class Books:
    """Every book of the harness's segment, read as a client would (consistent copies), checked on change."""

    def __init__(self, h) -> None:
        self.reader = SegmentReader(h.ns, h.exchange)
        self.buf = BookBuffer(self.reader.view.geometry.book_capacity)
        self.books: dict[tuple[str, str], object] = {}
        self.versions: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        self.reader.close()

    def check(self, where: str, finite: bool) -> None:
        for e in self.reader.symbols():
            key = (e.market, e.native)
            book = self.books.get(key)
            if book is None:
                book = self.books[key] = self.reader.book(e.unified, e.market)
            book.read_into(self.buf)
            header = self.buf.header()
            if self.versions.get(key) == header.version:
                continue
            self.versions[key] = header.version
            bids, asks = self.buf.bids, self.buf.asks
            what = f"{where}: {e.unified} {e.market} state {header.state_name}"
            if finite:
                for side, levels in (("bids", bids), ("asks", asks)):
                    for px, qty in levels.tolist():
                        assert math.isfinite(px) and math.isfinite(qty), f"{what}: {side} level {px} x {qty}"
                        assert px >= 0 and qty >= 0, f"{what}: {side} level {px} x {qty}"
                continue
            b, a = bids[:, 0].tolist(), asks[:, 0].tolist()
            if b and a and all(map(math.isfinite, (b[0], a[0]))):
                assert b[0] < a[0], f"{what}: crossed book published, best bid {b[0]} >= best ask {a[0]}"
            assert all(x > y for x, y in zip(b, b[1:], strict=False)), f"{what}: bids out of order {b[:5]}"
            assert all(x < y for x, y in zip(a, a[1:], strict=False)), f"{what}: asks out of order {a[:5]}"


def replay(source: Source, lane: bool, steps: list[tuple], finite: bool = False) -> None:
    """Feed `steps` through the frame path of a fresh, synced harness; check the segment after every frame."""
    h = source.harness(lane)
    books = Books(h)
    try:
        on_frame, conns = h.on_frame, getattr(h, "conns", None)  # the lane is put in front here, if asked
        assert (h.pub.lane is not None) == lane
        for n, step in enumerate(steps):
            if step[0] == "http":
                while h.pending_rest:
                    req = h.pending_rest.popleft()
                    status, body = h.rest(req.url)
                    h.handle(h.adapter.on_rest(req.request_id, status, body, time.time_ns()))
                continue
            _, conn, text = step
            conn = conn or conns[0]
            try:
                events = on_frame(conn, text, time.time_ns())
                h.handle(events)
            except Exception as exc:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"{source.name} lane={lane} frame {n} raised {type(exc).__name__}: {exc}\n"
                                     f"frame: {text[:300]!r}") from exc
            books.check(f"{source.name} lane={lane} frame {n} {text[:120]!r}", finite)
    finally:
        books.close()
        h.close()


# ----------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("lane", LANES, ids=lambda x: "lane" if x else "python")
@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_intact_frames_pass_the_checks(sources, name, lane):
    """The checks themselves: the undamaged streams publish books that pass them all (a broken check fails here)."""
    replay(sources[name], lane, sources[name].steps)
    replay(sources[name], lane, sources[name].steps, finite=True)


@pytest.mark.parametrize("lane", LANES, ids=lambda x: "lane" if x else "python")
@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_damaged_streams_raise_nothing_and_publish_no_crossed_book(sources, name, lane):
    source = sources[name]

    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(edits=EDITS)
    def fuzz(edits):
        replay(source, lane, damaged(source.steps, edits))

    fuzz()
    for seed in range(3):
        replay(source, lane, sweep(source.steps, seed))


@pytest.mark.parametrize("lane", LANES, ids=lambda x: "lane" if x else "python")
@pytest.mark.parametrize("name", SOURCE_NAMES)
def test_damaged_streams_publish_only_finite_and_non_negative_levels(sources, name, lane):
    source = sources[name]
    rnd = random.Random(name)
    for seed in range(3):
        replay(source, lane, sweep(source.steps, seed), finite=True)
    # every hostile number once in each of a few places
    for token in HOSTILE_NUMBERS:
        edits = [(rnd.randrange(len(source.steps)), ("number", rnd.randrange(1 << 20), token)) for _ in range(4)]
        replay(source, lane, damaged(source.steps, edits), finite=True)


@pytest.mark.parametrize("bids, asks, finite, message", [
    ([(101.0, 1.0)], [(100.0, 1.0)], False, "crossed book published"),
    ([(100.0, 1.0), (100.5, 1.0)], [(101.0, 1.0)], False, "bids out of order"),
    ([(100.0, 1.0)], [(101.0, 1.0), (100.9, 1.0)], False, "asks out of order"),
    ([(100.0, float("nan"))], [(101.0, 1.0)], True, "bids level 100.0 x nan"),
    ([(100.0, 1.0)], [(101.0, -2.0)], True, "asks level 101.0 x -2.0"),
])
def test_the_checks_catch_what_they_look_for(sources, bids, asks, finite, message):
    """A bad book written straight into the segment (no adapter in the way) is caught by the replay's checks."""
    h = sources["okx-simulated"].harness(False)
    books = Books(h)
    try:
        books.check("before", finite)
        slot = next(iter(h.pub.slots.values())).slot
        h.writer.publish_book(slot, bids, asks, update_id=1)
        with pytest.raises(AssertionError, match=re.escape(message)):
            books.check("after", finite)
    finally:
        books.close()
        h.close()
