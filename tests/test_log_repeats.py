"""A repeated error is logged once per interval with a count (mdengine.feed.logrepeat.RepeatLog, used by the
Publisher and the feed loop), and the idle warm-up pass never replays a frame that failed.

The regression: an OKX update with seqId 2^63 (past int64) is unpublishable; the warm-up pass replayed it every
millisecond, and each replay logged the error again: 4,005 ERROR lines in 5 s from one frame.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from mdengine.events import ProtocolError
from mdengine.exchanges.okx import OkxAdapter
from mdengine.feed.logrepeat import RepeatLog
from mdengine.feed.publisher import Publisher
from mdengine.sim import Simulator
from mdengine.store import SegmentReader, SegmentWriter, shm


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _logger(name: str) -> tuple[logging.Logger, Lines]:
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    h = Lines()
    log.handlers[:] = [h]
    return log, h


def test_a_repeated_line_is_written_once_per_interval_with_its_count():
    log, out = _logger("mdengine.test.repeats")
    clock = Clock()
    r = RepeatLog(log, interval_s=10.0, clock=clock)
    assert r(logging.ERROR, "k", "bad frame %d", 0)
    for i in range(1, 4005):
        clock.t += 0.001
        assert not r(logging.ERROR, "k", "bad frame %d", i)
    assert r(logging.ERROR, "other", "another kind")  # keys are counted apart
    assert out.lines == ["bad frame 0", "another kind"]
    clock.t = 111.0  # the interval is over: the next one carries the count
    assert r(logging.ERROR, "k", "bad frame %d", 9999)
    assert out.lines[-1] == "bad frame 9999 [and 4004 more like it in the last 11.0 s]"
    clock.t += 1.0
    r(logging.ERROR, "k", "bad frame %d", 10000)  # held back ...
    r.flush()
    assert len(out.lines) == 3  # ... and kept while its interval runs
    clock.t += 10.0
    r.flush()  # the key went quiet: its count is written, nothing is lost
    assert out.lines[-1] == "bad frame 10000 [1 like it in the last 11.0 s; this is the newest]"
    r.flush()
    assert len(out.lines) == 4


def test_the_publisher_counts_every_bad_frame_and_logs_one_line(namespace):
    log, out = _logger("mdengine.test.publisher-repeats")
    w = SegmentWriter(namespace, "okx", create=True, max_symbols=2, book_capacity=5, trade_capacity=16)
    try:
        pub = Publisher(w, "okx", depth=5, log=log)
        clock = Clock()
        pub.repeats = RepeatLog(log, clock=clock)
        for i in range(1000):
            pub.on_event(ProtocolError("public-0", f"bad JSON: byte {i}"))
        assert w.view.counters()["malformed"] == 1000 and pub.failures == 1000
        assert w.view.last_error()[1] == "public-0: bad JSON: byte 999"  # the segment's last error is the newest
        assert out.lines == ["conn=public-0 symbol=- bad frame: bad JSON: byte 0"]
        clock.t += 60
        pub.heartbeat()
        assert out.lines[1:] == ["conn=public-0 symbol=- bad frame: bad JSON: byte 999 [999 like it in the last "
                                 "60.0 s; this is the newest]"]
    finally:
        w.close()
        shm.unlink(w.name)


# ----------------------------------------------------------------------------- a real feed process
def _segment(namespace: str) -> SegmentReader | None:
    try:
        return SegmentReader(namespace, "okx")
    except (FileNotFoundError, RuntimeError):
        return None


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return got


@pytest.mark.slow
def test_a_frame_that_failed_is_logged_once_and_never_replayed_by_the_warm_up_pass(namespace, tmp_path):
    """The issue's repro against a real feed process (warm-up every 1 ms, the default) and the simulator."""
    with Simulator(seed=3, rate_hz=20, exchanges=["okx"]) as sim:
        cmd = [sys.executable, "-m", "mdengine.feed", "--namespace", namespace, "--exchange", "okx", "--symbols",
               "BTC/USDT", "--markets", "SPOT", "--book-capacity", "20", "--book-depth", "20", "--log-level", "INFO"]
        for k, v in OkxAdapter.sim_endpoints(sim.endpoints()).items():
            cmd += ["--endpoint", f"{k}={v}"]
        log_path = tmp_path / "feed.log"
        with open(log_path, "w") as log_file:
            p = subprocess.Popen(cmd, stderr=log_file)
            try:
                r = _wait(lambda: _segment(namespace), 60, "the segment")
                try:
                    _wait(lambda: r.symbols() and r.book("BTC/USDT").header().state_name == "live", 30, "live")
                    sim.pause()
                    time.sleep(0.5)  # frames in flight are in
                    last = r.book("BTC/USDT").header().update_id
                    frame = {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update",
                             "data": [{"asks": [], "bids": [], "ts": str(int(time.time() * 1000)), "checksum": 0,
                                       "prevSeqId": last, "seqId": 2**63}]}
                    # the good frames before it are warmed (idle now): the check below can see a replay
                    _wait(lambda: r.view.counters()["warm_passes"] > 0, 30, "a warm-up pass")
                    sim.inject("okx", "malformed_json", text=json.dumps(frame))
                    _wait(lambda: r.view.counters()["malformed"] >= 1, 10, "the frame counted as malformed")
                    before = r.view.counters()["warm_passes"]
                    time.sleep(3.0)  # idle: on the old code, ~3000 replays and as many ERROR lines
                    counters = r.view.counters()
                    assert counters["malformed"] == 1
                    assert "unpublishable" in r.view.last_error()[1]
                    assert counters["warm_passes"] == before  # the bad frame is the newest: no pass replays it
                    for _ in range(200):  # a flood of broken frames: each counted, one line
                        sim.inject("okx", "malformed_json")
                    _wait(lambda: r.view.counters()["malformed"] == 201, 20, "200 more malformed frames")
                finally:
                    r.close()
            finally:
                p.terminate()
                p.wait(15)
        errors = [line for line in log_path.read_text().splitlines() if " ERROR " in line]
        assert len(errors) == 2, errors[:5]
        assert "unpublishable" in errors[0] and "bad JSON" in errors[1]
