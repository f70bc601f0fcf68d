"""The instrument lists are no single point of failure (mdengine/feed/instcache.py, FeedSession).

Each good list is kept on disk per exchange; when its GET fails (404, 503, a body that is not a list, no server
at all) a real feed process starts from the cached copy, says so in the segment's last error, and fetches again
in the background. A symbol given by its native id starts even when no list names it. A cache that cannot be
written is logged and changes nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mdengine.exchanges import get_adapter
from mdengine.exchanges.okx import OkxAdapter
from mdengine.feed.instcache import MAX_LISTS, InstrumentCache, default_dir
from mdengine.sim import Simulator
from mdengine.sim.testing import http_get
from mdengine.store import SegmentReader
from mdengine.store.layout import MarketKind
from mdengine.symbols import Instrument, InstrumentIndex

BTC = Instrument("okx", "SPOT", "BTC-USDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT", "", 0.1, 1e-8, 1.0)
ETH = Instrument("okx", "SPOT", "ETH-USDT", "ETH/USDT", MarketKind.SPOT, "ETH", "USDT", "", 0.01, 1e-6, 1.0)
INSTRUMENTS_PATH = "/api/v5/public/instruments"


# ----------------------------------------------------------------------------- the cache file
SPOT_URL = "https://www.okx.com/api/v5/public/instruments?instType=SPOT"


def test_the_cache_keeps_each_lists_last_copy_and_reads_nothing_it_did_not_write(tmp_path):
    c = InstrumentCache("okx", tmp_path)
    assert c.load(SPOT_URL) is None
    c.save(SPOT_URL, [BTC, ETH])
    c.save(SPOT_URL.replace("SPOT", "SWAP"), [])
    insts, saved_at = c.load(SPOT_URL)
    assert insts == [BTC, ETH] and time.time() - 60 < saved_at <= time.time()
    assert c.load(SPOT_URL.replace("SPOT", "SWAP"))[0] == []
    assert InstrumentCache("bybit", tmp_path).load(SPOT_URL) is None  # per exchange
    assert c.load(SPOT_URL.replace("www.okx.com", "127.0.0.1:5")) is None  # a simulator's list is another list
    for i in range(MAX_LISTS + 5):  # simulators on new ports: the oldest lists go
        c.save(f"http://127.0.0.1:{i}/x", [])
    assert c.load(SPOT_URL) is None and c.load("http://127.0.0.1:4/x") is None
    assert c.load(f"http://127.0.0.1:{MAX_LISTS + 4}/x") is not None
    c.save(SPOT_URL, [BTC])
    assert c.load(SPOT_URL)[0] == [BTC]
    for junk in ("{not json", json.dumps({"version": 99, "lists": {}}), json.dumps([1, 2])):
        c.path.write_text(junk)
        assert c.load(SPOT_URL) is None
    for rows in ([{**dataclasses.asdict(BTC), "exchange": "binance"}], [{"native": "BTC-USDT"}], "x"):
        c.path.write_text(json.dumps({"version": 1, "lists": {SPOT_URL: {"saved_at": 1, "instruments": rows}}}))
        assert c.load(SPOT_URL) is None  # another exchange's rows, or broken ones
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_the_default_directory_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_dir() == tmp_path / "mdengine" / "instruments"
    assert InstrumentCache("okx").path == tmp_path / "mdengine" / "instruments" / "okx.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_dir() == tmp_path / "home" / ".cache" / "mdengine" / "instruments"


def test_a_cache_that_cannot_be_written_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        InstrumentCache("okx", blocker / "sub").save(SPOT_URL, [BTC])


def test_a_fresh_list_replaces_a_cached_or_made_up_instrument_in_the_index():
    idx = InstrumentIndex([OkxAdapter.native_instrument("BTC-USDT")])
    idx.add(BTC)
    assert idx.resolve("BTC-USDT") is BTC and idx.resolve("BTC/USDT") is BTC and len(idx) == 1


@pytest.mark.parametrize("exchange,native,market,want", [
    ("okx", "BTC-USDT", None, ("SPOT", "BTC/USDT")),
    ("okx", "BTC-USDT-SWAP", None, ("SWAP", "BTC/USDT:USDT")),
    ("okx", "BTC-USD-SWAP", None, ("SWAP", "BTC/USD:BTC")),
    ("okx", "BTC-USDT-250627", None, ("FUTURES", "BTC/USDT:USDT-250627")),
    ("okx", "BTC-USDT-SWAP", "SPOT", None),
    ("okx", "BTC/USDT", None, None),
    ("binance", "BTCUSDT", None, ("spot", "BTC/USDT")),
    ("binance", "ETHFDUSD", None, ("spot", "ETH/FDUSD")),
    ("binance", "BTCUSDT", "usdm", ("usdm", "BTC/USDT:USDT")),
    ("binance", "btcusdt", None, None),
    ("bybit", "BTCUSDT", None, ("spot", "BTC/USDT")),
    ("bybit", "BTCUSD", "inverse", ("inverse", "BTC/USD:BTC")),
    ("bitget", "ETHUSDT", "USDT-FUTURES", ("USDT-FUTURES", "ETH/USDT:USDT")),
    ("bitget", "ETH/USDT", None, None),
])
def test_each_adapter_makes_an_instrument_from_a_native_id(exchange, native, market, want):
    inst = get_adapter(exchange).native_instrument(native, market)
    if want is None:
        assert inst is None
        return
    assert (inst.market, inst.unified) == want and inst.native == native and inst.exchange == exchange
    assert inst.tick_size == inst.lot_size == 0.0  # unknown


# ----------------------------------------------------------------------------- real feed processes
class Feed:
    """`python -m mdengine.feed` for OKX spot against the simulator, its log in a file, its segment read back."""

    def __init__(self, namespace: str, sim: Simulator, symbols: list[str], cache_dir: Path, log: Path,
                 rest: str | None = None) -> None:
        ep = OkxAdapter.sim_endpoints(sim.endpoints())
        if rest is not None:
            ep["rest"] = rest
        cmd = [sys.executable, "-m", "mdengine.feed", "--namespace", namespace, "--exchange", "okx", "--symbols",
               ",".join(symbols), "--markets", "SPOT", "--book-capacity", "10", "--book-depth", "10",
               "--instrument-cache-dir", str(cache_dir)]
        for k, v in ep.items():
            cmd += ["--endpoint", f"{k}={v}"]
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stderr=self._log_file)
        self.reader = wait(lambda: _segment(namespace), 60, "the segment")

    def state(self, symbol: str) -> str:
        if not any(e.unified == symbol for e in self.reader.symbols()):
            return "absent"
        return self.reader.book(symbol).header().state_name

    def wait_live(self, *symbols: str, timeout: float = 30.0) -> None:
        wait(lambda: all(self.state(s) == "live" for s in symbols), timeout, f"{symbols} live")

    def last_error(self) -> str:
        return self.reader.view.last_error()[1]

    def close(self) -> None:
        self.reader.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def _segment(namespace: str) -> SegmentReader | None:
    try:
        return SegmentReader(namespace, "okx")
    except (FileNotFoundError, RuntimeError):
        return None


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return got


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=11, rate_hz=20, exchanges=["okx"]) as s:
        yield s


@pytest.fixture(autouse=True)
def _clean_sim(sim):
    yield
    sim.clear_faults()


def _sim_url(sim: Simulator) -> str:
    return sim.rest_url("okx") + INSTRUMENTS_PATH + "?instType=SPOT"


def _prime(sim: Simulator, cache_dir: Path, rest: str | None = None) -> None:
    """The cache as a feed leaves it: the simulator's own SPOT list, read by the adapter's parser (kept under the
    REST endpoint `rest` when the feed is given another one)."""
    status, _, body = http_get(_sim_url(sim))
    assert status == 200
    insts, _ = OkxAdapter.parse_instruments("instruments:SPOT", json.dumps(body).encode())
    assert any(i.native == "ETH-USDT" for i in insts)
    url = _sim_url(sim) if rest is None else rest + INSTRUMENTS_PATH + "?instType=SPOT"
    InstrumentCache("okx", cache_dir).save(url, insts)


pytestmark = pytest.mark.slow


def test_a_feed_keeps_its_good_instrument_list_on_disk(sim, namespace, tmp_path):
    f = Feed(namespace, sim, ["BTC/USDT"], tmp_path / "cache", tmp_path / "feed.log")
    try:
        f.wait_live("BTC/USDT")
        insts, _ = InstrumentCache("okx", tmp_path / "cache").load(_sim_url(sim))
        assert {"BTC-USDT", "ETH-USDT"} <= {i.native for i in insts}
    finally:
        f.close()


@pytest.mark.parametrize("failure", ["404", "503", "not-json", "no-server"])
def test_a_failing_instrument_list_starts_the_feed_from_the_cached_copy(sim, namespace, tmp_path, failure):
    cache = tmp_path / "cache"
    rest = "http://127.0.0.1:9" if failure == "no-server" else None  # nothing listens there: as DNS would fail
    _prime(sim, cache, rest)
    if rest is None:
        status, body = {"404": (404, '{"msg":"gone"}'), "503": (503, '{"msg":"down"}'),
                        "not-json": (200, "<html>maintenance</html>")}[failure]
        sim.inject("okx", "http_error", count=10_000, status=status, body=body, path=INSTRUMENTS_PATH)
    f = Feed(namespace, sim, ["BTC/USDT", "ETH/USDT"], cache, tmp_path / "feed.log", rest=rest)
    try:
        f.wait_live("BTC/USDT", "ETH/USDT")  # on the cached list: the failed GET stopped nothing
        assert f.last_error().startswith("instrument list failed (") and "from the cached copy" in f.last_error()
        assert f.reader.entry("ETH/USDT").tick_size == 0.01  # the cached instrument, not a made-up one
        if failure == "no-server":
            return
        before = cache.joinpath("okx.json").stat().st_mtime_ns
        sim.clear_faults("okx")  # the exchange is back: the background fetch gets a fresh list and keeps it
        wait(lambda: cache.joinpath("okx.json").stat().st_mtime_ns > before, 60, "a fresh list in the cache")
        assert f.state("BTC/USDT") == "live" and f.proc.poll() is None
    finally:
        f.close()
    assert "cached copy of" in f.log.read_text() and "fetching again in the background" in f.log.read_text()


def test_without_a_cache_a_native_id_starts_and_the_rest_follow_the_list(sim, namespace, tmp_path):
    sim.inject("okx", "http_error", count=10_000, status=503, path=INSTRUMENTS_PATH)
    f = Feed(namespace, sim, ["BTC-USDT", "ETH/USDT"], tmp_path / "cache", tmp_path / "feed.log")
    try:
        f.wait_live("BTC/USDT")  # no list names it: made from its native id, tick and lot unknown
        assert f.reader.entry("BTC/USDT").tick_size == 0.0
        assert f.state("ETH/USDT") == "absent"  # a unified name needs a list
        # the unknown ETH/USDT was the last error for a moment; each failed retry says it again
        shown = "instrument list failed (HTTP 503)"
        wait(lambda: f.last_error().startswith(shown) and "still fetching" in f.last_error(), 20, "the failure shown")
        assert f.reader.view.counters()["rest_failures"] >= 2
        sim.clear_faults("okx")
        f.wait_live("ETH/USDT", timeout=60)  # the list came: what could not start has started
        assert f.state("BTC/USDT") == "live"
    finally:
        f.close()
    assert "starting it by its native id" in f.log.read_text()


def test_a_cache_that_cannot_be_written_is_logged_and_stops_nothing(sim, namespace, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    f = Feed(namespace, sim, ["BTC/USDT"], blocker / "cache", tmp_path / "feed.log")
    try:
        f.wait_live("BTC/USDT")
        wait(lambda: "instrument cache" in f.log.read_text(), 10, "the cache error in the log")
        assert f.proc.poll() is None
    finally:
        f.close()
    assert os.path.isfile(blocker)


def test_every_page_of_a_paged_list_is_loaded_and_kept(namespace, tmp_path):
    """Bybit pages its instrument lists (nextPageCursor): the session waits for the last page, and caches the whole
    list. (Before, the first page's answer ended the wait and the second page's answer was dropped.)"""
    import logging
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from mdengine.engine.config import ExchangeConfig
    from mdengine.exchanges.bybit import BybitAdapter
    from mdengine.feed.loop import FeedLoop
    from mdengine.feed.publisher import Publisher
    from mdengine.feed.session import FeedSession
    from mdengine.store import SegmentWriter, shm

    def row(base: str) -> dict:
        return {"symbol": f"{base}USDT", "contractType": "LinearPerpetual", "baseCoin": base, "quoteCoin": "USDT",
                "settleCoin": "USDT", "priceFilter": {"tickSize": "0.1"}, "lotSizeFilter": {"qtyStep": "0.001"}}

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            second = "cursor=" in self.path
            result = {"category": "linear", "list": [row("ETH" if second else "BTC")],
                      "nextPageCursor": "" if second else "page2"}
            body = json.dumps({"retCode": 0, "retMsg": "OK", "result": result}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rest = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = ExchangeConfig("bybit", markets=["linear"], endpoints={"rest": rest, "ws": "ws://127.0.0.1:9"})
    w = SegmentWriter(namespace, "bybit", create=True, max_symbols=2, book_capacity=5, trade_capacity=16)
    log = logging.getLogger("mdengine.test.pages")
    index = InstrumentIndex()
    adapter = BybitAdapter(index, cfg.endpoints)
    pub = Publisher(w, "bybit", depth=5, log=log)
    loop = FeedLoop(adapter, pub, log=log)
    session = FeedSession(loop, adapter, pub, index, cfg, log, cache=InstrumentCache("bybit", tmp_path))
    t = threading.Thread(target=loop.run)
    t.start()
    try:
        loop.submit(session.start)
        assert session.loaded.wait(20)
        time.sleep(0.3)  # a page answered after the wait ended would land now
        assert sorted(i.native for i in index) == ["BTCUSDT", "ETHUSDT"]
        url = f"{rest}/v5/market/instruments-info?category=linear&limit=1000"
        assert sorted(i.native for i in InstrumentCache("bybit", tmp_path).load(url)[0]) == ["BTCUSDT", "ETHUSDT"]
    finally:
        loop.stop()
        t.join(10)
        server.shutdown()
        pub.close()
        w.close()
        shm.unlink(w.name)
