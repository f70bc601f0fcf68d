"""Recorder with its writer child process: the child dies, the feed dies, Ctrl-C, close, no child at all.

Real processes throughout: the writer child is killed with real signals and the "feed" is a Python process
running a Recorder.
"""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recorder import T0, _wait

from mdengine.recording.reader import RecordingReader
from mdengine.recording.tap import Recorder
from mdengine.recording.tap import _columns as COLUMNS_IN_C
from mdengine.recording.writer import HEADER, MessageReader, encode_batch


def _data(directory) -> tuple[list[str], RecordingReader]:
    (name,) = os.listdir(directory)
    reader = RecordingReader(os.path.join(directory, name))
    return [r.data for r in reader], reader


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its reaper counts: an orphan's reaper may take its time)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_Recorder_writer_killed_reports_once_counts_the_loss_and_a_new_writer_goes_on(tmp_path):
    errors: list[str] = []
    # a long frame interval: what the child holds when killed is in its unended frame, i.e. lost
    rec = Recorder(tmp_path, "binance", on_error=errors.append, flush_interval_s=60.0)
    try:
        for i in range(100):
            rec.tap("recv", "ws://h/ws", f"a{i}", T0 + i)
        assert rec.flush()
        first = rec.writer_pid
        assert first is not None and rec.stats().written == 100
        for i in range(50):
            rec.tap("recv", "ws://h/ws", "x" * 2000 + f"b{i}", T0 + 100 + i)
        assert _wait(lambda: rec.stats().queued == 0)  # shipped: the child (or its socket) has them
        time.sleep(0.1)  # let it compress them into its open frame
        os.kill(first, signal.SIGKILL)
        assert _wait(lambda: rec.stats().restarts == 1 and rec.writer_pid not in (None, first))
        assert len(errors) == 1
        assert "writer process died (signal 9)" in errors[0] and "50 records lost" in errors[0], errors
        for i in range(30):
            rec.tap("recv", "ws://h/ws", f"c{i}", T0 + 200 + i)
        assert rec.flush()
        st = rec.stats()
        assert (st.tapped, st.written, st.dropped, st.errors, st.mode) == (180, 130, 50, 1, "process")
    finally:
        rec.close()
    got, reader = _data(tmp_path)
    # the killed child may have left part of a frame: the reader skips it, the frames after it are intact
    assert got[:100] == [f"a{i}" for i in range(100)] and got[-30:] == [f"c{i}" for i in range(30)]
    assert set(got[100:-30]) <= {"x" * 2000 + f"b{i}" for i in range(50)}
    assert not reader.truncated and len(errors) == 1


_FEED = textwrap.dedent("""
    import sys, time
    from mdengine.recording.tap import Recorder
    rec = Recorder(sys.argv[1], "okx", flush_interval_s=60.0)
    try:
        for i in range(2000):
            rec.tap("recv", "ws://h/ws", '{"i":%d}' % i, time.time_ns())
        while rec.stats().queued:  # taken by the shipper thread; nothing is written yet (60 s frames)
            time.sleep(0.005)
        time.sleep(0.5)  # ... and sent: a batch is one sendmsg, but on a loaded machine the thread may lag
        print(rec.writer_pid, rec.stats().written, flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        pass
    finally:
        rec.tap("recv", "ws://h/ws", "last", time.time_ns())
        rec.close()
        print("closed", rec.stats().written, flush=True)
""")


