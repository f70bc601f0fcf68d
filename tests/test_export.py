"""Export: books rebuilt by the adapters from the real recordings, written as hftbacktest / tardis CSV, and
read back with numpy/csv only against an independently built reference book."""

from __future__ import annotations

import csv
import importlib.util
import json
import os

import numpy as np
import orjson
import pytest

from mdengine.recording.export import (
    BOOK_INVALID_EVENT,
    BUY_EVENT,
    DEPTH_CLEAR_EVENT,
    DEPTH_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    EXCH_EVENT,
    HBT_EVENT_DTYPE,
    LOCAL_EVENT,
    SELL_EVENT,
    TRADE_EVENT,
    ExportError,
    Rebuild,
    export,
)
from mdengine.recording.reader import RecordingReader
from mdengine.recording.replay import export_main
from mdengine.recording.tap import Recorder

BINANCE = "binance-spot-2021-10-12.jsonl"
OKX = "okx-2022-05-13.jsonl"
_KIND = 0xFF  # hftbacktest keeps the event kind in the low bits, flags in the high ones


def _replay_hbt(arr: np.ndarray) -> tuple[dict[float, float], dict[float, float]]:
    """Apply hftbacktest events the way its depth does: clear-up-to, then set/delete levels."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for ev, px, qty in zip(arr["ev"], arr["px"], arr["qty"], strict=True):
        kind = int(ev) & _KIND
        side = bids if ev & BUY_EVENT else asks
        if kind == DEPTH_CLEAR_EVENT:
            for p in [p for p in side if (p >= px if side is bids else p <= px)]:
                del side[p]
        elif kind in (DEPTH_EVENT, DEPTH_SNAPSHOT_EVENT):
            if qty == 0:
                side.pop(float(px), None)
            else:
                side[float(px)] = float(qty)
    return bids, asks


def _reference_okx(path: str) -> dict[str, tuple[dict, dict]]:
    """Books straight from the OKX frames (snapshot replaces, update sets, "0" deletes): no engine code."""
    books: dict[str, tuple[dict, dict]] = {}
    for r in RecordingReader(path):
        if r.kind != "recv":
            continue
        msg = orjson.loads(r.data)
        if msg.get("arg", {}).get("channel") != "books" or "data" not in msg:
            continue
        inst, d = msg["arg"]["instId"], msg["data"][0]
        if msg["action"] == "snapshot":
            books[inst] = ({}, {})
        for side, name in zip(books[inst], ("bids", "asks"), strict=True):
            for px, qty, *_ in d[name]:
                if float(qty) == 0:
                    side.pop(float(px), None)
                else:
                    side[float(px)] = float(qty)
    return books


def _reference_binance(path: str) -> dict[str, tuple[dict, dict]]:
    """Binance's documented sync rule applied naively: snapshot, then diffs with u > lastUpdateId."""
    recs = list(RecordingReader(path))
    books = {}
    for r in recs:
        if r.kind == "http":
            sym = r.url.split("symbol=")[1].split("&")[0]
            snap = orjson.loads(r.data)
            last = snap["lastUpdateId"]
            b = {float(p): float(q) for p, q in snap["bids"]}
            a = {float(p): float(q) for p, q in snap["asks"]}
            for x in recs:
                if x.kind != "recv":
                    continue
                d = orjson.loads(x.data)["data"]
                if d.get("e") != "depthUpdate" or d["s"] != sym or d["u"] <= last:
                    continue
                for side, name in ((b, "b"), (a, "a")):
                    for p, q in d[name]:
                        if float(q) == 0:
                            side.pop(float(p), None)
                        else:
                            side[float(p)] = float(q)
            books[sym] = (b, a)
    return books


@pytest.mark.parametrize("name,reference,snapshots,trades", [(BINANCE, _reference_binance, 4, 2),
                                                             (OKX, _reference_okx, 3, 74)])
