"""Benchmark peer: drives cryptofeed's own message handlers offline. Runs inside perf/.peer-venv only.

Started by perf/compare_cryptofeed.py as a long-lived worker. Protocol, one JSON object per line:
  stdin  {"cmd": "load", "path": <workloads.json>}  -> {"ok": true, "cryptofeed": <version>, "workloads": [...]}
         {"cmd": "run", "workload": <name>, "reps": n} -> {"ok": true, "frames": n, "seconds": s, "lat_ns": [...],
                                                          "delivered_per_rep": {"book": n, "trade": n}}
         {"cmd": "quit"}
Errors come back as {"ok": false, "error": "..."}. The worker never opens a socket: symbol tables are
pre-loaded through each feed's own `_parse_symbol_data`, the REST snapshot reader is replaced by a stub
serving the recorded bodies, and frames go straight into `message_handler` (no connection handler).

Nothing from cryptofeed is copied here (AGPL); it is imported and called as a black box.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version
from urllib.parse import parse_qs, urlsplit

from cryptofeed.defines import L2_BOOK, TRADES
from cryptofeed.exchanges import OKX, Binance
from cryptofeed.symbols import Symbols

FEEDS = {"binance": Binance, "okx": OKX}


def _listing(exchange: str, instruments: list[dict]) -> object:
    """The instrument-list response each feed's `_parse_symbol_data` expects, from neutral descriptors."""
    if exchange == "binance":
        return {"symbols": [{"symbol": i["native"], "baseAsset": i["base"], "quoteAsset": i["quote"],
                             "status": "TRADING", "filters": [{"tickSize": i["tick"]}]} for i in instruments]}
    kinds = {"spot": "SPOT", "perpetual": "SWAP", "futures": "FUTURES"}
    return [{"data": [{"instType": kinds[i["kind"]], "instId": i["native"], "baseCcy": i["base"],
                       "quoteCcy": i["quote"], "tickSz": i["tick"]} for i in instruments]}]


class StubHttp:
    """Stands in for the feed's `http_conn`: answers a REST GET with the recorded body for its symbol."""

    def __init__(self, bodies: dict[str, str]) -> None:
        self.bodies = bodies
        self.reads = 0

    async def read(self, address: str, *args: object, **kwargs: object) -> str:
        self.reads += 1
        sym = parse_qs(urlsplit(address).query).get("symbol", [""])[0]
        try:
            return self.bodies[sym]
        except KeyError:
            raise RuntimeError(f"no recorded REST body for {address!r}") from None

    async def close(self) -> None:
        pass


class StubConn:
    """The `conn` argument of message_handler (unused by the book/trade paths measured)."""

    uuid = id = "bench"


DELIVERED = {"book": 0, "trade": 0}


# The trivial consumers: cryptofeed hands them the (live, shared) OrderBook or a Trade object.
async def _book_sink(book: object, receipt_timestamp: float) -> None:
    DELIVERED["book"] += 1


async def _trade_sink(trade: object, receipt_timestamp: float) -> None:
    DELIVERED["trade"] += 1


class Peer:
    def __init__(self) -> None:
        self.workloads: dict[str, dict] = {}
        self.loop = asyncio.new_event_loop()

    def load(self, path: str) -> dict:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        by_exchange: dict[str, list[dict]] = {}
        for w in spec["workloads"]:
            self.workloads[w["name"]] = w
            by_exchange.setdefault(w["exchange"], []).extend(w["instruments"])
        for exchange, insts in by_exchange.items():
            cls = FEEDS[exchange]
            uniq = list({i["native"]: i for i in insts}.values())
            syms, info = cls._parse_symbol_data(_listing(exchange, uniq))
            Symbols.set(cls.id, syms, info)
        return {"ok": True, "cryptofeed": version("cryptofeed"), "order_book": version("order_book"),
                "python": sys.version.split()[0], "workloads": sorted(self.workloads)}

    def _feed(self, w: dict):
        cls = FEEDS[w["exchange"]]
        rev = {v: k for k, v in Symbols.get(cls.id)[0].items()}
        std = [rev[i["native"]] for i in w["instruments"]]
        # Settings chosen to match mdengine's work; perf/README.md explains each.
        feed = cls(symbols=std, channels=[L2_BOOK, TRADES], callbacks={L2_BOOK: _book_sink, TRADES: _trade_sink},
                   max_depth=0, checksum_validation=w["checksums"], cross_check=False)
        feed.http_conn = StubHttp(w["http"])
        return feed

    def run(self, name: str, reps: int) -> dict:
        w = self.workloads[name]
        feeds = [self._feed(w) for _ in range(reps)]  # built outside the timed region
        frames = w["frames"]
        lat: list[int] = []
        before = dict(DELIVERED)
        clock = time.perf_counter_ns
        now = time.time

        async def drive() -> float:
            conn = StubConn()
            start = clock()
            for feed in feeds:
                handler = feed.message_handler
                for text in frames:
                    t0 = clock()
                    await handler(text, conn, now())
                    lat.append(clock() - t0)
            return (clock() - start) / 1e9

        seconds = self.loop.run_until_complete(drive())
        for feed in feeds:
            if feed.http_conn.reads == 0 and w["http"]:
                raise RuntimeError(f"{name}: the REST snapshot was never requested; the book did not sync")
        delivered = {k: (v - before[k]) // reps for k, v in DELIVERED.items()}
        return {"ok": True, "frames": len(lat), "seconds": seconds, "lat_ns": lat, "delivered_per_rep": delivered}


def main() -> None:
    peer = Peer()
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "quit":
                break
            if req["cmd"] == "load":
                res = peer.load(req["path"])
            elif req["cmd"] == "run":
                res = peer.run(req["workload"], int(req["reps"]))
            else:
                res = {"ok": False, "error": f"unknown command {req['cmd']!r}"}
        except Exception as e:  # reported to the driver, which fails loudly
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(res) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
