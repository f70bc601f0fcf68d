"""Side-by-side throughput: mdengine (adapter + LocalBook + shared-memory store) vs cryptofeed, same frames.

Both sides get the same WebSocket text frames (book + trade channels only) and the same REST snapshot
bodies, offline. cryptofeed runs in its own venv (perf/.peer-venv, see perf/_cryptofeed_peer.py) and
handles each frame with its exchange's `message_handler` coroutine, books delivered to a trivial
callback; mdengine handles each frame with its adapter's `on_frame` and publishes every book change
through the engine's Publisher (`publish_top(book.pack_top)`) and every trade batch (`append_trades`) into a
real segment.
Each repetition replays a workload into fresh instances (so sequence ids stay valid); runs alternate
A B A B over several rounds and the median is reported. See perf/README.md for fairness notes.

Usage:  python perf/compare_cryptofeed.py [--quick] [--setup] [--rounds N] [--plot out.png]
Last line of output: one JSON object (`ratio_vs_cryptofeed` = mdengine frames/s / cryptofeed frames/s).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_SCRIPT = HERE / "_cryptofeed_peer.py"
CRYPTOFEED_VERSION = "2.4.1"
RECORDINGS = HERE.parent / "tests" / "data"  # copies of the real recordings (tests/data/RECORDINGS.md)
BINANCE_RECORDING = "binance-spot-2021-10-12.jsonl"
OKX_RECORDING = "okx-2022-05-13.jsonl"
BOOK_DEPTH = 50  # levels mdengine publishes per book change (store capacity)
# cryptofeed's Binance feed reads aggTrade; mdengine's defaults to @trade, so it is told to read aggTrade too.
ADAPTER_OPTIONS: dict[str, dict[str, Any]] = {"binance": {"trade_stream": "aggTrade"}}

# Instruments in the recordings (neutral descriptors; the peer turns them into cryptofeed listings).
_REC_INSTRUMENTS = {
    "NKNUSDT": ("NKN", "USDT", "spot", "0.0001"), "BLZETH": ("BLZ", "ETH", "spot", "0.00000001"),
    "LRCBTC": ("LRC", "BTC", "spot", "0.00000001"), "RUNEEUR": ("RUNE", "EUR", "spot", "0.001"),
    "BTC-USD-220527": ("BTC", "USD", "futures", "0.1"), "UNI-USD-SWAP": ("UNI", "USD", "perpetual", "0.001"),
    "BTC-USDT": ("BTC", "USDT", "spot", "0.1"),
}


# ----------------------------------------------------------------------------- workloads (pure)
@dataclass
class Workload:
    """Frames both sides replay. `frames` are timed; `preamble` (acks) is delivered untimed before them."""

    name: str
    exchange: str  # "binance" | "okx"
    instruments: list[dict[str, str]]  # {"native", "base", "quote", "kind", "tick"}
    frames: list[str]
    http: dict[str, str] = field(default_factory=dict)  # native symbol -> REST depth snapshot body
    preamble: list[str] = field(default_factory=list)
    source: str = ""
    checksums: bool = False  # frames carry CRC32 checksums: cryptofeed runs with checksum_validation=True


def load_recording(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Events of a recording JSON Lines file (tests/data), in order; raises ValueError naming a bad line."""
    events = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from None
            if not isinstance(ev, dict) or ev.get("kind") not in ("connect", "send", "recv", "http"):
                raise ValueError(f"{path}:{n}: not a recording event: {line[:80]!r}")
            events.append(ev)
    return events


def _instrument(native: str) -> dict[str, str]:
    base, quote, kind, tick = _REC_INSTRUMENTS[native]
    return {"native": native, "base": base, "quote": quote, "kind": kind, "tick": tick}


def binance_frame_kind(text: str) -> str | None:
    """"book" / "trade" for a combined-stream diff-depth / aggTrade frame, None for anything else."""
    stream = json.loads(text).get("stream", "")
    if "@depth" in stream:
        return "book"
    if stream.endswith("@aggTrade"):
        return "trade"
    return None