def test_export_hftbacktest_round_trip_matches_engine_and_reference_books(recordings_dir, tmp_path, name, reference,
                                                                          snapshots, trades):
    path = os.path.join(recordings_dir, name)
    summary = export(path, "hftbacktest", tmp_path)
    assert summary["book_invalid"] == {} and summary["protocol_errors"] == 0 and summary["frames_unrouted"] == 0
    engine = Rebuild(path)
    for _ in engine:
        pass
    ref = reference(path)
    assert len(summary["files"]) == len(ref)
    n_clear = n_trades = 0
    for f in summary["files"]:
        with np.load(f) as z:
            arr = z["data"]
        assert arr.dtype == HBT_EVENT_DTYPE and arr.dtype.itemsize == 64
        kinds = arr["ev"] & _KIND
        assert np.all(arr["ev"][kinds != BOOK_INVALID_EVENT] & (EXCH_EVENT | LOCAL_EVENT) == EXCH_EVENT | LOCAL_EVENT)
        assert np.all(np.diff(arr["local_ts"]) >= 0)
        n_clear += int(np.sum(kinds == DEPTH_CLEAR_EVENT))
        n_trades += int(np.sum(kinds == TRADE_EVENT))
        native = os.path.basename(f)[:-4].split("_", 2)[2]
        (key,) = [k for k in engine.adapter.books if k[1] == native]
        book = engine.adapter.books[key]
        bids, asks = _replay_hbt(arr)
        assert bids == {v[0]: v[1] for v in book.bids.levels.values()}  # the engine's own book
        assert asks == {v[0]: v[1] for v in book.asks.levels.values()}
        assert (bids, asks) == ref[native]  # and a book built without any engine code
    assert n_clear == 2 * snapshots and n_trades == trades
    assert sum(summary["snapshots"].values()) == snapshots
    if name == OKX:
        assert sum(summary["updates"].values()) == 287  # one per incremental `books` message


def test_export_tardis_csv_rows_match_hftbacktest_rows(recordings_dir, tmp_path):
    path = os.path.join(recordings_dir, OKX)
    export(path, "hftbacktest", tmp_path / "hbt")
    summary = export(path, "tardis-csv", tmp_path / "csv")
    with open(tmp_path / "csv" / "incremental_book_L2.csv") as fh:
        book = list(csv.DictReader(fh))
    with open(tmp_path / "csv" / "trades.csv") as fh:
        trades = list(csv.DictReader(fh))
    assert list(book[0]) == ["exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price",
                             "amount"]
    assert list(trades[0]) == ["exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount"]
    depth_rows = snap_rows = 0
    for f in os.listdir(tmp_path / "hbt"):
        if f.endswith(".npz"):
            with np.load(tmp_path / "hbt" / f) as z:
                k = z["data"]["ev"] & _KIND
            depth_rows += int(np.sum((k == DEPTH_EVENT) | (k == DEPTH_SNAPSHOT_EVENT)))
            snap_rows += int(np.sum(k == DEPTH_SNAPSHOT_EVENT))
    assert len(book) == depth_rows and sum(r["is_snapshot"] == "true" for r in book) == snap_rows
    assert len(trades) == 74 and {r["side"] for r in trades} <= {"buy", "sell"}
    assert {r["exchange"] for r in book} == {"okex", "okex-swap", "okex-futures"}  # Tardis's own ids
    first = book[0]
    assert len(first["timestamp"]) == 16 and len(first["local_timestamp"]) == 16  # µs since the epoch
    with open(tmp_path / "csv" / "export-summary.json") as fh:
        assert json.load(fh)["files"] == summary["files"]


def _without(src: str, dst: str, drop) -> None:
    with open(src) as fh, open(dst, "w") as out:
        for line in fh:
            if not drop(json.loads(line)):
                out.write(line)


def test_export_marks_a_checksum_failure_and_the_unsynced_rest(recordings_dir, tmp_path):
    src = os.path.join(recordings_dir, OKX)
    dropped = []

    def drop(rec: dict) -> bool:  # one BTC-USDT incremental update goes missing
        if (not dropped and rec["kind"] == "recv" and '"action":"update"' in rec["data"]
                and '"channel":"books","instId":"BTC-USDT"' in rec["data"]):
            dropped.append(rec)
            return True
        return False

    cut = tmp_path / "okx-2022-05-13.jsonl"
    _without(src, str(cut), drop)
    summary = export(cut, "hftbacktest", tmp_path / "out")
    assert summary["book_invalid"] == {"checksum": 1}
    assert summary["updates"].get("SPOT/BTC-USDT", 0) == 0  # the very next update no longer matches: nothing after it
    with np.load(tmp_path / "out" / "okx_spot_BTC-USDT.npz") as z:
        arr = z["data"]
    marks = arr[arr["ev"] == BOOK_INVALID_EVENT]
    assert len(marks) == 1 and marks["ival"][0] == 1  # MARKER_KINDS.index("checksum")
    assert np.all(arr["local_ts"][arr["ev"] & _KIND == DEPTH_EVENT] <= marks["local_ts"][0])


