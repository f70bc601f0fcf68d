"""Recorder: the tap queue, daily files, frames a crash cannot lose, I/O failures; each with the writer in a
child process (the default) and in a thread of the feed process. The child's own failure modes are in
test_recorder_process.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mdengine.recording.reader import RecordingReader
from mdengine.recording.tap import Recorder, file_name, measure_tap_cost


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()) * 10**9


T0 = _ns("2024-03-05T12:00:00")


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _records(path: str) -> list:
    return list(RecordingReader(path))


@pytest.fixture(params=[True, False], ids=["process", "thread"])
def process(request) -> bool:
    return request.param


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_Recorder_writes_every_kind_with_ts_ns_and_exchange(tmp_path, compression, process):
    events = [("connect", "ws://h:1/ws", None, T0), ("send", "ws://h:1/ws", '{"op":"subscribe"}', T0 + 1),
              ("recv", "ws://h:1/ws", '{"a":1}', T0 + 2), ("recv", "ws://h:1/ws", b'{"b":2}', T0 + 3),
              ("recv", "ws://h:1/ws", b"\x00\xff\x10", T0 + 4),
              ("http", "http://h:1/api/v3/depth?symbol=BTCUSDT", '{"lastUpdateId":5}', T0 + 5),
              ("disconnect", "ws://h:1/ws", "closed 1006", T0 + 6)]
    with Recorder(tmp_path, "binance", compression=compression, process=process) as rec:
        for ev in events:
            rec.tap(*ev)
    path = tmp_path / file_name("binance", "2024-03-05", compression)
    assert os.listdir(tmp_path) == [path.name]
    got = _records(str(path))
    assert [(r.kind, r.url, r.data, r.ts_ns) for r in got] == [
        (k, u, d.decode() if isinstance(d, bytes) and d.isascii() else d, ns) for k, u, d, ns in events]
    assert {r.exchange for r in got} == {"binance"}
    assert got[2].ts == pytest.approx(T0 / 1e9 + 2e-9)
    st = rec.stats()
    assert st.written == len(events) and st.dropped == 0 and st.queued == st.in_flight == 0
    assert st.mode == ("process" if process else "thread")


def test_Recorder_rotates_at_midnight_utc(tmp_path, process):
    before, after = _ns("2024-03-05T23:59:59") + 999_000_000, _ns("2024-03-06T00:00:00")
    with Recorder(tmp_path, "okx", process=process) as rec:
        rec.tap("recv", "ws://h/ws", "late", before)
        rec.tap("recv", "ws://h/ws", "early", after)
        rec.tap("recv", "ws://h/ws", "early2", after + 1)
    files = sorted(os.listdir(tmp_path))
    assert files == ["okx-2024-03-05.jsonl.zst", "okx-2024-03-06.jsonl.zst"]
    assert [r.data for r in _records(str(tmp_path / files[0]))] == ["late"]
    assert [r.data for r in _records(str(tmp_path / files[1]))] == ["early", "early2"]


def test_Recorder_restart_on_same_day_appends_readable_frames(tmp_path, process):
    for i in range(3):
        with Recorder(tmp_path, "bybit", process=process) as rec:
            rec.tap("recv", "ws://h/ws", f"run{i}", T0 + i)
    (name,) = os.listdir(tmp_path)
    assert [r.data for r in _records(str(tmp_path / name))] == ["run0", "run1", "run2"]


_CHILD = textwrap.dedent("""
    import sys, time
    from mdengine.recording.tap import Recorder
    rec = Recorder(sys.argv[1], "binance", flush_interval_s=0.2, process=sys.argv[2] == "process")
    for i in range(500):
        rec.tap("recv", "ws://h/ws", '{"i":%d}' % i, time.time_ns())
    print("tapped", flush=True)
    time.sleep(60)
