"""Writer and reader processes for the store's multi-process tests, plus the versioned-book encoding.

Every level of a versioned book encodes the book's update id `u`, so any mix of two states is
visible in the bytes: bid i = (u*1000 + i, u), ask i = (u*1000 + 500 + i, u + 0.5), depths
vary with `u`, and levels past a side's depth are NaN/0. Trades encode their ring index.

Run as a script: ``python tests/store_helpers.py ROLE JSON-ARGS``; a role prints one JSON line
(its result) last; `spawn` / `finish` wrap that for tests.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from mdengine.store import layout as L

HERE = os.path.abspath(__file__)
EXCHANGE = "stress"
MARKET, NATIVE, UNIFIED = "spot", "BTCUSDT", "BTC/USDT"
_NAN = math.nan


# --------------------------------------------------------------------------- encodings
def depths(u: int, depth: int) -> tuple[int, int]:
    """Bid and ask depth of versioned book `u` (both >= 1 when depth >= 5)."""
    return depth - u % 3, depth - u % 5


def versioned_flat(u: int, depth: int) -> tuple[list[float], int, int]:
    nb, na = depths(u, depth)
    base = u * 1000.0
    flat = [_NAN, 0.0, _NAN, 0.0] * max(nb, na)
    flat[0:4 * nb:4] = [base + i for i in range(nb)]
    flat[1:4 * nb:4] = [float(u)] * nb
    flat[2:4 * na:4] = [base + 500 + i for i in range(na)]
    flat[3:4 * na:4] = [u + 0.5] * na
    return flat, nb, na


def bad_rows(rows: np.ndarray, depth: int, writer_depth: int) -> np.ndarray:
    """Mask of rows (raw book copies: header + `depth` levels) that are not one versioned book."""
    k, width = rows.shape
    hdr = np.ndarray((k,), dtype=L.BOOK_HEADER_DTYPE, buffer=rows, strides=(width,))
    lv = np.ndarray((k, depth, 4), dtype="<f8", buffer=rows, offset=L.BOOK_HEADER_LENGTH,
                    strides=(width, L.LEVEL_LENGTH, 8))
    u = hdr["update_id"]
    nb, na = hdr["n_bids"].astype(np.int64), hdr["n_asks"].astype(np.int64)
    bad = (nb != writer_depth - u % 3) | (na != writer_depth - u % 5)
    uf = u.astype(np.float64)[:, None]
    i = np.arange(depth, dtype=np.float64)[None, :]
    inside_b = i < nb[:, None]
    inside_a = i < na[:, None]
    bad |= (np.where(inside_b, lv[:, :, 0] != uf * 1000 + i, ~np.isnan(lv[:, :, 0]))
            | np.where(inside_b, lv[:, :, 1] != uf, lv[:, :, 1] != 0)
            | np.where(inside_a, lv[:, :, 2] != uf * 1000 + 500 + i, ~np.isnan(lv[:, :, 2]))
            | np.where(inside_a, lv[:, :, 3] != uf + 0.5, lv[:, :, 3] != 0)).any(axis=1)
    return bad


def trade(idx: int) -> tuple[int, int, float, float, int, int, int]:
    return (idx, idx + 1, idx * 0.5, float(idx), idx, 1 if idx & 1 else -1, 0)


def bad_trades(recs: np.ndarray) -> int:
    idx = recs["index"]
    return int(((recs["trade_id"] != idx) | (recs["exch_ts_ns"] != idx) | (recs["price"] != idx * 0.5)
                | (recs["qty"] != idx)).sum())


class RowBuffer:
    """A `BookBuffer` look-alike whose bytes are one row of a big array, so a batch of reads can be
    checked with one vectorised pass instead of per-read numpy calls."""

    __slots__ = ("depth", "mv", "raw", "n_bids", "n_asks")

    def __init__(self, row: np.ndarray, depth: int) -> None:
        self.depth = depth
        self.mv = self.raw = memoryview(row)
        self.n_bids = self.n_asks = 0


# --------------------------------------------------------------------------- process plumbing
class Proc:
    """A helper process; a thread queues its stdout lines so waiting for one can time out."""

    def __init__(self, role: str, args: dict, env: dict | None = None) -> None:
        self.popen = subprocess.Popen([sys.executable, HERE, role, json.dumps(args)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)
        self.pid = self.popen.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self.last: dict | None = None

    def _pump(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout: float = 30.0) -> dict:
        """The next JSON line it prints; raises TimeoutError, or RuntimeError if it exited first."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"pid {self.pid}: no output within {timeout} s") from None
        if line is None:
            self.lines.put(None)
            raise RuntimeError(f"pid {self.pid} exited with {self.popen.wait()} before printing")
        self.last = json.loads(line)
        return self.last

    def finish(self, timeout: float = 60.0) -> dict:
        """Wait for it to exit; its last JSON line. Raises if it failed or printed nothing."""
        rc = self.popen.wait(timeout)
        self._thread.join(timeout)
        while True:
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                break
            self.last = json.loads(line)
        self.popen.stdin.close()
        self.popen.stdout.close()
        if rc != 0 or self.last is None:
            raise RuntimeError(f"pid {self.pid} exited with {rc}; last output {self.last}")
        return self.last

    def send(self, line: str = "go") -> None:
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()

    def stop(self, timeout: float = 60.0) -> None:
        """Terminate it if it still runs, reap it and end the thread reading its output (which would otherwise
        outlive the test, waiting on the pipe). Its output stays queued for finish(); safe after finish() or kill().
        A role reading commands from stdin ends at its end of file (its SIGTERM only sets a flag), so stdin is
        closed first."""
        self.popen.stdin.close()
        self.terminate()
        self.popen.wait(timeout)
        self._thread.join(timeout)
        self.popen.stdout.close()

    def kill(self) -> None:
        """SIGKILL and reap (the zombie would otherwise still count as alive)."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(30)
        self._thread.join(30)
        self.popen.stdin.close()
        self.popen.stdout.close()


def spawn(role: str, *, latch: str = "default", **args: object) -> Proc:
    """Start a helper process; latch="python" makes its writer use the pure-Python latch (MDENGINE_NO_SPEEDUPS)."""
    env = dict(os.environ, MDENGINE_NO_SPEEDUPS="1") if latch == "python" else None
    return Proc(role, args, env)


# the writers the stress tests run: the C latch where it is built, and always the pure-Python one
LATCHES = ["default", "python"]


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


# --------------------------------------------------------------------------- roles
def role_book_writer(a: dict) -> None:
    """Attach as the writer and publish versioned books until SIGTERM/SIGKILL or `seconds` pass.

    With `wait_go`, it takes over (books go STALE), prints its generation and waits for "go".
    Update ids continue from the book already in the slot, so every writer's data is newer.
    """
    from mdengine.store import SegmentWriter

    w = SegmentWriter(a["ns"], EXCHANGE, create=a.get("create", False), **a.get("capacities", {}))
    slot = w.add_symbol(MARKET, NATIVE, UNIFIED)
    prev = w.last_book(slot)  # the repaired book this writer starts from
    u = (prev[0] if prev else 0) + 1
    emit({"ready": True, "generation": w.generation, "pid": os.getpid(), "start_u": u,
          "latch": "python" if w._latch is None else "c"})  # noqa: SLF001
    if a.get("wait_go"):
        sys.stdin.readline()
    w.set_running()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    depth, rate, end = a["depth"], a.get("rate", 0), time.monotonic() + a.get("seconds", 1e9)
    publish = w.publish_levels
    t0 = time.monotonic()
    n = 0
    while not stop and time.monotonic() < end:
        flat, nb, na = versioned_flat(u, depth)
        publish(slot, flat, nb, na, update_id=u)
        u += 1
        n += 1
        if not n & 1023:
            w.heartbeat()
        if rate and n > (time.monotonic() - t0) * rate:
            time.sleep(0.0005)
    w.close()
    emit({"published": n, "last_u": u - 1})


def role_book_reader(a: dict) -> None:
    """Verify `reads` latch reads (in vectorised batches) and, with `controls`, run two broken readers
    in the same run: one copying copy 0 without the seqlock, one picking a copy by the counter but
    not re-checking it. Stops when all are done or `seconds` pass.

    With `watch`, prints {"seen": [generation, state]} the first time it sees each pair.
    """
    from mdengine.store import SegmentReader

    seg = SegmentReader(a["ns"], EXCHANGE)
    reader = seg.book(UNIFIED)
    depth, writer_depth = a["depth"], a["writer_depth"]
    k = a.get("batch", 2048)
    rows = np.zeros((k, L.book_copy_length(depth)), dtype=np.uint8)
    bufs = [RowBuffer(rows[j], depth) for j in range(k)]
    read_into = reader.read_into
    base = seg.view.slot_base(reader.entry.slot)
    q, buf, seq_i = seg.view.q, seg.view.buf, base >> 3
    c0, c1 = base + seg.view.geometry.copy0, base + seg.view.geometry.copy1
    length = rows.shape[1]
    res = {"reads": 0, "torn": 0, "control_reads": 0, "no_seqlock_torn": 0, "no_recheck_torn": 0,
           "generations": [], "states": [], "dead_seen": 0, "max_u": 0}
    seen = set()
    end = time.monotonic() + a["seconds"]
    target, controls = a["reads"], a.get("controls", False)
    min_control = a.get("min_control_reads", 0)
    while time.monotonic() < end:
        need_reads = res["reads"] < target
        need_controls = controls and (res["no_seqlock_torn"] == 0 or res["no_recheck_torn"] == 0
                                      or res["control_reads"] < min_control)
        if not (need_reads or need_controls or a.get("watch")):
            break
        if need_reads or a.get("watch"):
            for b in bufs:
                read_into(b)
            bad = bad_rows(rows, depth, writer_depth)
            res["torn"] += int(bad.sum())
            res["reads"] += k
            hdr = np.ndarray((k,), dtype=L.BOOK_HEADER_DTYPE, buffer=rows, strides=(length,))
            res["max_u"] = max(res["max_u"], int(hdr["update_id"].max()))
            if a.get("watch"):
                for pair in set(zip(hdr["generation"].tolist(), hdr["state"].tolist(), strict=True)) - seen:
                    seen.add(pair)
                    emit({"seen": list(pair)})
                if not seg.writer_alive():
                    res["dead_seen"] += 1
                if os.path.exists(a["stop_file"]):
                    break
        if need_controls:
            for b in bufs:  # broken reader 1: no seqlock at all
                b.mv[:length] = buf[c0:c0 + length]
            res["no_seqlock_torn"] += int(bad_rows(rows, depth, writer_depth).sum())
            for b in bufs:  # broken reader 2: chooses the copy by the counter, never re-checks it
                s = q[seq_i]
                c = c1 if s & 1 else c0
                b.mv[:length] = buf[c:c + length]
            res["no_recheck_torn"] += int(bad_rows(rows, depth, writer_depth).sum())
            res["control_reads"] += k
    res["generations"] = sorted({g for g, _ in seen})
    res["states"] = sorted({s for _, s in seen})
    res["retries"] = reader.retries
    del read_into, reader, bufs, rows
    seg.close()
    emit(res)


def role_ring_writer(a: dict) -> None:
    """Append `total` trades (record i encodes i) in random batch sizes up to 1.5x the ring."""
    from mdengine.store import SegmentWriter

    w = SegmentWriter(a["ns"], EXCHANGE)
    slot = w.add_symbol(MARKET, NATIVE, UNIFIED)
    rng = random.Random(a.get("seed", 1))
    cap, total = a["capacity"], a["total"]
    i = 0
    while i < total:
        m = min(rng.randint(1, cap + cap // 2), total - i)
        w.append_trades(slot, [trade(j) for j in range(i, i + m)])
        i += m
    ring = "python" if w._ring_append is None else "c"  # noqa: SLF001
    w.close()
    emit({"written": i, "ring": ring})


def role_ring_reader(a: dict) -> None:
    """Poll until `total` trades are accounted for; with `naive`, also run a reader that trusts
    records up to `tail` without re-checking `tail_intent` (it must see overwritten records)."""
    from mdengine.store import SegmentReader

    seg = SegmentReader(a["ns"], EXCHANGE)
    tr = seg.trades(UNIFIED, start=0)
    rng = random.Random(a.get("seed", 2))
    outs = [tr.new_buffer(n) for n in (1, 7, 64, tr.capacity)]
    total, end = a["total"], time.monotonic() + a["seconds"]
    got = lost = bad = order = 0
    naive_reads = naive_bad = 0
    cap, mask = tr.capacity, tr.capacity - 1
    rec0 = tr._records  # noqa: SLF001 - the naive control reimplements the copy
    raw = np.frombuffer(seg.view.buf, np.uint8)
    naive_cursor = 0
    while tr.cursor < total and time.monotonic() < end:
        before = tr.cursor
        recs, n_lost = tr.poll(outs[rng.randrange(len(outs))])
        lost += n_lost
        got += len(recs)
        bad += bad_trades(recs)
        if len(recs) and not np.array_equal(recs["index"], np.arange(before + n_lost, before + n_lost + len(recs))):
            order += 1
        if a.get("naive"):
            tail = tr.tail
            start = max(naive_cursor, tail - cap)
            n = tail - start
            if n:
                first = start & mask
                k1 = min(n, cap - first)
                recs = np.empty(n, dtype=L.TRADE_DTYPE)
                dst = recs.view(np.uint8)
                size = L.TRADE_RECORD_LENGTH
                dst[:k1 * size] = raw[rec0 + first * size:rec0 + (first + k1) * size]
                dst[k1 * size:] = raw[rec0:rec0 + (n - k1) * size]
                naive_reads += n
                naive_bad += int((recs["index"] != np.arange(start, tail)).sum()) + bad_trades(recs)
            naive_cursor = tail
    del raw
    seg.close()
    emit({"got": got, "lost": lost, "bad": bad, "out_of_order": order, "cursor": tr.cursor,
          "naive_reads": naive_reads, "naive_bad": naive_bad})


def role_attach_and_exit(a: dict) -> None:
    """Create the segment as its writer, attach a reader, attach `control` with a plain SharedMemory
    (which the resource tracker will unlink at exit), then exit normally."""
    from multiprocessing import shared_memory

    from mdengine.store import SegmentReader, SegmentWriter

    w = SegmentWriter(a["ns"], EXCHANGE, create=True)
    w.add_symbol(MARKET, NATIVE, UNIFIED)
    r = SegmentReader(a["ns"], EXCHANGE)
    r.book(UNIFIED).top()
    plain = shared_memory.SharedMemory(name=a["control"])
    emit({"generation": w.generation})
    plain.close()
    r.close()
    w.close()


# two identities one directory entry alternates between: each copy a reader takes must be one of them
DIRECTORY_IDENTITIES = (("AAA/USDT", 0.5, 1.0), ("BBB/USDT", 2.0, 3.0))


def role_directory_rewriter(a: dict) -> None:
    """Attach as the writer and rewrite (market, native)'s entry alternately with DIRECTORY_IDENTITIES (as a
    re-subscribe with fresh metadata does) until SIGTERM or `seconds` pass."""
    from mdengine.store import SegmentWriter

    w = SegmentWriter(a["ns"], EXCHANGE, create=False)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    emit({"ready": True})
    n, end = 0, time.monotonic() + a.get("seconds", 1e9)
    while not stop and time.monotonic() < end:
        unified, tick, lot = DIRECTORY_IDENTITIES[n & 1]
        w.add_symbol(MARKET, NATIVE, unified, tick_size=tick, lot_size=lot)
        n += 1
    w.close()
    emit({"rewrites": n})


PERP_MARKET, PERP_NATIVE, PERP_UNIFIED = "usdm", "BTCUSDT", "BTC/USDT:USDT"


def perp_values(u: int) -> dict:
    """Versioned perp record u: every field encodes u, so a mix of two records is visible."""
    return {"mark_price": u + 0.25, "index_price": u + 0.5, "funding_rate": u * 1e-6, "next_funding_rate": u * 2e-6,
            "next_funding_ns": u * 10, "open_interest": u * 2.0}


def role_perp_writer(a: dict) -> None:
    """Attach as the writer and publish versioned perp records (every field encodes u, exch_ts_ns = u) and one
    liquidation per record (price u) until SIGTERM or `seconds` pass."""
    from mdengine.store import SegmentWriter

    w = SegmentWriter(a["ns"], EXCHANGE)
    slot = w.add_symbol(PERP_MARKET, PERP_NATIVE, PERP_UNIFIED, kind=L.MarketKind.LINEAR)
    emit({"ready": True})
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    u, end = 1, time.monotonic() + a.get("seconds", 1e9)
    while not stop and time.monotonic() < end:
        w.publish_perp(slot, exch_ts_ns=u, recv_ts_ns=u, **perp_values(u))
        w.append_liquidations(slot, [(u, u, float(u), 1.0, 0, 1, 0)])
        u += 1
    w.close()
    emit({"published": u - 1})



def top_flat(u: int) -> list[float]:
    """Level 0 of the top-only book `u`: each field encodes u, so a row mixing two states shows."""
    return [float(u), u + 0.25, u + 0.5, u + 0.75]


def role_tops_writer(a: dict) -> None:
    """Create a segment of `symbols` books, publish each once (update id u, top_flat(u)), then either publish them
    round-robin at full speed until SIGTERM / `seconds` pass, or (`on_command`) publish the slot named by each
    line read from stdin and answer its new update id."""
    from mdengine.store import SegmentWriter

    n_sym = a["symbols"]
    w = SegmentWriter(a["ns"], EXCHANGE, create=True, max_symbols=n_sym, book_capacity=1, trade_capacity=2)
    slots = [w.add_symbol(MARKET if i % 2 else "usdm", f"S{i}USDT", f"S{i}/USDT") for i in range(n_sym)]
    u = 0
    for slot in slots:
        u += 1
        w.publish_levels(slot, top_flat(u), 1, 1, update_id=u, recv_ts_ns=time.time_ns())
    w.set_freshness(3600.0, 1.0)
    w.set_running()
    w.heartbeat()
    w.wake_readers()
    emit({"ready": True, "u": u})
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if a.get("on_command"):
        for line in sys.stdin:
            u += 1
            w.publish_levels(slots[int(line)], top_flat(u), 1, 1, update_id=u, recv_ts_ns=time.time_ns())
            w.heartbeat()
            w.wake_readers()
            emit({"published": int(line), "u": u})
        w.close()
        return
    end, publish, n = time.monotonic() + a.get("seconds", 1e9), w.publish_levels, 0
    while not stop and time.monotonic() < end:
        for slot in slots:
            u += 1
            publish(slot, top_flat(u), 1, 1, update_id=u, recv_ts_ns=time.time_ns())
        n += len(slots)
        w.heartbeat()
    w.close()
    emit({"published": n, "last_u": u})



ROLES = {"directory-rewriter": role_directory_rewriter, "perp-writer": role_perp_writer,
         "tops-writer": role_tops_writer,
         "book-writer": role_book_writer, "book-reader": role_book_reader, "ring-writer": role_ring_writer,
         "ring-reader": role_ring_reader, "attach-and-exit": role_attach_and_exit}

if __name__ == "__main__":
    ROLES[sys.argv[1]](json.loads(sys.argv[2]))