def okx_frame_kind(text: str) -> str | None:
    """"book" / "trade" for an OKX books / trades push, None for acks, tickers and the rest."""
    msg = json.loads(text)
    if "event" in msg or "data" not in msg:
        return None
    return {"books": "book", "trades": "trade"}.get(msg.get("arg", {}).get("channel"))


def recorded_binance(path: str | os.PathLike) -> Workload:
    frames, http, natives = [], {}, []
    for ev in load_recording(path):
        if ev["kind"] == "recv" and binance_frame_kind(ev["data"]):
            frames.append(ev["data"])
            native = json.loads(ev["data"])["stream"].split("@")[0].upper()
            if native not in natives:
                natives.append(native)
        elif ev["kind"] == "http" and "/depth" in ev["url"]:
            sym = ev["url"].split("symbol=")[1].split("&")[0]
            http[sym] = ev["data"]
    missing = set(natives) - set(http)
    if missing:
        raise ValueError(f"{path}: no REST snapshot for {sorted(missing)}")
    return Workload("binance-recorded", "binance", [_instrument(n) for n in natives], frames, http,
                    source=os.path.basename(path))


def recorded_okx(path: str | os.PathLike) -> Workload:
    frames, preamble, natives = [], [], []
    for ev in load_recording(path):
        if ev["kind"] != "recv":
            continue
        kind = okx_frame_kind(ev["data"])
        if kind is None:
            msg = json.loads(ev["data"])
            if msg.get("event") == "subscribe" and msg["arg"]["channel"] in ("books", "trades") and not frames:
                preamble.append(ev["data"])
            continue
        frames.append(ev["data"])
        native = json.loads(ev["data"])["arg"]["instId"]
        if native not in natives:
            natives.append(native)
    return Workload("okx-recorded", "okx", [_instrument(n) for n in natives], frames, preamble=preamble,
                    source=os.path.basename(path), checksums=True)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def simulated(exchange: str, steps: int, seed: int = 7, okx_checksum: str = "crc32") -> Workload:
    """`steps` model steps per symbol (BTC spot + ETH) rendered by mdengine.sim's pure wire formats.

    okx_checksum: "crc32" (legacy frames, like the 2022 recording) or "zero" (OKX today: seqId chain only).
    """
    from mdengine.sim.config import SimConfig
    from mdengine.sim.formats.binance import BinanceSpot
    from mdengine.sim.formats.okx import OkxVenue
    from mdengine.sim.listings import select

    t0 = 1_700_000_000_000
    if exchange == "binance":
        insts = select("binance-spot", ["BTCUSDT", "ETHUSDT"])
        venue = BinanceSpot(insts, seed, SimConfig(rate_hz=0))
        streams = "/".join(f"{i.native.lower()}@depth@100ms/{i.native.lower()}@aggTrade" for i in insts)
        session = venue.session("/stream", {"streams": streams})
        http = {i.native: _dumps(venue.rest("/api/v3/depth", {"symbol": i.native, "limit": "1000"})[1])
                for i in insts}
        preamble: list[str] = []
        frames: list[str] = []
    else:
        insts = select("okx", ["BTC-USDT", "ETH-USDT-SWAP"])
        venue = OkxVenue(insts, seed, SimConfig(rate_hz=0, okx_checksum=okx_checksum))
        session = venue.session("/ws/v5/public", {})
        args = [{"channel": ch, "instId": i.native} for i in insts for ch in ("books", "trades")]
        reply = session.handle(_dumps({"op": "subscribe", "args": args}))
        http = {}
        preamble = [_dumps(o.obj) for o in reply.frames if o.kind == "ctl"]
        frames = [_dumps(o.obj) for o in reply.frames if o.kind != "ctl"]  # the books snapshots
    for n in range(steps):
        for key, model in venue.models.items():
            st = model.step(t0 + 50 * n)
            frames += [_dumps(o.obj) for o in session.step(key, model, st)]
    kinds = {"spot": "spot", "linear": "perpetual", "inverse": "perpetual"}
    descr = [{"native": i.native, "base": i.base, "quote": i.quote, "kind": kinds[i.kind], "tick": i.tick}
             for i in insts]
    crc = exchange == "okx" and okx_checksum == "crc32"
    name = f"{exchange}-simulated" + ("-seqid" if exchange == "okx" and not crc else "")
    return Workload(name, exchange, descr, frames, http, preamble, source=f"mdengine.sim seed={seed} "
                    f"steps={steps}/symbol" + (f" okx_checksum={okx_checksum}" if exchange == "okx" else ""),
                    checksums=crc)


