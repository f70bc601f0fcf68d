"""What recording costs the feed: the tap on the hot path, and the writer thread's throughput.

Workload: the real OKX recording (shared/recordings/okx-2022-05-13.jsonl, 410 frames of books/trades/tickers),
its frames fed K times through the OKX adapter (each pass starts with the books' snapshots, so the state
stays realistic). Figures (best of `--runs`, after one warmup pass):
- adapter_ns_per_frame: OkxAdapter.on_frame alone (the per-frame processing a feed does before publishing);
- tap_ns_per_frame: Recorder.tap alone (append to the bounded deque);
- with_recorder_ns_per_frame: on_frame + tap with the writer thread live (serialising, compressing and
  writing in the same process, so its GIL share is included);
- writer_frames_per_s: frames the writer thread serialises (orjson) + compresses (zstd) + writes per second;
- record_overhead_pct: tap / adapter * 100, the hot-path cost the feed thread pays per frame (target <= 10 %);
- end_to_end_overhead_pct: (with_recorder - adapter) / adapter * 100 when the feed is CPU-bound, i.e. also the
  writer thread's GIL share (it serialises off the hot path, but in the same process). Noisy on a shared box.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from mdengine.export import Rebuild
from mdengine.recorder import Recorder

HERE = os.path.dirname(os.path.abspath(__file__))
RECORDING = os.path.join(HERE, "..", "..", "shared", "recordings", "okx-2022-05-13.jsonl")


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
    print(f"workload: {os.path.basename(args.recording)}, {len(frames)} frames x {passes} passes, best of {runs}")

    _loop(on_frame, frames, 1)  # warmup
    with tempfile.TemporaryDirectory() as d:
        rec = Recorder(d, "okx", max_queue=n + 1)
        tap = rec.tap
        t0 = time.perf_counter_ns()
        for _ in range(passes):
            for _conn, url, data in frames:
                tap("recv", url, data, 0)
        tap_ns = (time.perf_counter_ns() - t0) / n
        rec.close()

        # interleaved so that load from other processes on the box hits both variants alike
        without, with_rec = [], []
        for _ in range(runs):
            without.append(_loop(on_frame, frames, passes))
            rec = Recorder(d, "okx", max_queue=n + 1)
            with_rec.append(_loop(on_frame, frames, passes, rec.tap))
            rec.close()
        adapter_ns, with_ns = min(without), min(with_rec)

        # writer throughput: queue everything first (writer parked), then time the drain + compress + write
        rec = Recorder(d, "okx", max_queue=n + 1, poll_interval_s=3600)
        time.sleep(0.05)
        ns = time.time_ns()
        for _ in range(passes):
            for _conn, url, data in frames:
                rec.tap("recv", url, data, ns)
        t0 = time.perf_counter()
        rec.close()
        writer_fps = n / (time.perf_counter() - t0)

    overhead = (with_ns - adapter_ns) / adapter_ns * 100
    tap_pct = tap_ns / adapter_ns * 100
    print(f"adapter on_frame           {adapter_ns:10.0f} ns/frame")
    print(f"tap                        {tap_ns:10.0f} ns/frame  ({tap_pct:.1f} % of on_frame)")
    print(f"on_frame + tap + writer    {with_ns:10.0f} ns/frame  ({overhead:+.1f} % end to end, CPU-bound)")
    print(f"writer thread              {writer_fps:10.0f} frames/s serialised+compressed+written")
    print(json.dumps({"bench": "record_overhead", "frames": n, "adapter_ns_per_frame": round(adapter_ns),
                      "tap_ns_per_frame": round(tap_ns), "with_recorder_ns_per_frame": round(with_ns),
                      "writer_frames_per_s": round(writer_fps), "record_overhead_pct": round(tap_pct, 2),
                      "end_to_end_overhead_pct": round(overhead, 2), "target_pct": 10.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
