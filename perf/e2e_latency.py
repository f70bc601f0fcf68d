"""End-to-end latency: the simulator sends a book frame → a strategy process sees that update in shared memory.

Sender: mdengine's simulator (Bybit linear BTCUSDT, orderbook.50 deltas) in this process. Its WebSocket
connection is instrumented so the time (time.time_ns()) is recorded right before each framed book message is
written to the socket (`transport.write`), keyed by the frame's update id `u`; the time of the `send()` call is
kept too (websockets' own framing and asyncio scheduling in the sender, printed as "sender overhead"). The wire
is real loopback TCP + WebSocket framing.

Also measured in the same run, as a floor: one bare TCP hop on loopback between two Python processes
(sender stamps then `send()`s; a receiver blocked in select / busy-polling `recv()` stamps on arrival),
with a third process spinning as the strategy would. No engine can beat that on this machine.

Paths measured, one after the other against the same simulator:
  spin      feed process (run_feed) → segment → strategy process in Client.wait(spin=True)
  spin_no_warm  the same with the feed's idle warm-up pass off (warm_interval_ms = 0): the warm-up's A/B
  blocking  same, Client.wait() sleeping with backoff (low CPU)
  baseline  what a user would otherwise build: a websocket-client reader process that parses each frame,
            applies it to a dict book through a callback (cryptofeed style) and fans it out over a
            multiprocessing.Queue to the strategy process, which blocks in queue.get().
The strategy records time.time_ns() when it sees an update id; latency = seen - sent for matching ids.

Usage: python perf/e2e_latency.py [--quick] [--seconds S] [--rate HZ]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import re
import sys
import time
import uuid

SYMBOL, NATIVE = "BTC/USDT:USDT", "BTCUSDT"
_U = re.compile(r'"u":(\d+)')
CTX = mp.get_context("spawn")


# ----------------------------------------------------------------------------- sender instrumentation
def instrument_sends(log: list) -> None:
    """Record (socket-write time_ns, send()-call time_ns, text) for every book frame the simulator sends.

    The first stamp is taken in websockets' `send_data`, right before `transport.write()` puts the framed bytes
    on the socket: from there on the time is the engine's (and the kernel's). The second is taken when the
    simulator calls `send()`; the difference is websockets' own framing and asyncio overhead in the sender.
    """
    from websockets.asyncio.connection import Connection
    from websockets.asyncio.server import ServerConnection

    original_send, original_send_data = ServerConnection.send, Connection.send_data
    pending: list = []  # (send-call time, text) of the book frame being framed now

    async def send(self, message, *args, **kwargs):
        if isinstance(message, str) and message.startswith('{"topic":"orderbook.'):
            pending.append((time.time_ns(), message))
        try:
            return await original_send(self, message, *args, **kwargs)
        finally:
            pending.clear()

    def send_data(self) -> None:
        if pending:
            called, text = pending.pop()
            log.append((time.time_ns(), called, text))
        original_send_data(self)

    ServerConnection.send = send
    Connection.send_data = send_data


def sent_times(log: list, start_ns: int, end_ns: int, at: int = 0) -> dict[int, int]:
    """update id -> sender stamp (`at` 0: socket write, 1: send() call)."""
    out: dict[int, int] = {}
    for entry in log:
        t = entry[at]
        if start_ns <= t <= end_ns:
            m = _U.search(entry[2])
            if m:
                out.setdefault(int(m.group(1)), t)
    return out


# ----------------------------------------------------------------------------- strategy processes
def shm_strategy(namespace: str, spin: bool, seconds: float, conn) -> None:
    from mdengine.client import Client

    c = Client(namespace)
    book = c.book("bybit", SYMBOL)
    top_full, wait, clock = book.reader.top_full, c.wait, time.time_ns
    streams = [book]
    seen, last = [], None
    conn.send("ready")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if wait(0.2, streams, spin=spin):
            h = top_full()
            t = clock()
            if h[0] != last:
                seen.append((h[0], t, h[2], h[3]))  # update id, seen, feed recv_ts, feed pub_ts
                last = h[0]
    conn.send(seen)


def ws_reader(ws_url: str, queue, seconds: float) -> None:
    """The baseline's market-data process: websocket-client, parse, callback, Queue fan-out."""
    import orjson
    import websocket

    book = {"bids": {}, "asks": {}}

    def on_book(msg: dict) -> None:  # cryptofeed-style callback: keep a book, hand the update on
        data = msg["data"]
        if msg["type"] == "snapshot":
            book["bids"].clear()
            book["asks"].clear()
        for side, key in (("bids", "b"), ("asks", "a")):
            levels = book[side]
            for px, qty in data[key]:
                if float(qty) == 0:
                    levels.pop(float(px), None)
                else:
                    levels[float(px)] = float(qty)
        bid = max(book["bids"]) if book["bids"] else None
        ask = min(book["asks"]) if book["asks"] else None
        queue.put((data["u"], bid, ask))

    ws = websocket.create_connection(f"{ws_url}/v5/public/linear", timeout=5)
    ws.send(json.dumps({"op": "subscribe", "args": [f"orderbook.50.{NATIVE}"]}))
    end = time.monotonic() + seconds
    next_ping = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            text = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        msg = orjson.loads(text)
        if str(msg.get("topic", "")).startswith("orderbook."):
            on_book(msg)
        if time.monotonic() > next_ping:
            ws.send('{"op":"ping"}')
            next_ping += 10
    ws.close()
    queue.put(None)


