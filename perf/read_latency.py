"""Read latency of the shared-memory store, measured in a reader process while a writer process publishes.

Scenario (declared up front, printed with the results):
  writer process: 50-level versioned books into one slot at 10,000 updates/s (paced), then at full speed;
                  100 trades appended every 20 book updates; every other update also publishes a 20-level
                  book to a second slot and times that `publish_levels` call.
  reader process: per read `time.perf_counter_ns()` before and after, nothing subtracted (timer cost is
                  reported separately): `BookReader.top()`, `read_into` a 20-level BookBuffer, `read_into`
                  a full-capacity BookBuffer, `TradeReader.poll` of exactly 100 new trades. Every read is
                  verified afterwards (each level encodes the book's update id), so torn reads are counted.
  C reader:       examples/reader.c (built with docs/layout.md's build line) times `bench` reads of the same
                  20-level book in its own process, while the same writer keeps publishing, right after the
                  Python reader's window (the two never compete for a core); clock_gettime before and after
                  each read, nothing subtracted. Its reads are not content-checked here (tests/test_c_reader.py
                  checks them); retries are counted.
  perp:           a third process publishes perp records (every field encodes its update number u) at 10,000/s
                  into a perpetual's slot of a second segment, heartbeating and confirming its connection as a
                  feed does; the reader times `Client.perp_handle(...).read()` (the client's perp() path: latch
                  copy, freshness checks, PerpStats) and the store's `PerpReader.read()`, each checked for tearing.
  baseline:       the same 20-level book (header + levels, 704 bytes) handed from a producer process to a
                  consumer process through a multiprocessing.Queue at 10,000/s; time from just before
                  put() to just after get() (CLOCK_MONOTONIC is system-wide).

Usage: python perf/read_latency.py [--quick] [--seconds S]. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
import uuid

import numpy as np

from mdengine.store import BookBuffer, SegmentReader, SegmentWriter, layout, list_names, unlink

EXCHANGE = "perf"
CAPACITY = 50
DEPTH = 20
TRADES_EVERY = 50
TRADE_BATCH = 100


def versioned(u: int) -> tuple[list[float], int, int]:
    nb, na = CAPACITY - u % 3, CAPACITY - u % 5
    base = u * 1000.0
    flat = [math.nan, 0.0, math.nan, 0.0] * max(nb, na)
    flat[0:4 * nb:4] = [base + i for i in range(nb)]
    flat[1:4 * nb:4] = [float(u)] * nb
    flat[2:4 * na:4] = [base + 500 + i for i in range(na)]
    flat[3:4 * na:4] = [u + 0.5] * na
    return flat, nb, na


def torn_rows(rows: np.ndarray, depth: int) -> int:
    """How many rows (raw book copies: header + `depth` levels) are not one versioned book."""
    k, width = rows.shape
    hdr = np.ndarray((k,), dtype=layout.BOOK_HEADER_DTYPE, buffer=rows, strides=(width,))
    lv = np.ndarray((k, depth, 4), dtype="<f8", buffer=rows, offset=layout.BOOK_HEADER_LENGTH,
                    strides=(width, layout.LEVEL_LENGTH, 8))
    u = hdr["update_id"]
    nb, na = hdr["n_bids"].astype(np.int64)[:, None], hdr["n_asks"].astype(np.int64)[:, None]
    bad = (nb[:, 0] != CAPACITY - u % 3) | (na[:, 0] != CAPACITY - u % 5)
    uf = u.astype(np.float64)[:, None]
    i = np.arange(depth)[None, :]
    bad |= (np.where(i < nb, (lv[:, :, 0] != uf * 1000 + i) | (lv[:, :, 1] != uf), ~np.isnan(lv[:, :, 0]))
            | np.where(i < na, (lv[:, :, 2] != uf * 1000 + 500 + i) | (lv[:, :, 3] != uf + 0.5),
                       ~np.isnan(lv[:, :, 2]))).any(axis=1)
    return int(bad.sum())


def writer_main(ns: str, rate: float, stop, conn) -> None:
    w = SegmentWriter(ns, EXCHANGE)
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    slot20 = w.add_symbol("spot", "ETHUSDT", "ETH/USDT")
    w.set_running()
    pub20 = np.zeros(200_000, dtype=np.int64)
    ring = w.view.slot_base(slot) + w.view.geometry.ring
    u, k, trade_idx = 1, 0, w.q[(ring + layout.RING_TAIL_OFFSET) >> 3]  # trade i is ring record i
    publish, clock = w.publish_levels, time.perf_counter_ns
    t0 = time.perf_counter()
    conn.send("ready")
    while True:
        now = time.perf_counter()
        if not u & 255 and stop.is_set():
            break
        if rate and u > (now - t0) * rate:
            time.sleep(0.00005)
            continue
        flat, nb, na = versioned(u)
        publish(slot, flat, nb, na, update_id=u)
        if not u & 1:  # a 20-level book on a second symbol every other update, timed
            flat20 = flat[:4 * DEPTH]
            t = clock()
            publish(slot20, flat20, DEPTH, DEPTH, update_id=u)
            pub20[k % len(pub20)] = clock() - t
            k += 1
        if u % TRADES_EVERY == 0:
            w.append_trades(slot, [(i, i, i * 0.5, 1.0, i, 1, 0) for i in range(trade_idx, trade_idx + TRADE_BATCH)])
            trade_idx += TRADE_BATCH
        if u % 1024 == 0:
            w.heartbeat()
        u += 1
    w.close()
    conn.send({"updates": u - 1, "seconds": time.perf_counter() - t0, "publish20": pub20[:min(k, len(pub20))]})


def reader_main(ns: str, seconds: float, conn) -> None:
    seg = SegmentReader(ns, EXCHANGE)
    book = seg.book("BTC/USDT")
    trades = seg.trades("BTC/USDT", start="latest")
    top, read_into, poll, clock = book.top, book.read_into, trades.poll, time.perf_counter_ns
    b20, bfull, out = BookBuffer(DEPTH), BookBuffer(CAPACITY), trades.new_buffer(TRADE_BATCH)
    samples = {"top": [], "book20": [], "full": [], "trades100": []}
    torn = {"top": 0, "book20": 0, "full": 0, "trades": 0}
    polls_lost = 0
    block = 500
    rows20 = np.zeros((block, len(b20.raw)), np.uint8)
    rowsfull = np.zeros((block // 4, len(bfull.raw)), np.uint8)
    while book.top()[1] == 0:  # wait for the first publish
        time.sleep(0.001)
    conn.send("ready")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        lat = samples["top"]
        for _ in range(block):
            t = clock()
            bp, bq, ap, aq = top()
            lat.append(clock() - t)
            if not (bp == bq * 1000 and ap == bp + 500 and aq == bq + 0.5):
                torn["top"] += 1
        lat = samples["book20"]
        for j in range(block):
            t = clock()
            read_into(b20)
            lat.append(clock() - t)
            rows20[j] = b20.raw  # checked below, in one vectorised pass, outside the timed region
        torn["book20"] += torn_rows(rows20, DEPTH)
        lat = samples["full"]
        for j in range(block // 4):
            t = clock()
            read_into(bfull)
            lat.append(clock() - t)
            rowsfull[j] = bfull.raw
        torn["full"] += torn_rows(rowsfull, CAPACITY)
        lat = samples["trades100"]
        while trades.tail - trades.cursor >= TRADE_BATCH:
            t = clock()
            recs, lost = poll(out)
            lat.append(clock() - t)
            polls_lost += lost
            idx = recs["index"]
            torn["trades"] += int(((recs["trade_id"] != idx) | (recs["price"] != idx * 0.5)).sum())
    retries = book.retries
    del top, read_into, poll, book, trades, b20, bfull, out
    seg.close()
    conn.send({"samples": {k: np.array(v, dtype=np.int64) for k, v in samples.items()}, "torn": torn,
               "retries": retries, "trades_lost": polls_lost})


PERP_EXCHANGE = "perpx"


def perp_writer_main(ns: str, rate: float, stop, conn) -> None:
    w = SegmentWriter(ns, PERP_EXCHANGE)
    slot = w.add_symbol("usdm", "BTCUSDT", "BTC/USDT:USDT", kind=layout.MarketKind.LINEAR)
    w.set_freshness(3.0, 0.5)
    w.set_perp_freshness({"mark": 25.0, "index": 125.0, "funding": 185.0, "open_interest": 125.0})  # OKX's bounds
    w.set_running()
    publish, u, t0 = w.publish_perp, 1, time.perf_counter()
    conn.send("ready")
    while not stop.is_set():
        if u > (time.perf_counter() - t0) * rate:
            time.sleep(0.00005)
            continue
        now = time.time_ns()
        publish(slot, mark_price=u + 0.25, index_price=u + 0.5, funding_rate=u * 1e-9, next_funding_rate=u * 2e-9,
                next_funding_ns=u, open_interest=u * 2.0, exch_ts_ns=u, recv_ts_ns=now)
        if not u & 255:
            w.heartbeat(now)
            w.confirm(slot, now)
        u += 1
    w.close()
    conn.send({"updates": u - 1, "seconds": time.perf_counter() - t0})


def perp_reader_main(ns: str, seconds: float, conn) -> None:
    from mdengine.client import Client

    client = Client(ns)
    handle = client.perp_handle(PERP_EXCHANGE, "BTC/USDT:USDT")
    raw = handle.reader.read
    read, clock = handle.read, time.perf_counter_ns
    while raw()[6] == 0:
        time.sleep(0.001)
    samples = {"perp": [], "perp_store": []}
    torn = stale = 0
    conn.send("ready")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        lat = samples["perp"]
        for _ in range(500):
            t = clock()
            p = read()
            lat.append(clock() - t)
            u = p.exch_ts_ns
            torn += p.mark_price != u + 0.25 or p.index_price != u + 0.5 or p.open_interest != u * 2.0
            stale += p.stale
        lat = samples["perp_store"]
        for _ in range(500):
            t = clock()
            r = raw()
            lat.append(clock() - t)
            torn += r[0] != r[6] + 0.25 or r[5] != r[6] * 2.0
    client.close()
    conn.send({"samples": {k: np.array(v, dtype=np.int64) for k, v in samples.items()}, "torn": torn,
               "stale": stale})


def run_perp_phase(ctx, ns: str, seconds: float) -> dict:
    SegmentWriter(ns, PERP_EXCHANGE, create=True, max_symbols=1, book_capacity=5, trade_capacity=16).close()
    wa, wb = ctx.Pipe()
    ra, rb = ctx.Pipe()
    stop = ctx.Event()
    writer = ctx.Process(target=perp_writer_main, args=(ns, 10_000, stop, wb))
    writer.start()
    assert wa.recv() == "ready"
    reader = ctx.Process(target=perp_reader_main, args=(ns, seconds, rb))
    reader.start()
    assert ra.recv() == "ready"
    r = ra.recv()
    stop.set()
    w = wa.recv()
    reader.join()
    writer.join()
    return {"stats": {k: pct(v) for k, v in r["samples"].items()}, "torn": r["torn"], "stale": r["stale"],
            "writer_updates_per_s": w["updates"] / w["seconds"]}


def producer_main(q, n: int, rate: float) -> None:
    flat, nb, na = versioned(7)
    payload = bytes(layout.BOOK_HEADER_LENGTH) + np.array(flat[:4 * DEPTH]).tobytes()
    t0 = time.perf_counter()
    for i in range(n):
        while i > (time.perf_counter() - t0) * rate:
            time.sleep(0.00005)
        q.put((time.perf_counter_ns(), payload))
    q.put(None)


def queue_baseline(ctx, n: int, rate: float) -> np.ndarray:
    q = ctx.Queue()
    p = ctx.Process(target=producer_main, args=(q, n, rate))
    p.start()
    lat = []
    while (item := q.get()) is not None:
        lat.append(time.perf_counter_ns() - item[0])
    p.join()
    return np.array(lat, dtype=np.int64)


def pct(a: np.ndarray) -> dict[str, float]:
    if not len(a):
        return {"n": 0}
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"n": int(len(a)), "p50": float(p50), "p99": float(p99), "p99.9": float(p999)}


def build_c_reader(directory: str) -> tuple[str | None, str]:
    """examples/reader.c built with docs/layout.md's build line: (path, "") or (None, why not)."""
    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        return None, "no C compiler"
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(root, "docs", "layout.md"), encoding="utf-8") as f:
        args = shlex.split(re.search(r"^cc (-std=c11 .*examples/reader\.c)", f.read(), re.M).group(1))
    exe = os.path.join(directory, "mde-reader")
    args[args.index("-o") + 1] = exe
    r = subprocess.run([cc, *args], cwd=root, capture_output=True, text=True)
    return (exe, "") if r.returncode == 0 else (None, f"{cc} failed: {r.stderr.strip()[:200]}")


