"""The NATS bridge on loopback: publish -> nats-server -> mirror -> shared memory latency, the messages per
second one bridge publisher sustains, and the mirrored books compared level by level with the source.

A real nats-server (the [bridge] extra's wheel) with JetStream; `mdengine bridge publish` and `mdengine bridge
mirror` as their own processes; this process writes the source segment (versioned books, numbered trades) with
the engine's SegmentWriter and reads the mirror's segment with the engine's reader.

- latency: one book at a time (ping-pong): the mirror's publish time of update id u minus the source's publish
  time of update id u (both wall clock on this host), then both books compared level by level;
- throughput: the source publishes books and trades on 4 symbols as fast as it can for a few seconds; the
  figure is the messages the stream received per second (the publisher coalesces versions it had no time to
  send, so this is what one bridge sustains, not what the source offered); afterwards every book is compared;
- failover: two engines (`mdengine run`, two namespaces) on one local simulated exchange (OKX, 40 book updates/s
  per symbol), a publisher each onto one bus namespace (`--as`, `--source-id`), one mirror; a reader polls the
  mirror's BTC/USDT header every millisecond while the primary engine (supervisor and feed) is killed with
  SIGKILL. `failover_ms` is the longest wait for a new update id in the 3 s after the kill (`failover_normal_ms`
  the longest in the 2 s before it: the exchange's own pace), `failover_not_live_ms` how long the book was not
  live after it.

Usage: python perf/bridge_latency.py [--quick]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mdengine.bridge import wire  # noqa: E402
from mdengine.bridge.server import NatsServer  # noqa: E402
from mdengine.store import shm  # noqa: E402
from mdengine.store.reader import SegmentReader  # noqa: E402
from mdengine.store.writer import SegmentWriter  # noqa: E402

EXCHANGE = "bench"
DEPTH = 20
SYMBOLS = [("spot", f"S{i}USDT", f"S{i}/USDT") for i in range(4)]


def levels(u: int, slot: int) -> tuple[list[float], int, int]:
    base = 1000.0 + (u % 500) + slot
    flat = []
    for i in range(DEPTH):
        flat += [base - i * 0.5, 1.0 + (u + i) % 7, base + 0.5 + i * 0.5, 2.0 + (u + i) % 5]
    return flat, DEPTH, DEPTH


def same(src: SegmentReader, dst: SegmentReader, unified: str) -> bool:
    a, b = src.book(unified).snapshot(), dst.book(unified).snapshot()
    return (a.header.update_id == b.header.update_id
            and np.array_equal(a.bids, b.bids) and np.array_equal(a.asks, b.asks))


def mirror_u(ns: str, unified: str) -> int:
    try:
        with SegmentReader(ns, EXCHANGE) as r:
            return r.book(unified).header().update_id
    except Exception:  # noqa: BLE001 - not there yet
        return -1


def stream_seq(url: str, ns: str) -> int:
    async def get() -> int:
        import nats

        nc = await nats.connect(url)
        info = await nc.jetstream().stream_info(wire.stream_name(ns))
        await nc.close()
        return info.state.last_seq

    return asyncio.run(get())


def wait(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("the mirror did not catch up")
        time.sleep(0.0001)


def _attach(ns: str, exchange: str, timeout: float = 60.0) -> SegmentReader:
    from mdengine.store import LayoutError, SegmentNotFound

    end = time.monotonic() + timeout
    while True:
        try:
            return SegmentReader(ns, exchange)
        except (SegmentNotFound, LayoutError):
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def _live(reader: SegmentReader, symbol: str, timeout: float = 60.0) -> None:
    from mdengine.store import layout as L

    def live() -> bool:
        try:
            return reader.book(symbol).header().state == L.BookState.LIVE
        except KeyError:
            return False

    wait(live, timeout)


def failover(url: str, env: dict, tmp: str) -> dict:
    """Two engines on one simulated exchange, a bridge each, one mirror; kill -9 the primary engine."""
    import signal

    from mdengine.engine.control import request
    from mdengine.exchanges import get_adapter
    from mdengine.sim import Simulator
    from mdengine.store import layout as L

    symbols = ["BTC/USDT", "ETH/USDT"]
    ns_a, ns_b, ns_m = ("f" + uuid.uuid4().hex[:8] for _ in range(3))
    bus = "fbus" + uuid.uuid4().hex[:6]
    procs: list[subprocess.Popen] = []
    readers: list[SegmentReader] = []
    with Simulator(seed=7, exchanges=["okx"], rate_hz=40.0) as sim:
        eps = get_adapter("okx").sim_endpoints(sim.endpoints())
        try:
            for ns in (ns_a, ns_b):
                cfg = os.path.join(tmp, f"{ns}.toml")
                with open(cfg, "w") as f:
                    f.write(f'namespace = "{ns}"\n[[exchanges]]\nname = "okx"\nsymbols = {json.dumps(symbols)}\n'
                            "endpoints = {" + ", ".join(f'{k} = "{v}"' for k, v in eps.items()) + "}\n"
                            "max_symbols = 8\nbook_capacity = 20\nbook_depth = 20\ntrade_capacity = 8192\n"
                            "heartbeat_interval_s = 0.2\n")
                procs.append(subprocess.Popen([sys.executable, "-m", "mdengine", "run", "--config", cfg], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for ns in (ns_a, ns_b):
                readers.append(_attach(ns, "okx"))
                for sym in symbols:
                    _live(readers[-1], sym)
            cmd = [sys.executable, "-m", "mdengine", "bridge"]
            for ns, sid in ((ns_a, "A"), (ns_b, "B")):
                procs.append(subprocess.Popen(cmd + ["publish", "--nats", url, "--namespace", ns, "--as", bus,
                                                     "--source-id", sid, "--log-level", "WARNING"], env=env,
                                              stdout=subprocess.DEVNULL))
            procs.append(subprocess.Popen(cmd + ["mirror", "--nats", url, "--namespace", ns_m, "--source", bus,
                                                 "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL))
            mirror = _attach(ns_m, "okx")
            readers.append(mirror)
            for sym in symbols:
                _live(mirror, sym)
            book = mirror.book(symbols[0])
            samples = []
            killed = None
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5.0:
                h = book.header()
                samples.append((time.monotonic(), h.update_id, h.state))
                if killed is None and time.monotonic() - t0 >= 2.0:
                    pids = [f["pid"] for f in request(ns_a, {"op": "status"})["feeds"] if f["pid"]]
                    for pid in [*pids, procs[0].pid]:
                        os.kill(pid, signal.SIGKILL)
                    killed = time.monotonic()
                time.sleep(0.001)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            for r in readers:
                r.close()
            for name in shm.list_names(ns_a) + shm.list_names(ns_b) + shm.list_names(ns_m):
                shm.unlink(name)
    changes = [t for (t, u, _), (_, prev, _) in zip(samples[1:], samples, strict=False) if u != prev]
    gaps = list(zip(changes, changes[1:], strict=False))
    after = max(b - a for a, b in gaps if b >= killed)
    before = max(b - a for a, b in gaps if b < killed)
    not_live = sum(t1 - t0 for (t0, _, st), (t1, _, _) in zip(samples, samples[1:], strict=False)
                   if t0 >= killed and st != L.BookState.LIVE)
    return {"failover_ms": round(after * 1e3, 1), "failover_normal_ms": round(before * 1e3, 1),
            "failover_not_live_ms": round(not_live * 1e3, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, a shorter burst (about 20 s)")
    args = ap.parse_args()
    samples = 300 if args.quick else 3000
    burst_s = 2.0 if args.quick else 8.0
    src_ns, dst_ns = "b" + uuid.uuid4().hex[:8], "c" + uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="mdengine-bridge-perf-")
    server = NatsServer(tmp).start()
    writer = SegmentWriter(src_ns, EXCHANGE, create=True, max_symbols=8, book_capacity=DEPTH, trade_capacity=4096)
    writer.set_freshness(2.0, 0.5)
    slots = [writer.add_symbol(m, n, u) for m, n, u in SYMBOLS]
    writer.set_running()
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    cmd = [sys.executable, "-m", "mdengine", "bridge"]
    procs = [subprocess.Popen(cmd + ["publish", "--nats", server.url, "--namespace", src_ns, "--log-level",
                                     "WARNING"], env=env, stdout=subprocess.PIPE),
             subprocess.Popen(cmd + ["mirror", "--nats", server.url, "--namespace", dst_ns, "--source", src_ns,
                                     "--log-level", "WARNING"], env=env, stdout=subprocess.PIPE)]
    mismatches = 0
    try:
        src = SegmentReader(src_ns, EXCHANGE)
        u = 0
        trade_index = 0

        def step(slot_list, trades: int = 0) -> None:
            nonlocal u, trade_index
            u += 1
            now = time.time_ns()
            for slot in slot_list:
                flat, nb, na = levels(u, slot)
                writer.publish_levels(slot, flat, nb, na, update_id=u, recv_ts_ns=now)
                writer.confirm(slot, now)
            if trades:
                writer.append_trades(slots[0], [(now, now, 100.0 + trade_index % 10, 1.0, trade_index + j, 1, 0)
                                                for j in range(trades)])
                trade_index += trades
            writer.heartbeat(now)
            writer.wake_readers()

        step(slots)
        wait(lambda: all(mirror_u(dst_ns, s[2]) == src.book(s[2]).header().update_id for s in SYMBOLS), 60)
        dst = SegmentReader(dst_ns, EXCHANGE)
        book = dst.book(SYMBOLS[0][2])
        lat = []
        for _ in range(samples):  # ping-pong on one symbol
            step(slots[:1])
            h = src.book(SYMBOLS[0][2]).header()
            wait(lambda v=h.update_id: book.header().update_id >= v)
            got = book.header()
            lat.append((got.pub_ts_ns - h.pub_ts_ns) / 1e3)
            mismatches += not same(src, dst, SYMBOLS[0][2])
        lat_a = np.array(lat)
        p50, p99 = float(np.percentile(lat_a, 50)), float(np.percentile(lat_a, 99))
        print(f"publish -> mirror shared memory, {samples} books one at a time: p50 {p50:.0f} us, "
              f"p99 {p99:.0f} us, max {lat_a.max():.0f} us")

        seq0 = stream_seq(server.url, src_ns)
        t0 = time.monotonic()
        offered = 0
        while time.monotonic() - t0 < burst_s:
            step(slots, trades=2)
            offered += len(slots) + 1
        elapsed = time.monotonic() - t0
        time.sleep(0.5)  # what the publisher read in the burst's last moments
        sent = stream_seq(server.url, src_ns) - seq0
        rate = sent / elapsed
        wait(lambda: all(mirror_u(dst_ns, s[2]) == src.book(s[2]).header().update_id for s in SYMBOLS), 60)
        burst_mismatches = sum(not same(src, dst, s[2]) for s in SYMBOLS)
        mismatches += burst_mismatches
        print(f"burst {elapsed:.1f} s: the source offered {offered / elapsed:,.0f} updates/s (books + trade "
              f"batches, 4 symbols); the bridge put {rate:,.0f} messages/s on the stream (statuses included); "
              f"mirror books differing from the source after it: {burst_mismatches}")
        dst.close()
        src.close()
        fo = failover(server.url, env, tmp)
        print(f"failover (kill -9 of the primary engine, standby engine on the same exchange): the mirror's reader "
              f"waited at most {fo['failover_ms']} ms for a new update after the kill ({fo['failover_normal_ms']} "
              f"ms before it); not live for {fo['failover_not_live_ms']} ms")
    finally:
        for p in procs:
            p.terminate()
        outs = [p.communicate(timeout=30)[0].decode().strip().splitlines() for p in procs]
        for name, out in zip(("publisher", "mirror"), outs, strict=True):
            print(f"{name}: {out[-1] if out else '(no summary)'}")
        writer.close()
        server.stop()
        for name in shm.list_names(src_ns) + shm.list_names(dst_ns):
            shm.unlink(name)
    print(json.dumps({"bridge_p50_us": round(p50, 1), "bridge_p99_us": round(p99, 1),
                      "bridge_msgs_per_s": round(rate), "mirror_mismatches": mismatches, **fo, "samples": samples,
                      "burst_s": round(elapsed, 2), "quick": args.quick}))


if __name__ == "__main__":
    main()
