"""Reading recordings: plain/gzip/zstd JSON Lines, truncated tails, bad lines."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdengine.recording.reader import RecordingReader, exchange_from_name, parse_record, write_plain
from mdengine.recording.tap import Recorder

T0 = 1_709_640_000 * 10**9  # 2024-03-05 12:00 UTC


def test_RecordingReader_reads_the_shared_recordings(recordings_dir):
    bn = RecordingReader(os.path.join(recordings_dir, "binance-spot-2021-10-12.jsonl"))
    recs = list(bn)
    assert len(recs) == 270 and bn.exchange == "binance" and not bn.truncated and bn.bad_lines == 0
    assert [r.kind for r in recs].count("http") == 4
    assert recs[1].ts_ns == round(1633998512.0633569 * 1e9)
    okx = list(RecordingReader(os.path.join(recordings_dir, "okx-2022-05-13.jsonl")))
    assert len(okx) == 414 and {r.exchange for r in okx} == {"okx"}


def test_RecordingReader_skips_and_counts_bad_lines(tmp_path):
    p = tmp_path / "okx-2024-01-01.jsonl"
    p.write_text('{"kind":"recv","ts":1.5,"url":"wss://ws.okx.com/x","data":"a"}\n'
                 "not json\n[1,2]\n"
                 '{"ts":1}\n'
                 '{"kind":"recv","ts":2.5,"url":"wss://ws.okx.com/x","data":"b"}\n')
    r = RecordingReader(p)
    assert [x.data for x in r] == ["a", "b"]
    assert r.bad_lines == 3 and "line 2" in r.first_error and not r.truncated


def test_parse_record_names_exchange_from_url_or_argument():
    assert parse_record('{"kind":"connect","ts":1,"url":"wss://ws.okx.com:8443/ws/v5/public"}').exchange == "okx"
    assert parse_record('{"kind":"connect","ts":1,"url":"ws://127.0.0.1:5/ws"}', "bybit").exchange == "bybit"
    assert exchange_from_name("/x/bitget-2024-01-02.jsonl.zst") == "bitget"
    assert exchange_from_name("/x/notes.jsonl") is None


def test_RecordingReader_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RecordingReader(tmp_path / "nope.jsonl")


def _multi_frame(path_dir, compression: str) -> tuple[str, list[str], list[int]]:
    """A recording of 6 frames of 40 records; returns (path, all data, file size after each frame)."""
    data = [f'{{"i":{i},"pad":"{"x" * (i % 37)}"}}' for i in range(240)]
    sizes = []
    with Recorder(path_dir, "binance", compression=compression, poll_interval_s=0.005) as rec:
        for f in range(6):
            for i in range(f * 40, f * 40 + 40):
                rec.tap("recv", "ws://h/ws", data[i], T0 + i)
            assert rec.flush()
            sizes.append(os.path.getsize(rec.path))
    return rec.stats().path or os.path.join(path_dir, os.listdir(path_dir)[0]), data, sizes


@pytest.fixture(scope="module", params=["zstd", "gzip"])
def multi_frame(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"frames-{request.param}")
    path, data, sizes = _multi_frame(d, request.param)
    return path, data, sizes, open(path, "rb").read()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.0, 1.0))
def test_RecordingReader_truncated_tail_yields_every_complete_frame(multi_frame, tmp_path_factory, cut):
    path, data, sizes, blob = multi_frame
    n = int(len(blob) * cut)
    cut_path = str(tmp_path_factory.getbasetemp() / ("cut" + os.path.basename(path)))
    with open(cut_path, "wb") as fh:
        fh.write(blob[:n])
    r = RecordingReader(cut_path)
    got = [x.data for x in r]
    assert got == data[:len(got)]  # always a clean prefix, never garbage or an exception
    complete_frames = sum(1 for s in sizes if s <= n)
    assert len(got) >= 40 * complete_frames
    assert r.truncated == (n not in [0, *sizes])


def test_write_plain_gives_the_simulator_plain_json_lines(tmp_path, multi_frame):
    path, data, _, _ = multi_frame
    out = tmp_path / "plain.jsonl"
    assert write_plain(out, path) == 240
    assert [x.data for x in RecordingReader(out)] == data


def test_RecordingReader_skips_a_frame_cut_by_a_crash_before_a_restart(tmp_path, multi_frame):
    path, data, sizes, blob = multi_frame
    damaged = tmp_path / ("x" + os.path.basename(path))
    # frames 1-2 complete, frame 3 cut in its middle (the crash), then frames 4-6 (the restarted recorder)
    damaged.write_bytes(blob[:sizes[1]] + blob[sizes[1]:(sizes[1] + sizes[2]) // 2] + blob[sizes[2]:])
    r = RecordingReader(damaged)
    got = [x.data for x in r]
    assert got[:80] == data[:80] and got[-120:] == data[120:]
    assert set(got) <= set(data) and r.corrupt_regions == 1 and not r.truncated
