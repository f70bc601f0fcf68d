"""The fast lane (mdengine/feed/fastlane.py, mdengine/_c/_lane.h) against the Python path it stands in for.

Every test replays the same frames twice, through adapter.on_frame + Publisher and through the lane, into two real
segments, and asserts the same outcome: the same non-data events frame by frame, the same books, sequence state and
counters, and the same segment bytes (publish times and latencies excepted: they are clocks). Frames come from the
recordings and the simulator's wire formats, intact and damaged (gaps, duplicates, bad checksums, numbers the lane
does not parse, reordered keys, broken JSON), so both the lane's own work and every decline are covered.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import re
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.events import BookChanged, FetchRest, OpenConnection, TradesReceived
from mdengine.exchanges import get_adapter
from mdengine.exchanges._sequencing import Chain, ChainKind
from mdengine.feed import fastlane
from mdengine.feed.publisher import Publisher
from mdengine.sim.formats import bitget as sim_bitget
from mdengine.sim.formats import bybit as sim_bybit
from mdengine.sim.formats import okx as sim_okx
from mdengine.store import SegmentWriter, shm
from mdengine.store import layout as L
from mdengine.store.writer import META_FIELDS
from mdengine.symbols import InstrumentIndex

pytestmark = pytest.mark.skipif(not fastlane.available(), reason="the C module (with its Lane) is not built")

PERF = Path(__file__).resolve().parent.parent / "perf"
_spec = importlib.util.spec_from_file_location("compare_cryptofeed", PERF / "compare_cryptofeed.py")
cmp = importlib.util.module_from_spec(_spec)
sys.modules["compare_cryptofeed"] = cmp
_spec.loader.exec_module(cmp)
_QUIET = logging.getLogger("mdengine.test.fastlane")
_QUIET.setLevel(logging.CRITICAL)
DEPTH = 20


@pytest.fixture(scope="module")
def workloads(recordings_dir):
    ws = [cmp.simulated("binance", 150), cmp.simulated("okx", 150), cmp.simulated("okx", 150, okx_checksum="zero")]
    rec = Path(recordings_dir)
    ws += [cmp.recorded_binance(rec / cmp.BINANCE_RECORDING), cmp.recorded_okx(rec / cmp.OKX_RECORDING)]
    return {w.name: w for w in ws}


class Run:
    """One replay: adapter (+ lane) + Publisher + a real segment in its own namespace."""

    def __init__(self, w, lane: bool, ns: str, depth: int = DEPTH) -> None:
        self.w = w
        self.namespace = ns
        insts = cmp.MdengineSide.instruments(w)
        self.writer = SegmentWriter(ns, w.exchange, create=True, max_symbols=8, book_capacity=depth,
                                    trade_capacity=64)
        self.adapter = get_adapter(w.exchange)(InstrumentIndex(insts), book_depth=depth,
                                               **cmp.ADAPTER_OPTIONS.get(w.exchange, {}))
        self.publisher = Publisher(self.writer, w.exchange, depth=depth, log=_QUIET)
        for i in insts:
            self.publisher.add(i)
        self.on_frame = fastlane.attach(self.adapter, self.publisher) if lane else self.adapter.on_frame
        assert (self.publisher.lane is not None) == lane
        self.pending: list[FetchRest] = []
        self.conns: list[str] = []
        self.trace: list[tuple] = []
        events = [ev for i in insts for ev in self.adapter.subscribe(i)] + self.adapter.start()
        while events:
            ev = events.pop(0)
            if isinstance(ev, OpenConnection) and ev.conn not in self.conns:
                self.conns.append(ev.conn)
                events += self.adapter.on_open(ev.conn)
            elif isinstance(ev, FetchRest):
                self.pending.append(ev)
        for text in w.preamble:
            self._handle(self.on_frame(self.conns[0], text, 1))

    def _handle(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, FetchRest):
                self.pending.append(ev)
            elif type(ev).__name__ in ("Send", "OpenConnection", "CloseConnection"):
                self.trace.append((type(ev).__name__, str(ev)))
            else:
                if type(ev) not in (BookChanged, TradesReceived):
                    self.trace.append((type(ev).__name__, getattr(ev, "key", None), getattr(ev, "kind", None),
                                       getattr(ev, "detail", getattr(ev, "message", None))))
                self.publisher.on_event(ev)

    def feed(self, frames: list[str], start_ns: int = 1_000) -> None:
        for n, text in enumerate(frames):
            self.trace.append(("frame", n))
            self._handle(self.on_frame(self.conns[0], text, start_ns + n))
            while self.pending:
                req = self.pending.pop(0)
                sym = req.url.split("symbol=")[1].split("&")[0]
                self._handle(self.adapter.on_rest(req.request_id, 200, self.w.http[sym].encode(), start_ns + n))

    def state(self) -> dict:
        """Books, sequence state and the segment's words (clocks masked)."""
        out = {}
        syms = getattr(self.adapter, "syms", None) or {s.key: s for s in self.adapter._syms.values()}
        for key, s in syms.items():
            b = s.book
            seq = {name: getattr(s, name) for name in ("state", "seq", "applied", "dropped", "last_trade")
                   if hasattr(s, name)}
            out[key] = (b.bids.keys, b.bids.qty, b.bids.raw, b.asks.keys, b.asks.qty, b.asks.raw, b.update_id,
                        b.exch_ts_ns, b.top_dirty, b.watch_depth, seq)
        out["segment"] = masked_words(self.writer)
        out["slots"] = {k: s.levels_published for k, s in self.publisher.slots.items()}
        return out

    def close(self) -> None:
        self.publisher.close()
        name = self.writer.name
        self.writer.close()
        shm.unlink(name)


