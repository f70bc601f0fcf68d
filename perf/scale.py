"""Whole-market scale: reading every top of a 1,000-symbol segment at once (`Client.tops`).

Scenario (declared up front, printed with the results):
  writer process: creates a segment of 1,000 top-only books (two markets) and republishes them round-robin,
                  paced at `--rate` book updates per second in total (0: as fast as it can), every field of a
                  row encoding its update id.
  reader (this process): `Client.tops(exchange)` in a loop, `time.perf_counter_ns()` before and after each
                  call, nothing subtracted; every row of every read is checked (torn rows are counted). The
                  same for one market (500 rows) and for the per-symbol loop the whole-market read replaces
                  (`book.top()` x 1,000).

Not yet measured here (issue 26): a whole-market engine on the simulator (startup_s, symbols_live,
rest_weight_peak_ratio, feed_cpu_pct); those keys are absent from the JSON until they are.

Usage: python perf/scale.py [--quick] [--rate N] [--symbols N]. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import timeit
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mdengine.client import Client  # noqa: E402
from mdengine.store import SegmentWriter, shm  # noqa: E402

EXCHANGE = "scale"


def _flat(u: int) -> list[float]:
    return [float(u), u + 0.25, u + 0.5, u + 0.75]


def writer(ns: str, n_symbols: int, rate: float, ready, stop) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    w = SegmentWriter(ns, EXCHANGE, create=True, max_symbols=n_symbols, book_capacity=1, trade_capacity=2)
    slots = [w.add_symbol("usdm" if i % 2 else "spot", f"S{i}USDT", f"S{i}/USDT") for i in range(n_symbols)]
    w.set_freshness(3600.0, 1.0)
    w.set_running()
    u = 0
    for slot in slots:
        u += 1
        w.publish_levels(slot, _flat(u), 1, 1, update_id=u, recv_ts_ns=time.time_ns())
    ready.set()
    t0, n, publish = time.monotonic(), 0, w.publish_levels
    while not stop.is_set():
        for slot in slots:
            u += 1
            publish(slot, _flat(u), 1, 1, update_id=u, recv_ts_ns=time.time_ns())
            n += 1
            if rate and n > (time.monotonic() - t0) * rate:
                time.sleep(0.001)
        w.heartbeat()
        w.wake_readers()
    w.close()


def _torn(t: np.ndarray) -> int:
    u = t["update_id"].astype(np.float64)
    return int(((t["bid"] != u) | (t["bid_qty"] != u + 0.25) | (t["ask"] != u + 0.5)
                | (t["ask_qty"] != u + 0.75)).sum())


def _time(fn, seconds: float, check=None) -> tuple[np.ndarray, int]:
    clock, samples, torn = time.perf_counter_ns, [], 0
    end = time.monotonic() + seconds
    for _ in range(50):
        fn()
    while time.monotonic() < end:
        t0 = clock()
        r = fn()
        samples.append(clock() - t0)
        if check is not None:
            torn += check(r)
    return np.array(samples) / 1e3, torn


def _stats(us: np.ndarray) -> dict:
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "reads": len(us)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~10 s in all")
    ap.add_argument("--rate", type=float, default=100_000.0, help="writer book updates/s in total (0: max)")
    ap.add_argument("--symbols", type=int, default=1000)
    args = ap.parse_args()
    seconds = 3.0 if args.quick else 10.0
    call = min(timeit.repeat("f()", "def f(): pass", number=100_000, repeat=5)) / 100_000 * 1e9
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; empty Python "
          f"call {call:.0f} ns (machine speed/contention gauge)")
    print(f"writer: {args.symbols} top-only books, {args.rate or 'max'} updates/s; reader window {seconds:g} s each")
    ns = "p" + uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=writer, args=(ns, args.symbols, args.rate, ready, stop), daemon=True)
    proc.start()
    result: dict = {}
    try:
        if not ready.wait(120):
            raise RuntimeError("the writer process did not start")
        with Client(ns) as c:
            all_us, torn = _time(lambda: c.tops(EXCHANGE), seconds, _torn)
            one_us, torn_one = _time(lambda: c.tops(EXCHANGE, "usdm"), seconds / 2, _torn)
            books = [c.book(EXCHANGE, f"S{i}/USDT") for i in range(args.symbols)]
            loop_us, _ = _time(lambda: [b.top() for b in books], seconds / 2)
            rows = len(c.tops(EXCHANGE))
        result = {"symbols": rows, "writer_rate": args.rate or "max",
                  "tops_all": _stats(all_us), "tops_one_market": _stats(one_us), "top_loop": _stats(loop_us),
                  "torn_rows": torn + torn_one, "tops_1000_p50_us": round(float(np.percentile(all_us, 50)), 1)}
        print(f"tops() of {rows} books: p50 {result['tops_all']['p50_us']} µs, p99 {result['tops_all']['p99_us']} "
              f"µs ({len(all_us)} reads, {torn + torn_one} torn rows)")
        print(f"tops() of one market ({rows // 2}): p50 {result['tops_one_market']['p50_us']} µs")
        print(f"book.top() x {rows} in a Python loop: p50 {result['top_loop']['p50_us']} µs")
    finally:
        stop.set()
        proc.join(30)
        for name in shm.list_names(ns):
            shm.unlink(name)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
