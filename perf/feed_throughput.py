"""Feed throughput: frames per second through adapter + local book + store publish, without sockets.

For every exchange whose adapter module exists (the others are skipped and named), two scenarios:
- simulated: the simulator's pure venues (mdengine.sim.formats) render instruments, REST answers and WS frames;
  an in-memory link answers the adapter's requests (subscribe frames, snapshots) like the server would. After a
  warm-up until every symbol is live, N pre-rendered frames are timed one by one through the feed's frame path:
  the fast lane, or `adapter.on_frame` -> `Publisher.on_event` -> SegmentWriter for the frames it declines (and for
  every frame of an exchange without a lane). An adapter needs only its normal methods.
- recorded: the real frames in tests/data (Binance spot, OKX), replayed the same way.
Perpetual data (mark, funding, open interest, liquidations) is on, as in a feed by default: the simulated mix has the
perp channels' frames too. Their frames/s are reported apart (`<ex>_perp_frames_per_s`), with the book and trade
frames of the same run (`<ex>_book_trade_frames_per_s`) and of a run with perp=False (`<ex>_no_perp_frames_per_s`),
so a slowdown of book frames by the new channels would show.

The tap hook: `--record-dir DIR` times the simulated scenario again with a `mdengine.recording.tap.Recorder` tap
(record_overhead_pct); null when no recorder module exists. Profile with `--profile EXCHANGE`.

Prints the figures, then one JSON object as the last line. `--quick` finishes in well under a minute.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from collections import deque
from urllib.parse import parse_qsl, urlsplit

import orjson

from mdengine.events import CloseConnection, FetchRest, OpenConnection, Send
from mdengine.exchanges import EXCHANGES, get_adapter
from mdengine.feed import fastlane
from mdengine.feed.publisher import Publisher
from mdengine.sim.config import SimConfig
from mdengine.sim.formats.binance import BinanceSpot, BinanceUsdm
from mdengine.sim.formats.bitget import BitgetVenue
from mdengine.sim.formats.bybit import BybitVenue
from mdengine.sim.formats.okx import OkxVenue
from mdengine.sim.listings import select
from mdengine.store import SegmentWriter, shm
from mdengine.symbols import InstrumentIndex

VENUES = {"binance": {"binance-spot": BinanceSpot, "binance-usdm": BinanceUsdm}, "okx": {"okx": OkxVenue},
          "bybit": {"bybit": BybitVenue}, "bitget": {"bitget": BitgetVenue}}
SEED = 7
DEPTH = 20
HERE = os.path.dirname(os.path.abspath(__file__))
RECORDINGS = os.path.join(HERE, "..", "tests", "data")  # copies of the real recordings


class Harness:
    """One adapter, its publisher on a throwaway segment, and an in-memory stand-in for the exchange."""

    def __init__(self, exchange: str, tap=None, lane: bool = True, perp: bool = True) -> None:
        self.exchange = exchange
        self.lane = lane
        self.perp = perp
        self.kinds: list[str] = []  # the simulator's kind of each rendered frame ("diff", "trade", "perp", ...)
        self.cls = get_adapter(exchange)
        self.ns = "p" + uuid.uuid4().hex[:8]
        self.writer = SegmentWriter(self.ns, exchange, create=True, max_symbols=64, book_capacity=DEPTH,
                                    trade_capacity=4096)
        self.pub = Publisher(self.writer, exchange, depth=DEPTH)
        self.pub.log.disabled = True
        self.tap = tap
        self.venues: dict[str, object] = {}
        self.sessions: dict[str, tuple[str, object]] = {}  # conn -> (venue name, simulator session)
        self.rest_answers: dict[tuple[str, str], list[bytes]] = {}  # recorded mode: (path, query) -> bodies
        self.pending_rest: deque[FetchRest] = deque()
        self.adapter = None
        self._on_frame = None

    @property
    def on_frame(self):
        """The feed process's frame path: the C fast lane in front of the adapter (where built), made once."""
        if self._on_frame is None:
            self._on_frame = fastlane.attach(self.adapter, self.pub) if self.lane else self.adapter.on_frame
        return self._on_frame

    def close(self) -> None:
        self.pub.close_lane()
        self.writer.close()
        for name in shm.list_names(self.ns):
            shm.unlink(name)

    # ---------------------------------------------------------------- the fake exchange
    def rest(self, url: str) -> tuple[int, bytes]:
        u = urlsplit(url)
        if self.rest_answers:
            bodies = self.rest_answers.get((u.path, u.query))
            return (200, bodies.pop(0)) if bodies else (404, b"{}")
        venue = self.venues[u.hostname]
        status, obj = venue.rest(u.path, dict(parse_qsl(u.query))) or (404, {})
        return status, orjson.dumps(obj)

    def handle(self, events: list) -> None:
        """Act on adapter output as the loop and the server together would (REST answered at once)."""
        todo = deque(events)
        a = self.adapter
        while todo:
            ev = todo.popleft()
            t = type(ev)
            if t is OpenConnection:
                u = urlsplit(ev.url)
                if self.venues:
                    s = self.venues[u.hostname].session(u.path, dict(parse_qsl(u.query)))
                    s.refuse = lambda key, channel="": False
                    self.sessions[ev.conn] = (u.hostname, s)
                todo.extend(a.on_open(ev.conn))
            elif t is Send:
                vs = self.sessions.get(ev.conn)
                if vs is not None:
                    for out in vs[1].handle(ev.payload).frames:
                        todo.extend(a.on_frame(ev.conn, _text(out.obj), time.time_ns()))
            elif t is FetchRest:
                if self.rest_answers:
                    self.pending_rest.append(ev)
                    continue
                status, body = self.rest(ev.url)
                todo.extend(a.on_rest(ev.request_id, status, body, time.time_ns()))
            elif t is CloseConnection:
                self.sessions.pop(ev.conn, None)
            else:
                self.pub.on_event(ev)

    # ---------------------------------------------------------------- simulated scenario
    def start_simulated(self) -> None:
        cfg = SimConfig(rate_hz=0)
        self.venues = {m: v(select(m, None), SEED, cfg) for m, v in VENUES[self.exchange].items()}
        endpoints = self.cls.sim_endpoints({m: (f"ws://{m}", f"http://{m}") for m in self.venues})
        index = InstrumentIndex()
        reqs = deque(self.cls.instrument_requests({**self.cls.DEFAULT_ENDPOINTS, **endpoints}, None))
        while reqs:
            req = reqs.popleft()
            status, body = self.rest(req.url)
            if status != 200:
                continue
            insts, events = self.cls.parse_instruments(req.request_id, body)
            reqs.extend(e for e in events if isinstance(e, FetchRest))
            for i in insts:
                index.add(i)
        self.adapter = self.cls(index, endpoints, book_depth=DEPTH, perp=self.perp)
        wanted = {(i.native, i.unified) for v in self.venues.values() for i in v.instruments.values()}
        self.keys = [i.key for i in index if (i.native, i.unified) in wanted]
        for i in index:
            if i.key in self.keys:
                self.pub.add(i)
                self.handle(self.adapter.subscribe(i))
        self.ts = 1_700_000_000_000
        for _ in range(400):  # warm up: step until every book is live
            self.deliver(self.render(1))
            if all(self.adapter.is_live(k) for k in self.keys):
                break
        self.live = sum(self.adapter.is_live(k) for k in self.keys)

    def render(self, steps: int) -> list[tuple[str, str]]:
        out = []
        for _ in range(steps):
            self.ts += 50
            for name, venue in self.venues.items():
                for key, model in venue.models.items():
                    st = model.step(self.ts)
                    for conn, (vname, s) in self.sessions.items():
                        if vname == name and key in s.keys:
                            for o in s.step(key, model, st):
                                out.append((conn, _text(o.obj)))
                                self.kinds.append(o.kind)
        return out

    def deliver(self, frames) -> None:
        for conn, text in frames:
            self.handle(self.on_frame(conn, text, time.time_ns()))

    # ---------------------------------------------------------------- the timed part
    def timed(self, frames: list[tuple[str, str]]) -> list[int]:
        on_frame, handle, pub_event, tap = self.on_frame, self.handle, self.pub.on_event, self.tap
        requests = (OpenConnection, Send, FetchRest, CloseConnection)
        clock = time.perf_counter_ns
        now = time.time_ns
        times = []
        gc.disable()
        try:
            for conn, text in frames:
                t0 = clock()
                recv_ns = now()
                if tap is not None:
                    tap("recv", conn, text, recv_ns)
                for ev in on_frame(conn, text, recv_ns):
                    if isinstance(ev, requests):
                        handle([ev])
                    else:
                        pub_event(ev)
                times.append(clock() - t0)
        finally:
            gc.enable()
        return times


