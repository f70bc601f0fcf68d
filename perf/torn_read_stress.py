"""The long torn-read stress: minutes of content-checked latch reads against a back-to-back writer process.

Same processes and checks as tests/test_store_stress.py (tests/store_helpers.py roles), sized up:
two reader processes verify `--reads` snapshots in total (default 10^7) of a 20-level book whose
every level encodes its update id, and run the two broken readers (no seqlock; no counter
re-check) alongside as negative controls, which must see torn data. Exits 1 if any real read was
torn or a control saw nothing. Last line: one JSON object.

Usage: python perf/torn_read_stress.py [--reads N] [--readers R] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import store_helpers as H  # noqa: E402

from mdengine.store import create_segment, list_names, unlink  # noqa: E402

DEPTH = 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=10_000_000, help="verified reads in total")
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="10^6 reads")
    args = ap.parse_args()
    total = 1_000_000 if args.quick else args.reads
    ns = "s" + uuid.uuid4().hex[:8]
    print(f"{args.readers} readers x {total // args.readers:,} verified {DEPTH}-level reads, back-to-back writer, "
          f"negative controls on; load {os.getloadavg()[0]:.1f}", flush=True)
    create_segment(ns, H.EXCHANGE, max_symbols=1, book_capacity=DEPTH, trade_capacity=64)
    t0 = time.monotonic()
    writer = H.spawn("book-writer", ns=ns, depth=DEPTH)
    try:
        writer.next(60)
        readers = [H.spawn("book-reader", ns=ns, depth=DEPTH, writer_depth=DEPTH, reads=total // args.readers,
                           controls=True, min_control_reads=max(20_000, total // 50), seconds=3600)
                   for _ in range(args.readers)]
        results = [r.finish(4000) for r in readers]
    finally:
        writer.terminate()
        published = writer.finish()["published"]
        for name in list_names(ns):
            unlink(name)
    took = time.monotonic() - t0
    keys = ("reads", "torn", "retries", "control_reads", "no_seqlock_torn", "no_recheck_torn")
    summary = {k: sum(r[k] for r in results) for k in keys}
    summary.update(published=published, seconds=round(took, 1), reads_per_s=round(summary["reads"] / took),
                   no_seqlock_torn_rate=summary["no_seqlock_torn"] / max(summary["control_reads"], 1),
                   no_recheck_torn_rate=summary["no_recheck_torn"] / max(summary["control_reads"], 1))
    ok = summary["torn"] == 0 and summary["no_seqlock_torn"] > 0 and summary["no_recheck_torn"] > 0
    summary["ok"] = ok
    print(f"{summary['reads']:,} verified reads in {took:.1f} s against {published:,} publishes: "
          f"{summary['torn']} torn; controls: no seqlock {summary['no_seqlock_torn']:,} torn, "
          f"no re-check {summary['no_recheck_torn']:,} torn of {summary['control_reads']:,} each")
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
