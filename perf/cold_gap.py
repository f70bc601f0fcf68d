"""How much slower a fixed piece of Python work runs after an idle gap, and whether re-running it keeps it fast.

The work is the feed's kind of work (parse 40 JSON levels, fill a dict, sort, sum), run once after each gap.
Two sweeps, p50 / p10 / p90 in µs:
  gap   the process waits `gap` (spinning on the clock, or asleep in time.sleep) between runs: how long an
        idle gap must be before the work turns cold on this machine;
  warm  a 10 ms gap, asleep, with the same work re-run every `warm` ms during the gap (the
        result thrown away): whether a periodic warm-up pass keeps the code and data hot.
This measures the machine, not mdengine: perf/e2e_latency.py's cold-work gauge is its one-figure summary.

Usage: python perf/cold_gap.py [--quick]. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

_LEVELS = json.dumps([[f"{60000 + i * 0.5:.1f}", f"{i % 7 + 1}.25"] for i in range(40)])


def work() -> float:
    book = {float(p): float(q) for p, q in json.loads(_LEVELS)}
    return sum(book[k] for k in sorted(book)[:20])


def run(gap_s: float, n: int, *, sleep: bool, warm_every_s: float = 0.0) -> tuple[float, float, float]:
    """p50, p10, p90 µs of `work()` run once after each of `n` gaps of `gap_s`."""
    clock = time.perf_counter
    times = []
    for _ in range(n):
        end = clock() + gap_s
        while (now := clock()) < end:
            step = min(warm_every_s or gap_s, end - now)
            if sleep:
                time.sleep(step)
            else:
                stop = now + step
                while clock() < stop:
                    pass
            if warm_every_s:
                work()
        t0 = time.perf_counter_ns()
        work()
        times.append((time.perf_counter_ns() - t0) / 1e3)
    times.sort()
    return times[n // 2], times[n // 10], times[9 * n // 10]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs per point (about 10 s)")
    args = ap.parse_args()
    n = 100 if args.quick else 300
    run(0.0, n, sleep=False)  # warm the interpreter before the first figure
    summary: dict[str, float] = {}
    print(f"# cold gap: one piece of Python work after an idle gap; {n} runs per point; "
          f"python={sys.version.split()[0]}")
    for gap_ms in (0, 0.2, 0.5, 1, 2, 4, 10):
        for sleep in (False, True):
            p50, p10, p90 = run(gap_ms / 1e3, n, sleep=sleep)
            mode = "asleep" if sleep else "spinning"
            print(f"gap {gap_ms:5.1f} ms {mode:8s}  p50 {p50:7.1f}  p10 {p10:7.1f}  p90 {p90:7.1f} us")
            summary[f"gap_{gap_ms:g}ms_{mode}_p50_us"] = round(p50, 1)
    for warm_ms in (2, 1, 0.5):
        p50, p10, p90 = run(0.01, n, sleep=True, warm_every_s=warm_ms / 1e3)
        print(f"gap  10.0 ms asleep, warm every {warm_ms:g} ms  p50 {p50:7.1f}  p10 {p10:7.1f}  p90 {p90:7.1f} us")
        summary[f"warm_{warm_ms:g}ms_p50_us"] = round(p50, 1)
    summary["cold_ratio_10ms"] = round(summary["gap_10ms_asleep_p50_us"] / summary["gap_0ms_asleep_p50_us"], 2)
    summary["warm_1ms_ratio"] = round(summary["warm_1ms_p50_us"] / summary["gap_0ms_asleep_p50_us"], 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
