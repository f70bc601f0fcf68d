"""examples/reader.c, written from docs/layout.md alone, built with the doc's own build line and run against real
segments: it finds the slots the Python client finds, and reads the same books and trades at equal update ids
while a writer process publishes at full speed."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import random
import re
import shlex
import shutil
import subprocess
import time

import numpy as np
import pytest
from store_helpers import bad_trades, depths, trade, versioned_flat

from mdengine.client import Client
from mdengine.store import SegmentWriter, UnknownSymbol
from mdengine.store import layout as L

ROOT = os.path.join(os.path.dirname(__file__), "..")
CC = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on PATH for examples/reader.c")
EXCHANGE = "creader"
DEPTH = 20


def build_line() -> list[str]:
    """The build command docs/layout.md gives, as an argument list."""
    with open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8") as f:
        m = re.search(r"^cc (-std=c11 .*examples/reader\.c)", f.read(), re.M)
    assert m, "docs/layout.md has no `cc -std=c11 ... examples/reader.c` build line"
    return shlex.split(m.group(1))


@pytest.fixture(scope="module")
def reader_exe(tmp_path_factory) -> str:
    exe = str(tmp_path_factory.mktemp("c-reader") / "mde-reader")
    args = build_line()
    assert args[:5] == ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror"], args
    args[args.index("-o") + 1] = exe
    r = subprocess.run([CC, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{CC} {' '.join(args)} failed:\n{r.stderr}"
    return exe


def run(exe: str, *args: str, timeout: float = 60) -> tuple[int, list[dict]]:
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines()]


# --------------------------------------------------------------------------- the lookup rule
DIRECTORY = [  # (market, native, unified, kind, removed)
    ("spot", "BTCUSDT", "BTC/USDT", L.MarketKind.SPOT, False),
    ("linear", "BTCUSDT", "BTC/USDT:USDT", L.MarketKind.LINEAR, False),
    ("spot", "ETHUSDT", "ETH/USDT", L.MarketKind.SPOT, True),
    ("margin", "ETHUSDT", "ETH/USDT", L.MarketKind.SPOT, False),
    ("spot", "XYZ", "XYZ/A", L.MarketKind.SPOT, False),
    ("alt", "XYZ", "XYZ/B", L.MarketKind.SPOT, False),
    ("inverse", "BTCUSD", "BTC/USD:BTC", L.MarketKind.INVERSE, True),
    ("linear", "SOLUSDT", "SOL/USDT:USDT", L.MarketKind.LINEAR, False),
]
QUERIES = [("BTC/USDT", None), ("btcusdt", None), ("BTCUSDT", "LINEAR"), ("BTC/USDT:USDT", None),
           ("ETH/USDT", None), ("ethusdt", "SPOT"), ("ETHUSDT", None), ("XYZ", None), ("xyz", "alt"),
           ("XYZ/A", None), ("BTC/USD:BTC", None), ("btcusd", "inverse"), ("solusdt", None), ("btc/usdt", None),
           ("BTC/USDT:USDT", "spot"), ("DOGE/USDT", None)]


def python_choice(client: Client, symbol: str, market: str | None) -> int | str:
    try:
        return client.book(EXCHANGE, symbol, market).entry.slot
    except UnknownSymbol as e:
        return "ambiguous" if "ambiguous" in str(e) else "unknown"


def c_choice(exe: str, ns: str, symbol: str, market: str | None) -> int | str:
    status, out = run(exe, "lookup", ns, EXCHANGE, symbol, *([market] if market else []))
    if status == 2:
        return "ambiguous" if out[0]["error"] == "ambiguous symbol" else "unknown"
    assert status == 0, out
    return out[0]["slot"]


def test_lookup_picks_the_slot_the_python_client_picks(reader_exe, namespace):
    with SegmentWriter(namespace, EXCHANGE, create=True, max_symbols=len(DIRECTORY), book_capacity=5,
                       trade_capacity=8) as w:
        for market, native, unified, kind, removed in DIRECTORY:
            slot = w.add_symbol(market, native, unified, kind=kind)
            if removed:
                w.remove_symbol(slot)
        with Client(namespace) as client:
            got = {q: (python_choice(client, *q), c_choice(reader_exe, namespace, *q)) for q in QUERIES}
    assert {q: py for q, (py, _) in got.items()} == {q: c for q, (_, c) in got.items()}
    # the cases the rule exists for, so the comparison cannot pass by both sides agreeing on nothing
    assert got[("ETH/USDT", None)][1] == 3  # active before removed, even at a higher slot
    assert got[("ethusdt", "SPOT")][1] == 2  # a removed entry is found when it is the only one
    assert got[("btcusdt", None)][1] == 0  # native match, case folded: spot first
    assert got[("XYZ", None)][1] == "ambiguous" and got[("xyz", "alt")][1] == 5
    assert got[("btc/usdt", None)][1] == 0  # unified symbols match ignoring case


def test_attach_refuses_what_is_not_a_segment(reader_exe, namespace):
    status, out = run(reader_exe, "lookup", namespace, EXCHANGE, "BTC/USDT")
    assert status == 3 and "no such segment" in out[0]["error"]
    path = f"/dev/shm/mde-{namespace}-{EXCHANGE}"
    with open(path, "wb") as f:  # the size of a segment, but no magic: a creator that has not finished
        f.write(bytes(L.segment_size(1, 5, 8)))
    status, out = run(reader_exe, "lookup", namespace, EXCHANGE, "BTC/USDT")
    assert status == 3 and "bad magic" in out[0]["error"]
    status, out = run(reader_exe, "lookup", namespace, "../etc", "BTC/USDT")
    assert status == 1


# --------------------------------------------------------------------------- books and trades at full speed
def full_speed_writer(ns: str, trade_capacity: int, ready, stop) -> None:
    """Versioned 20-level books back to back (each level encodes the update id), trades in random batches,
    now and then one larger than the ring, until `stop`."""
    w = SegmentWriter(ns, EXCHANGE)
    w.add_symbol("spot", "ETHUSDT", "ETH/USDT")  # so BTC/USDT is not slot 0
    slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
    w.set_running()
    rng = random.Random(7)
    u, idx = 1, 0
    while True:
        flat, nb, na = versioned_flat(u, DEPTH)
        w.publish_levels(slot, flat, nb, na, update_id=u)
        if u % 2 == 0:
            m = trade_capacity + trade_capacity // 2 if rng.random() < 0.01 else rng.randint(1, 48)
            w.append_trades(slot, [trade(i) for i in range(idx, idx + m)])
            idx += m
        if u == 1000:
            ready.set()
        if u % 1024 == 0:
            w.heartbeat()
            if stop.is_set():
                break
        u += 1
    w.close()


def is_versioned(u: int, bids: list, asks: list) -> bool:
    nb, na = depths(u, DEPTH)
    return (bids == [[u * 1000.0 + i, float(u)] for i in range(nb)]
            and asks == [[u * 1000.0 + 500 + i, u + 0.5] for i in range(na)])


class SideBySide:
    """examples/reader.c `watch` and the Python client reading the same book and trade ring at the same time."""

    def __init__(self, exe: str, namespace: str, exchange: str, symbol: str, market: str | None, out_path,
                 books: int, trades: int, seconds: float) -> None:
        self.py_books: dict[int, tuple[list, list]] = {}
        self.py_trades: dict[int, np.void] = {}
        self.py_lost = 0
        with Client(namespace) as client, open(out_path, "w") as out:
            book = client.book(exchange, symbol, market)
            stream = client.trade_stream(exchange, symbol, market, start="earliest")
            c_proc = subprocess.Popen([exe, "watch", namespace, exchange, symbol, *([market] if market else []),
                                       "-d", str(DEPTH), "-n", str(books), "-t", str(trades), "-s", str(seconds),
                                       "-e"], stdout=out)
            while c_proc.poll() is None:
                for _ in range(200):
                    d = book.snapshot(DEPTH)
                    self.py_books.setdefault(d.update_id, (d.bids.tolist(), d.asks.tolist()))
                t = stream.poll()
                self.py_lost += t.lost
                for r in t.records:
                    self.py_trades[int(r["index"])] = r
            self.status = c_proc.wait(60)
            self.slot = book.entry.slot
        with open(out_path) as f:
            lines = [json.loads(line) for line in f]
        self.ready, self.done = lines[0]["ready"], lines[-1]["done"]
        self.c_books = [x["book"] for x in lines if "book" in x]
        self.c_trades = [x["trade"] for x in lines if "trade" in x]
        self.c_lost = sum(x["lost"] for x in lines if "lost" in x)

    def check_c_alone(self) -> None:
        """Its trades are in order, once each, and returned + lost accounts for every record it passed."""
        assert self.status == 0 and self.ready["slot"] == self.slot
        assert len(self.c_books) == self.done["books"] > 0 and len(self.c_trades) == self.done["trades"]
        indices = [t["index"] for t in self.c_trades]
        assert indices == sorted(set(indices))
        assert len(self.c_trades) + self.c_lost == self.done["trade_cursor"] - self.ready["trade_cursor"]
        assert self.c_lost == self.done["lost"]

    def compare(self) -> tuple[int, int]:
        """At equal update ids the same levels; at equal ring indices the same trade, field by field. Returns how
        many books and trades both sides read."""
        same_books = [b for b in self.c_books if b["update_id"] in self.py_books]
        assert [b["update_id"] for b in same_books if (b["bids"], b["asks"]) != self.py_books[b["update_id"]]] == []
        same_trades = [t for t in self.c_trades if t["index"] in self.py_trades]
        names = L.TRADE_DTYPE.names
        assert [t["index"] for t in same_trades
                if tuple(self.py_trades[t["index"]][n].item() for n in names) != tuple(t[n] for n in names)] == []
        print(f"C: {len(self.c_books)} books, {len(self.c_trades)} trades, {self.c_lost} lost, "
              f"{self.done['retries']} retries; Python: {len(self.py_books)} books, {len(self.py_trades)} trades, "
              f"{self.py_lost} lost; compared {len(same_books)} books and {len(same_trades)} trades: equal")
        return len(same_books), len(same_trades)


def test_books_and_trades_match_the_python_client_while_the_writer_runs_at_full_speed(reader_exe, namespace,
                                                                                         tmp_path):
    trade_capacity = 64  # small, so the writer laps the readers all the time
    SegmentWriter(namespace, EXCHANGE, create=True, max_symbols=2, book_capacity=DEPTH,
                  trade_capacity=trade_capacity).close()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=full_speed_writer, args=(namespace, trade_capacity, ready, stop), daemon=True)
    writer.start()
    try:
        assert ready.wait(60), "the writer did not start publishing"
        # Both readers sample a book that changes every few µs, so they meet on only some update ids; rounds of
        # 5,000 C books repeat until at least 20 books and 100 trades were read by both (each round checked). A
        # busy machine makes them meet less often: the rounds go on for up to two minutes, not a fixed count.
        books = trades = lapped = 0
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up:
            run = SideBySide(reader_exe, namespace, EXCHANGE, "BTC/USDT", None, tmp_path / "c.jsonl", 5000, 20000, 20)
            assert writer.is_alive()
            run.check_c_alone()
            assert run.slot == 1
            # every book is one whole versioned state, every trade record intact
            assert [b["update_id"] for b in run.c_books if not is_versioned(b["update_id"], b["bids"], b["asks"])] == []
            recs = np.array([tuple(t[n] for n in L.TRADE_DTYPE.names) for t in run.c_trades],
                            dtype=[(n, L.TRADE_DTYPE[n]) for n in L.TRADE_DTYPE.names])
            assert len(recs) == 20000 and bad_trades(recs) == 0
            b, t = run.compare()
            books, trades, lapped = books + b, trades + t, lapped + run.c_lost
            if books >= 20 and trades >= 100:
                break
    finally:
        stop.set()
        writer.join(30)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0
    assert books >= 20 and trades >= 100, f"only {books} books and {trades} trades were read by both"
    assert lapped > 0  # the writer lapped the C reader: its lap check was exercised


@pytest.fixture
def sim_engine(namespace):
    """A real feed process on the simulator running as fast as it can (rate_hz=0): Bybit BTC/USDT:USDT."""
    from test_client import _until

    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges import get_adapter
    from mdengine.feed.process import run_feed
    from mdengine.sim import Simulator

    sim = Simulator(seed=5, rate_hz=0, exchanges=["bybit"], symbols=["BTC/USDT:USDT"]).start()
    cfg = ExchangeConfig(name="bybit", symbols=["BTC/USDT:USDT"], markets=["linear"], book_depth=DEPTH,
                         book_capacity=DEPTH, endpoints=get_adapter("bybit").sim_endpoints(sim.endpoints()),
                         heartbeat_interval_s=0.1)
    proc = mp.get_context("spawn").Process(target=run_feed, args=(namespace, cfg), kwargs={"log_level": "WARNING"},
                                           daemon=True)
    proc.start()
    try:
        def live() -> bool:
            try:
                with Client(namespace) as c:
                    return c.book("bybit", "BTC/USDT:USDT").top().state == "live"
            except Exception:  # noqa: BLE001 - not there yet
                return False

        _until(live, 60, "a live book from the feed")
        yield proc
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        sim.stop()


def test_books_and_trades_match_the_python_client_on_an_engine_on_the_simulator(reader_exe, namespace, tmp_path,
                                                                                  sim_engine):
    # by native id, case folded, in a market spelled in another case: the documented lookup rule
    run = SideBySide(reader_exe, namespace, "bybit", "btcusdt", "LINEAR", tmp_path / "c.jsonl", 100_000, 100_000, 4)
    assert sim_engine.is_alive()
    run.check_c_alone()
    assert all(b["n_bids"] and b["n_asks"] and b["bids"][0][0] < b["asks"][0][0] for b in run.c_books)
    books, trades = run.compare()
    assert books >= 20 and trades >= 1, f"only {books} books and {trades} trades were read by both"


def test_bench_times_consistent_reads(reader_exe, namespace):
    with SegmentWriter(namespace, EXCHANGE, create=True, max_symbols=1, book_capacity=DEPTH, trade_capacity=8) as w:
        slot = w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
        flat, nb, na = versioned_flat(42, DEPTH)
        w.publish_levels(slot, flat, nb, na, update_id=42)
        status, out = run(reader_exe, "bench", namespace, EXCHANGE, "BTC/USDT", "-n", "10000")
    bench = out[0]["bench"]
    assert status == 0 and bench["reads"] == 10000 and bench["depth"] == DEPTH and bench["last_update_id"] == 42
    assert 0 < bench["p50_ns"] <= bench["p99_ns"] <= bench["max_ns"] and bench["retries"] == 0


# --------------------------------------------------------------------------- the perp record (layout 1.4)
def test_the_perp_record_reads_from_c_as_the_python_client_reads_it(reader_exe, namespace):
    """examples/reader.c finds the perp area from docs/layout.md alone and reads the same record; a spot symbol and
    a segment without a perp area are refused."""
    import struct

    with SegmentWriter(namespace, EXCHANGE, create=True, max_symbols=2, book_capacity=5, trade_capacity=8) as w:
        w.add_symbol("spot", "BTCUSDT", "BTC/USDT")
        slot = w.add_symbol("linear", "BTCUSDT", "BTC/USDT:USDT", kind=L.MarketKind.LINEAR)
        w.publish_perp(slot, mark_price=100.5, index_price=100.25, funding_rate=-2.5e-4, next_funding_ns=123 * 10**9,
                       open_interest=7.5, exch_ts_ns=11, recv_ts_ns=12)
        w.publish_perp(slot, index_price=100.25, recv_ts_ns=13)  # (1.6) the index group alone
        w.set_perp_freshness({"index": 125.0, "open_interest": 2.5})
        status, out = run(reader_exe, "perp", namespace, EXCHANGE, "BTC/USDT:USDT")
        assert status == 0, out
        with Client(namespace) as client:
            py = client.perp(EXCHANGE, "BTC/USDT:USDT")
        c = out[0]["perp"]
        assert (c["mark_price"], c["index_price"], c["funding_rate"], c["next_funding_ns"], c["open_interest"]) == \
            (py.mark_price, py.index_price, py.funding_rate, py.next_funding_ns, py.open_interest)
        assert c["exch_ts_ns"] == py.exch_ts_ns == 11 and c["recv_ts_ns"] == 13 and c["version"] == 2
        assert c["group_recv_ns"] == [12, 13, 12, 12] and c["group_stale_ms"] == [0, 125_000, 0, 2500]
        assert c["state"] == L.BookState.LIVE and math.isnan(c["next_funding_rate"])
        status, out = run(reader_exe, "perp", namespace, EXCHANGE, "BTC/USDT")
        assert status == 2 and "not a perpetual" in out[0]["error"]
        struct.pack_into("<I", w.buf, L.PERP_AREA_OFFSET_OFFSET, 0)  # as a writer before 1.4 left it
        status, out = run(reader_exe, "perp", namespace, EXCHANGE, "BTC/USDT:USDT")
        assert status == 2 and "no perp area" in out[0]["error"]