def test_export_marks_a_binance_gap(recordings_dir, tmp_path):
    src = os.path.join(recordings_dir, BINANCE)
    seen = []

    def drop(rec: dict) -> bool:  # the 30th NKNUSDT diff is lost (after its snapshot)
        if rec["kind"] == "recv" and '"stream":"nknusdt@depth@100ms"' in rec["data"]:
            seen.append(rec)
            return len(seen) == 30
        return False

    cut = tmp_path / "binance-spot-2021-10-12.jsonl"
    _without(src, str(cut), drop)
    summary = export(cut, "hftbacktest", tmp_path / "out")
    assert summary["book_invalid"] == {"gap": 1}
    assert summary["http_used"] == 4  # no later snapshot was recorded, so NKNUSDT stays unsynced
    with np.load(tmp_path / "out" / "binance_spot_NKNUSDT.npz") as z:
        assert int(np.sum(z["data"]["ev"] == BOOK_INVALID_EVENT)) == 1


def test_export_of_a_recorder_file_equals_export_of_the_plain_recording(recordings_dir, tmp_path):
    src = os.path.join(recordings_dir, OKX)
    with Recorder(tmp_path / "rec", "okx") as rec:
        for r in RecordingReader(src):
            rec.tap(r.kind, r.url, r.data, r.ts_ns)
    (zst,) = os.listdir(tmp_path / "rec")
    assert zst.endswith(".jsonl.zst")
    a = export(src, "hftbacktest", tmp_path / "a")
    b = export(tmp_path / "rec" / zst, "hftbacktest", tmp_path / "b")
    for fa, fb in zip(a["files"], b["files"], strict=True):
        with np.load(fa) as za, np.load(fb) as zb:
            assert np.array_equal(za["data"], zb["data"])


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_export_parquet_without_pyarrow_says_how_to_install(recordings_dir, tmp_path):
    with pytest.raises(ExportError, match=r'pip install pyarrow \(the extra "mdengine-shm\[parquet\]"\)'):
        export(os.path.join(recordings_dir, OKX), "parquet", tmp_path)


def test_export_main_writes_files_and_reports_errors(recordings_dir, tmp_path, capsys):
    assert export_main([os.path.join(recordings_dir, BINANCE), "--format", "hftbacktest", "--out",
                        str(tmp_path / "o"), "--symbol", "NKNUSDT"]) == 0
    assert sorted(os.listdir(tmp_path / "o")) == ["binance_spot_NKNUSDT.npz", "export-summary.json"]
    assert "binance: " in capsys.readouterr().out
    assert export_main([str(tmp_path / "missing.jsonl"), "--format", "tardis-csv", "--out", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    unknown = tmp_path / "notes.jsonl"
    unknown.write_text('{"kind":"recv","ts":1,"url":"ws://127.0.0.1:1/x","data":"{}"}\n')
    assert export_main([str(unknown), "--format", "tardis-csv", "--out", str(tmp_path / "u")]) == 1
    assert "--exchange" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main([str(unknown), "--format", "csv", "--out", str(tmp_path)])


def test_hbt_flag_constants_match_hftbacktest_types():
    # values from nkaz001/hftbacktest py-hftbacktest/hftbacktest/types.py
    assert (DEPTH_EVENT, TRADE_EVENT, DEPTH_CLEAR_EVENT, DEPTH_SNAPSHOT_EVENT) == (1, 2, 3, 4)
    assert (EXCH_EVENT, LOCAL_EVENT, BUY_EVENT, SELL_EVENT) == (1 << 31, 1 << 30, 1 << 29, 1 << 28)
    assert HBT_EVENT_DTYPE.names == ("ev", "exch_ts", "local_ts", "px", "qty", "order_id", "ival", "fval")
