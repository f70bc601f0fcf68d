"""Whole-market scale: reading every top of a 1,000-symbol segment at once (`Client.tops`).

Scenario (declared up front, printed with the results):
  writer process: creates a segment of 1,000 top-only books (two markets) and republishes them round-robin,
                  paced at `--rate` book updates per second in total (0: as fast as it can), every field of a
                  row encoding its update id.
  reader (this process): `Client.tops(exchange)` in a loop, `time.perf_counter_ns()` before and after each
                  call, nothing subtracted; every row of every read is checked (torn rows are counted). The
                  same for one market (500 rows) and for the per-symbol loop the whole-market read replaces
                  (`book.top()` x 1,000).

  whole-market engine: the simulator serving whole markets (Binance spot 1,553 instruments, USDⓈ-M 423, OKX,
                  Bybit and Bitget 1,017 each; with `--quick` or `--per-kind N`: N synthetic instruments per kind
                  of every market), each ticking at `--sim-rate`, or with `--recorded-rates` at a book rate from
                  the recordings, with each exchange's documented REST limits enforced (429, then 418); one
                  simulator process per market, and one feed process per exchange (`--exchanges`) subscribing
                  ``symbols = ["*"]`` with the box's shared REST budget. Measured: seconds until every book the
                  simulator lists is live (per exchange too), the peak REST weight of one window over its limit
                  (the simulator's count), each feed's CPU over `--cpu-window` seconds once live, its RSS and
                  segment bytes per symbol, and each simulator's CPU and steps/s against its due rate (a feed's
                  CPU is at real rates only where its simulator kept up).

Usage: python perf/scale.py [--quick] [--rate N] [--symbols N] [--per-kind N] [--recorded-rates]
[--exchanges a,b] [--no-engine | --no-tops]. The last line is one JSON object (symbols_live, startup_s,
rest_weight_peak_ratio, tops_1000_p50_us, feed_cpu_pct, ...).
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


def serve_sim(markets: list[str], options: dict, pipe) -> None:
    """A simulator process serving `markets`: sends what it listens on and lists, then answers "stats" until
    "stop". One per market spreads the simulator over the cores (one Python thread cannot tick whole markets at
    their recorded rates)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from mdengine.sim import Simulator
    from mdengine.sim.listings import recorded_rate

    with Simulator(exchanges=markets, **options) as sim:
        rates = options.get("rate_hz")  # steps/s its count should reach: one per pass, or one per model step
        pipe.send({"endpoints": sim.endpoints(),
                   "listed": {m: len(s.venue.models) for m, s in sim.servers.items()},
                   "due": {m: rates or round(sum(recorded_rate(m, i) for i in range(len(s.venue.models))))
                           for m, s in sim.servers.items()}})
        while (cmd := pipe.recv()) != "stop":
            assert cmd == "stats"
            pipe.send({m: {**sim.stats(m), "peak_ratio": s.rest_limiter.peak_ratio() if s.rest_limiter else 0.0,
                           "connections_open": len(s.conns)} for m, s in sim.servers.items()})


