"""``Simulator``: all markets on loopback, driven from a daemon thread; the API tests use."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import fields
from typing import Any

from mdengine.sim.config import SimConfig
from mdengine.sim.faults import ALL_FAULTS, CONN_FAULTS, FRAME_FAULTS, Fault
from mdengine.sim.formats.base import Venue
from mdengine.sim.formats.binance import BinanceSpot, BinanceUsdm
from mdengine.sim.formats.bitget import BitgetVenue
from mdengine.sim.formats.bybit import BybitVenue
from mdengine.sim.formats.okx import OkxVenue
from mdengine.sim.listings import MARKETS, WHOLE_MARKET, select, whole_market
from mdengine.sim.replay import Recording
from mdengine.sim.server import MarketServer

_VENUES: dict[str, type[Venue]] = {"binance-spot": BinanceSpot, "binance-usdm": BinanceUsdm, "okx": OkxVenue,
                                   "bybit": BybitVenue, "bitget": BitgetVenue}
_SEQ_RESET = ("okx", "bybit", "bitget")


class Simulator:
    """Local exchange simulator. ``port`` is a base: market i listens on port+i (0 = any free port).

    Extra keyword arguments set ``SimConfig`` fields (timeouts, heartbeat intervals, limits).
    """

    def __init__(self, seed: int = 1, exchanges: list[str] | None = None, symbols: list[str] | None = None,
                 rate_hz: float = 20.0, okx_checksum: str = "zero", host: str = "127.0.0.1", port: int = 0,
                 replay: str | None = None, speed: float = 1.0, **config: Any) -> None:
        known = {f.name for f in fields(SimConfig)}
        bad = set(config) - known
        if bad:
            raise TypeError(f"unknown Simulator options {sorted(bad)}; SimConfig has {sorted(known)}")
        if okx_checksum not in ("zero", "crc32"):
            raise ValueError("okx_checksum must be 'zero' or 'crc32'")
        self.cfg = SimConfig(rate_hz=rate_hz, okx_checksum=okx_checksum, **config)
        self.seed = seed
        self.host = host
        self.servers: dict[str, MarketServer] = {}
        rec = Recording.load(replay) if replay else None
        names = rec.markets if rec else list(exchanges or MARKETS)
        for i, name in enumerate(names):
            if name not in _VENUES:
                raise ValueError(f"unknown market {name!r}; known: {list(MARKETS)}")
            p = port + i if port else 0
            if rec:
                self.servers[name] = MarketServer(name, None, host, p, recording=rec, speed=speed)
                continue
            whole = WHOLE_MARKET[name] if self.cfg.whole_market else {}
            extra = {kind: max(self.cfg.extra_instruments, whole.get(kind, 0))
                     for kind in ("spot", "linear", "inverse")}
            listed = select(name, symbols) + whole_market(name, extra)
            venue = _VENUES[name](listed, seed, self.cfg)
            ping = (None, None)
            if name == "binance-spot":
                ping = (self.cfg.binance_spot_ping_interval, self.cfg.binance_spot_ping_timeout)
            elif name == "binance-usdm":
                ping = (self.cfg.binance_usdm_ping_interval, self.cfg.binance_usdm_ping_timeout)
            self.servers[name] = MarketServer(name, venue, host, p, ping=ping)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    # ---- lifecycle ----
    def start(self) -> Simulator:
        """Start serving in a daemon thread; returns once every port listens."""
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                for s in self.servers.values():
                    await s.start()
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            await self._stop.wait()
            for s in self.servers.values():
                await s.stop()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="mdengine-sim", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` on the simulator loop (thread-safe) and return its result."""
        assert self._loop is not None, "Simulator not started"

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ---- addresses ----
    def url(self, market: str) -> str:
        return f"ws://{self.host}:{self.servers[market].port}"

    def rest_url(self, market: str) -> str:
        return f"http://{self.host}:{self.servers[market].port}"

    def endpoints(self) -> dict[str, tuple[str, str]]:
        return {m: (self.url(m), self.rest_url(m)) for m in self.servers}

    # ---- control ----
    def pause(self) -> None:
        self._call(self._set_paused, True)

    def resume(self) -> None:
        self._call(self._set_paused, False)

    def _set_paused(self, on: bool) -> None:
        for s in self.servers.values():
            s.paused = on

    def model_book(self, market: str, symbol: str, depth: int = 25) -> tuple[int, list, list]:
        """(update id / seq a snapshot now carries, bids, asks) as wire strings: the truth for tests."""

        def read() -> tuple[int, list, list]:
            venue = self._venue(market)
            model = venue.models[venue.keys_for(symbol)[0]]
            bids, asks = model.top(depth)
            return venue.seq_of(model, depth), bids, asks

        return self._call(read)

    def list_instrument(self, market: str, inst: Any) -> None:
        """List a new instrument (a mdengine.sim.market.Instrument) on `market` at run time."""
        self._call(self.servers[market].venue.list_instrument, inst, self.seed)

    def delist(self, market: str, native: str) -> None:
        """Delist `native` from `market`'s instrument lists at run time (its streams keep going)."""
        self._call(self.servers[market].venue.delist, native)

    def connections(self, market: str) -> list[int]:
        return self._call(lambda: sorted(self.servers[market].conns))

    def stats(self, market: str) -> dict[str, int]:
        return self._call(lambda: dict(self.servers[market].stats))

    def fault_log(self, market: str) -> list[tuple[str, int | None, str | None]]:
        return self._call(lambda: list(self.servers[market].faults.delivered))

    def _venue(self, market: str) -> Venue:
        v = self.servers[market].venue
        if v is None:
            raise ValueError(f"{market} is replaying a recording")
        return v

    # ---- faults ----
    def inject(self, market: str, fault: str, symbol: str | None = None, conn: int | None = None,
               **params: Any) -> None:
        """Arm or perform ``fault`` on ``market`` (see docs/simulator.md for names and params).

        ``conn`` targets one connection id (``connections()``), else every open connection;
        ``symbol`` (a model key or native id) limits frame faults and subscriptions to that symbol;
        a connection fault's ``path`` param limits it to connections whose WebSocket path contains it.
        """
        if fault not in ALL_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {ALL_FAULTS}")
        if fault == "seq_reset" and market not in _SEQ_RESET:
            raise ValueError(f"seq_reset applies to {_SEQ_RESET}, not {market}")
        if fault == "server_shutdown" and market not in ("binance-spot", "binance-usdm", "okx"):
            raise ValueError("server_shutdown exists on Binance (serverShutdown) and OKX (64008) only")
        self._call(self._inject, market, fault, symbol, conn, params)

    def _inject(self, market: str, fault: str, symbol: str | None, conn: int | None, params: dict) -> None:
        srv = self.servers[market]
        venue = self._venue(market)
        keys = set(venue.keys_for(symbol)) if symbol else None
        # a connection fault's `path` picks the connections whose WebSocket path holds it (Binance USD-M's /market)
        ws_path = str(params.get("path", "")) if fault in CONN_FAULTS else ""
        conns = [c for c in srv.conns.values() if (conn is None or c.id == conn) and ws_path in c.ws.request.path]
        count = int(params.get("count", 1))
        if fault in FRAME_FAULTS or fault == "silent":
            secs = params.get("seconds")
            until = time.monotonic() + float(secs) if secs is not None else None
            srv.faults.arm(Fault(fault, keys, params, {c.id: count for c in conns}, until=until))
            if fault == "silent":
                srv.stats["faults_delivered"] += len(conns)
                srv.faults.delivered += [("silent", c.id, None) for c in conns]
            return
        if fault in CONN_FAULTS:
            for c in conns:
                self._conn_fault(srv, venue, c, fault, params)
                srv.stats["faults_delivered"] += 1
                srv.faults.delivered.append((fault, c.id, None))
            return
        if fault == "mute_channel":
            if not params.get("channel"):
                raise ValueError("mute_channel needs channel= (e.g. 'open-interest', 'index-tickers', '@markPrice')")
            secs = params.get("seconds")
            until = time.monotonic() + float(secs) if secs is not None else None
            srv.faults.arm(Fault(fault, keys, params, until=until))
            return
        if fault == "seq_reset":
            for k in keys or venue.models:
                venue.models[k].reset_sequence()
            srv.stats["faults_delivered"] += 1
            srv.faults.delivered.append((fault, None, symbol))
            return
        srv.faults.arm(Fault(fault, keys, params, count=count))

    def _conn_fault(self, srv: MarketServer, venue: Venue, c: Any, fault: str, params: dict) -> None:
        loop = asyncio.get_running_loop()
        if fault == "drop":
            c.ws.transport.abort()  # no close frame: the TCP connection just dies
        elif fault == "disconnect":
            c.queue.put_nowait(("close", int(params.get("code", 1000)), str(params.get("reason", ""))))
        elif fault == "malformed_json":
            c.queue.put_nowait(str(params.get("text", '{"broken": [1, 2')))
        elif fault == "server_shutdown":
            srv.send(c, venue.shutdown_notice(c.session))
            after = params.get("close_after")
            if after is not None:
                loop.call_later(float(after), c.queue.put_nowait, ("close", 1001, "server shutdown"))
        elif fault == "idle_keepalive":
            if venue.name != "okx":
                raise ValueError("idle_keepalive is OKX's prevSeqId == seqId update")
            sess = c.session
            srv.send(c, [o for o in sess.idle(float("inf"))])

    def clear_faults(self, market: str | None = None) -> None:
        def clear() -> None:
            for name, s in self.servers.items():
                if market in (None, name):
                    s.faults.clear()

        self._call(clear)
