"""Where a record's feed-process CPU goes: the tap (feed thread) and the shipper thread, per record.

Workload: N frames of ~400 B, each a fresh str (as a feed's socket reader makes them) decoded `--decodes`
times with orjson (~1 us each, a stand-in for the feed's own work), tapped into a live Recorder (writer child
process, shipper every `poll_interval_s`), then flush(). Figures per record, medians of `--runs` interleaved
runs, for the C tap queue and for the pure-Python twin (`mdengine.recording.tap._TapQueue`, the deque it replaced):
- tap_cpu_ns: the feed thread's CPU per frame minus the plain loop's (the tap itself, cache effects included);
- shipper_cpu_ns: the shipper thread's CPU (its take/encode under the GIL, plus the socket sends, which
  release the GIL);
- lost_ns: the feed thread's wall time per frame minus the plain loop's. It is what a CPU-bound feed loses only
  with a core to spare for the writer child; on a busy 2-core box it is mostly CPU taken by the child.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import orjson

from mdengine.recording import tap as recorder_mod
from mdengine.recording.tap import Recorder

URL = "wss://stream.binance.com:9443/stream"
BODY = ('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":%d,"s":"BTCUSDT","U":%d,"u":%d,'
        '"b":[["60000.10","0.500"],["59999.90","1.200"],["59999.80","0.010"]],"a":[["60000.20","0.300"],'
        '["60000.30","2.000"]],"pad":"%s"}}')


def _loop(n: int, tap, decodes: int) -> tuple[int, int]:
    """(wall ns, feed thread CPU ns) of n fresh frames, each decoded `decodes` times (orjson, ~1 us each: the
    feed's own work per frame; at a few us per frame the writer child keeps up on 2 cores) and tapped when
    `tap` is given."""
    pad = "x" * 170
    loads = orjson.loads
    ns = time.time_ns()
    cpu0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    work = range(decodes)
    if tap is None:
        for i in range(n):
            text = BODY % (i, i, i, pad)
            for _ in work:
                loads(text)
    else:
        for i in range(n):
            text = BODY % (i, i, i, pad)
            tap("recv", URL, text, ns + i)
            for _ in work:
                loads(text)
    return time.perf_counter_ns() - t0, time.thread_time_ns() - cpu0


def _thread_cpu_ns(rec: Recorder) -> int:
    return time.clock_gettime_ns(time.pthread_getcpuclockid(rec._thread.ident))


def run(n: int, c_queue: bool, decodes: int) -> dict[str, float]:
    saved = recorder_mod._tap_queue
    if not c_queue:
        recorder_mod._tap_queue = None
    try:
        with tempfile.TemporaryDirectory() as d:
            rec = Recorder(d, "binance", max_queue=n + 1)
            rec.flush(30.0)  # the writer process is up
            plain_wall, plain_cpu = _loop(n, None, decodes)
            ship0 = _thread_cpu_ns(rec)
            wall, cpu = _loop(n, rec.tap, decodes)
            rec.flush(60.0)
            ship = _thread_cpu_ns(rec) - ship0
            st = rec.stats()
            rec.close()
    finally:
        recorder_mod._tap_queue = saved
    assert st.written == n and st.dropped == 0, st
    return {"lost_ns": (wall - plain_wall) / n, "tap_cpu_ns": (cpu - plain_cpu) / n, "shipper_cpu_ns": ship / n,
            "plain_ns": plain_wall / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--decodes", type=int, default=4, help="orjson decodes per frame (the feed's work)")
    a = ap.parse_args(argv)
    print(f"record_cpu: {a.frames} fresh ~{len(BODY % (0, 0, 0, 'x' * 170))} B frames, median of {a.runs} runs "
          f"(interleaved), {a.decodes} decodes per frame, python={sys.version.split()[0]}")
    result: dict[str, object] = {"bench": "record_cpu", "frames": a.frames}
    runs: dict[str, list[dict[str, float]]] = {"c": [], "python": []}
    if recorder_mod._tap_queue is None:
        del runs["c"]
    for _ in range(a.runs):
        for name in runs:
            runs[name].append(run(a.frames, name == "c", a.decodes))
    for name, rs in runs.items():
        med = {k: round(statistics.median(r[k] for r in rs), 1) for k in rs[0]}
        print(f"[{name:6}] per record: feed thread loses {med['lost_ns']:6.1f} ns of {med['plain_ns']:.0f} "
              f"({100 * med['lost_ns'] / med['plain_ns']:.1f} %), tap CPU {med['tap_cpu_ns']:6.1f} ns, "
              f"shipper thread CPU {med['shipper_cpu_ns']:6.1f} ns")
        result[name] = med
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