def build_workloads(recordings: Path, sim_steps: int) -> list[Workload]:
    ws = [recorded_binance(recordings / BINANCE_RECORDING), recorded_okx(recordings / OKX_RECORDING)]
    if sim_steps:
        ws += [simulated("binance", sim_steps), simulated("okx", sim_steps),
               simulated("okx", sim_steps, okx_checksum="zero")]
    return ws


def caveat_workloads(base: list[Workload]) -> list[Workload]:
    """The OKX workloads whose frames carry CRC32 checksums, with cryptofeed at its defaults (checksum_validation
    off; mdengine still validates every checksum): the ratio against cryptofeed's default settings."""
    return [replace(w, name=w.name + "/cf-default", checksums=False) for w in base if w.checksums]


def steady_ratio(runs: dict[str, list[dict]], w: Workload) -> float | None:
    """The frames/s ratio on steady frames only: each repetition on each side without its len(w.http) + 1 slowest
    frames, the ones that carry the REST snapshots (cryptofeed fetches and applies each inside the first frame of
    its symbol; mdengine takes the answers inside its first frame and applies each when its symbol's diffs bridge
    it). The same count is dropped on both sides. Median over rounds."""
    n, k = len(w.frames), len(w.http) + 1
    if k == 1:
        return None

    def fps(lat: list[int]) -> float:
        t = c = 0
        for i in range(0, len(lat), n):
            rep = sorted(lat[i:i + n])[:-k]
            t, c = t + sum(rep), c + len(rep)
        return c / t

    ratios = [fps(md["lat_ns"]) / fps(cf["lat_ns"]) for md, cf in zip(runs["mdengine"], runs["cryptofeed"],
                                                                     strict=True)]
    return round(statistics.median(ratios), 2)


# ----------------------------------------------------------------------------- statistics (pure)
def percentiles(samples: list[int], qs: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """Nearest-rank percentiles of per-frame times, in µs."""
    if not samples:
        return {}
    s = sorted(samples)
    return {f"p{q:g}": s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))] / 1e3 for q in qs}


def summarize(runs: dict[str, dict[str, list[dict]]], workloads: list[Workload]) -> dict[str, Any]:
    """Medians over rounds. `runs[workload][side]` is a list of {"frames", "seconds"} (side: mdengine|cryptofeed)."""
    out: dict[str, Any] = {"workloads": {}, "exchanges": {}}
    sides = ("mdengine", "cryptofeed")
    rounds = min(len(runs[w.name][s]) for w in workloads for s in sides)

    def fps(names: list[str], side: str, r: int) -> float:
        frames = sum(runs[n][side][r]["frames"] for n in names)
        return frames / sum(runs[n][side][r]["seconds"] for n in names)

    def figure(names: list[str]) -> dict[str, Any]:
        md = statistics.median(fps(names, "mdengine", r) for r in range(rounds))
        cf = statistics.median(fps(names, "cryptofeed", r) for r in range(rounds))
        ratios = [fps(names, "mdengine", r) / fps(names, "cryptofeed", r) for r in range(rounds)]
        return {"mdengine_fps": round(md), "cryptofeed_fps": round(cf), "ratio": round(statistics.median(ratios), 2),
                "frames_per_run": sum(runs[n]["mdengine"][0]["frames"] for n in names)}

    for w in workloads:
        out["workloads"][w.name] = figure([w.name])
    for ex in sorted({w.exchange for w in workloads}):
        out["exchanges"][ex] = figure([w.name for w in workloads if w.exchange == ex])
    total = figure([w.name for w in workloads])
    per = [out["workloads"][w.name]["ratio"] for w in workloads]
    out["overall"] = total
    out["ratio_vs_cryptofeed"] = total["ratio"]
    out["ratio_geomean"] = round(math.exp(sum(math.log(r) for r in per) / len(per)), 2)
    out["rounds"] = rounds
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


