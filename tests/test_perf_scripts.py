"""Smoke tests of perf/compare_cryptofeed.py's own parts: frame loading, workloads, statistics, the mdengine
side (real adapter + real segment), and, only when perf/.peer-venv exists, the cryptofeed peer and the
JSON last line. Nothing here installs cryptofeed or times anything."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mdengine.store import SegmentReader, shm

PERF = Path(__file__).resolve().parent.parent / "perf"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


cmp = _load("compare_cryptofeed")
plot = _load("plot_latency")


@pytest.fixture(scope="module")
def recordings(recordings_dir):
    return Path(recordings_dir)


@pytest.fixture(scope="module")
def binance_rec(recordings):
    return cmp.recorded_binance(recordings / cmp.BINANCE_RECORDING)


@pytest.fixture(scope="module")
def okx_rec(recordings):
    return cmp.recorded_okx(recordings / cmp.OKX_RECORDING)


# ----------------------------------------------------------------------------- loading recordings
def test_load_recording_keeps_every_event_in_order(recordings):
    events = cmp.load_recording(recordings / cmp.BINANCE_RECORDING)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "connect"
    assert kinds.count("http") == 4
    assert kinds.count("recv") == 177 + 84 + 2 + 2  # depth, bookTicker, aggTrade, kline (README)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_load_recording_names_the_bad_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"kind":"recv","ts":1,"url":"u","data":"{}"}\n\n{"kind":"recv", oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not JSON"):
        cmp.load_recording(f)
    f.write_text('{"kind":"telepathy","ts":1}\n')
    with pytest.raises(ValueError, match=r":1: not a recording event"):
        cmp.load_recording(f)


def test_recorded_binance_workload_is_depth_and_aggtrade_frames_with_their_snapshots(binance_rec):
    kinds = [cmp.binance_frame_kind(f) for f in binance_rec.frames]
    assert kinds.count("book") == 177 and kinds.count("trade") == 2 and len(kinds) == 179
    assert sorted(binance_rec.http) == ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]
    assert all("lastUpdateId" in json.loads(b) for b in binance_rec.http.values())
    assert {i["native"] for i in binance_rec.instruments} == set(binance_rec.http)
    assert not binance_rec.checksums


def test_recorded_okx_workload_is_books_and_trades_after_the_acks(okx_rec):
    kinds = [cmp.okx_frame_kind(f) for f in okx_rec.frames]
    assert kinds.count("book") == 290 and kinds.count("trade") == 74 and len(kinds) == 364
    assert all(json.loads(p)["event"] == "subscribe" for p in okx_rec.preamble)
    assert {i["native"]: i["kind"] for i in okx_rec.instruments} == {
        "BTC-USD-220527": "futures", "UNI-USD-SWAP": "perpetual", "BTC-USDT": "spot"}
    assert okx_rec.checksums


def test_frame_kind_ignores_tickers_acks_and_klines():
    assert cmp.binance_frame_kind('{"stream":"btcusdt@bookTicker","data":{}}') is None
    assert cmp.binance_frame_kind('{"stream":"btcusdt@kline_1m","data":{}}') is None
    assert cmp.okx_frame_kind('{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"}}') is None
    assert cmp.okx_frame_kind('{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[]}') is None


# ----------------------------------------------------------------------------- simulated workloads
def test_simulated_binance_diffs_chain_from_the_snapshot_so_every_repetition_syncs():
    w = cmp.simulated("binance", 40)
    assert w == cmp.simulated("binance", 40)  # deterministic: same seed, same frames
    last = {sym: json.loads(body)["lastUpdateId"] for sym, body in w.http.items()}
    trades = 0
    for text in w.frames:
        d = json.loads(text)["data"]
        if d["e"] == "aggTrade":
            trades += 1
            continue
        assert d["U"] == last[d["s"]] + 1, "a gap would make one side resync and skew the comparison"
        last[d["s"]] = d["u"]
    assert trades > 0 and len(w.frames) - trades == 80


@pytest.mark.parametrize("mode", ["crc32", "zero"])
def test_simulated_okx_starts_with_snapshots_and_chains_seq_ids(mode):
    w = cmp.simulated("okx", 30, okx_checksum=mode)
    assert w.checksums == (mode == "crc32")
    seq = {}
    for text in w.frames:
        msg = json.loads(text)
        if msg["arg"]["channel"] != "books":
            continue
        d = msg["data"][0]
        inst = msg["arg"]["instId"]
        assert (d["checksum"] != 0) == (mode == "crc32")
        if msg["action"] == "snapshot":
            assert inst not in seq
        else:
            assert d["prevSeqId"] == seq[inst]
        seq[inst] = d["seqId"]
    assert sorted(seq) == ["BTC-USDT", "ETH-USDT-SWAP"]


# ----------------------------------------------------------------------------- statistics
def _run(frames: int, seconds: float) -> dict:
    return {"frames": frames, "seconds": seconds}


def test_summarize_reports_medians_and_the_frames_weighted_ratio():
    ws = [cmp.Workload("a", "binance", [], ["x"] * 10), cmp.Workload("b", "okx", [], ["y"] * 10)]
    runs = {"a": {"mdengine": [_run(100, 1.0), _run(100, 0.5), _run(100, 2.0)],
                  "cryptofeed": [_run(100, 2.0), _run(100, 2.0), _run(100, 2.0)]},
            "b": {"mdengine": [_run(300, 1.0)] * 3, "cryptofeed": [_run(300, 3.0)] * 3}}
    res = cmp.summarize(runs, ws)
    assert res["workloads"]["a"] == {"mdengine_fps": 100, "cryptofeed_fps": 50, "ratio": 2.0, "frames_per_run": 100}
    assert res["workloads"]["b"]["ratio"] == 3.0
    # overall per round: 400 frames; md 2.0 / 1.5 / 3.0 s vs cf 5.0 s -> ratios 2.5, 3.33, 1.67 -> median 2.5
    assert res["ratio_vs_cryptofeed"] == 2.5
    assert res["ratio_geomean"] == round((2.0 * 3.0) ** 0.5, 2)
    assert set(res["exchanges"]) == {"binance", "okx"} and res["rounds"] == 3
    json.dumps(res)


def test_percentiles_are_nearest_rank_in_microseconds():
    p = cmp.percentiles(list(range(1000, 101_000, 1000)))  # 1..100 µs
    assert p == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 100.0}
    assert cmp.percentiles([]) == {}


def test_reps_size_the_slower_side_to_the_target():
    assert cmp._reps_for(0.01, 0.05, 1.0) == 20
    assert cmp._reps_for(3.0, 0.1, 1.0) == 1


def test_plot_ccdf_is_decreasing_and_thinned():
    x, y = plot.ccdf(list(range(10_000, 0, -1)))
    assert len(x) <= 2001 and x == sorted(x) and y == sorted(y, reverse=True)
    assert x[0] == 0.001 and x[-1] == 10.0 and 0 < y[-1] < 1e-4


# ----------------------------------------------------------------------------- mdengine side
def _reference_top(frames: list[str], inst: str, n: int) -> tuple[list, list]:
    """Final top-n levels of `inst` replayed with plain dicts (independent of LocalBook)."""
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for text in frames:
        msg = json.loads(text)
        if msg["arg"] != {"channel": "books", "instId": inst}:
            continue
        d = msg["data"][0]
        if msg["action"] == "snapshot":
            bids.clear()
            asks.clear()
        for side, lv in ((bids, d["bids"]), (asks, d["asks"])):
            for px, sz, *_ in lv:
                if float(sz) == 0:
                    side.pop(px, None)
                else:
                    side[px] = sz
    top_b = sorted(((float(p), float(q)) for p, q in bids.items()), reverse=True)[:n]
    top_a = sorted((float(p), float(q)) for p, q in asks.items())[:n]
    return top_b, top_a


def test_mdengine_side_publishes_every_book_change_into_a_real_segment(okx_rec):
    with cmp.MdengineSide(depth=20) as md:
        res = md.run(okx_rec, 2, count=True)
        assert res["frames"] == 2 * len(okx_rec.frames) and res["seconds"] > 0 and len(res["lat_ns"]) == res["frames"]
        counts = md.counts["okx-recorded"]
        assert counts["BookChanged"] == 2 * 290 and counts["TradesReceived"] == 2 * 74
        assert "BookInvalid" not in counts and "ProtocolError" not in counts
        with SegmentReader(md.namespace, "okx") as reader:
            # book publishes + trade batches, plus the publisher's SYNCING state for each of the 3 symbols
            assert reader.publish_counter == 2 * (290 + 74 + 3)
            snap = reader.book("BTC-USDT", "SPOT").snapshot(5)
            bids, asks = _reference_top(okx_rec.frames, "BTC-USDT", 5)
            assert snap.bids.tolist() == [list(b) for b in bids]
            assert snap.asks.tolist() == [list(a) for a in asks]
            trades, lost = reader.trades("BTC-USDT", "SPOT", start=0).poll()
            assert len(trades) > 0 and lost == 0
        namespace = md.namespace
    assert shm.list_names(namespace) == []  # the throwaway namespace is cleaned up


def test_mdengine_side_answers_binance_snapshot_requests_with_the_recorded_bodies(binance_rec):
    with cmp.MdengineSide() as md:
        md.run(binance_rec, 1, count=True)
        counts = md.counts["binance-recorded"]
    # README: all 4 symbols sync, 172 diffs applied, 5 dropped as older than their snapshot
    assert counts["FetchRest"] == 4 and counts["SymbolSynced"] == 4
    assert counts["BookChanged"] == 172 and counts["TradesReceived"] == 2
    assert "BookInvalid" not in counts


# ----------------------------------------------------------------------------- with the peer venv only
needs_peer = pytest.mark.skipif(not cmp.peer_ready(), reason="perf/.peer-venv with cryptofeed is not set up "
                                "(python perf/compare_cryptofeed.py --setup)")


@needs_peer
def test_peer_replays_the_same_frames_through_cryptofeed(tmp_path, okx_rec, binance_rec):
    from dataclasses import asdict

    spec = tmp_path / "w.json"
    spec.write_text(json.dumps({"workloads": [asdict(okx_rec), asdict(binance_rec)]}))
    with cmp.PeerSide(str(spec)) as cf:
        assert cf.info["cryptofeed"] == cmp.CRYPTOFEED_VERSION
        res = cf.run(okx_rec, 1)
        assert res["frames"] == len(okx_rec.frames)
        assert res["delivered_per_rep"] == {"book": 290, "trade": 74}  # checksums validated on every book
        res = cf.run(binance_rec, 1)
        assert res["delivered_per_rep"] == {"book": 4 + 172, "trade": 2}  # its snapshot callbacks + diffs


@needs_peer
def test_script_prints_one_json_object_last():
    out = subprocess.run([sys.executable, str(PERF / "compare_cryptofeed.py"), "--rounds", "1", "--run-seconds",
                          "0.01", "--sim-steps", "20"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ratio_vs_cryptofeed"] > 0
    assert result["versions"]["cryptofeed"] == cmp.CRYPTOFEED_VERSION
    assert set(result["exchanges"]) == {"binance", "okx"}
    assert result["machine"]["nproc"] >= 1 and result["date"]


def test_book_ops_times_both_implementations_and_prints_one_json_object_last():
    from mdengine import book

    out = subprocess.run([sys.executable, str(PERF / "book_ops.py"), "--quick", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["implementation"] == book.IMPLEMENTATION
    ops = ("pack_top_50", "pack_top_20", "update_3_levels_twice", "checksum_25", "snapshot_side_1000")
    assert all(result[f"{op}_python_us"] > 0 for op in ops)
    if book.C_IMPLEMENTATION is not None:
        assert all(result[f"{op}_c_us"] > 0 and result[f"{op}_ratio"] > 0 for op in ops)


def test_cold_gap_prints_every_point_and_one_json_object_last():
    out = subprocess.run([sys.executable, str(PERF / "cold_gap.py"), "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len([k for k in result if k.startswith("gap_")]) == 14
    assert all(result[f"warm_{w}ms_p50_us"] > 0 for w in ("2", "1", "0.5"))
    assert result["cold_ratio_10ms"] > 0 and result["warm_1ms_ratio"] > 0


def test_caveat_workloads_are_the_checksum_ones_with_cryptofeed_defaults(okx_rec, binance_rec):
    extra = cmp.caveat_workloads([binance_rec, okx_rec])
    assert [w.name for w in extra] == [okx_rec.name + "/cf-default"]
    assert extra[0].frames == okx_rec.frames and not extra[0].checksums and okx_rec.checksums


def test_steady_ratio_drops_the_snapshot_frames_of_each_repetition_on_both_sides():
    w = cmp.Workload("w", "binance", [], frames=["f"] * 6, http={"A": "{}", "B": "{}"})
    # two repetitions; steady frames take 1 µs in mdengine and 4 µs in cryptofeed; 3 frames of each carry snapshots
    md = [50_000, 1000, 50_000, 1000, 1000, 50_000] * 2
    cf = [90_000, 4000, 4000, 90_000, 4000, 90_000] * 2
    runs = {"mdengine": [{"lat_ns": md}], "cryptofeed": [{"lat_ns": cf}]}
    assert cmp.steady_ratio(runs, w) == 4.0
    assert cmp.steady_ratio(runs, cmp.Workload("x", "okx", [], frames=["f"] * 6)) is None  # no snapshots
