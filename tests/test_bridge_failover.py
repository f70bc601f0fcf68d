"""Redundancy with real processes: two independent engines (`mdengine run`, two namespaces) read one simulated
exchange, each with its own `mdengine bridge publish` onto one bus namespace; one `mdengine bridge mirror`. The
primary engine is killed with SIGKILL under load: the mirror's readers carry on from the standby with no trade
missing or repeated against the standby's own ring, books equal to the standby's at equal update ids, and the
books never stop being live for as long as 1 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("nats", reason="the bridge extra is not installed (pip install -e '.[bridge]')")

from mdengine.sim import Simulator  # noqa: E402
from mdengine.store import LayoutError, SegmentNotFound, SegmentReader, shm  # noqa: E402
from mdengine.store import layout as L  # noqa: E402
from tests.test_bridge import nats_server  # noqa: E402,F401 (fixture)
from tests.test_supervisor import RESTART, Engine, exchange_toml, wait_for  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCHANGE = "okx"
SYMBOLS = ["BTC/USDT", "ETH/USDT"]
RATE_HZ = 40.0  # the simulator's book updates per second per symbol (trades come with 4 in 10)
TIMEOUT_S = 60.0  # first sync of two engines on a loaded 2-core machine


@pytest.fixture
def sim():
    with Simulator(seed=7, exchanges=[EXCHANGE], rate_hz=RATE_HZ) as s:
        yield s


@pytest.fixture
def namespaces():
    names = ["t" + uuid.uuid4().hex[:8] for _ in range(3)]  # engine A, engine B, the mirror
    yield names
    for ns in names:
        for name in shm.list_names(ns):
            shm.unlink(name)


def _engine(ns: str, tmp_path, sim: Simulator) -> Engine:
    toml = exchange_toml(EXCHANGE, sim, SYMBOLS).replace("trade_capacity = 256", "trade_capacity = 8192")
    d = tmp_path / ns
    d.mkdir()
    return Engine(ns, d, f'namespace = "{ns}"\n' + RESTART + toml)


def _reader(ns: str) -> SegmentReader | None:
    try:
        return SegmentReader(ns, EXCHANGE)
    except (SegmentNotFound, LayoutError):
        return None


def _live(reader: SegmentReader, symbol: str) -> bool:
    try:
        return reader.book(symbol).header().state == L.BookState.LIVE
    except KeyError:
        return False


class Sampler(threading.Thread):
    """Reads the mirror's book header every millisecond: when its update id moved, and whether it was live."""

    def __init__(self, reader: SegmentReader, symbol: str) -> None:
        super().__init__(daemon=True)
        self.book = reader.book(symbol)
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, update id, state)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            h = self.book.header()
            self.samples.append((time.monotonic(), h.update_id, h.state))
            time.sleep(0.001)


def failover_figures(samples: list[tuple[float, int, int]], killed: float) -> dict:
    """From the samples around a kill: the longest wait for a new update id after it (the readers' failover
    time), the longest such wait before it (the normal pace), and how long the book was not live after it."""
    changes = [t for (t, u, _), (_, prev_u, _) in zip(samples[1:], samples, strict=False) if u != prev_u]
    before = [b - a for a, b in zip(changes, changes[1:], strict=False) if b < killed]
    after = [b - a for a, b in zip(changes, changes[1:], strict=False) if b >= killed]
    not_live = 0.0
    for (t0, _, st), (t1, _, _) in zip(samples, samples[1:], strict=False):
        if t0 >= killed and st != L.BookState.LIVE:
            not_live += t1 - t0
    return {"failover_ms": round(1e3 * max(after), 1), "normal_gap_ms": round(1e3 * max(before), 1),
            "not_live_ms": round(1e3 * not_live, 1), "updates_after": len(after)}


