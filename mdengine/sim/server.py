"""The simulator's only I/O: one ``websockets`` server per market, WebSocket and REST on one port.

Plain HTTP GETs (no Upgrade header) are answered in ``process_request``. Each connection has a send
queue drained by its own writer task, so a slow client never stalls the market ticker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from mdengine.sim.faults import FaultBook
from mdengine.sim.formats.base import BadParam, Out, Session, Venue, now_ms
from mdengine.sim.listings import recorded_rate
from mdengine.sim.ratelimit import RestLimiter
from mdengine.sim.replay import Recording

log = logging.getLogger("mdengine.sim")

MAX_QUEUE = 100_000  # frames; a client this far behind is cut off, as exchanges do
_conn_ids = itertools.count(1)


def dumps(obj: Any) -> str:
    return obj if isinstance(obj, str) else orjson.dumps(obj).decode()


def _json_response(status: int, body: str, extra: list[tuple[str, str]] | None = None) -> Response:
    reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 418: "I'm a teapot", 429: "Too Many Requests"}
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body.encode())))])
    for k, v in extra or []:
        headers[k] = v
    return Response(status, reasons.get(status, "Error"), headers, body.encode())


class SimConnection(ServerConnection):
    """A server connection that a `silent` fault silences below the simulator too: the websockets library answers
    a WebSocket ping by itself and sends keepalive pings of its own, either of which would tell the client the
    connection is alive. While `muted()` is true, an incoming ping goes unanswered and no keepalive ping is sent,
    as from a peer that has died with its socket open. Everything else (close frames, data) is handled as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.muted: Callable[[], bool] = lambda: False
        self.stats: Counter[str] = Counter()  # the market server's, once it takes the connection
        handle = self.protocol.recv_frame

        def recv_frame(frame: Frame) -> None:
            if frame.opcode is Opcode.PING and self.muted():
                self.stats["pings_ignored"] += 1
                return  # the sans-I/O protocol would queue the pong here
            handle(frame)

        self.protocol.recv_frame = recv_frame  # type: ignore[method-assign]

    async def ping(self, data: Any = None) -> Awaitable[float]:
        if self.muted():  # the keepalive's ping: not sent, and taken as answered (its timeout is no fault of ours)
            answered = self.loop.create_future()
            answered.set_result(0.0)
            return answered
        return await super().ping(data)


@dataclass
class Conn:
    id: int
    ws: ServerConnection
    session: Session | None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    last_out: float = field(default_factory=time.monotonic)