# ----------------------------------------------------------------------------- mdengine side
_QUIET_LOG = logging.getLogger("mdengine.perf.compare")
_QUIET_LOG.setLevel(logging.ERROR)


class MdengineSide:
    """Replays workloads through mdengine's adapter into a SegmentWriter in a throwaway namespace."""

    def __init__(self, depth: int = BOOK_DEPTH, lane: bool = True) -> None:
        from mdengine.store import SegmentWriter, shm

        self.lane = lane  # the feed's C fast lane in front of the adapter (as a feed process runs it)
        self.shm = shm
        self.namespace = "pf" + uuid.uuid4().hex[:8]
        self.depth = depth
        self.writers: dict[str, Any] = {}
        self._writer_cls = SegmentWriter
        self.counts: dict[str, dict[str, int]] = {}
        self.stage_ns = {"publish": 0}

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()
        for name in self.shm.list_names(self.namespace):
            self.shm.unlink(name)

    def __enter__(self) -> MdengineSide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writer(self, exchange: str):
        if exchange not in self.writers:
            self.writers[exchange] = self._writer_cls(self.namespace, exchange, create=True, max_symbols=16,
                                                      book_capacity=self.depth, trade_capacity=4096)
            self.writers[exchange].set_running()
        return self.writers[exchange]

    @staticmethod
    def instruments(w: Workload) -> list:
        from mdengine.store.layout import MarketKind
        from mdengine.symbols import Instrument, unified_symbol

        out = []
        for d in w.instruments:
            native, kind = d["native"], d["kind"]
            if w.exchange == "binance":
                market = "spot"
            else:
                market = {"spot": "SPOT", "perpetual": "SWAP", "futures": "FUTURES"}[kind]
            inverse = kind != "spot" and d["quote"] == "USD"
            mk = MarketKind.SPOT if kind == "spot" else (MarketKind.INVERSE if inverse else MarketKind.LINEAR)
            settle = "" if kind == "spot" else (d["base"] if inverse else d["quote"])
            expiry = native.rsplit("-", 1)[1] if kind == "futures" else ""
            out.append(Instrument(w.exchange, market, native, unified_symbol(d["base"], d["quote"], mk, settle, expiry),
                                  mk, d["base"], d["quote"], settle, float(d["tick"])))
        return out

    def _instance(self, w: Workload, counts: dict[str, int] | None, stage: str = "full"):
        """A fresh adapter subscribed to the workload's symbols, with its conn and its event handler."""
        from mdengine.events import FetchRest, OpenConnection
        from mdengine.exchanges import get_adapter
        from mdengine.feed import fastlane
        from mdengine.symbols import InstrumentIndex

        insts = self.instruments(w)
        writer = self._writer(w.exchange)
        adapter = get_adapter(w.exchange)(InstrumentIndex(insts), book_depth=self.depth,
                                            **ADAPTER_OPTIONS.get(w.exchange, {}))
        # The engine's own publisher (store writes, counters, header-only publishes when the top levels
        # did not change): the same work a feed process does per event.
        from mdengine.feed.publisher import Publisher

        publisher = Publisher(writer, w.exchange, depth=self.depth, log=_QUIET_LOG)
        slots = {i.key: publisher.add(i) for i in insts}
        events = [ev for i in insts for ev in adapter.subscribe(i)] + adapter.start()
        conns, pending = [], []
        while events:
            ev = events.pop(0)
            if isinstance(ev, OpenConnection):
                if ev.conn not in conns:
                    conns.append(ev.conn)
                    events += adapter.on_open(ev.conn)
            elif isinstance(ev, FetchRest):
                pending.append(ev)  # answered after the first frame, like cryptofeed's snapshot fetch
        if len(conns) != 1:
            raise RuntimeError(f"{w.name}: expected the adapter to open one connection, got {conns}")
        handle = self._handler(w, adapter, writer, slots, pending, counts, stage, publisher)
        # the frame path of a feed process: the C fast lane in front of the adapter, where it is built. The lane
        # returns no event for what it publishes itself, so the untimed counting run goes through the adapter.
        handle.on_frame = fastlane.attach(adapter, publisher) if self.lane and counts is None else adapter.on_frame
        handle.publisher = publisher
        for text in w.preamble:
            handle(handle.on_frame(conns[0], text, time.time_ns()))
        return adapter, conns[0], handle

    def _handler(self, w: Workload, adapter, writer, slots: dict, pending: list, counts: dict[str, int] | None,
                 stage: str = "full", publisher=None):
        """What a feed loop does with an adapter's events: hand books and trades to the engine's publisher,
        answer REST requests with the recorded body (the one cryptofeed gets), and nothing else."""
        from mdengine.events import BookChanged, FetchRest, TradesReceived

        on_event = publisher.on_event

        def handle(events: list) -> None:
            for ev in events:
                t = type(ev)
                if t is FetchRest:
                    pending.append(ev)
                elif t is BookChanged or t is TradesReceived:
                    on_event(ev)
                if counts is not None:
                    counts[t.__name__] = counts.get(t.__name__, 0) + 1

        acc = self.stage_ns  # --breakdown: ns spent in the publisher (packing the levels + store writes)
        clock = time.perf_counter_ns

        def handle_timed(events: list) -> None:
            for ev in events:
                t = type(ev)
                if t is BookChanged or t is TradesReceived:
                    t0 = clock()
                    on_event(ev)
                    acc["publish"] += clock() - t0
                elif t is FetchRest:
                    pending.append(ev)

        def answer() -> None:
            while pending:
                req = pending.pop(0)
                sym = req.url.split("symbol=")[1].split("&")[0] if "symbol=" in req.url else (req.key or ("", ""))[1]
                body = w.http.get(sym)
                if body is None:
                    raise RuntimeError(f"{w.name}: no recorded REST body for {req.url}")
                handle(adapter.on_rest(req.request_id, 200, body.encode(), time.time_ns()))

        h = handle if stage == "full" else handle_timed
        h.answer = answer  # type: ignore[attr-defined]
        h.pending = pending  # type: ignore[attr-defined]
        return h

    def run(self, w: Workload, reps: int, count: bool = False, stage: str = "full") -> dict[str, Any]:
        """Replay `w` into `reps` fresh adapters; the timed region is frame handling (incl. REST answers).

        stage: "full", or "timed" (also accumulates the time spent in the publisher in `stage_ns`).
        """
        counts = self.counts.setdefault(w.name, {}) if count else None
        instances = [self._instance(w, counts, stage) for _ in range(reps)]  # built outside the timed region
        frames = w.frames
        clock, now = time.perf_counter_ns, time.time_ns
        lat: list[int] = []
        start = clock()
        for _adapter, conn, handle in instances:
            on_frame, pending, answer = handle.on_frame, handle.pending, handle.answer
            for text in frames:
                t0 = clock()
                handle(on_frame(conn, text, now()))
                if pending:
                    answer()
                lat.append(clock() - t0)
        seconds = (clock() - start) / 1e9
        handled = 0
        for _adapter, _conn, handle in instances:
            lane = handle.publisher.lane
            handled += lane.stats()["handled"] if lane is not None else 0
            handle.publisher.close_lane()
        return {"ok": True, "frames": len(lat), "seconds": seconds, "lat_ns": lat, "lane_handled": handled}