def masked_words(w: SegmentWriter) -> list[int]:
    """The segment as int64 words from the counters on, with the clocks zeroed: publish times, latencies."""
    q = list(w.q)
    clocks = {L.COUNTER_OFFSETS["last_latency_ns"] >> 3, L.HEARTBEAT_NS_OFFSET >> 3}
    g = w.view.geometry
    for e in w.view.entries():
        base = w.view.slot_base(e.slot)
        clocks |= {(base + g.copy0 + 24) >> 3, (base + g.copy1 + 24) >> 3,
                   (base + L.STAT_OFFSETS["last_latency_ns"]) >> 3}
        perp = w.view.perp_base(e.slot)  # a perp record's publish time (1.4)
        if perp is not None:
            pub = L.PERP_DTYPE.fields["pub_ts_ns"][1]
            clocks |= {(perp + L.PERP_COPY0_OFFSET + pub) >> 3, (perp + L.PERP_COPY1_OFFSET + pub) >> 3}
    words = [0 if i in clocks else v for i, v in enumerate(q)]
    # the counters, then every slot (the directory carries the time each symbol was added)
    return words[L.COUNTERS_OFFSET >> 3:L.LAST_ERROR_NS_OFFSET >> 3] + words[w.view.slot_base(0) >> 3:]


def replay_both(w, frames: list[str], namespace: str) -> tuple[dict, dict, Run]:
    runs = []
    try:
        for lane in (False, True):
            r = Run(w, lane, f"{namespace}{int(lane)}")
            runs.append(r)
            r.feed(frames)
        states = [r.state() for r in runs]
        return states[0] | {"trace": runs[0].trace}, states[1] | {"trace": runs[1].trace}, runs[1]
    finally:
        for r in runs:
            r.close()


def assert_same(py: dict, lane: dict) -> None:
    assert lane["trace"] == py["trace"]
    for key in py:
        if key != "trace":
            assert lane[key] == py[key], key


@pytest.mark.parametrize("name", ["binance-simulated", "okx-simulated", "okx-simulated-seqid", "binance-recorded",
                                  "okx-recorded"])