def c_bench(exe: str | None, ns: str, reads: int) -> dict:
    if exe is None:
        return {}
    r = subprocess.run([exe, "bench", ns, EXCHANGE, "BTC/USDT", "-d", str(DEPTH), "-n", str(reads)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"examples/reader.c bench failed ({r.returncode}): {r.stdout} {r.stderr}")
    return json.loads(r.stdout.splitlines()[-1])["bench"]


def run_phase(ctx, ns: str, rate: float, seconds: float, c_exe: str | None = None, c_reads: int = 0) -> dict:
    wa, wb = ctx.Pipe()
    ra, rb = ctx.Pipe()
    stop = ctx.Event()
    writer = ctx.Process(target=writer_main, args=(ns, rate, stop, wb))
    writer.start()
    assert wa.recv() == "ready"
    reader = ctx.Process(target=reader_main, args=(ns, seconds, rb))
    reader.start()
    assert ra.recv() == "ready"
    r = ra.recv()
    c = c_bench(c_exe, ns, c_reads)  # the same book, the writer still publishing
    stop.set()
    w = wa.recv()
    reader.join()
    writer.join()
    stats = {k: pct(v) for k, v in r["samples"].items()}
    stats["publish20"] = pct(w["publish20"])
    reads = sum(len(v) for k, v in r["samples"].items() if k != "trades100")
    return {"rate": rate or "max", "stats": stats, "c": c, "torn": r["torn"], "retries": r["retries"],
            "retries_per_read": r["retries"] / max(reads, 1), "trades_lost": r["trades_lost"],
            "writer_updates_per_s": w["updates"] / w["seconds"] if w["seconds"] else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~25 s in all")
    ap.add_argument("--seconds", type=float, help="reader window per rate")
    args = ap.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    queue_n = 20_000 if args.quick else 100_000
    ctx = mp.get_context("spawn")
    ns = "p" + uuid.uuid4().hex[:8]
    clock = time.perf_counter_ns
    timer = np.array([-(clock() - clock()) for _ in range(100_000)])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; "
          f"writer 10k/s then max, reader window {seconds:g} s each; queue baseline {queue_n} hand-offs at 10k/s")
    call = min(timeit.repeat("f()", "def f(): pass", number=100_000, repeat=5)) / 100_000 * 1e9
    print(f"bare timer (perf_counter_ns pair): p50 {np.percentile(timer, 50):.0f} ns; "
          f"empty Python call {call:.0f} ns (machine speed/contention gauge)")
    c_reads = 1_000_000 if args.quick else 5_000_000
    SegmentWriter(ns, EXCHANGE, create=True, max_symbols=2, book_capacity=CAPACITY, trade_capacity=4096).close()
    with tempfile.TemporaryDirectory() as tmp:
        c_exe, c_why = build_c_reader(tmp)
        try:
            phases = [run_phase(ctx, ns, 10_000, seconds, c_exe, c_reads),
                      run_phase(ctx, ns, 0, seconds, c_exe, c_reads)]
            perp = run_perp_phase(ctx, ns, seconds / 2)
        finally:
            for name in list_names(ns):
                unlink(name)
    queue = pct(queue_baseline(ctx, queue_n, 10_000))
    for ph in phases:
        print(f"\nwriter {ph['rate']} updates/s (achieved {ph['writer_updates_per_s'] or 0:,.0f}/s), "
              f"torn {ph['torn']}, retries {ph['retries']} ({ph['retries_per_read']:.4f}/read), "
              f"trades lost to lapping {ph['trades_lost']}")
        for k, s in ph["stats"].items():
            if s["n"]:
                print(f"  {k:10s} n={s['n']:>8,}  p50 {s['p50']:>8,.0f} ns  p99 {s['p99']:>9,.0f} ns  "
                      f"p99.9 {s['p99.9']:>10,.0f} ns")
        if ph["c"]:
            c = ph["c"]
            print(f"  {'C book20':10s} n={c['reads']:>8,}  p50 {c['p50_ns']:>8,.0f} ns  p99 {c['p99_ns']:>9,.0f} ns  "
                  f"p99.9 {c['p999_ns']:>10,.0f} ns  (examples/reader.c; retries {c['retries']}, "
                  f"timer {c['timer_p50_ns']} ns)")
        else:
            print(f"  C reader not run: {c_why}")
    print(f"\nperp records at 10,000/s (achieved {perp['writer_updates_per_s']:,.0f}/s), torn {perp['torn']}, "
          f"stale reads {perp['stale']}")
    for k, s in perp["stats"].items():
        print(f"  {k:10s} n={s['n']:>8,}  p50 {s['p50']:>8,.0f} ns  p99 {s['p99']:>9,.0f} ns  "
              f"p99.9 {s['p99.9']:>10,.0f} ns")
    print(f"\nmultiprocessing.Queue hand-off of the 20-level book: p50 {queue['p50']:,.0f} ns, "
          f"p99 {queue['p99']:,.0f} ns, p99.9 {queue['p99.9']:,.0f} ns")
    paced, stress = phases
    s, x = paced["stats"], stress["stats"]
    ratio = queue["p50"] / s["book20"]["p50"]
    print(f"queue / shm 20-level read (p50): {ratio:.0f}x")
    pc, xc = paced["c"], stress["c"]
    if pc:
        print(f"Python / C 20-level read (p50): {s['book20']['p50'] / max(pc['p50_ns'], 1):.0f}x")
    result = {
        "top_p50_ns": s["top"]["p50"], "top_p99_ns": s["top"]["p99"], "top_p999_ns": s["top"]["p99.9"],
        "book20_p50_ns": s["book20"]["p50"], "book20_p99_ns": s["book20"]["p99"],
        "book20_p999_ns": s["book20"]["p99.9"],
        "full_p50_ns": s["full"]["p50"], "full_p99_ns": s["full"]["p99"],
        "trades100_p50_ns": s["trades100"].get("p50"), "trades100_p99_ns": s["trades100"].get("p99"),
        "publish20_p50_ns": s["publish20"].get("p50"), "publish20_p99_ns": s["publish20"].get("p99"),
        "perp_p50_ns": perp["stats"]["perp"]["p50"], "perp_p99_ns": perp["stats"]["perp"]["p99"],
        "perp_store_p50_ns": perp["stats"]["perp_store"]["p50"], "perp_torn": perp["torn"],
        "perp_stale_reads": perp["stale"],
        "queue_p50_ns": queue["p50"], "queue_p99_ns": queue["p99"], "queue_ratio": round(ratio, 1),
        "torn_reads": sum(paced["torn"].values()) + sum(stress["torn"].values()),
        "retries": paced["retries"], "retries_per_read": paced["retries_per_read"],
        "stress_top_p50_ns": x["top"]["p50"], "stress_top_p99_ns": x["top"]["p99"],
        "stress_book20_p50_ns": x["book20"]["p50"], "stress_book20_p99_ns": x["book20"]["p99"],
        "stress_full_p50_ns": x["full"]["p50"], "stress_publish20_p50_ns": x["publish20"].get("p50"),
        "stress_retries": stress["retries"], "stress_retries_per_read": stress["retries_per_read"],
        "stress_updates_per_s": stress["writer_updates_per_s"],
        "c_book20_p50_ns": pc.get("p50_ns"), "c_book20_p99_ns": pc.get("p99_ns"),
        "c_book20_p999_ns": pc.get("p999_ns"), "c_retries_per_read": pc["retries"] / pc["reads"] if pc else None,
        "stress_c_book20_p50_ns": xc.get("p50_ns"), "stress_c_book20_p99_ns": xc.get("p99_ns"),
        "stress_c_retries_per_read": xc["retries"] / xc["reads"] if xc else None,
        "c_timer_p50_ns": pc.get("timer_p50_ns"),
        "timer_p50_ns": float(np.percentile(timer, 50)), "empty_call_ns": round(call, 1),
        "load1": os.getloadavg()[0], "quick": args.quick,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