def queue_strategy(queue, conn) -> None:
    seen = []
    conn.send("ready")
    while True:
        item = queue.get()
        t = time.time_ns()
        if item is None:
            break
        seen.append((item[0], t))
    conn.send(seen)


# ----------------------------------------------------------------------------- measurement
def latencies(seen: list, sent: dict[int, int]) -> list[float]:
    return sorted((s[1] - sent[s[0]]) / 1e3 for s in seen if s[0] in sent)


def breakdown(seen: list, sent: dict[int, int]) -> str:
    """p50 of each leg: sender -> feed receive, feed receive -> publish, publish -> strategy sees it."""
    legs = [sorted((s[2] - sent[s[0]]) / 1e3 for s in seen if s[0] in sent),
            sorted((s[3] - s[2]) / 1e3 for s in seen), sorted((s[1] - s[3]) / 1e3 for s in seen)]
    return "p50 legs: wire {:.1f} us, feed {:.1f} us, read {:.1f} us".format(*(pct(x, 50) for x in legs))


def pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def run_shm_phase(namespace: str, spin: bool, seconds: float, log: list) -> tuple[list, dict[int, int], list[float]]:
    """One strategy process for `seconds`: what it saw, the matching send times, and the sender's overhead."""
    parent, child = CTX.Pipe()
    p = CTX.Process(target=shm_strategy, args=(namespace, spin, seconds, child))
    p.start()
    assert parent.poll(60) and parent.recv() == "ready"
    start = time.time_ns()
    assert parent.poll(seconds + 60)
    seen = parent.recv()
    p.join(10)
    sent = sent_times(log, start - 10**9, time.time_ns())
    called = sent_times(log, start - 10**9, time.time_ns(), at=1)
    overhead = [(sent[u] - called[u]) / 1e3 for u in sent if u in called]
    return seen, sent, overhead


def run_baseline(ws_url: str, seconds: float, log: list) -> tuple[list[float], int]:
    queue = CTX.Queue()
    parent, child = CTX.Pipe()
    strat = CTX.Process(target=queue_strategy, args=(queue, child))
    strat.start()
    assert parent.poll(60) and parent.recv() == "ready"
    start = time.time_ns()
    reader = CTX.Process(target=ws_reader, args=(ws_url, queue, seconds))
    reader.start()
    assert parent.poll(seconds + 60)
    seen = parent.recv()
    reader.join(10)
    strat.join(10)
    return latencies(seen, sent_times(log, start, time.time_ns())), len(seen)


# ----------------------------------------------------------------------------- the loopback floor
def _spinner(stop) -> None:
    while not stop.is_set():
        pass


def _hop_receiver(port: int, busy: bool, count: int, conn) -> None:
    import select
    import socket

    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(not busy)
    lat: list[float] = []
    buf = b""
    while len(lat) < count:
        if busy:
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
        else:
            select.select([s], [], [])
            data = s.recv(4096)
        now = time.time_ns()
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        lat.extend((now - int(x)) / 1e3 for x in lines if x)
    conn.send(sorted(lat))