def _bridge(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([sys.executable, "-m", "mdengine", "bridge", *args, "--log-level", "WARNING"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _summary(p: subprocess.Popen) -> dict:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


class Rig:
    """Two engines on one simulated exchange, a publisher each onto one bus namespace, one mirror."""

    def __init__(self, sim: Simulator, url: str, namespaces: list[str], tmp_path) -> None:
        self.ns_a, self.ns_b, self.ns_m = namespaces
        self.bus = "bus" + uuid.uuid4().hex[:6]
        self.engines: list[Engine] = []
        self.procs: list[subprocess.Popen] = []
        self.engines = [_engine(self.ns_a, tmp_path, sim), _engine(self.ns_b, tmp_path, sim)]
        self.src_a = wait_for(lambda: _reader(self.ns_a), TIMEOUT_S, "engine A's segment")
        self.src_b = wait_for(lambda: _reader(self.ns_b), TIMEOUT_S, "engine B's segment")
        for r in (self.src_a, self.src_b):
            for s in SYMBOLS:
                wait_for(lambda r=r, s=s: _live(r, s), TIMEOUT_S, f"{s} live in {r.namespace}")
        self.procs = [_bridge("publish", "--nats", url, "--namespace", self.ns_a, "--as", self.bus, "--source-id", "A"),
                      _bridge("publish", "--nats", url, "--namespace", self.ns_b, "--as", self.bus, "--source-id", "B"),
                      _bridge("mirror", "--nats", url, "--namespace", self.ns_m, "--source", self.bus)]
        self.mirror = wait_for(lambda: _reader(self.ns_m), TIMEOUT_S, "the mirror's segment")
        for s in SYMBOLS:
            wait_for(lambda s=s: _live(self.mirror, s), TIMEOUT_S, f"{s} live in the mirror")
        wait_for(lambda: len(_trade_ids(self.mirror)) >= 20, TIMEOUT_S, "mirrored trades")

    def compare_books(self, src: SegmentReader, n: int = 10) -> int:
        """Mirrored books equal to `src`'s, level by level, each time both are at one update id."""
        compared = 0
        deadline = time.monotonic() + TIMEOUT_S
        while compared < n and time.monotonic() < deadline:
            for s in SYMBOLS:
                a, b = src.book(s).snapshot(), self.mirror.book(s).snapshot()
                if a.header.update_id != b.header.update_id:
                    continue
                assert b.header.state == L.BookState.LIVE
                np.testing.assert_array_equal(a.bids, b.bids)
                np.testing.assert_array_equal(a.asks, b.asks)
                compared += 1
            time.sleep(0.01)
        return compared

    def stop(self) -> list[dict]:
        """The publishers' and the mirror's summaries (A, B, mirror; None for one that was killed)."""
        out = []
        for p in self.procs:
            out.append(_summary(p) if p.poll() is None else None)
        return out

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        for r in (getattr(self, "src_a", None), getattr(self, "src_b", None), getattr(self, "mirror", None)):
            if r is not None:
                r.close()
        for e in self.engines:
            e.stop(signal.SIGTERM)


@pytest.fixture
def rig(sim, nats_server, namespaces, tmp_path):  # noqa: F811
    made: list[Rig] = []

    def start() -> Rig:
        made.append(Rig(sim, nats_server.url, namespaces, tmp_path))
        return made[-1]

    yield start
    for r in made:
        r.close()


@pytest.mark.parametrize("kill", ["engine", "publisher"])
def test_killing_the_primary_the_mirror_carries_on_from_the_standby(rig, kill):
    r = rig()
    ids_a, ids_b = set(_trade_ids(r.src_a)), set(_trade_ids(r.src_b))
    assert len(ids_a & ids_b) >= 10  # both engines see one exchange: the same trade ids

    sampler = Sampler(r.mirror, SYMBOLS[0])
    sampler.start()
    time.sleep(2.0)
    if kill == "engine":  # the primary engine dies without a word; its publisher reads a dead segment
        pids = [f["pid"] for f in r.engines[0].status()["feeds"] if f["pid"]] + [r.engines[0].proc.pid]
    else:  # the primary's publisher dies: its messages stop mid-stream
        pids = [r.procs[0].pid]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    time.sleep(3.0)
    sampler.done.set()
    sampler.join()
    figures = failover_figures(sampler.samples, killed)
    print("failover:", figures)

    assert r.compare_books(r.src_b) >= 10, "too few books caught at equal update ids"
    # every trade once, in the standby's order, where the two rings overlap
    last = _trade_ids(r.src_b)[-1]
    wait_for(lambda: last in _trade_ids(r.mirror), TIMEOUT_S, "the standby's trades in the mirror")
    got, standby = _trade_ids(r.mirror), _trade_ids(r.src_b)
    assert len(got) == len(set(got)), "a trade written twice"
    assert _same_run(got, standby), (got[-30:], standby[-30:])

    _, pub_b, mirror_summary = r.stop()
    assert mirror_summary["sources"].get("B", 0) > 0
    assert mirror_summary["gaps"] == 0 and mirror_summary["malformed"] == 0, mirror_summary
    assert pub_b["failed"] == 0
    assert figures["updates_after"] >= 20  # the book kept moving after the kill
    assert figures["not_live_ms"] < 1000.0, figures  # the standby's live books keep it live (0 ms when quiet)
    assert figures["failover_ms"] < 1000.0, figures  # about 30 ms when quiet: the exchange's own pace


def test_an_exchange_restarting_its_update_ids_is_followed_not_shadowed(rig, sim):
    """OKX maintenance (like Bybit's service restart) starts the book's sequence again small: the mirror follows
    the first source that shows it, and books from a source still on the old, larger ids do not override."""
    r = rig()
    sampler = Sampler(r.mirror, SYMBOLS[0])
    sampler.start()
    # the old sequence's ids are near 10**9, the new one's start below 50 and grow a few per update: a new id is
    # one below half of any old one (the mirror's own rule). "Below `before`" would not tell them apart: the
    # mirror trails the engines by the bus's latency, so its first samples can be older books of the old sequence
    before = r.src_b.book(SYMBOLS[0]).header().update_id
    new_ids = before // 2
    sim.inject(EXCHANGE, "seq_reset", symbol="BTC-USDT")
    for src in (r.src_a, r.src_b):
        wait_for(lambda src=src: src.book(SYMBOLS[0]).header().update_id < new_ids, TIMEOUT_S, "the reset upstream")
    wait_for(lambda: r.mirror.book(SYMBOLS[0]).header().update_id < new_ids, TIMEOUT_S, "the reset in the mirror")
    time.sleep(1.0)
    sampler.done.set()
    sampler.join()
    assert r.compare_books(r.src_b) >= 10, "too few books caught at equal update ids after the reset"
    us = [u for _, u, _ in sampler.samples]
    first_new = next(i for i, u in enumerate(us) if u < new_ids)
    after = us[first_new:]
    assert max(after) < new_ids, "an old-sequence book shadowed the restarted one"
    assert after == sorted(after), "an older book followed a newer one after the restart"
    assert all(st == L.BookState.LIVE for _, _, st in sampler.samples[first_new:])
    mirror_summary = r.stop()[2]
    assert mirror_summary["resets"] >= 1 and mirror_summary["malformed"] == 0, mirror_summary


def _same_run(got: list[int], standby: list[int]) -> bool:
    """The two id lists agree where they overlap, and overlap from where the later one starts to where the
    earlier one ends: no trade missing, repeated or out of order."""
    if standby[0] in got:
        i = got.index(standby[0])
        overlap = got[i:]
        return len(overlap) > 0 and standby[:len(overlap)] == overlap
    j = standby.index(got[0])
    return standby[j:j + len(got)] == got


def _trade_ids(reader: SegmentReader) -> list[int]:
    recs, lost = reader.trades(SYMBOLS[0], start="earliest").poll()
    assert lost == 0
    return recs["trade_id"].tolist()