""")


def test_Recorder_killed_process_loses_at_most_the_unflushed_second(tmp_path, process):
    mode = "process" if process else "thread"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "tapped"

        def complete() -> bool:
            files = os.listdir(tmp_path)
            return bool(files) and len(_records(str(tmp_path / files[0]))) == 500

        # the frame is ended within flush_interval_s, without close(): a SIGKILL now loses nothing
        assert _wait(complete), "records were not durable within the flush interval"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (name,) = os.listdir(tmp_path)
    reader = RecordingReader(tmp_path / name)
    assert [r.data for r in reader] == [f'{{"i":{i}}}' for i in range(500)]
    assert not reader.truncated


def test_Recorder_queue_overflow_drops_oldest_and_counts(tmp_path, process):
    rec = Recorder(tmp_path, "bitget", max_queue=10, poll_interval_s=30.0, process=process)
    time.sleep(0.05)  # let the shipper thread reach its (long) wait so it cannot drain mid-burst
    for i in range(100):
        rec.tap("recv", "ws://h/ws", str(i), T0 + i)
    rec.close()
    st = rec.stats()
    assert st.tapped == 100 and st.written + st.dropped == 100
    assert st.dropped >= 80
    data = [int(r.data) for r in _records(str(tmp_path / os.listdir(tmp_path)[0]))]
    assert data == sorted(data) and data[-10:] == list(range(90, 100))


def test_Recorder_unwritable_directory_reports_once_and_recovers(tmp_path, process):
    blocker = tmp_path / "rec"
    blocker.write_text("a file where the directory should be")
    errors: list[str] = []
    rec = Recorder(blocker / "sub", "okx", on_error=errors.append, retry_interval_s=0.05, poll_interval_s=0.01,
                   process=process)
    try:
        for i in range(50):
            rec.tap("recv", "ws://h/ws", str(i), T0 + i)
            time.sleep(0.002)
        assert _wait(lambda: rec.stats().dropped == 50)
        assert len(errors) == 1 and "cannot open" in errors[0] and str(blocker) in errors[0]
        blocker.unlink()  # the operator fixes it; the recorder reopens on its own after retry_interval_s

        def recovered() -> bool:
            rec.tap("recv", "ws://h/ws", "after", T0 + 100)
            return rec.stats().written > 0

        assert _wait(recovered)
    finally:
        rec.close()
    assert rec.stats().errors >= 1 and len(errors) == 1
    files = os.listdir(blocker / "sub")
    assert {r.data for r in _records(str(blocker / "sub" / files[0]))} == {"after"}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_Recorder_disk_full_reports_once_feed_keeps_tapping_then_recovers(tmp_path, process):
    target = tmp_path / file_name("binance", "2024-03-05")
    target.symlink_to("/dev/full")  # every write to "the file" fails with ENOSPC
    errors: list[str] = []
    rec = Recorder(tmp_path, "binance", on_error=errors.append, retry_interval_s=0.05, flush_interval_s=0.01,
                   poll_interval_s=0.01, process=process)
    try:
        taps = iter(range(10**6))

        def failed_twice() -> bool:  # the feed keeps tapping: the writer retries (and fails) on new data
            i = next(taps)
            rec.tap("recv", "ws://h/ws", "x" * 1000 + str(i), T0 + i)
            return rec.stats().errors >= 2

        assert _wait(failed_twice)
        assert len(errors) == 1 and "No space left" in errors[0]
        target.unlink()

        def recovered() -> bool:
            rec.tap("recv", "ws://h/ws", "after", T0 + 100)
            return rec.stats().written > 0 and rec.path is not None

        assert _wait(recovered)
    finally:
        rec.close()
    assert len(errors) == 1
    assert "after" in [r.data for r in _records(str(target))]


def test_Recorder_tap_accepts_any_payload_type_and_never_raises(tmp_path, process):
    with Recorder(tmp_path, "okx", process=process) as rec:
        rec.tap("recv", "ws://h/ws", memoryview(b"mv"), T0)
        rec.tap("recv", "ws://h/ws", bytearray(b"ba"), T0)
        rec.tap("recv", "ws://h/ws", "\ud800", T0)  # lone surrogate: not JSON-encodable, counted as dropped
        rec.tap("recv", "ws://h/ws", 12, T0)
        rec.tap("recv", "ws://h/ws", Decimal("1.50"), T0)  # not marshal-able: converted before shipping
    assert [r.data for r in _records(str(tmp_path / os.listdir(tmp_path)[0]))] == ["mv", "ba", "12", "1.50"]
    assert rec.stats().dropped == 1


def test_Recorder_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        Recorder(tmp_path, "okx", compression="lz4")
    with pytest.raises(ValueError, match="max_queue"):
        Recorder(tmp_path, "okx", max_queue=0)


def test_measure_tap_cost_reports_a_positive_figure(process):
    assert 0 < measure_tap_cost(2000, process=process) < 1e6