def _text(obj) -> str:
    return obj if isinstance(obj, str) else orjson.dumps(obj).decode()


def summary(times: list[int], chunks: int = 5) -> dict[str, float]:
    """frames/s is the median over `chunks` consecutive slices (a busy shared machine stalls some of them);
    percentiles are over every frame."""
    s = sorted(times)
    size = max(1, len(times) // chunks)
    rates = sorted(size / (sum(times[i:i + size]) / 1e9) for i in range(0, len(times) - size + 1, size))
    return {"frames": len(s), "frames_per_s": round(rates[len(rates) // 2]) if rates else 0,
            "p50_us": round(s[len(s) // 2] / 1000, 2),
            "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))] / 1000, 2)}


def simulated(exchange: str, n_frames: int, tap=None, perp: bool = True) -> dict:
    h = Harness(exchange, tap, perp=perp)
    try:
        h.start_simulated()
        h.kinds = []
        frames: list[tuple[str, str]] = []
        while len(frames) < n_frames:
            frames += h.render(20)
        frames = frames[:n_frames]
        times = h.timed(frames)
        res = summary(times)
        res["symbols_live"] = f"{h.live}/{len(h.keys)}"
        kinds = h.kinds[:n_frames]
        perp_times = [t for t, k in zip(times, kinds, strict=True) if k == "perp"]
        other = [t for t, k in zip(times, kinds, strict=True) if k != "perp"]
        res["perp"] = summary(perp_times) if perp_times else None
        res["book_trade"] = summary(other) if other else None
        return res
    finally:
        h.close()


# ----------------------------------------------------------------------------- recorded scenario
def _binance_instruments(cls):
    rows = [{"symbol": s, "status": "TRADING", "baseAsset": b, "quoteAsset": q, "filters": []}
            for s, b, q in (("NKNUSDT", "NKN", "USDT"), ("BLZETH", "BLZ", "ETH"), ("LRCBTC", "LRC", "BTC"),
                            ("RUNEEUR", "RUNE", "EUR"))]
    return cls.parse_instruments("instruments:spot", orjson.dumps({"symbols": rows}))[0], {"trade_stream": "aggTrade"}


def _okx_instruments(cls):
    rows = [{"instType": "SPOT", "instId": "BTC-USDT", "baseCcy": "BTC", "quoteCcy": "USDT", "tickSz": "0.1",
             "lotSz": "0.00000001", "state": "live"},
            {"instType": "SWAP", "instId": "UNI-USD-SWAP", "instFamily": "UNI-USD", "settleCcy": "UNI", "ctVal": "10",
             "ctType": "inverse", "tickSz": "0.001", "lotSz": "1", "state": "live"},
            {"instType": "FUTURES", "instId": "BTC-USD-220527", "instFamily": "BTC-USD", "settleCcy": "BTC",
             "ctVal": "100", "ctType": "inverse", "tickSz": "0.1", "lotSz": "1", "state": "live"}]
    insts = []
    for it in ("SPOT", "SWAP", "FUTURES"):
        body = orjson.dumps({"code": "0", "msg": "", "data": [r for r in rows if r["instType"] == it]})
        insts += cls.parse_instruments(f"instruments:{it}", body)[0]
    return insts, {}


RECORDED = {"binance": ("binance-spot-2021-10-12.jsonl", _binance_instruments),
            "okx": ("okx-2022-05-13.jsonl", _okx_instruments)}


def recorded(exchange: str, repeats: int) -> dict | None:
    spec = RECORDED.get(exchange)
    path = os.path.join(RECORDINGS, spec[0]) if spec else ""
    if not spec or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        lines = [json.loads(x) for x in fh if x.strip()]
    times: list[int] = []
    for _ in range(repeats):  # a fresh adapter each pass: the frames only make sense once
        h = Harness(exchange)
        try:
            insts, options = spec[1](h.cls)
            h.adapter = h.cls(InstrumentIndex(insts), book_depth=DEPTH, **options)
            for ln in lines:
                if ln["kind"] == "http":
                    u = urlsplit(ln["url"])
                    h.rest_answers.setdefault((u.path, u.query), []).append(ln["data"].encode())
            conns: list[str] = []
            for i in insts:
                h.pub.add(i)
                events = h.adapter.subscribe(i)
                conns += [e.conn for e in events if isinstance(e, OpenConnection)]
                h.handle(events)
            for ln in lines:
                if ln["kind"] == "recv":
                    times += h.timed([(conns[0], ln["data"])])
                elif ln["kind"] == "http":  # the snapshot arrives when it did in the recording
                    while h.pending_rest:
                        req = h.pending_rest.popleft()
                        status, body = h.rest(req.url)
                        h.handle(h.adapter.on_rest(req.request_id, status, body, time.time_ns()))
        finally:
            h.close()
    return summary(times)


# ----------------------------------------------------------------------------- transport
def transport(n: int) -> tuple[float, float]:
    """Per-frame µs of reading n server frames (~420 B JSON) from a socket: websocket-client's own path
    (recv_data_frame, skip_utf8_validation) vs the feed's own buffered non-blocking reader and frame parser
    (wsconn.WsConn.next_frame)."""
    import selectors
    import socket
    import struct
    import threading

    import websocket

    from mdengine.feed.timing import Backoff
    from mdengine.feed.wsconn import WOULD_BLOCK, WsConn

    payload = orjson.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 1, "u": 2,
        "b": [["65000.01000000", "0.12345000"]] * 6, "a": [["65000.02000000", "0.54321000"]] * 6}})
    wire = (bytes([0x81, 126]) + struct.pack("!H", len(payload)) + payload) * n

    def run(ours: bool) -> float:
        a, b = socket.socketpair()
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
        ws.sock, ws.connected = a, True
        writer = threading.Thread(target=b.sendall, args=(wire,))
        t0 = time.perf_counter()
        writer.start()
        if ours:
            sel = selectors.DefaultSelector()
            sel.register(a, selectors.EVENT_READ)
            conn = WsConn("t", "ws://x", Backoff(), 1.0)
            conn.attach(ws, 0.0)
            next_frame, got = conn.next_frame, 0
            while got < n:
                try:
                    str(next_frame()[2], "utf-8", "surrogateescape")  # as the loop decodes: from the buffer
                    got += 1
                except WOULD_BLOCK:
                    sel.select(1.0)
        else:
            for _ in range(n):
                ws.recv_data_frame(True)[1].data.decode()
        dt = time.perf_counter() - t0
        writer.join()
        a.close()
        b.close()
        return dt / n * 1e6

    return round(min(run(False) for _ in range(3)), 2), round(min(run(True) for _ in range(3)), 2)


# ----------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer frames (finishes in well under a minute)")
    p.add_argument("--frames", type=int, default=None, help="simulated frames timed per exchange")
    p.add_argument("--record-dir", default=None, help="measure again with a Recorder tap writing here")
    p.add_argument("--profile", default=None, metavar="EXCHANGE", help="cProfile the simulated run of one exchange")
    a = p.parse_args()
    n = a.frames or (8_000 if a.quick else 50_000)
    repeats = 3 if a.quick else 20
    print(f"feed_throughput: seed={SEED} depth={DEPTH} simulated_frames={n} recorded_repeats={repeats} "
          f"python={sys.version.split()[0]}")
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        simulated(a.profile, n)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    result: dict[str, object] = {}
    skipped = []
    for ex in EXCHANGES:
        try:
            get_adapter(ex)
        except ModuleNotFoundError:
            skipped.append(ex)
            continue
        sim = simulated(ex, n)
        print(f"{ex:8} simulated: {sim['frames_per_s']:>8} frames/s  p50 {sim['p50_us']:>7} us  "
              f"p99 {sim['p99_us']:>7} us  ({sim['frames']} frames, {sim['symbols_live']} symbols live)")
        result[f"{ex}_frames_per_s"] = sim["frames_per_s"]
        result[f"{ex}_frame_p50_us"] = sim["p50_us"]
        result[f"{ex}_frame_p99_us"] = sim["p99_us"]
        no_perp = simulated(ex, n, perp=False)
        bt, pp = sim["book_trade"], sim["perp"]
        print(f"{ex:8} perp frames: {pp['frames_per_s'] if pp else '-':>8} frames/s  p50 "
              f"{pp['p50_us'] if pp else '-':>7} us ({pp['frames'] if pp else 0} frames); book+trade frames "
              f"{bt['frames_per_s']} frames/s beside them, {no_perp['frames_per_s']} with perp=False")
        result[f"{ex}_perp_frames_per_s"] = pp["frames_per_s"] if pp else None
        result[f"{ex}_perp_frame_p50_us"] = pp["p50_us"] if pp else None
        result[f"{ex}_book_trade_frames_per_s"] = bt["frames_per_s"]
        result[f"{ex}_no_perp_frames_per_s"] = no_perp["frames_per_s"]
        try:
            rec = recorded(ex, repeats)
        except Exception as e:  # an adapter that cannot take the old recording: reported, not fatal
            print(f"{ex:8} recorded:  failed ({type(e).__name__}: {e})")
            rec = None
        if rec:
            print(f"{ex:8} recorded:  {rec['frames_per_s']:>8} frames/s  p50 {rec['p50_us']:>7} us  "
                  f"p99 {rec['p99_us']:>7} us  ({rec['frames']} frames)")
            result[f"{ex}_recorded_frames_per_s"] = rec["frames_per_s"]
    if skipped:
        print(f"skipped (no adapter module yet): {', '.join(skipped)}")
    default_us, ours_us = transport(5_000 if a.quick else 50_000)
    print(f"transport: websocket-client recv_data_frame {default_us} us/frame, buffered non-blocking reader "
          f"{ours_us} us/frame (best of 3, ~420 B frames over a socketpair)")
    result["transport_default_frame_us"] = default_us
    result["transport_frame_us"] = ours_us
    result["record_overhead_pct"] = record_overhead(a.record_dir, n, result, pairs=6 if a.quick else 16)
    print(json.dumps(result))


def _run_rate(exchange: str, n_frames: int, tap=None) -> float:
    """frames/s of one whole timed run (total frames / total time)."""
    h = Harness(exchange, tap)
    try:
        h.start_simulated()
        frames: list[tuple[str, str]] = []
        while len(frames) < n_frames:
            frames += h.render(20)
        times = h.timed(frames[:n_frames])
        return n_frames / (sum(times) / 1e9)
    finally:
        h.close()


def record_overhead(record_dir: str | None, n: int, result: dict, pairs: int = 16) -> float | None:
    """frames/s lost to a Recorder tap on the Binance simulated run, in percent; None without a recorder.

    `pairs` short runs with the tap and as many without, interleaved (the order alternates), one Recorder live
    throughout. The figure compares the fastest run of each kind: on a shared 2-vCPU host the same code
    swings by +-40 % from one second to the next, noise only ever slows a run, and every tap run carries the
    recorder's whole cost (its writer drains every 20 ms, many times per run). The medians are printed too.
    """
    try:
        from mdengine.recording.tap import Recorder
    except ImportError:
        print("record_overhead_pct: no mdengine.recording.tap yet")
        return None
    if "binance_frames_per_s" not in result:
        return None
    own = record_dir is None
    directory = record_dir or tempfile.mkdtemp(prefix="mdengine-perf-")
    rec = Recorder(directory, "binance")
    rec.flush(30.0)  # its writer process is up: starting it (~0.1 s of CPU, once) is not a per-frame cost
    taps: list[float] = []
    plain: list[float] = []
    run_frames = max(2_000, min(n, 5_000))
    try:
        for i in range(pairs):
            if i % 2:
                plain.append(_run_rate("binance", run_frames))
                taps.append(_run_rate("binance", run_frames, tap=rec.tap))
            else:
                taps.append(_run_rate("binance", run_frames, tap=rec.tap))
                plain.append(_run_rate("binance", run_frames))
    finally:
        rec.close()
        stats = rec.stats()  # after close: everything tapped is written (or counted as dropped)
        if own:
            shutil.rmtree(directory, ignore_errors=True)
    best_tap, best_plain = max(taps), max(plain)
    pct = round(100.0 * (best_plain - best_tap) / best_plain, 1)
    med_tap, med_plain = sorted(taps)[len(taps) // 2], sorted(plain)[len(plain) // 2]
    print(f"record overhead: {best_plain:.0f} -> {best_tap:.0f} frames/s with a Recorder tap ({pct}%; fastest of "
          f"{pairs} interleaved runs of {run_frames} frames each; medians {med_plain:.0f} -> {med_tap:.0f}, "
          f"{100.0 * (med_plain - med_tap) / med_plain:.1f}%); recorder wrote {stats.written} of "
          f"{stats.tapped} records, dropped {stats.dropped}")
    result["record_overhead_median_pct"] = round(100.0 * (med_plain - med_tap) / med_plain, 1)
    return pct


if __name__ == "__main__":
    main()
