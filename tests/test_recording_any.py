"""Replay and export of recordings made by other tools: frames routed by their own content (no subscribe lines, no
stream names in the URL), instrument lists synthesised or taken from the recording's own answers, every book
depth, and every market of a recording replayed."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest
from test_replay import stop_replay

from mdengine.engine.config import ExchangeConfig
from mdengine.exchanges import get_adapter, recording_rules
from mdengine.recording.export import BookUpdate, Rebuild, export
from mdengine.recording.reader import RecordingReader
from mdengine.store import SegmentReader, shm

CTX = mp.get_context("spawn")
BINANCE = "binance-spot-2021-10-12.jsonl"
OKX = "okx-2022-05-13.jsonl"
DEPTH = 20


def _until(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
        except Exception:  # noqa: BLE001 - not there yet
            v = None
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _rewrite(src: str, dst: str, change) -> None:
    """Write `src` (any compression) as plain JSON Lines, each record passed through `change` (None: dropped)."""
    with open(dst, "wb") as out:
        for r in RecordingReader(src):
            obj = {"kind": r.kind, "ts": r.ts, "ts_ns": r.ts_ns, "url": r.url, "exchange": r.exchange}
            if r.data is not None:
                obj["data"] = r.data
            obj = change(obj)
            if obj is not None:
                out.write(orjson.dumps(obj) + b"\n")


def _strip_subscriptions(obj: dict) -> dict | None:
    """No subscribe (`send`) or `connect` lines, and no stream names in the URLs: only the frames say what they are."""
    if obj["kind"] in ("send", "connect"):
        return None
    if obj["kind"] != "http":
        obj["url"] = obj["url"].split("?", 1)[0]
    return obj


def _final_books(path: str) -> dict[tuple[str, str], tuple[dict, dict, int]]:
    """(market, native) -> (bids, asks, update id) of each book after its last update (a recorded disconnect at
    the end clears the adapter's books, so each is copied as it changes)."""
    rb = Rebuild(path)
    out = {}
    for it in rb:
        if isinstance(it, BookUpdate):
            b = rb.adapter.books[it.key]
            out[it.key] = ({v[0]: v[1] for v in b.bids.levels.values()}, {v[0]: v[1] for v in b.asks.levels.values()},
                           it.update_id)
    return out


@pytest.mark.parametrize("name", [BINANCE, OKX])
def test_export_without_subscriptions_rebuilds_the_same_books(recordings_dir, tmp_path, name):
    src = os.path.join(recordings_dir, name)
    bare = str(tmp_path / name)
    _rewrite(src, bare, _strip_subscriptions)
    assert not any(r.kind in ("send", "connect") for r in RecordingReader(bare))
    ref = _final_books(src)
    assert len(ref) >= 3
    assert _final_books(bare) == ref
    full = export(src, "hftbacktest", tmp_path / "full")
    summary = export(bare, "hftbacktest", tmp_path / "bare")
    assert summary["frames_unrouted"] == 0 and summary["book_invalid"] == {} and summary["protocol_errors"] == 0
    assert summary["snapshots"] == full["snapshots"] and summary["updates"] == full["updates"]
    assert summary["trades"] == full["trades"]
    for f in summary["files"]:
        with np.load(f) as a, np.load(os.path.join(tmp_path / "full", os.path.basename(f))) as b:
            assert np.array_equal(a["data"], b["data"]), f


def test_export_of_raw_binance_streams_on_another_path_rebuilds_the_same_books(recordings_dir, tmp_path):
    """Frames recorded on raw-stream URLs (``/ws``, the bare event, no `stream` name) reach the adapter's
    combined-stream connection by their own `e`/`s` fields."""
    src = os.path.join(recordings_dir, BINANCE)

    def raw(obj: dict) -> dict | None:
        obj = _strip_subscriptions(obj)
        if obj is not None and obj["kind"] == "recv":
            obj["url"] = "wss://stream.binance.com:9443/ws"
            obj["data"] = orjson.dumps(orjson.loads(obj["data"])["data"]).decode()
        return obj

    bare = str(tmp_path / BINANCE)
    _rewrite(src, bare, raw)
    assert not any('"stream"' in r.data for r in RecordingReader(bare) if r.kind == "recv")
    summary = export(bare, "hftbacktest", tmp_path / "raw")
    assert summary["frames_unrouted"] == 0 and summary["book_invalid"] == {}
    assert _final_books(bare) == _final_books(src)
    full = export(src, "hftbacktest", tmp_path / "full")
    assert summary["updates"] == full["updates"] and summary["trades"] == full["trades"]


@pytest.mark.parametrize("name,old,new", [(BINANCE, "@depth@100ms", "@depth"),  # Binance's 1 s diffs
                                          (OKX, '"channel":"books"', '"channel":"books-l2-tbt"'),
                                          (OKX, '"channel":"books"', '"channel":"books50-l2-tbt"')])
def test_export_reads_every_book_channel_of_the_exchange(recordings_dir, tmp_path, name, old, new):
    """The same messages under another book channel of the exchange rebuild the same books."""
    src = os.path.join(recordings_dir, name)
    other = str(tmp_path / name)

    def rename(obj: dict) -> dict | None:
        obj = _strip_subscriptions(obj)
        if obj is not None and obj["kind"] == "recv":
            obj["data"] = obj["data"].replace(old, new)
        return obj

    _rewrite(src, other, rename)
    assert sum(new in (r.data or "") for r in RecordingReader(other)) > 10
    summary = export(other, "hftbacktest", tmp_path / "other")
    assert summary["book_invalid"] == {} and summary["frames_unrouted"] == 0
    assert _final_books(other) == _final_books(src)


def test_export_writes_tardis_ids_and_instrument_sizes(recordings_dir, tmp_path):
    summary = export(os.path.join(recordings_dir, OKX), "tardis-csv", tmp_path)
    with open(tmp_path / "export-summary.json") as fh:
        written = json.load(fh)
    assert written["instruments"] == summary["instruments"]
    by_native = {i["native"]: i for i in written["instruments"]}
    assert by_native["BTC-USDT"]["tardis_exchange"] == "okex"
    swap = next(i for i in written["instruments"] if i["market"] == "SWAP")
    assert swap["tardis_exchange"] == "okex-swap"
    assert all({"tick_size", "lot_size", "contract_size"} <= set(i) for i in written["instruments"])
    assert recording_rules("binance").TARDIS_IDS == {"spot": "binance", "usdm": "binance-futures"}
    assert recording_rules("bybit").TARDIS_IDS["spot"] == "bybit-spot"


# ----------------------------------------------------------------------------- replays through the engine
def _replay(path: str, ns: str, exchange: str, want: dict[tuple[str, str], tuple], speed: str = "0",
            extra: tuple = ()) -> dict[tuple[str, str], tuple]:
    """Run `mdengine replay` and sample the published books until each of `want` ((market, native) -> (bids,
    asks, last update id)) reached its last update id; returns {key: (bids, asks)} as published then."""
    cmd = [sys.executable, "-m", "mdengine", "replay", path, "--speed", speed, "--namespace", ns, "--seconds", "90",
           "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got: dict[tuple[str, str], tuple] = {}
    try:
        reader = _until(lambda: SegmentReader(ns, exchange), 60, "the replay's segment")
        try:
            books = _until(lambda: {k: reader.book(k[1], market=k[0]) for k in want}, 60, "every replayed symbol")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(got) < len(want):
                for k, b in books.items():
                    snap = b.snapshot(DEPTH)
                    if snap.header.state_name != "live":
                        continue
                    if want[k][2] and snap.update_id == want[k][2]:
                        got[k] = (snap.bids, snap.asks)  # compared by the caller
                    elif not want[k][2] and _same(snap.bids, snap.asks, want[k]):
                        got[k] = (snap.bids, snap.asks)  # no update ids on the wire (OKX 2022): the final book
                time.sleep(0.002)
        finally:
            reader.close()
    finally:
        _, err = stop_replay(proc, ns)
    assert proc.returncode == 0, err
    return got


def _top(side: dict, bids: bool) -> np.ndarray:
    return np.array(sorted(side.items(), reverse=bids)[:DEPTH]).reshape(-1, 2)


def _same(bids: np.ndarray, asks: np.ndarray, want: tuple) -> bool:
    return np.array_equal(bids, _top(want[0], True)) and np.array_equal(asks, _top(want[1], False))


def _assert_replayed(want: dict, got: dict) -> None:
    assert set(got) == set(want), f"never published their final book: {sorted(set(want) - set(got))}"
    for k, (bids, asks) in got.items():
        assert _same(bids, asks, want[k]), k


@pytest.mark.parametrize("name,exchange", [(BINANCE, "binance"), (OKX, "okx")])
def test_replay_without_subscriptions_or_instrument_lists_publishes_the_recorded_books(recordings_dir, tmp_path,
                                                                                        name, exchange):
    bare = str(tmp_path / name)
    _rewrite(os.path.join(recordings_dir, name), bare, _strip_subscriptions)
    assert not any(r.kind == "http" and "nstrument" in r.url or "exchangeInfo" in r.url
                   for r in RecordingReader(bare))
    want = _final_books(bare)
    _assert_replayed(want, _replay(bare, f"tany{os.getpid()}{exchange[:2]}", exchange, want))


def _record(tmp_path_factory, exchange: str, sims: list[str], symbols: list[str], markets: list[str],
            **cfg_kw) -> str:
    """A ~2 s session of a real feed against the simulator, recorded by the feed's own Recorder tap."""
    from mdengine.feed.process import run_feed
    from mdengine.sim import Simulator

    d = tmp_path_factory.mktemp("rec")
    ns = "trany" + str(os.getpid())
    sim = Simulator(seed=5, rate_hz=20.0, exchanges=sims, symbols=["BTCUSDT", "ETHUSDT"]).start()
    cfg = ExchangeConfig(name=exchange, symbols=symbols, markets=markets, record_dir=str(d),
                         endpoints=get_adapter(exchange).sim_endpoints(sim.endpoints()), heartbeat_interval_s=0.1,
                         **cfg_kw)
    proc = CTX.Process(target=run_feed, args=(ns, cfg), kwargs={"log_level": "WARNING"}, daemon=True)
    proc.start()

    def live() -> bool:
        r = SegmentReader(ns, exchange)
        try:
            return all(r.book(s).header().state_name == "live" for s in symbols)
        finally:
            r.close()

    try:
        _until(live, 60, "live books in the recorded session")
        time.sleep(2.0)
    finally:
        proc.terminate()
        proc.join(20)
        if proc.is_alive():
            proc.kill()
        sim.stop()
        for name in shm.list_names(ns):
            shm.unlink(name)
    (name,) = os.listdir(d)
    return str(d / name)


@pytest.fixture(scope="module")
def binance_two_markets(tmp_path_factory) -> str:
    return _record(tmp_path_factory, "binance", ["binance-spot", "binance-usdm"],
                   ["BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT"], ["spot", "usdm"])


def test_export_of_usdm_frames_on_the_spot_path_keeps_the_markets_apart(binance_two_markets, tmp_path):
    """A capture of both markets on `/stream` (USDⓈ-M's older path is spot's path): each frame reaches its
    market's connection by host and content."""
    other = str(tmp_path / "binance-old-paths.jsonl")

    def old_paths(obj: dict) -> dict | None:
        obj = _strip_subscriptions(obj)
        if obj is not None and obj["kind"] != "http":
            usdm = "/public/" in obj["url"] or "/market/" in obj["url"]
            obj["url"] = ("wss://fstream.binance.com" if usdm else "wss://stream.binance.com:9443") + "/stream"
        elif obj is not None:
            host = "https://fapi.binance.com" if "/fapi/" in obj["url"] else "https://api.binance.com"
            obj["url"] = host + "/" + obj["url"].split("/", 3)[3]
        return obj

    _rewrite(binance_two_markets, other, old_paths)
    summary = export(other, "hftbacktest", tmp_path / "out")
    full = export(binance_two_markets, "hftbacktest", tmp_path / "full")
    # the session's closing disconnects no longer say which USDⓈ-M connection closed: only those may differ
    assert summary["frames_unrouted"] == 0 and set(summary["book_invalid"]) <= {"disconnect"}
    assert summary["updates"] == full["updates"] and summary["trades"] == full["trades"]
    assert summary["snapshots"] == full["snapshots"]
    want = _final_books(binance_two_markets)
    assert {k[0] for k in want} == {"spot", "usdm"} and _final_books(other) == want


def test_replay_of_two_markets_publishes_every_symbol_of_both(binance_two_markets, tmp_path):
    path = binance_two_markets
    want = _final_books(path)
    assert {k[0] for k in want} == {"spot", "usdm"} and len(want) == 4
    _assert_replayed(want, _replay(path, f"tmm{os.getpid()}", "binance", want))


@pytest.fixture(scope="module")
def bybit_200(tmp_path_factory) -> str:
    """A Bybit linear session subscribed to `orderbook.200`."""
    return _record(tmp_path_factory, "bybit", ["bybit"], ["BTC/USDT:USDT", "ETH/USDT:USDT"], ["linear"],
                   book_depth=200, book_capacity=200)


def test_export_reads_bybit_orderbook_500(bybit_200, tmp_path):
    """`orderbook.500` (derivatives only; the adapter subscribes 50, 200 or 1000) is read like the others."""
    other = str(tmp_path / "bybit-500.jsonl")

    def to_500(obj: dict) -> dict:
        if obj["kind"] in ("recv", "send") and obj.get("data"):
            obj["data"] = obj["data"].replace("orderbook.200.", "orderbook.500.")
        return obj

    _rewrite(bybit_200, other, to_500)
    assert sum("orderbook.500." in (r.data or "") for r in RecordingReader(other)) > 10
    want = _final_books(bybit_200)
    assert len(want) == 2 and _final_books(other) == want


def test_replay_of_bybit_orderbook_200_with_its_own_instrument_answers(bybit_200, tmp_path):
    path = bybit_200

    def own_urls(obj: dict) -> dict:  # Bybit's own instrument queries, not the engine's URLs
        if obj["kind"] == "http" and "instruments-info" in obj["url"]:
            obj["url"] = obj["url"].replace("&limit=1000", "") + "&status=Trading&limit=500"
        return obj

    mine = str(tmp_path / "bybit-own.jsonl")
    _rewrite(path, mine, own_urls)
    recs = list(RecordingReader(mine))
    assert any("orderbook.200." in (r.data or "") for r in recs if r.kind == "recv")
    assert any("status=Trading" in r.url for r in recs if r.kind == "http")
    want = _final_books(mine)
    assert {k[0] for k in want} == {"linear"} and len(want) == 2
    _assert_replayed(want, _replay(mine, f"tby{os.getpid()}", "bybit", want))


def test_a_recording_with_perpetual_data_exports_derivative_ticker_and_liquidations(tmp_path_factory, tmp_path):
    """A Bybit linear feed recorded against the simulator (tickers and allLiquidation on, liquidations every
    simulated second) exports Tardis's derivative_ticker.csv and liquidations.csv beside the book and trades."""
    import csv

    from mdengine.sim.formats.perp import PerpModel

    mp_ = pytest.MonkeyPatch()
    mp_.setattr(PerpModel, "BURST_CHANCE", 1.0)
    try:
        src = _record(tmp_path_factory, "bybit", ["bybit"], ["BTC/USDT:USDT"], ["linear"])
    finally:
        mp_.undo()
    summary = export(src, "tardis-csv", tmp_path / "out")
    names = sorted(os.path.basename(f) for f in summary["files"])
    assert names == ["derivative_ticker.csv", "incremental_book_L2.csv", "liquidations.csv", "trades.csv"]
    with open(tmp_path / "out" / "derivative_ticker.csv") as fh:
        ticker = list(csv.DictReader(fh))
    assert ticker and {r["exchange"] for r in ticker} == {"bybit"} and {r["symbol"] for r in ticker} == {"BTCUSDT"}
    last = ticker[-1]
    assert float(last["mark_price"]) > 0 and float(last["index_price"]) > 0 and float(last["open_interest"]) > 0
    assert last["funding_rate"] != "" and int(last["funding_timestamp"]) % (8 * 3600 * 10**6) == 0
    assert last["predicted_funding_rate"] == "" and last["last_price"] == ""  # not published: empty, not zero
    with open(tmp_path / "out" / "liquidations.csv") as fh:
        liqs = list(csv.DictReader(fh))
    assert liqs and all(r["side"] in ("buy", "sell") and float(r["price"]) > 0 and float(r["amount"]) > 0
                        for r in liqs)
    hbt = export(src, "hftbacktest", tmp_path / "hbt")  # unchanged: books and trades only
    assert [os.path.basename(f) for f in hbt["files"]] == ["bybit_linear_BTCUSDT.npz"]
