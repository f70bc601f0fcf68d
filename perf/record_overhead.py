"""What recording costs the feed process, with the writer in a child process (default) and in a thread.

Workload: the real OKX recording (tests/data/okx-2022-05-13.jsonl, 410 frames of books/trades/tickers),
its frames fed K times through the OKX adapter (each pass starts with the books' snapshots, so the state
stays realistic). Modes: `process` (Recorder default: a shipper thread marshals batches to a writer child
process) and `thread` (Recorder(process=False): serialising, compressing and writing in a thread of the feed
process). Figures (best of `--runs`, after one warmup pass):
- adapter_ns_per_frame: OkxAdapter.on_frame alone (the per-frame processing a feed does before publishing);
- tap_ns_per_frame: Recorder.tap alone (append to the bounded deque);
- <mode>.feed_cpu_ns_per_record: CPU time of the feed process (all its threads: the taps, the shipper or the
  in-process writer) per record, for the recording's frames tapped as fast as possible, then flush(). This
  bounds the GIL time recording takes from a CPU-bound feed thread;
- process.writer_cpu_ns_per_record: the writer child's CPU per record (psutil; not the feed's);
- <mode>.with_recorder_ns_per_frame: on_frame + tap with the recorder live, interleaved with plain runs;
- <mode>.end_to_end_overhead_pct: (with_recorder - adapter) / adapter * 100. Noisy on a shared box;
- <mode>.writer_frames_per_s: records the writer serialises + compresses + writes per second (queue filled
  first, then timed to the end of close());
- record_overhead_pct: process.feed_cpu_ns_per_record / adapter_ns_per_frame * 100 (target <= 10 %).
`perf/feed_throughput.py` measures the frames/s lost on a simulated Binance feed (~20 µs per frame).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import psutil

from mdengine.recording.export import Rebuild
from mdengine.recording.tap import Recorder

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDING = os.path.join(HERE, "..", "tests", "data", "okx-2022-05-13.jsonl")
MODES = ("process", "thread")


def _frames(rb: Rebuild) -> list[tuple[str, str, str]]:
    for _ in rb:  # drive once so the adapter has opened and subscribed its connection
        pass
    out = []
    for r in rb.records:
        if r.kind == "recv":
            conn = rb._conn_for(r.url)
            if conn is not None:
                out.append((conn, r.url, r.data))
    return out


def _loop(on_frame, frames, passes: int, tap=None) -> float:
    ns = time.time_ns()
    t0 = time.perf_counter_ns()
    for _ in range(passes):
        if tap is None:
            for conn, _url, data in frames:
                on_frame(conn, data, ns)
        else:
            for conn, url, data in frames:
                tap("recv", url, data, ns)
                on_frame(conn, data, ns)
    return (time.perf_counter_ns() - t0) / (passes * len(frames))


def _ready(d: str, mode: str, n: int, **kw) -> Recorder:
    rec = Recorder(d, "okx", max_queue=n + 1, process=mode == "process", **kw)
    rec.flush(30.0)  # the writer process is up: its start-up is not part of any figure
    return rec


def _cpu_ns(proc: psutil.Process | None) -> int:
    if proc is None:
        return 0
    t = proc.cpu_times()
    return int((t.user + t.system) * 1e9)


def _cpu_per_record(d: str, mode: str, frames, passes: int) -> tuple[float, float]:
    """(feed process CPU ns, writer child CPU ns) per record: tap everything, then flush() (all written)."""
    n = passes * len(frames)
    rec = _ready(d, mode, n)
    child = psutil.Process(rec.writer_pid) if rec.writer_pid else None
    ns = time.time_ns()
    tap = rec.tap
    cpu0, child0 = time.process_time_ns(), _cpu_ns(child)  # the child's start-up is not counted
    for _ in range(passes):
        for _conn, url, data in frames:
            tap("recv", url, data, ns)
    rec.flush(60.0)
    cpu, child_cpu = time.process_time_ns() - cpu0, _cpu_ns(child) - child0
    rec.close()
    return cpu / n, child_cpu / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer passes (a smoke run)")
    ap.add_argument("--passes", type=int, default=40, help="passes over the recording per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--recording", default=RECORDING)
    args = ap.parse_args(argv)
    passes, runs = (5, 2) if args.quick else (args.passes, args.runs)
    rb = Rebuild(args.recording)
    frames = _frames(rb)
    on_frame = rb.adapter.on_frame
    n = passes * len(frames)
    print(f"workload: {os.path.basename(args.recording)}, {len(frames)} frames x {passes} passes, best of {runs}; "
          f"modes {', '.join(MODES)}")

    _loop(on_frame, frames, 1)  # warmup
    result: dict = {"bench": "record_overhead", "frames": n}
    with tempfile.TemporaryDirectory() as d:
        rec = _ready(d, "process", n, poll_interval_s=3600)  # the tap alone: no shipping meanwhile
        tap = rec.tap
        t0 = time.perf_counter_ns()
        for _ in range(passes):
            for _conn, url, data in frames:
                tap("recv", url, data, 0)
        tap_ns = (time.perf_counter_ns() - t0) / n
        rec.close()

        # interleaved so that load from other processes on the box hits every variant alike
        without: list[float] = []
        with_rec: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        for _ in range(runs):
            without.append(_loop(on_frame, frames, passes))
            for mode in MODES:
                rec = _ready(d, mode, n)
                with_rec[mode].append(_loop(on_frame, frames, passes, rec.tap))
                rec.close()
                cpu[mode].append(_cpu_per_record(d, mode, frames, passes))
        adapter_ns = min(without)

        fps: dict[str, float] = {}
        for mode in MODES:  # writer throughput: queue everything first (shipper parked), then time to closed
            rec = _ready(d, mode, n, poll_interval_s=3600)
            ns = time.time_ns()
            for _ in range(passes):
                for _conn, url, data in frames:
                    rec.tap("recv", url, data, ns)
            t0 = time.perf_counter()
            rec.close()
            fps[mode] = n / (time.perf_counter() - t0)

    print(f"adapter on_frame           {adapter_ns:10.0f} ns/frame")
    print(f"tap                        {tap_ns:10.0f} ns/frame  ({tap_ns / adapter_ns * 100:.1f} % of on_frame)")
    result.update(adapter_ns_per_frame=round(adapter_ns), tap_ns_per_frame=round(tap_ns))
    for mode in MODES:
        feed_cpu = min(c for c, _ in cpu[mode])
        child_cpu = min(c for _, c in cpu[mode])
        with_ns = min(with_rec[mode])
        overhead = (with_ns - adapter_ns) / adapter_ns * 100
        print(f"[{mode:7}] feed process CPU {feed_cpu:8.0f} ns/record ({feed_cpu / adapter_ns * 100:.1f} % of "
              f"on_frame)" + (f"; writer process CPU {child_cpu:.0f} ns/record" if mode == "process" else ""))
        print(f"[{mode:7}] on_frame + tap   {with_ns:8.0f} ns/frame  ({overhead:+.1f} % end to end, CPU-bound); "
              f"writer {fps[mode]:.0f} records/s")
        result[mode] = {"feed_cpu_ns_per_record": round(feed_cpu), "with_recorder_ns_per_frame": round(with_ns),
                        "end_to_end_overhead_pct": round(overhead, 2), "writer_frames_per_s": round(fps[mode])}
        if mode == "process":
            result[mode]["writer_cpu_ns_per_record"] = round(child_cpu)
    result["record_overhead_pct"] = round(result["process"]["feed_cpu_ns_per_record"] / adapter_ns * 100, 2)
    result["target_pct"] = 10.0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