def loopback_floor(busy: bool, rate: float, count: int) -> list[float]:
    """One-way latency of a bare TCP hop between two Python processes (a third one spinning, as the strategy
    does): the sender stamps time_ns() and send()s a line; the receiver stamps when recv() returns it."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    parent, child = CTX.Pipe()
    stop = CTX.Event()
    spinner = CTX.Process(target=_spinner, args=(stop,), daemon=True)
    receiver = CTX.Process(target=_hop_receiver, args=(server.getsockname()[1], busy, count, child), daemon=True)
    spinner.start()
    receiver.start()
    try:
        sock, _ = server.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count + 10):
            time.sleep(1.0 / rate)
            try:
                sock.send(b"%d\n" % time.time_ns())
            except OSError:
                break
            if parent.poll(0):
                break
        assert parent.poll(30)
        return parent.recv()
    finally:
        stop.set()
        for p in (receiver, spinner):
            p.join(5)
            if p.is_alive():
                p.kill()
        server.close()


def cold_work_gauge(gap_s: float = 0.01, n: int = 150) -> tuple[float, float]:
    """p50 µs of one fixed piece of Python work (perf/cold_gap.py's: parse 40 levels, fill a dict, sort) run
    back to back, and run once every `gap_s` (what a feed sees at 100 frames/s): how much this machine
    penalises work that comes after an idle gap (caches and TLBs refilled, vCPU rescheduled)."""
    from cold_gap import run  # perf/ is on sys.path: this file runs as a script from there

    run(0.0, n, sleep=True)
    return run(0.0, n, sleep=True)[0], run(gap_s, n, sleep=True)[0]


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def wait_live(namespace: str) -> None:
    from mdengine.client import Client

    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(namespace) as c:
                if c.top("bybit", SYMBOL).state == "live":
                    return
        except Exception:  # noqa: BLE001 - the feed is still starting
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the feed never published a live book")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short phases (whole run well under 60 s)")
    ap.add_argument("--seconds", type=float, help="seconds per phase (default 20, quick 4)")
    ap.add_argument("--rate", type=float, default=100.0, help="book updates per second sent by the simulator")
    ap.add_argument("--sched-slice-us", type=float, default=None,
                    help="the feed's sched_slice_us (default: the config default; 0: the kernel's own slice)")
    ap.add_argument("--warm-interval-ms", type=float, default=None,
                    help="the feed's warm_interval_ms (default: the config default; spin_no_warm always uses 0)")
    args = ap.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 20.0)

    from mdengine.book import IMPLEMENTATION as book_implementation
    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges import get_adapter
    from mdengine.feed.process import run_feed
    from mdengine.sim import Simulator
    from mdengine.store import shm

    log: list = []
    instrument_sends(log)
    sim = Simulator(seed=1, rate_hz=args.rate, exchanges=["bybit"], symbols=[SYMBOL]).start()
    print(f"# e2e latency: simulator (bybit linear {NATIVE}, {args.rate:.0f} book frames/s) -> strategy process; "
          f"{seconds:.0f} s per phase; cpus={os.cpu_count()} python={sys.version.split()[0]}")
    results: dict[str, tuple[list[float], int]] = {}
    # (phase, feed's (busy_poll_s, warm_interval_ms), strategy spins, seconds). The default feed blocks in select
    # between frames and warms its frame path every 1 ms while idle; spin_no_warm is the same feed without the
    # warm-up, its A/B: the two alternate in chunks (A B B A [A B]), each chunk on a freshly started feed, so a
    # drift of the host's speed during the run falls on both.
    warm_ms = args.warm_interval_ms if args.warm_interval_ms is not None else ExchangeConfig("bybit").warm_interval_ms
    default, no_warm = (0.0, warm_ms), (0.0, 0.0)
    chunks = 2 if args.quick else 3
    on, off = ("spin", default), ("spin_no_warm", no_warm)
    ab = [on, off, off, on, on, off][:2 * chunks]
    schedule = [(name, variant, True, seconds / chunks) for name, variant in ab]
    schedule += [("blocking", default, False, seconds), ("spin_busy_poll", (3600.0, warm_ms), True, seconds)]
    pooled: dict[str, tuple[list, dict, list]] = {}
    feed_cpu: dict[str, list[float]] = {}  # phase -> [cpu seconds, wall seconds]
    try:
        for variant, group in itertools.groupby(schedule, key=lambda p: p[1]):
            busy_poll_s, variant_warm_ms = variant
            namespace = "p" + uuid.uuid4().hex[:8]
            cfg = ExchangeConfig(name="bybit", symbols=[SYMBOL], markets=["linear"], book_depth=20,
                                 book_capacity=20, trades=False, busy_poll_s=busy_poll_s,
                                 warm_interval_ms=variant_warm_ms,
                                 endpoints=get_adapter("bybit").sim_endpoints(sim.endpoints()))
            if args.sched_slice_us is not None:
                cfg.sched_slice_us = args.sched_slice_us
            feed = CTX.Process(target=run_feed, args=(namespace, cfg), kwargs={"log_level": "WARNING"}, daemon=True)
            feed.start()
            try:
                wait_live(namespace)
                for name, _, spin, phase_s in group:
                    cpu0, t0 = _cpu_s(feed.pid), time.monotonic()
                    seen, sent, overhead = run_shm_phase(namespace, spin, phase_s, log)
                    used = feed_cpu.setdefault(name, [0.0, 0.0])
                    used[0] += _cpu_s(feed.pid) - cpu0
                    used[1] += time.monotonic() - t0
                    acc = pooled.setdefault(name, ([], {}, []))
                    acc[0].extend(seen)
                    acc[1].update(sent)
                    acc[2].extend(overhead)
            finally:
                feed.terminate()
                feed.join(10)
                if feed.is_alive():
                    feed.kill()
                for name in shm.list_names(namespace):
                    shm.unlink(name)
        for name in ("spin", "blocking", "spin_no_warm", "spin_busy_poll"):
            seen, sent, overhead = pooled[name]
            print(f"# {name}: {breakdown(seen, sent)}; sender overhead (send() call -> socket write) p50 "
                  f"{pct(sorted(overhead), 50):.1f} us, not counted")
            results[name] = (latencies(seen, sent), len(seen))
        results["baseline"] = run_baseline(sim.endpoints()["bybit"][0], seconds, log)
    finally:
        sim.stop()
    hops = max(100, int(seconds * args.rate / 2))
    for name, busy in (("floor_blocking_hop", False), ("floor_busy_hop", True)):
        lat = loopback_floor(busy, args.rate, hops)
        results[name] = (lat, len(lat))

    hot_us, gap_us = cold_work_gauge(1.0 / args.rate)
    print(f"# cold-work gauge: a fixed piece of Python work takes {hot_us:.1f} us back to back and {gap_us:.1f} us "
          f"when run once every {1000 / args.rate:.0f} ms ({gap_us / hot_us:.1f}x); every process on the path pays "
          "that at low rates")
    summary = {"sender": "mdengine.sim (bybit orderbook.50 deltas over loopback WebSocket), stamped at the socket "
               "write", "rate_hz": args.rate, "seconds_per_phase": seconds, "cpus": os.cpu_count(),
               "cold_work_hot_us": round(hot_us, 1), "cold_work_after_gap_us": round(gap_us, 1),
               "feed_sched_slice_us": cfg.sched_slice_us, "feed_warm_interval_ms": warm_ms,
               "book_implementation": book_implementation}
    cpu_pct = {name: 100.0 * cpu / wall for name, (cpu, wall) in feed_cpu.items()}
    for name, v in cpu_pct.items():
        summary[f"feed_cpu_pct_{name}"] = round(v, 1)
    print("# feed process CPU (% of one core) during each phase: "
          + ", ".join(f"{k} {v:.1f}" for k, v in cpu_pct.items()))
    for name, (lat, n_seen) in results.items():
        print(f"{name:18s} n={len(lat):5d} (seen {n_seen:5d})  p50={pct(lat, 50):8.1f} us  p90={pct(lat, 90):8.1f} us  "
              f"p99={pct(lat, 99):8.1f} us  max={lat[-1] if lat else float('nan'):9.1f} us")
        summary[f"{name}_n"] = len(lat)
        for p in (50, 90, 99):
            summary[f"{name}_p{p}_us"] = round(pct(lat, p), 1)
    print("# floor_*_hop: a bare Python TCP hop on loopback (no WebSocket, no parsing, no book, no shared memory) "
          "with one more process spinning; spin_busy_poll is the feed with busy_poll_s set (a core of its own); "
          "spin_no_warm is the default feed without its idle warm-up pass")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
