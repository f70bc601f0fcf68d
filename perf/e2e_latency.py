"""End-to-end latency: the simulator sends a book frame → a strategy process sees that update in shared memory.

Sender: mdengine's simulator (Bybit linear BTCUSDT, orderbook.50 deltas) in this process. Its WebSocket
`send` is wrapped so the time (time.time_ns()) is recorded right before each frame goes to the socket,
keyed by the frame's update id `u`. The wire is real loopback TCP + WebSocket framing.

Paths measured, one after the other against the same simulator:
  spin      feed process (run_feed) → segment → strategy process in Client.wait(spin=True)
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
    """Record (time_ns, text) right before every book frame the simulator's WebSocket server sends."""
    from websockets.asyncio.server import ServerConnection

    original = ServerConnection.send

    async def send(self, message, *args, **kwargs):
        if isinstance(message, str) and message.startswith('{"topic":"orderbook.'):
            log.append((time.time_ns(), message))
        return await original(self, message, *args, **kwargs)

    ServerConnection.send = send


def sent_times(log: list, start_ns: int, end_ns: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for t, text in log:
        if start_ns <= t <= end_ns:
            m = _U.search(text)
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


def run_shm_phase(namespace: str, spin: bool, seconds: float, log: list) -> tuple[list[float], int]:
    parent, child = CTX.Pipe()
    p = CTX.Process(target=shm_strategy, args=(namespace, spin, seconds, child))
    p.start()
    assert parent.poll(60) and parent.recv() == "ready"
    start = time.time_ns()
    assert parent.poll(seconds + 60)
    seen = parent.recv()
    p.join(10)
    sent = sent_times(log, start - 10**9, time.time_ns())
    print(f"# {'spin' if spin else 'blocking'}: {breakdown(seen, sent)}")
    return latencies(seen, sent), len(seen)


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short phases (whole run well under 60 s)")
    ap.add_argument("--seconds", type=float, help="seconds per phase (default 20, quick 6)")
    ap.add_argument("--rate", type=float, default=100.0, help="book updates per second sent by the simulator")
    args = ap.parse_args()
    seconds = args.seconds or (6.0 if args.quick else 20.0)

    from mdengine.config import ExchangeConfig
    from mdengine.exchanges import get_adapter
    from mdengine.feed.process import run_feed
    from mdengine.sim import Simulator
    from mdengine.store import shm

    log: list = []
    instrument_sends(log)
    namespace = "p" + uuid.uuid4().hex[:8]
    sim = Simulator(seed=1, rate_hz=args.rate, exchanges=["bybit"], symbols=[SYMBOL]).start()
    cfg = ExchangeConfig(name="bybit", symbols=[SYMBOL], markets=["linear"], book_depth=20, book_capacity=20,
                         trades=False, endpoints=get_adapter("bybit").sim_endpoints(sim.endpoints()))
    feed = CTX.Process(target=run_feed, args=(namespace, cfg), kwargs={"log_level": "WARNING"}, daemon=True)
    print(f"# e2e latency: simulator (bybit linear {NATIVE}, {args.rate:.0f} book frames/s) -> strategy process; "
          f"{seconds:.0f} s per phase; cpus={os.cpu_count()} python={sys.version.split()[0]}")
    results = {}
    try:
        feed.start()
        from mdengine.client import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(namespace) as c:
                    if c.top("bybit", SYMBOL).state == "live":
                        break
            except Exception:  # noqa: BLE001 - the feed is still starting
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the feed never published a live book")
            time.sleep(0.1)
        for name, spin in (("spin", True), ("blocking", False)):
            results[name] = run_shm_phase(namespace, spin, seconds, log)
        feed.terminate()
        feed.join(10)
        results["baseline"] = run_baseline(sim.endpoints()["bybit"][0], seconds, log)
    finally:
        if feed.is_alive():
            feed.kill()
        sim.stop()
        for name in shm.list_names(namespace):
            shm.unlink(name)

    summary = {"sender": "mdengine.sim (bybit orderbook.50 deltas over loopback WebSocket)", "rate_hz": args.rate,
               "seconds_per_phase": seconds}
    for name, (lat, n_seen) in results.items():
        print(f"{name:9s} n={len(lat):5d} (seen {n_seen:5d})  p50={pct(lat, 50):8.1f} us  p90={pct(lat, 90):8.1f} us  "
              f"p99={pct(lat, 99):8.1f} us  max={lat[-1] if lat else float('nan'):9.1f} us")
        summary[f"{name}_n"] = len(lat)
        for p in (50, 90, 99):
            summary[f"{name}_p{p}_us"] = round(pct(lat, p), 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