def test_the_lane_does_what_the_python_path_does(workloads, name, namespace):
    w = workloads[name]
    py, lane, run = replay_both(w, w.frames, namespace)
    assert_same(py, lane)
    stats = run.publisher.lane.stats() if run.publisher.lane else None
    assert stats is None  # closed with the run
    # and it did take the routine frames: most of them never reached the adapter
    r = Run(w, True, namespace + "x")
    try:
        r.feed(w.frames)
        s = r.publisher.lane.stats()
        assert s["handled"] > 0.5 * len(w.frames), s
    finally:
        r.close()


# ----------------------------------------------------------------------------- damaged frames
def _exponent(text: str) -> str:
    """A price the lane does not parse ("1e3"-style), the Python path does: the lane must decline."""
    return re.sub(r'\["(\d+)\.(\d+)"', lambda m: f'["{m.group(1)}{m.group(2)}e-{len(m.group(2))}"', text, count=1)


def _bad_checksum(text: str) -> str:
    return re.sub(r'"checksum":(-?\d+)', lambda m: f'"checksum":{int(m.group(1)) ^ 1 or 7}', text)


def _reorder(text: str) -> str:
    try:
        obj = json.loads(text)
    except ValueError:  # already broken by an earlier mutation
        return text
    return json.dumps(dict(reversed(list(obj.items()))) if isinstance(obj, dict) else obj)