def parse_only(w: Workload, reps: int) -> float:
    """Seconds to orjson-parse the workload's frames `reps` times (the floor under any adapter)."""
    import orjson

    loads, frames = orjson.loads, w.frames
    start = time.perf_counter()
    for _ in range(reps):
        for text in frames:
            loads(text)
    return time.perf_counter() - start


def breakdown(md: MdengineSide, w: Workload, reps: int, rounds: int) -> dict[str, float]:
    """Median µs per frame of mdengine's stages, and the fast lane against the Python path in the same process:
    `total` (the feed's frame path, lane in front), `lane_share` (frames the lane took), `publisher` (time in the
    Publisher for the events the lane left to the adapter), `python_path` (the same frames through adapter.on_frame
    and the Publisher alone, as before the lane) and `orjson_parse` (parsing alone, the floor of that path)."""
    rows = []
    n = reps * len(w.frames)
    lane = md.lane
    for _ in range(rounds):
        parse = parse_only(w, reps) * 1e6 / n
        md.stage_ns.update(publish=0)
        res = md.run(w, reps, stage="timed")
        total = res["seconds"] * 1e6 / n
        publish = md.stage_ns["publish"] / 1e3 / n
        md.lane = False
        try:
            python = md.run(w, reps)["seconds"] * 1e6 / n
        finally:
            md.lane = lane
        rows.append({"total": total, "lane_share": res["lane_handled"] / n, "publisher": publish,
                     "python_path": python, "orjson_parse": parse})
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}