class MarketServer:
    """Serves one market from a live ``Venue``, or from a ``Recording`` in replay mode."""

    def __init__(self, name: str, venue: Venue | None, host: str, port: int, *, ping: tuple[float | None, float | None]
                 = (None, None), recording: Recording | None = None, speed: float = 1.0) -> None:
        self.name, self.venue, self.host, self.port = name, venue, host, port
        self.ping = ping
        self.recording, self.speed = recording, speed
        self.faults = FaultBook(venue)
        self.stats: Counter[str] = Counter()
        self.conns: dict[int, Conn] = {}
        self.paused = False
        self.rate_hz = venue.cfg.rate_hz if venue else 0.0
        self._http_seen: Counter[tuple[str, str]] = Counter()
        cfg = venue.cfg if venue else None
        # always counting (every answer may report the IP's use); refusing only with rest_limit_scale > 0
        self.rest_limiter = RestLimiter(cfg.rest_limit_scale, cfg.rest_ban_after, cfg.rest_ban_s, cfg.rest_window_s) \
            if cfg is not None else None
        self._server: Any = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._server = await serve(self._handler, self.host, self.port, process_request=self._process_request,
                                   ping_interval=self.ping[0], ping_timeout=self.ping[1], compression=None,
                                   max_size=2**20, create_connection=SimConnection)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.venue is not None:
            self._tasks = [asyncio.create_task(self._ticker()), asyncio.create_task(self._housekeeping())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._server.close()
        await self._server.wait_closed()

    # ---- HTTP ----
    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ok = (self.recording.stream_for(self.name, parts.path, parts.query) is not None if self.recording
                  else self.venue is not None and self.venue.session(parts.path, {}) is not None)
            return None if ok else _json_response(404, '{"error":"unknown WebSocket path"}')
        self.stats["rest_requests"] += 1
        if self.recording is not None:
            n = self._http_seen[(parts.path, parts.query)]
            self._http_seen[(parts.path, parts.query)] += 1
            body = self.recording.http_body(self.name, parts.path, parts.query, n)
            return _json_response(200, body) if body is not None else _json_response(404, '{"error":"not recorded"}')
        assert self.venue is not None
        slow = self.faults.take("slow_rest", path=parts.path)
        if slow is not None:
            self.stats["faults_delivered"] += 1
            await asyncio.sleep(float(slow.params.get("seconds", 1.0)))
        limited = self.faults.take("http_429", path=parts.path)
        if limited is not None:
            self.stats["faults_delivered"] += 1
            ra = str(limited.params.get("retry_after", 1))
            return _json_response(429, dumps(self.venue.too_many()), [("Retry-After", ra)])
        usage: list[tuple[str, str]] = []
        if self.rest_limiter is not None:
            now = time.time()
            refused = self.rest_limiter.check(request.path, now)
            counted = self.rest_limiter.usage(request.path, now)
            usage = self.venue.usage_headers(*counted) if counted is not None else []
            if refused is not None:
                self.stats[f"rest_{refused[0]}"] += 1
                return _json_response(refused[0], dumps(self.venue.too_many()),
                                      [("Retry-After", str(refused[1])), *usage])
        failed = self.faults.take("http_error", path=parts.path)
        if failed is not None:  # any status, any body: a 404, a 503, or a 200 that is not JSON
            self.stats["faults_delivered"] += 1
            return _json_response(int(failed.params.get("status", 500)),
                                  str(failed.params.get("body", '{"error":"injected failure"}')))
        try:
            res = self.venue.rest(parts.path, dict(parse_qsl(parts.query)))
        except BadParam as e:  # a value the exchange cannot read: its own error answer, never a crash
            self.stats["rest_bad_params"] += 1
            res = self.venue.bad_param(e.name, e.value)
        if res is None:
            return _json_response(404, '{"error":"unknown path"}')
        try:
            return _json_response(res[0], dumps(res[1]), usage)
        except ValueError:  # pragma: no cover - defensive
            return _json_response(400, '{"error":"bad request"}')

    # ---- WebSocket ----
    async def _handler(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)
        if self.recording is not None:
            await self._replay(ws, parts.path, parts.query)
            return
        assert self.venue is not None
        session = self.venue.session(parts.path, dict(parse_qsl(parts.query)))
        conn = Conn(next(_conn_ids), ws, session)
        if isinstance(ws, SimConnection):
            ws.muted, ws.stats = (lambda: self.faults.silent(conn.id)), self.stats
        session.refuse = lambda key, channel="": self._refuse(key, channel)
        self.conns[conn.id] = conn
        self.stats["connections"] += 1
        writer = asyncio.create_task(self._writer(conn))
        try:
            self.send(conn, session.open())
            async for msg in ws:
                self.stats["messages_received"] += 1
                reply = session.handle(msg if isinstance(msg, str) else msg.decode(errors="replace"))
                if reply.ping:
                    self.stats["pings_answered"] += 1
                if reply.frames and not reply.ping:
                    self.stats["requests"] += 1
                self.send(conn, reply.frames)
                if reply.close:
                    conn.queue.put_nowait(("close", *reply.close))
        except ConnectionClosed:
            pass
        finally:
            self.conns.pop(conn.id, None)
            writer.cancel()

    def _refuse(self, key: str, channel: str = "") -> bool:
        f = self.faults.take("refuse_subscription", key=key, channel=channel)
        if f is not None:
            self.stats["faults_delivered"] += 1
            return True
        self.stats["subscriptions"] += 1
        return False

    def send(self, conn: Conn, outs: list[Out]) -> None:
        if not outs:
            return
        if self.faults.silent(conn.id):
            return
        before = len(self.faults.delivered)
        outs = self.faults.mute(outs)
        outs = self.faults.filter(conn.id, outs, self.venue.models.get if self.venue else None)
        self.stats["faults_delivered"] += len(self.faults.delivered) - before
        if conn.queue.qsize() > MAX_QUEUE:
            conn.ws.transport.abort()
            return
        for o in outs:
            conn.queue.put_nowait(dumps(o.obj))

    async def _writer(self, conn: Conn) -> None:
        try:
            while True:
                item = await conn.queue.get()
                if isinstance(item, tuple):
                    await conn.ws.close(item[1], item[2])
                    return
                await conn.ws.send(item)
                conn.last_out = time.monotonic()
                self.stats["frames_sent"] += 1
        except ConnectionClosed:
            pass

    # ---- market clock ----
    async def _ticker(self) -> None:
        assert self.venue is not None
        venue = self.venue
        if venue.cfg.recorded_rates:
            await self._ticker_recorded()
            return
        while True:
            if not self.paused:
                ts = now_ms()
                subscribers = self._subscribers()
                for key, model in venue.models.items():
                    st = model.step(ts)
                    for conn in subscribers.get(key, ()):
                        self.send(conn, conn.session.step(key, model, st))
                self.stats["steps"] += 1
            await asyncio.sleep(1.0 / self.rate_hz if self.rate_hz > 0 else 0)

    async def _ticker_recorded(self, tick_s: float = 0.02, max_lag_s: float = 0.1) -> None:
        """Each model steps at its instrument's recorded rate (listings.recorded_rate), in order of listing.

        A pass late by more than `max_lag_s` (a starved CPU) does not catch up on what it missed: catching up made
        the next pass longer still, until no frame went out for seconds and every feed dropped its connections.
        The simulator then ticks slower than the recordings, as a busy exchange would (stats count the steps)."""
        venue = self.venue
        due: dict[str, float] = {}
        rates: list[float] = []
        last = time.monotonic()
        while True:
            now = time.monotonic()
            dt, last = min(now - last, max_lag_s), now
            if not self.paused:
                ts = now_ms()
                if len(rates) != len(venue.models):  # instruments listed at run time tick too
                    rates = [recorded_rate(self.name, i) for i in range(len(venue.models))]
                subscribers = self._subscribers()
                for rate, (key, model) in zip(rates, list(venue.models.items()), strict=True):
                    due[key] = due.get(key, 0.0) + rate * dt
                    while due[key] >= 1.0:
                        due[key] -= 1.0
                        st = model.step(ts)
                        for conn in subscribers.get(key, ()):
                            self.send(conn, conn.session.step(key, model, st))
                        self.stats["steps"] += 1
            await asyncio.sleep(tick_s)

    def _subscribers(self) -> dict[str, list[Conn]]:
        """Model key -> the connections subscribed to it, built once per pass of the ticker (nothing awaits within
        a pass): a whole market has hundreds of connections, and asking each of them for every step was most of
        the simulator's time."""
        subs: dict[str, list[Conn]] = {}
        for conn in list(self.conns.values()):
            if conn.session is not None:
                for key in conn.session.keys:
                    subs.setdefault(key, []).append(conn)
        return subs

    async def _housekeeping(self) -> None:
        while True:
            now = time.monotonic()
            for conn in list(self.conns.values()):
                if conn.session is None:
                    continue
                self.send(conn, conn.session.idle(now))
                close = conn.session.idle_close(now, conn.last_out)
                if close is not None:
                    self.stats["idle_closes"] += 1
                    await conn.ws.close(*close)
            await asyncio.sleep(0.05)

    # ---- replay ----
    async def _replay(self, ws: ServerConnection, path: str, query: str) -> None:
        assert self.recording is not None
        stream = self.recording.stream_for(self.name, path, query)
        self.stats["connections"] += 1
        start = time.monotonic()
        try:
            for offset, text in stream.frames if stream else []:
                if self.speed > 0:
                    delay = start + offset / self.speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send(text)
                self.stats["frames_sent"] += 1
            log.info("replay %s %s: end of the recording (%d frames of this connection sent)", self.name, path,
                     len(stream.frames) if stream else 0)
            self.stats["replays_ended"] += 1
            async for _ in ws:  # keep the connection open; the recording's own sends were already answered
                self.stats["messages_received"] += 1
        except ConnectionClosed:
            pass