MUTATIONS = {
    "drop": lambda frames, i: frames[:i] + frames[i + 1:],
    "duplicate": lambda frames, i: frames[:i + 1] + frames[i:],
    "swap": lambda frames, i: frames[:i] + frames[i + 1:i + 2] + frames[i:i + 1] + frames[i + 2:],
    "exponent": lambda frames, i: frames[:i] + [_exponent(frames[i])] + frames[i + 1:],
    "checksum": lambda frames, i: frames[:i] + [_bad_checksum(frames[i])] + frames[i + 1:],
    "reorder": lambda frames, i: frames[:i] + [_reorder(frames[i])] + frames[i + 1:],
    "spaces": lambda frames, i: frames[:i] + [frames[i].replace(",", " , ").replace(":", ": ")] + frames[i + 1:],
    "truncate": lambda frames, i: frames[:i] + [frames[i][:len(frames[i]) // 2]] + frames[i + 1:],
    "not-json": lambda frames, i: frames[:i] + ["pong"] + frames[i + 1:],
    # numbers the store cannot hold (a time past int64 once in ns) or ids that are not integers
    "huge": lambda frames, i: frames[:i] + [re.sub(r'"(E|T|u|ts|seqId)":"?(\d+)', r'"\1":\g<2>0000000000000',
                                                   frames[i], count=1)] + frames[i + 1:],
    "float-id": lambda frames, i: frames[:i] + [re.sub(r'"(a|t|u|seqId|T)":(\d+)', r'"\1":\2.5', frames[i], count=1)]
    + frames[i + 1:],
    # JSON broken only in a member the lane skips: it must still reach the adapter's parser (a ProtocolError)
    "junk-member": lambda frames, i: frames[:i] + [frames[i].replace("{", '{"x":tru,', 1)] + frames[i + 1:],
    "junk-nested": lambda frames, i: frames[:i] + [frames[i].replace("{", '{"x":[1,{"y":01}],', 2)] + frames[i + 1:],
    "zero-qty": lambda frames, i: frames[:i] + [re.sub(r'("[\d.]+"),"[\d.]+"', r'\1,"0"', frames[i], count=2)]
    + frames[i + 1:],
}

# numbers that break mdengine.limits' rule: malformed on both paths (the lane declines them), never published
BAD_NUMBERS = {
    "negative-qty": lambda t: re.sub(r'(\["[\d.]+"),"[\d.]+"', r'\1,"-5"', t, count=1),
    "inf-qty": lambda t: re.sub(r'(\["[\d.]+"),"[\d.]+"', r'\1,"1e400"', t, count=1),
    "nan-qty": lambda t: re.sub(r'(\["[\d.]+"),"[\d.]+"', r'\1,"nan"', t, count=1),
    "absurd-qty": lambda t: re.sub(r'(\["[\d.]+"),"[\d.]+"', r'\1,"9000000000000000"', t, count=1),
    "absurd-price": lambda t: re.sub(r'\["[\d.]+",', '["9000000000000",', t, count=1),
    "zero-price": lambda t: re.sub(r'\["[\d.]+",', '["0",', t, count=1),
    "negative-price": lambda t: re.sub(r'\["([\d.]+)",', r'["-\1",', t, count=1),
    "trade-negative-price": lambda t: re.sub(r'"(p|px|price)":"[\d.]+"', r'"\1":"-5"', t, count=1),
    "trade-inf-qty": lambda t: re.sub(r'"(q|sz|v|size)":"[\d.]+"', r'"\1":"1e400"', t, count=1),
}


def _at(change):
    return lambda frames, i: frames[:i] + [change(frames[i])] + frames[i + 1:]


MUTATIONS.update({name: _at(change) for name, change in BAD_NUMBERS.items()})


def damaged(frames: list[str], seed: int, n: int) -> list[str]:
    rnd = random.Random(seed)
    out = list(frames)
    for _ in range(n):
        kind = rnd.choice(sorted(MUTATIONS))
        out = MUTATIONS[kind](out, rnd.randrange(len(out) - 2))
    return out


@pytest.mark.parametrize("name", ["binance-simulated", "okx-simulated", "okx-simulated-seqid"])
@pytest.mark.parametrize("seed", range(3))
def test_damaged_frames_take_the_same_path_to_the_same_state(workloads, name, seed, namespace):
    w = workloads[name]
    frames = damaged(w.frames[:400], seed, 25)
    py, lane, _ = replay_both(w, frames, namespace)
    assert_same(py, lane)
    assert any(t[0] == "BookInvalid" for t in py["trace"]), "the damage should have forced at least one resync"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_leaves_both_paths_equal(workloads, namespace, data):
    w = workloads[data.draw(st.sampled_from(["binance-simulated", "okx-simulated", "okx-simulated-seqid"]))]
    frames = w.frames[:120]
    for _ in range(data.draw(st.integers(0, 6))):
        kind = data.draw(st.sampled_from(sorted(MUTATIONS)))
        frames = MUTATIONS[kind](frames, data.draw(st.integers(0, len(frames) - 3)))
    py, lane, _ = replay_both(w, frames, namespace)
    assert_same(py, lane)


_JSON_BYTES = '{}[]:,"\\ -+.0123456789eEtrufalsn\x00\x1f\u00e9'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_byte_spliced_anywhere_is_read_as_orjson_reads_it(workloads, namespace, data):
    """One character inserted, deleted or replaced at any place of a few routine frames: where orjson refuses the
    frame, the lane must have refused it too (the adapter's ProtocolError), and where orjson reads it differently
    (a key renamed, a number changed), the lane must read it the same way or decline."""
    w = workloads[data.draw(st.sampled_from(["binance-simulated", "okx-simulated", "okx-simulated-seqid"]))]
    frames = list(w.frames[:60])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(len(frames) // 2, len(frames) - 1))  # after the snapshots: on the lane's frames
        text = frames[i]
        at = data.draw(st.integers(0, len(text) - 1))
        ch = data.draw(st.sampled_from(_JSON_BYTES))
        how = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        frames[i] = (text[:at] + ch + text[at:] if how == "insert" else text[:at] + text[at + 1:] if how == "delete"
                     else text[:at] + ch + text[at + 1:])
    py, lane, _ = replay_both(w, frames, namespace)
    assert_same(py, lane)


def test_a_symbol_without_a_slot_and_a_rotating_adapter_go_to_the_adapter(workloads, namespace):
    w = workloads["binance-simulated"]
    r = Run(w, True, namespace)
    try:
        r.feed(w.frames[:60])
        handled = r.publisher.lane.stats()["handled"]
        assert handled > 0
        # an instance-level on_frame (what Binance installs during a connection rotation) sees every frame
        seen = []
        r.adapter.on_frame = lambda conn, data, ns: seen.append(data) or type(r.adapter).on_frame(r.adapter, conn,
                                                                                                  data, ns)
        r.feed(w.frames[60:80], start_ns=10_000)
        assert len(seen) == 20 and r.publisher.lane.stats()["handled"] == handled
        del r.adapter.on_frame
        # a symbol the publisher dropped: its frames are the adapter's again (which still routes them)
        key = next(iter(r.publisher.slots))
        r.publisher.remove(key)
        before = r.publisher.lane.stats()
        r.feed(w.frames[80:200], start_ns=20_000)
        after = r.publisher.lane.stats()
        assert after["declined"] > before["declined"]
    finally:
        r.close()


def test_a_closed_lane_hands_every_frame_to_the_adapter(workloads, namespace):
    w = workloads["okx-simulated-seqid"]
    r = Run(w, True, namespace)
    try:
        lane = r.publisher.lane
        r.publisher.close_lane()
        before = lane.stats()
        r.feed(w.frames[:50])
        assert lane.stats() == {"handled": before["handled"], "declined": before["declined"] + 50}
    finally:
        r.close()


# ----------------------------------------------------------------------------- every exchange, through the simulator
_ft_spec = importlib.util.spec_from_file_location("feed_throughput", PERF / "feed_throughput.py")
ft = importlib.util.module_from_spec(_ft_spec)
sys.modules["feed_throughput"] = ft
_ft_spec.loader.exec_module(ft)


class _FixedClock:
    """feed_throughput's clock, fixed: both paths then stamp the same times."""

    def __getattr__(self, name: str):
        import time

        return getattr(time, name)

    @staticmethod
    def time_ns() -> int:
        return 5_000


def sim_frames(exchange: str, steps: int = 300) -> list[tuple[str, str]]:
    """(conn, text) frames of `steps` simulator steps, rendered by a synced harness of their own."""
    h = ft.Harness(exchange, lane=False)
    try:
        h.start_simulated()
        return h.render(steps)
    finally:
        h.close()


def sim_replay(exchange: str, lane: bool, frames: list[tuple[str, str]]):
    """A simulated feed (perf/feed_throughput's in-memory venues, every market of `exchange`), synced as the one
    that rendered `frames`, then `frames` through the lane or the adapter; returns (trace, state)."""
    h = ft.Harness(exchange, lane=lane)
    try:
        h.start_simulated()
        on_frame = h.on_frame
        assert (h.pub.lane is not None) == lane
        trace = []
        for n, (conn, text) in enumerate(frames):
            events = on_frame(conn, text, 10_000 + n)
            trace += [(n, type(e).__name__, getattr(e, "key", None), getattr(e, "kind", None),
                       getattr(e, "detail", getattr(e, "message", getattr(e, "payload", None))))
                      for e in events if type(e) not in (BookChanged, TradesReceived)]
            h.handle(events)
        books = {k: (s.state, s.seq, s.book.bids.keys, s.book.bids.qty, s.book.bids.raw, s.book.asks.keys,
                     s.book.asks.qty, s.book.asks.raw, s.book.update_id, s.book.exch_ts_ns, s.book.top_dirty)
                 for k, s in h.adapter.syms.items()}
        handled = h.pub.lane.stats()["handled"] if lane else 0
        return trace, {"books": books, "segment": masked_words(h.writer), "handled": handled}
    finally:
        h.close()


@pytest.mark.parametrize("exchange", ["bybit", "bitget", "okx"])
@pytest.mark.parametrize("damage", [0, 1, 2])
def test_simulated_feeds_take_the_same_path_through_the_lane(exchange, damage, monkeypatch):
    monkeypatch.setattr(ft, "time", _FixedClock())
    for fmt in (sim_bybit, sim_bitget, sim_okx):  # the simulator's time stamps on its replies
        monkeypatch.setattr(fmt, "now_ms", lambda: 1_700_000_000_000)
    frames = sim_frames(exchange)
    if damage:
        texts = damaged([t for _, t in frames], damage, 20)
        conns = [c for c, _ in frames]
        frames = [(conns[min(i, len(conns) - 1)], t) for i, t in enumerate(texts)]
    trace, state = sim_replay(exchange, False, frames)
    lane_trace, lane_state = sim_replay(exchange, True, frames)
    assert lane_trace == trace
    assert lane_state["books"] == state["books"]
    assert lane_state["segment"] == state["segment"]
    # the lane took its share (with damage, the simulator's resync snapshots lag the replayed stream: gaps follow)
    assert lane_state["handled"] > (len(frames) // 3 if not damage else 0)
    if damage:
        assert any(t[1] in ("BookInvalid", "ProtocolError") for t in trace)


def _sane_segment(run: Run) -> None:
    """Every level and trade the run's segment holds obeys mdengine.limits."""
    from mdengine.limits import sane
    from mdengine.store.reader import SegmentReader

    with SegmentReader(run.namespace, run.w.exchange) as seg:
        for e in seg.symbols():
            snap = seg.book(e.native, e.market).snapshot()
            for px, qty in [*snap.bids.tolist(), *snap.asks.tolist()]:
                assert sane(px, qty), (e.unified, px, qty)
            trades, _ = seg.trades(e.native, e.market, start="earliest").poll()
            for t in trades:
                assert sane(float(t["price"]), float(t["qty"])), (e.unified, t)


@pytest.mark.parametrize("name", ["binance-simulated", "okx-simulated", "okx-simulated-seqid", "binance-recorded",
                                  "okx-recorded"])
@pytest.mark.parametrize("bad", sorted(BAD_NUMBERS))
def test_numbers_outside_the_limits_are_malformed_on_both_paths_and_never_published(workloads, name, bad,
                                                                                      namespace):
    w = workloads[name]
    frames = list(w.frames[:300])
    rnd = random.Random(bad)
    hit = 0
    for i in sorted(rnd.sample(range(10, len(frames)), 40)):
        changed = BAD_NUMBERS[bad](frames[i])
        hit += changed != frames[i]
        frames[i] = changed
    if not hit:
        pytest.skip(f"no {bad} in these frames")
    runs = []
    try:
        for lane in (False, True):
            r = Run(w, lane, f"{namespace}{int(lane)}")
            runs.append(r)
            for n, text in enumerate(frames):
                r.feed([text], start_ns=1_000 + n)
                if n % 10 == 0:
                    _sane_segment(r)
            _sane_segment(r)
        py, lane_state = (r.state() | {"trace": r.trace} for r in runs)
        assert_same(py, lane_state)
        malformed = py["segment"][(L.COUNTER_OFFSETS["malformed"] - L.COUNTERS_OFFSET) >> 3]
        said = [t for t in py["trace"] if "not a valid price and quantity" in str(t)]
        assert malformed >= 1 and said, (malformed, [t for t in py["trace"] if t[0] != "frame"][:5])
        for key, book in ((k, v) for k, v in py.items() if isinstance(k, tuple)):
            bids = [(-k, q) for k, q in zip(book[0], book[1], strict=True)]
            asks = list(zip(book[3], book[4], strict=True))
            assert all(0 < p <= 1e12 and 0 <= q <= 1e15 for p, q in bids + asks), key
    finally:
        for r in runs:
            r.close()


@pytest.mark.parametrize("exchange", ["bybit", "bitget", "okx"])
@pytest.mark.parametrize("bad", sorted(BAD_NUMBERS))
def test_simulated_feeds_agree_on_numbers_outside_the_limits(exchange, bad, monkeypatch):
    monkeypatch.setattr(ft, "time", _FixedClock())
    for fmt in (sim_bybit, sim_bitget, sim_okx):
        monkeypatch.setattr(fmt, "now_ms", lambda: 1_700_000_000_000)
    frames = sim_frames(exchange, 150)
    rnd = random.Random(bad)
    for i in sorted(rnd.sample(range(len(frames)), 30)):
        frames[i] = (frames[i][0], BAD_NUMBERS[bad](frames[i][1]))
    trace, state = sim_replay(exchange, False, frames)
    lane_trace, lane_state = sim_replay(exchange, True, frames)
    assert lane_trace == trace
    assert lane_state["books"] == state["books"]
    assert lane_state["segment"] == state["segment"]
    assert any("not a valid price and quantity" in str(t) for t in trace), trace[:5]


def test_the_warm_up_pass_skips_frames_the_lane_handled(workloads, namespace):
    from mdengine.feed.loop import FeedLoop

    w = workloads["okx-simulated-seqid"]
    r = Run(w, True, namespace)
    try:
        loop = FeedLoop(r.adapter, r.publisher, lane=r.publisher.lane)
        assert loop._lane is r.publisher.lane
        r.feed(w.frames[:40])
        assert loop._lane.last_handled == 1  # a routine update: nothing to warm (see FeedLoop._read)
        r.feed(["pong"], start_ns=50_000)
        assert loop._lane.last_handled == 0
        assert FeedLoop(r.adapter, r.publisher)._lane is None  # the adapter's own on_frame: warm-up as before
    finally:
        r.close()


def test_a_feed_whose_loop_crashes_still_closes_its_segment(namespace, monkeypatch):
    """run_feed's cleanup after a crash: the lane lets go of the segment's buffer before the writer closes it
    (else SharedMemory.close raises BufferError and the writer is never marked)."""
    from mdengine.engine.config import ExchangeConfig
    from mdengine.feed import process

    def crash(self):
        assert self._lane is not None  # the feed did put the lane in front of its adapter
        raise RuntimeError("loop bug")

    monkeypatch.setattr(process.FeedLoop, "run", crash)
    monkeypatch.setattr(process, "_on_signals", lambda stop: None)  # pytest's own handlers stay
    monkeypatch.setattr(process, "_setup_logging", lambda level: None)  # and so does its logging
    cfg = ExchangeConfig(name="okx", symbols=["BTC/USDT"], endpoints={"ws": "ws://127.0.0.1:9", "rest":
                                                                      "http://127.0.0.1:9"})
    assert process.run_feed(namespace, cfg) == 1  # not a BufferError out of its cleanup


# ----------------------------------------------------------------------------- the contract with Python
def test_the_layout_the_c_code_is_written_for_is_store_layouts():
    """The record sizes and formats compiled into _lane.h/_speedups.c are layout.py's (and the writer's meta row);
    the lane also refuses to start unless fastlane.LAYOUT, built from layout.py, says the same."""
    native = fastlane._native
    assert native.LAYOUT == fastlane.LAYOUT
    assert native.LAYOUT["BOOK_HEADER_LENGTH"] == L.BOOK_HEADER_LENGTH == struct.calcsize(L.BOOK_HEADER_STRUCT)
    assert native.LAYOUT["TRADE_RECORD_LENGTH"] == L.TRADE_RECORD_LENGTH == struct.calcsize(L.TRADE_STRUCT)
    assert native.LAYOUT["LEVEL_LENGTH"] == L.LEVEL_LENGTH == L.levels_struct(1).size
    assert native.LAYOUT["META_FIELDS"].split() == list(META_FIELDS)
    assert {k.name: int(k) for k in ChainKind} == native.CHAIN_KINDS


def _unreadable_specs():
    """(what is wrong, how to break a spec or the layout, a phrase the lane's error must contain)"""
    def member(spec):
        spec["members"] = {**spec["members"], "seq": "sequence"}

    def missing(spec):
        spec["members"] = {k: v for k, v in spec["members"].items() if k != "state"}

    def kind(spec):
        spec["chains"] = (SimpleNamespace(kind=7, same_id_ok=False, prev_optional=False),)

    def no_chains(spec):
        del spec["chains"]

    return [("a member that is not a slot", member, None, "sequence"),
            ("a role left out", missing, None, "'state'"),
            ("a rule kind the lane does not implement", kind, None, "kind 7"),
            ("no rules", no_chains, None, "'chains'"),
            ("a layout number that differs", None, {"LEVEL_LENGTH": 48}, "LEVEL_LENGTH")]


@pytest.mark.parametrize("what,break_spec,layout,phrase", _unreadable_specs(), ids=lambda v: v if isinstance(v, str)
                         and " " in v else "")
def test_a_spec_the_lane_cannot_read_is_refused_and_the_python_path_runs(workloads, namespace, monkeypatch, caplog,
                                                                         what, break_spec, layout, phrase):
    w = workloads["okx-simulated-seqid"]
    r = Run(w, False, namespace)
    try:
        spec = r.adapter.lane_spec()
        if break_spec is not None:
            break_spec(spec)
        monkeypatch.setattr(r.adapter, "lane_spec", lambda: spec)
        if layout is not None:
            monkeypatch.setattr(fastlane, "LAYOUT", {**fastlane.LAYOUT, **layout})
        with pytest.raises((TypeError, ValueError, KeyError), match=re.escape(phrase)):
            fastlane._native.Lane(*fastlane.lane_args(r.adapter, r.publisher, spec))
        with caplog.at_level(logging.ERROR, logger="mdengine.feed.fastlane"):
            on_frame = fastlane.attach(r.adapter, r.publisher)
        assert r.publisher.lane is None and on_frame == r.adapter.on_frame
        assert any("refused" in m and phrase in m for m in caplog.messages), caplog.messages
        r.on_frame = on_frame
        r.feed(w.frames)  # the feed goes on, on the Python path
        assert all(r.adapter.is_live(k) for k in r.publisher.slots)
        assert any(n for n in masked_words(r.writer))
    finally:
        r.close()


def _handled(w, namespace: str) -> int:
    r = Run(w, True, namespace)
    try:
        lane = r.publisher.lane
        r.feed(w.frames)
        return lane.stats()["handled"]
    finally:
        r.close()


@pytest.mark.parametrize("name,module,attr,changed", [
    ("okx-simulated-seqid", "okx", "CHAIN", Chain(ChainKind.NEXT_ID)),
    ("binance-simulated", "binance", "SPOT_CHAIN", Chain(ChainKind.PREV_ID)),
])
def test_a_rule_changed_in_python_is_the_rule_the_lane_applies(workloads, namespace, monkeypatch, name, module, attr,
                                                               changed):
    """The lane has no rule of its own: with the exchange's Chain changed in Python, both paths still agree frame
    by frame (a lane that kept the old rule would take updates the adapter now treats otherwise, and the traces
    would differ), and the lane declines the book updates it can no longer vouch for."""
    w = workloads[name]
    before = _handled(w, namespace + "a")
    adapter_module = importlib.import_module(f"mdengine.exchanges.{module}.adapter")
    monkeypatch.setattr(adapter_module, attr, changed)
    py, lane, _ = replay_both(w, w.frames, namespace + "b")
    assert_same(py, lane)
    after = _handled(w, namespace + "c")
    assert after < before - 50, (before, after)