# ----------------------------------------------------------------------------- cryptofeed side
def setup_peer(quiet: bool = False, plot_deps: bool = False) -> None:
    """Create perf/.peer-venv with cryptofeed (PyPI is the only network access this script makes)."""
    if not PEER_PYTHON.exists():
        subprocess.run([sys.executable if sys.version_info[:2] == (3, 11) else "python3.11", "-m", "venv",
                        str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_PYTHON), "-m", "pip", "install", *(["-q"] if quiet else []),
                    f"cryptofeed=={CRYPTOFEED_VERSION}", *(["matplotlib"] if plot_deps else [])], check=True)


def peer_ready() -> bool:
    if not PEER_PYTHON.exists():
        return False
    probe = subprocess.run([str(PEER_PYTHON), "-c", "import cryptofeed, importlib.metadata as m; "
                            "print(m.version('cryptofeed'))"], capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == CRYPTOFEED_VERSION


class PeerSide:
    """The long-lived cryptofeed worker (perf/_cryptofeed_peer.py in the peer venv), JSON lines over pipes."""

    def __init__(self, workloads_path: str) -> None:
        self.proc = subprocess.Popen([str(PEER_PYTHON), str(PEER_SCRIPT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._call({"cmd": "load", "path": workloads_path})

    def _call(self, req: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"cryptofeed peer exited (code {self.proc.wait()})")
        res = json.loads(line)
        if not res.get("ok"):
            raise RuntimeError(f"cryptofeed peer failed on {req}: {res.get('error')}")
        return res

    def run(self, w: Workload, reps: int) -> dict[str, Any]:
        return self._call({"cmd": "run", "workload": w.name, "reps": reps})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PeerSide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- driver
def _reps_for(t_md: float, t_cf: float, target: float) -> int:
    """Repetitions so that the slower side's run lasts about `target` seconds."""
    return max(1, round(target / max(t_md, t_cf, 1e-6)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and shorter runs (< 60 s)")
    ap.add_argument("--setup", action="store_true", help="only install cryptofeed into perf/.peer-venv")
    ap.add_argument("--plot-deps", action="store_true", help="with --setup: also install matplotlib there")
    ap.add_argument("--rounds", type=int, default=None, help="A/B rounds (default 7, quick 3)")
    ap.add_argument("--run-seconds", type=float, default=None, help="target length of one run (default 1.0)")
    ap.add_argument("--sim-steps", type=int, default=None, help="model steps per symbol in simulated workloads")
    ap.add_argument("--depth", type=int, default=BOOK_DEPTH, help="levels mdengine publishes per book change")
    ap.add_argument("--breakdown", action="store_true", help="also time mdengine's stages")
    ap.add_argument("--caveats", action="store_true", help="also measure the OKX workloads with cryptofeed's default "
                    "settings (checksum validation off) and the steady-frame ratio of snapshot-carrying workloads")
    ap.add_argument("--recordings", type=Path, default=RECORDINGS)
    ap.add_argument("--latency-json", type=Path, default=None, help="write per-frame latency samples here")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of latency distributions (needs matplotlib)")
    args = ap.parse_args(argv)

    if args.setup:
        setup_peer(plot_deps=args.plot_deps)
        print(json.dumps({"setup": "ok", "cryptofeed": CRYPTOFEED_VERSION, "venv": str(PEER_VENV)}))
        return 0
    if not peer_ready():
        print(f"installing cryptofeed {CRYPTOFEED_VERSION} into {PEER_VENV} (one time) ...", flush=True)
        setup_peer(quiet=True)

    rounds = args.rounds or (3 if args.quick else 7)
    target = args.run_seconds or (0.4 if args.quick else 1.0)
    sim_steps = args.sim_steps if args.sim_steps is not None else (500 if args.quick else 2000)
    started = datetime.now(UTC)
    base = build_workloads(args.recordings, sim_steps)
    extra = caveat_workloads(base) if args.caveats else []
    workloads = base + extra

    with tempfile.TemporaryDirectory(prefix="mde-cmp-") as tmp:
        spec = os.path.join(tmp, "workloads.json")
        with open(spec, "w", encoding="utf-8") as fh:
            json.dump({"workloads": [asdict(w) for w in workloads]}, fh)
        with MdengineSide(args.depth) as md, PeerSide(spec) as cf:
            reps = {}
            for w in workloads:  # warm-up run, also sizes the runs
                a, b = md.run(w, 1), cf.run(w, 1)
                reps[w.name] = _reps_for(a["seconds"], b["seconds"], target)
            runs: dict[str, dict[str, list[dict]]] = {w.name: {"mdengine": [], "cryptofeed": []} for w in workloads}
            for _ in range(rounds):
                for w in workloads:
                    runs[w.name]["mdengine"].append(md.run(w, reps[w.name]))
                    runs[w.name]["cryptofeed"].append(cf.run(w, reps[w.name]))
            for w in workloads:  # one untimed repetition, for the event counts printed below
                md.run(w, 1, count=True)
            counts = md.counts
            stages = {w.name: breakdown(md, w, reps[w.name], rounds) for w in workloads} if args.breakdown else {}
            peer_info = cf.info

    res = summarize(runs, base)  # the headline: the caveat workloads are reported beside it, not in it
    caveats: dict[str, Any] = {}
    if args.caveats:
        caveats = {"cf_default_ratio": {w.name: summarize(runs, [w])["overall"]["ratio"] for w in extra},
                   "checksum_on_ratio": {w.name: res["workloads"][w.name]["ratio"] for w in base if w.checksums},
                   "steady_frame_ratio": {w.name: steady_ratio(runs[w.name], w) for w in base if w.http},
                   "snapshot_heavy_ratio": {w.name: res["workloads"][w.name]["ratio"] for w in base if w.http}}
    latency = {w.name: {side: percentiles([x for r in runs[w.name][side] for x in r["lat_ns"]])
                        for side in ("mdengine", "cryptofeed")} for w in workloads}
    from mdengine import __version__ as md_version
    from mdengine.book import IMPLEMENTATION as book_implementation

    versions = {"mdengine": md_version, "book_implementation": book_implementation,
                "cryptofeed": peer_info["cryptofeed"], "order_book": peer_info["order_book"],
                "python_mdengine": platform.python_version(), "python_cryptofeed": peer_info["python"]}
    settings = {"book_depth_published": args.depth, "cryptofeed_max_depth": 0,
                "cryptofeed_checksum_validation": {w.name: w.checksums for w in workloads},
                "cryptofeed_cross_check": False, "frames": "book + trade channels only",
                "repetition": "fresh instances per repetition (snapshot re-delivered)"}
    cmd = " ".join(["python perf/compare_cryptofeed.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"mdengine vs cryptofeed {versions['cryptofeed']} — {started:%Y-%m-%d %H:%M} UTC, "
          f"{machine()['nproc']} x {machine()['cpu']}, Python {versions['python_mdengine']}, "
          f"mdengine book code: {book_implementation}")
    print(f"{rounds} alternating rounds, run ≈ {target:g} s each, medians; command: {cmd}")
    print(f"{'workload':<20}{'frames/run':>11}{'mdengine f/s':>14}{'cryptofeed f/s':>16}{'ratio':>8}"
          f"{'md p50/p99 µs':>18}{'cf p50/p99 µs':>18}")
    for w in base:
        f, lat = res["workloads"][w.name], latency[w.name]
        print(f"{w.name:<20}{f['frames_per_run']:>11}{f['mdengine_fps']:>14,}{f['cryptofeed_fps']:>16,}"
              f"{f['ratio']:>7.2f}x{lat['mdengine']['p50']:>9.1f}/{lat['mdengine']['p99']:<8.1f}"
              f"{lat['cryptofeed']['p50']:>9.1f}/{lat['cryptofeed']['p99']:<8.1f}")
    for ex, f in res["exchanges"].items():
        print(f"{ex + ' (all)':<20}{'':>11}{f['mdengine_fps']:>14,}{f['cryptofeed_fps']:>16,}{f['ratio']:>7.2f}x")
    print(f"overall: mdengine {res['overall']['mdengine_fps']:,} f/s, cryptofeed {res['overall']['cryptofeed_fps']:,} "
          f"f/s -> ratio {res['ratio_vs_cryptofeed']:.2f}x (geometric mean of workloads {res['ratio_geomean']:.2f}x)")
    if caveats:
        for w in extra:
            base_name = w.name.split("/")[0]
            print(f"caveat: {base_name} with cryptofeed's defaults (no checksum validation): "
                  f"{caveats['cf_default_ratio'][w.name]:.2f}x (checksum validation on: "
                  f"{caveats['checksum_on_ratio'][base_name]:.2f}x)")
        for name, r in caveats["steady_frame_ratio"].items():
            print(f"caveat: {name} on steady frames (without the frames carrying REST snapshots): {r:.2f}x "
                  f"(all frames: {caveats['snapshot_heavy_ratio'][name]:.2f}x)")
    print(f"mdengine events per repetition: {counts}")
    for name, st in stages.items():
        print(f"mdengine stages, µs/frame, {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in st.items()))

    if args.latency_json or args.plot:
        lat_path = args.latency_json or Path(tempfile.gettempdir()) / f"mde-latency-{os.getpid()}.json"
        with open(lat_path, "w", encoding="utf-8") as fh:
            json.dump({w.name: {s: runs[w.name][s][-1]["lat_ns"] for s in ("mdengine", "cryptofeed")}
                       for w in workloads}, fh)
        if args.plot:
            args.plot.parent.mkdir(parents=True, exist_ok=True)
            plot = subprocess.run([str(PEER_PYTHON), str(HERE / "plot_latency.py"), str(lat_path), str(args.plot)],
                                  capture_output=True, text=True)
            print(plot.stdout.strip() or f"plot failed: {plot.stderr.strip()[-300:]}")
            if not args.latency_json:
                os.unlink(lat_path)

    result = {"benchmark": "compare_cryptofeed", "date": started.strftime("%Y-%m-%d"), "command": cmd,
              "ratio_vs_cryptofeed": res["ratio_vs_cryptofeed"], "ratio_geomean": res["ratio_geomean"],
              "mdengine_fps": res["overall"]["mdengine_fps"], "cryptofeed_fps": res["overall"]["cryptofeed_fps"],
              "exchanges": res["exchanges"], "workloads": res["workloads"], "latency_us": latency,
              "mdengine_stages_us_per_frame": stages, "caveats": caveats,
              "rounds": rounds, "reps": reps, "versions": versions, "settings": settings, "machine": machine()}
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