def engine(per_kind: int | None, sim_rate: float | None, cpu_window: float, timeout: float,
           exchanges: list[str]) -> dict:
    """Start a whole-market engine on the simulator; see the module's scenario."""
    import psutil

    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges import get_adapter
    from mdengine.feed import run_feed
    from mdengine.sim.listings import MARKETS
    from mdengine.store import layout as L

    ns = "p" + uuid.uuid4().hex[:8]
    os.environ["MDENGINE_REST_BUDGET_SCOPE"] = ns  # this run's budgets, not the box's real ones
    ctx = mp.get_context("spawn")
    procs: dict[str, mp.Process] = {}
    options = {"rest_limit_scale": 1.0, **({"rate_hz": sim_rate} if sim_rate else {"recorded_rates": True}),
               **({"whole_market": True} if per_kind is None else {"extra_instruments": per_kind})}
    sims: dict[str, tuple[mp.Process, object]] = {}
    for market in (m for m in MARKETS if m.split("-")[0] in exchanges):
        here, there = ctx.Pipe()
        sims[market] = (ctx.Process(target=serve_sim, args=([market], options, there), daemon=True), here)
        sims[market][0].start()
    endpoints: dict[str, tuple[str, str]] = {}
    listed_by_market: dict[str, int] = {}
    due: dict[str, float] = {}

    def stats() -> dict[str, dict]:
        out: dict[str, dict] = {}
        for _, pipe in sims.values():
            pipe.send("stats")
            out.update(pipe.recv())
        return out

    try:
        for _, pipe in sims.values():
            if not pipe.poll(120):
                raise RuntimeError("a simulator process did not start")
            hello = pipe.recv()
            endpoints.update(hello["endpoints"])
            listed_by_market.update(hello["listed"])
            due.update(hello["due"])
        listed = {name: sum(n for m, n in listed_by_market.items() if m.split("-")[0] == name) for name in exchanges}
        t0 = time.monotonic()
        for name in exchanges:
            cfg = ExchangeConfig(name, symbols=["*"], endpoints=get_adapter(name).sim_endpoints(endpoints),
                                 book_depth=5, book_capacity=5, trade_capacity=16,
                                 max_symbols=min(L.MAX_SYMBOLS, listed[name] + 32))
            procs[name] = ctx.Process(target=run_feed, args=(ns, cfg), kwargs={"log_level": "WARNING"}, daemon=True)
            procs[name].start()
        live: dict[str, int] = {}
        startup_s = None
        first_all_live: dict[str, float] = {}  # per exchange: when every book it lists was first live at once
        next_note = t0 + 30
        with _client_when_ready(ns, timeout) as c:
            while time.monotonic() - t0 < timeout:
                tops = {ex: c.tops(ex) for ex in c.exchanges}
                live = {ex: int(t["live"].sum()) for ex, t in tops.items()}
                for ex, n in live.items():
                    if n == listed[ex] and ex not in first_all_live:
                        first_all_live[ex] = round(time.monotonic() - t0, 1)
                if len(tops) == len(exchanges) and all(live[ex] == listed[ex] for ex in exchanges):
                    startup_s = time.monotonic() - t0
                    break
                if time.monotonic() > next_note:
                    next_note += 30
                    print(f"engine: {time.monotonic() - t0:.0f} s: live {live} of {listed}; every book first "
                          f"live at {first_all_live} s; load {os.getloadavg()[0]:.1f}", flush=True)
                time.sleep(0.2)
            counts = {ex: len(c.tops(ex)) for ex in c.exchanges}
            ps = {ex: psutil.Process(p.pid) for ex, p in procs.items() if p.is_alive()}
            sim_ps = {m: psutil.Process(p.pid) for m, (p, _) in sims.items()}
            for p in [*ps.values(), *sim_ps.values()]:
                p.cpu_percent(None)
            steps0, w0 = {m: st["steps"] for m, st in stats().items()}, time.monotonic()
            time.sleep(cpu_window)
            cpu = {ex: round(p.cpu_percent(None), 1) for ex, p in ps.items()}
            sim_cpu = {m: round(p.cpu_percent(None), 1) for m, p in sim_ps.items()}
            took, end = time.monotonic() - w0, stats()
            steps = {m: round((st["steps"] - steps0[m]) / took, 1) for m, st in end.items()}
            rss = {ex: p.memory_info().rss for ex, p in ps.items()}
            seg = {ex: c._segments[ex].reader.view.segment_size for ex in c.exchanges}  # noqa: SLF001
            live_end = {ex: int(t["live"].sum()) for ex, t in ((ex, c.tops(ex)) for ex in c.exchanges)}
            # tops() of each live engine segment (its feed writing meanwhile): 1,976 rows for Binance at full size
            engine_tops = {ex: _stats(_time(lambda ex=ex: c.tops(ex), 1.0)[0]) for ex in c.exchanges}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.join(30)
        final = stats()
        for p, pipe in sims.values():
            pipe.send("stop")
            p.join(30)
        for name in shm.list_names(ns):
            shm.unlink(name)
        from mdengine import restbudget

        for budget in restbudget.existing(ns):  # this run's budgets (its own scope)
            budget.unlink()
            budget.close()
    peak = max(st["peak_ratio"] for st in final.values())
    refused = {m: {k: v for k, v in st.items() if k in ("rest_429", "rest_418")} for m, st in final.items()}
    return {"symbols_listed": listed, "symbols_live": sum(live.values()), "symbols_by_exchange": counts, "live": live,
            "live_after_cpu_window": live_end,
            "startup_s": None if startup_s is None else round(startup_s, 1), "rest_weight_peak_ratio": round(peak, 3),
            "rest_refused": refused, "feed_cpu_pct": cpu, "first_all_live_s": first_all_live,
            "sim_cpu_pct": sim_cpu, "sim_steps_per_s": steps, "sim_steps_per_s_due": due,
            "sim_connections": {m: st["connections_open"] for m, st in end.items()}, "engine_tops": engine_tops,
            "rss_bytes_per_symbol": {ex: rss[ex] // max(counts.get(ex, 1), 1) for ex in rss},
            "segment_bytes_per_symbol": {ex: seg[ex] // max(counts.get(ex, 1), 1) for ex in seg}}


def _client_when_ready(ns: str, timeout: float) -> Client:
    end = time.monotonic() + timeout
    while True:
        try:
            return Client(ns)
        except Exception:  # noqa: BLE001 - no segment yet
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def tops_stage(symbols: int, rate: float, seconds: float) -> dict:
    """Client.tops() against a writer process; see the module's scenario."""
    print(f"writer: {symbols} top-only books, {rate or 'max'} updates/s; reader window {seconds:g} s each")
    ns = "p" + uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=writer, args=(ns, symbols, rate, ready, stop), daemon=True)
    proc.start()
    try:
        if not ready.wait(120):
            raise RuntimeError("the writer process did not start")
        with Client(ns) as c:
            all_us, torn = _time(lambda: c.tops(EXCHANGE), seconds, _torn)
            one_us, torn_one = _time(lambda: c.tops(EXCHANGE, "usdm"), seconds / 2, _torn)
            books = [c.book(EXCHANGE, f"S{i}/USDT") for i in range(symbols)]
            loop_us, _ = _time(lambda: [b.top() for b in books], seconds / 2)
            rows = len(c.tops(EXCHANGE))
        result = {"tops_rows": rows, "writer_rate": rate or "max",
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
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~10 s in all")
    ap.add_argument("--rate", type=float, default=100_000.0, help="writer book updates/s in total (0: max)")
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--per-kind", type=int, help="engine stage: synthetic instruments per kind of every market "
                    "(default: 60 with --quick, else whole markets: Binance spot 1,553, USDⓈ-M 423, OKX, Bybit and "
                    "Bitget 1,017 each; sim/listings.WHOLE_MARKET)")
    ap.add_argument("--sim-rate", type=float, default=0.5, help="engine stage: steps/s of every symbol")
    ap.add_argument("--recorded-rates", action="store_true", help="engine stage: each symbol at a rate from the "
                    "recordings instead (about 30,000 steps/s in all at full size: more than a 2-core box simulates "
                    "at once; --exchanges one at a time)")
    ap.add_argument("--cpu-window", type=float, help="engine stage: seconds of feed CPU measured once live")
    ap.add_argument("--no-engine", action="store_true", help="only the store-level tops() stage")
    ap.add_argument("--exchanges", default="binance,okx,bybit,bitget", help="engine stage: comma list of feeds")
    ap.add_argument("--no-tops", action="store_true", help="only the engine stage")
    args = ap.parse_args()
    # SIGTERM (and SIGINT, which a shell's background job ignores) end the run through its cleanup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = 3.0 if args.quick else 10.0
    call = min(timeit.repeat("f()", "def f(): pass", number=100_000, repeat=5)) / 100_000 * 1e9
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; empty Python "
          f"call {call:.0f} ns (machine speed/contention gauge)")
    result: dict = {} if args.no_tops else tops_stage(args.symbols, args.rate, seconds)
    if not args.no_engine:
        per_kind = args.per_kind or (60 if args.quick else None)
        rate = "per-symbol rates from the recordings" if args.recorded_rates else f"{args.sim_rate:g} steps/s each"
        size = "whole markets (sim/listings.WHOLE_MARKET)" if per_kind is None else \
            f"{per_kind} extra instruments per kind of every market"
        print(f"engine: {size}, {rate}, "
              "documented REST limits enforced by the simulator; feeds subscribe symbols = [\"*\"]")
        load0 = os.getloadavg()
        eng = engine(per_kind, None if args.recorded_rates else args.sim_rate,
                     args.cpu_window or (5.0 if args.quick else 20.0), 300.0 if args.quick else 900.0,
                     args.exchanges.split(","))
        print(f"engine: {eng['symbols_live']} books live ({eng['symbols_by_exchange']}) in {eng['startup_s']} s; "
              f"REST peak {eng['rest_weight_peak_ratio']:.0%} of a window's limit, refused {eng['rest_refused']}; "
              f"feed CPU {eng['feed_cpu_pct']} %; segment bytes/symbol {eng['segment_bytes_per_symbol']}")
        print(f"engine: every book of an exchange first live at {eng['first_all_live_s']} s; simulator CPU "
              f"{eng['sim_cpu_pct']} %, steps/s {eng['sim_steps_per_s']} (due {eng['sim_steps_per_s_due']}), "
              f"connections {eng['sim_connections']}; RSS bytes/symbol {eng['rss_bytes_per_symbol']}; live after the "
              f"CPU window {eng['live_after_cpu_window']}")
        print("engine: tops() of each engine segment, p50 µs: "
              + ", ".join(f"{ex} ({eng['symbols_by_exchange'][ex]} rows) {st['p50_us']}"
                          for ex, st in eng["engine_tops"].items()))
        eng["load_1m_start_end"] = [round(load0[0], 1), round(os.getloadavg()[0], 1)]
        print("engine: load (1 min) {} at the start, {} at the end".format(*eng["load_1m_start_end"]))
        result.update(eng)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