def test_Recorder_feed_killed_with_SIGKILL_loses_nothing_it_shipped(tmp_path):
    feed = subprocess.Popen([sys.executable, "-c", _FEED, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        pid, written = map(int, feed.stdout.readline().split())
        assert written == 0
        feed.send_signal(signal.SIGKILL)
        feed.wait(10)
        assert _wait(lambda: _gone(pid))  # end of stream: the writer writes everything, ends its frame, exits
    finally:
        feed.kill()
        feed.wait(10)
    got, reader = _data(tmp_path)
    assert got == [f'{{"i":{i}}}' for i in range(2000)] and not reader.truncated


def test_Recorder_ctrl_c_to_the_process_group_spares_the_writer_until_close(tmp_path):
    # a terminal's Ctrl-C signals the whole group: the writer must outlive it to take the feed's last batch
    feed = subprocess.Popen([sys.executable, "-c", _FEED, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        pid, _ = map(int, feed.stdout.readline().split())
        os.killpg(feed.pid, signal.SIGINT)
        assert feed.stdout.readline().split() == ["closed", "2001"]
        assert feed.wait(10) == 0
        assert _wait(lambda: _gone(pid))
    finally:
        feed.kill()
        feed.wait(10)
    got, _ = _data(tmp_path)
    assert got == [f'{{"i":{i}}}' for i in range(2000)] + ["last"]


def test_Recorder_close_leaves_no_writer_process(tmp_path):
    rec = Recorder(tmp_path, "bybit")
    rec.tap("recv", "ws://h/ws", "one", T0)
    assert rec.flush()
    pid = rec.writer_pid
    assert pid in [p.pid for p in psutil.Process().children()]
    rec.close()
    rec.close()  # idempotent
    assert rec.writer_pid is None and _gone(pid)
    assert pid not in [p.pid for p in psutil.Process().children()]
    assert rec.stats().written == 1


def test_Recorder_closed_before_the_writer_is_up_still_writes_everything(tmp_path):
    others = {p.pid for p in psutil.Process().children()}  # e.g. simulators started by session fixtures
    rec = Recorder(tmp_path, "okx")
    for i in range(10):
        rec.tap("recv", "ws://h/ws", str(i), T0 + i)
    rec.close()  # most likely the child has not said "ready" yet: close waits for it
    assert _data(tmp_path)[0] == [str(i) for i in range(10)]
    assert rec.stats().written == 10
    assert {p.pid for p in psutil.Process().children()} <= others


def test_Recorder_writer_ignores_SIGINT_and_SIGTERM(tmp_path):
    with Recorder(tmp_path, "okx") as rec:
        assert rec.flush()
        os.kill(rec.writer_pid, signal.SIGINT)
        os.kill(rec.writer_pid, signal.SIGTERM)
        rec.tap("recv", "ws://h/ws", "after", T0)
        assert rec.flush()
        assert rec.stats().restarts == 0 and rec.stats().errors == 0
    assert _data(tmp_path)[0] == ["after"]


@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"], ids=["missing", "exits"])
def test_Recorder_falls_back_to_a_thread_when_no_writer_process_starts(tmp_path, executable, caplog):
    with Recorder(tmp_path, "bitget", executable=executable) as rec:
        for i in range(5):
            rec.tap("recv", "ws://h/ws", str(i), T0 + i)
        assert rec.flush()
        assert rec.stats().mode == "thread" and rec.writer_pid is None
    assert _data(tmp_path)[0] == [str(i) for i in range(5)]
    assert "writing from a thread of this process instead" in caplog.text


def test_Recorder_flush_covers_every_tap_before_it(tmp_path):
    with Recorder(tmp_path, "binance", flush_interval_s=60.0) as rec:
        for round_ in range(5):
            for i in range(1000):
                rec.tap("recv", "ws://h/ws", f"{round_}-{i}", T0 + i)
            assert rec.flush()
            assert rec.stats().written == 1000 * (round_ + 1)


def test_record_writer_runs_with_python_m():
    out = subprocess.run([sys.executable, "-m", "mdengine.recording.writer", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and "--fd" in out.stdout


_texts = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
_entries = st.tuples(st.sampled_from(["recv", "send", "http"]), st.sampled_from(["ws://a/ws", "http://b/x"]),
                     _texts, st.integers(-2**63, 2**63 - 1))


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(_entries, min_size=1, max_size=30), others=st.lists(st.one_of(st.binary(max_size=8),
       st.none()), max_size=3), cut=st.integers(0, 10**6))
@pytest.mark.parametrize("columns", [None, pytest.param(COLUMNS_IN_C, marks=pytest.mark.skipif(
    COLUMNS_IN_C is None, reason="mdengine._speedups is not built"))], ids=["python", "c"])
def test_encode_batch_round_trips_through_MessageReader_in_any_chunks(batch, others, cut, columns):
    batch = batch + [("recv", "ws://a/ws", x, 1) for x in others]  # bytes/None data: the plain encoding
    meta, raw = encode_batch(batch, columns)
    wire = HEADER.pack(len(meta), len(raw)) + meta + raw
    wire = wire + wire  # two messages
    cut %= len(wire) + 1
    reader = MessageReader()
    got = list(reader.feed(wire[:cut])) + list(reader.feed(wire[cut:]))
    assert got == [batch, batch]
    if columns is not None:  # the C parts are the Python parts (marshal's back-references may differ)
        assert raw == encode_batch(batch)[1]
        assert marshal.loads(meta) == marshal.loads(encode_batch(batch)[0])


@pytest.mark.skipif(COLUMNS_IN_C is None, reason="mdengine._speedups is not built")
def test_batches_that_do_not_fit_columns_take_the_plain_encoding_on_both_paths():
    for odd in ([("recv", "u", "x", 2**64)], [("recv", "u", "x", 1.5)], [("recv", "u", b"x", 1)], [("recv", "u")]):
        for meta, raw in (encode_batch(odd, COLUMNS_IN_C), encode_batch(odd)):
            assert raw == b"" and marshal.loads(meta) == odd  # marshal's back-references may differ
