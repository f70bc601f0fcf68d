"""FeedLoop: the one thread that does a feed's socket I/O and drives its adapter (and so every store write).

Threads: the loop thread (select over the WebSockets and a wake-up socketpair, adapter calls, sink calls);
one short-lived thread per connection attempt (the handshake); a small pool for REST GETs. Workers never
touch adapter or store: they post a closure back (`_post`), and the socketpair wakes the selector.

Per frame: read through websocket-client's frame parser (buffered, non-blocking; see wsconn.py), stamp
`time_ns()`, call the tap if any, `adapter.on_frame`, act on the returned events. Everything periodic (heartbeat,
watchdog, client pings, reconnects, counter flushes) runs on a 50 ms tick; one-off delays (send tokens, REST
retries) on a timer heap. Nothing in here knows an exchange.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any, Protocol

import websocket
from websocket import ABNF

from .. import restbudget
from ..core.events import BookChanged, CloseConnection, Event, FetchRest, OpenConnection, Send, TradesReceived
from ..exchanges.base import Adapter
from . import sched
from .http import RestClient, retryable
from .logrepeat import RepeatLog
from .timing import Backoff
from .wsconn import CLOSED, CONNECTING, DEFAULT_MAX_MESSAGE, IDLE, OPEN, WOULD_BLOCK, WsConn

Tap = Callable[[str, str, Any, int], None]  # (kind, url, data, recv_ns); kind: connect|disconnect|recv|send|http
RestCallback = Callable[[str, int, bytes, int], list[Event]]  # (request_id, status, body, recv_ns) -> events
TICK_S = 0.05
# A frame longer than this is not replayed by warm-up passes: a big snapshot (Bybit orderbook.1000, OKX's 400
# levels) costs far more than a delta to replay every interval, and deltas, the frames worth warming, are short.
WARM_MAX_CHARS = 16_384
_WS_ERRORS = (websocket.WebSocketException, OSError, ValueError)
_TEXT = ABNF.OPCODE_TEXT


@dataclass
class LoopOptions:
    heartbeat_interval_s: float = 0.5
    silence_timeout_s: float | None = None  # None: the adapter's value per connection; <= 0 disables
    # A connection that received nothing (data, heartbeat, pong) for half this long is probed with a ping; after
    # this long its books are stale for readers (layout confirmed_ns); after 1.5 times this long (the probe had all
    # that time to be answered) it is replaced. <= 0 disables.
    stale_after_s: float = 0.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 30.0
    healthy_after_s: float = 10.0  # a connection open this long resets its reconnect backoff
    rest_backoff_initial_s: float = 0.5
    rest_backoff_max_s: float = 30.0
    rest_retry_after_max_s: float = 300.0
    rest_workers: int = 4
    rest_timeout_s: float = 10.0
    max_batch: int = 256  # frames taken from one connection before the others get a turn
    # After socket activity, keep polling without sleeping for this long (0: always block in select).
    # Waking a thread parked in epoll costs 50-100 us on a VM; polling trades a core for that latency.
    busy_poll_s: float = 0.0
    # The loop thread's scheduler slice (µs, Linux >= 6.12; 0 leaves the kernel's ~3 ms): a short one lets a
    # frame's wake-up preempt whatever runs on the free CPU instead of queueing behind it (see feed/sched.py).
    sched_slice_us: float = 0.0
    # While idle, replay the last data frame through scratch copies of the adapter's and the sink's frame path
    # this often, starting two intervals after the last socket event (0: never). After ~10 ms asleep the frame
    # path runs cold (its code and data left the CPU caches: ~3x slower); re-running it every 1 ms keeps it warm
    # (docs/feed.md, "Warm-up").
    warm_interval_s: float = 0.0
    warm_for_s: float = 5.0  # a connection silent this long is not worth keeping warm: the loop sleeps again
    # The largest WebSocket message accepted (bytes); None: the adapter's MAX_MESSAGE_BYTES. A larger frame or
    # fragmented message is refused before it is buffered, and its connection replaced.
    max_message_bytes: int | None = None


class Sink(Protocol):
    """What the loop reports to (the Publisher). Called on the loop thread only."""

    def on_event(self, ev: Event) -> None: ...
    def received(self, frames: int, nbytes: int) -> None: ...
    def connected(self, conn: str, url: str, reconnect: bool) -> None: ...
    def connection_lost(self, conn: str, url: str, reason: str, requested: bool, symbols: list) -> None: ...
    def connect_failed(self, conn: str, url: str, error: str, retry_in: float) -> None: ...
    def rest_done(self, url: str, status: int, error: str | None, retry_in: float | None) -> None: ...
    def heartbeat(self) -> None: ...
    def error(self, text: str) -> None: ...
    # optional: called after every round of reads, calls and timers (Publisher: futex-wake blocked readers)
    # def wake_readers(self) -> None: ...
    # optional: each warm-up pass's events (Adapter.warm, maybe none), for a private copy of the publish path
    # def warm(self, events: list[Event]) -> bool | None: ...  (False: the pass met a verdict or a failure)
    # optional: a connection carrying these symbols' books (`keys`) and perp data (`perp_keys`) received something
    # at wall time recv_ns (every tick, per connection; Adapter.freshness_on says what it carries)
    # def confirm(self, keys: list, recv_ns: int, perp_keys: list) -> None: ...


class FrameLane(Protocol):
    """What the loop needs of a fast lane (mdengine._speedups.Lane)."""

    last_handled: int  # 1 when the newest frame was the lane's, 0 when it went to the adapter

    def on_frame(self, conn: str, data: str | bytes, recv_ns: int) -> list[Event]: ...


class FeedLoop:
    """Runs an adapter against real sockets. `run()` blocks until `stop()`; `submit()` and `stop()` are
    thread-safe, everything else must be called on the loop thread (e.g. from a submitted function)."""

    def __init__(self, adapter: Adapter, sink: Sink, *, options: LoopOptions | None = None, tap: Tap | None = None,
                 log: logging.Logger | None = None, lane: FrameLane | None = None) -> None:
        """`lane`: the feed's fast lane (mdengine.feed.fastlane.attach, then `publisher.lane`), whose on_frame takes
        each frame instead of adapter.on_frame and hands the adapter every frame it does not take."""
        self.adapter = adapter
        self.on_frame = lane.on_frame if lane is not None else None
        # frames the lane handled are not replayed by the warm-up pass (their C path stays warm on its own: a feed
        # leg of ~7 µs after a 10 ms gap with or without a pass)
        self._lane = lane
        self.sink = sink
        self.opts = options or LoopOptions()
        self.tap = tap
        self.log = log or logging.getLogger(f"mdengine.feed.{adapter.exchange}")
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: SimpleQueue[Callable[[], None]] = SimpleQueue()
        self._woken = False
        self._conns: dict[str, WsConn] = {}
        self._ready: set[WsConn] = set()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread_id: int | None = None
        self._frames = 0
        self._last_frame: tuple[str, str | bytes] | None = None  # (conn, data) of the newest data frame
        self._warm_s = self.opts.warm_interval_s
        self._max_message = self.opts.max_message_bytes or getattr(adapter, "MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE)
        self._sink_warm: Callable[[list[Event]], bool | None] | None = getattr(sink, "warm", None)
        # a frame path that raises on every frame logs once per interval (the sink's RepeatLog, flushed by it)
        repeats = getattr(sink, "repeats", None)
        self._repeats = repeats if isinstance(repeats, RepeatLog) else RepeatLog(self.log)
        self._sink_confirm: Callable[[list, int, list], None] | None = getattr(sink, "confirm", None)
        self._confirmed: dict[str, float] = {}  # conn -> the last_recv it last confirmed to the sink
        self._probed: dict[str, float] = {}  # conn -> when it was last probed for silence (monotonic)
        self.warm_passes = 0  # warm-up passes run (loop thread; for tests and benchmarks)
        self._rest = RestClient(self._post, workers=self.opts.rest_workers, timeout_s=self.opts.rest_timeout_s,
                                on_headers=self._observe_usage)
        try:  # connection attempts share a per-IP budget too (mdengine.restbudget, "<exchange>-connect")
            self._connect_budget = restbudget.for_connect(adapter.exchange)
        except (OSError, ValueError) as e:
            self.log.warning("connection budget unavailable (%s); connecting unpaced", e)
            self._connect_budget = None
        self._requests: dict[type, Callable[[Any], None]] = {
            Send: self._on_send, OpenConnection: self._on_open_request, CloseConnection: self._on_close_request,
            FetchRest: lambda ev: self.fetch(ev, self.adapter.on_rest),
        }

    # ------------------------------------------------------------------ thread-safe API
    def _post(self, fn: Callable[[], None]) -> None:
        self._calls.put(fn)
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full or closed: the loop is awake or gone anyway

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run `fn()` on the loop thread; its result (or exception) lands in the returned Future."""
        fut: Future = Future()

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # handed to the caller
                    fut.set_exception(e)

        self._post(run)
        return fut

    def stop(self) -> None:
        """Make `run()` close every connection and return. Safe from any thread and from signal handlers."""
        self._stopping = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # ------------------------------------------------------------------ loop-thread API
    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def dispatch(self, events: list[Event]) -> None:
        """Act on adapter output: requests are done here, data and health events go to the sink."""
        requests, on_event = self._requests, self.sink.on_event
        for ev in events:
            handler = requests.get(ev.__class__)
            if handler is None:
                on_event(ev)
            else:
                handler(ev)

    def fetch(self, req: FetchRest, callback: RestCallback,
              on_retry: Callable[[int, str], None] | None = None) -> None:
        """GET req.url off-thread, retrying transport errors, 429/418 and 5xx with capped backoff (honouring
        Retry-After); then `callback(request_id, status, body, recv_ns)` on the loop thread, events dispatched.
        `on_retry(status, error)` hears of each failed attempt that is retried (the instrument lists fall back on
        their cached copy at the first)."""
        backoff = Backoff(self.opts.rest_backoff_initial_s, self.opts.rest_backoff_max_s)
        budget = self._budget_for(req.url)  # the box's shared REST budget this GET draws on, and its weight

        def start() -> None:
            if self._stopping:
                return
            if budget is not None:  # paced inside the shared budget: wait for its tokens, or its 429/418 block
                try:
                    wait = budget[0].reserve(budget[1])
                except OSError as e:  # the budget's file failed: this GET goes unpaced, the feed carries on
                    self.log.warning("REST budget %s failed (%s); this GET is not paced", budget[0].key, e)
                    wait = 0.0
                if wait > 0:
                    self.call_later(min(wait, self.opts.rest_retry_after_max_s), start)
                    return
            self._rest.get(req.url, done)

        def done(status: int, body: bytes, retry_after: float | None) -> None:
            now_ns = time.time_ns()
            retry_in = None
            if retryable(status) and not self._stopping:
                retry_in = backoff.next()
                if retry_after is not None:
                    retry_in = max(retry_in, min(retry_after, self.opts.rest_retry_after_max_s))
            # everyone on the box honours a limit answer (429, 418, Bybit's 403), not only this GET
            if budget is not None and restbudget.is_limit_answer(budget[0].key, status):
                try:
                    budget[0].penalise(status, retry_after)
                except OSError as e:
                    self.log.warning("REST budget %s failed (%s); its %d is honoured by this GET only",
                                     budget[0].key, e, status)
            err = None if status == 200 else body[:200].decode("utf-8", "replace")
            self.sink.rest_done(req.url, status, err, retry_in)
            if retry_in is not None:
                self.call_later(retry_in, start)
                if on_retry is not None:
                    on_retry(status, err or "")
                return
            if status == 200 and self.tap is not None:
                self.tap("http", req.url, body.decode("utf-8", "replace"), now_ns)
            try:
                events = callback(req.request_id, status, body, now_ns)
            except Exception as e:  # a bug in the callback: reported, and the loop lives on
                self.log.exception("REST callback for %s failed", req.url)
                self.sink.error(f"REST callback {req.request_id}: {type(e).__name__}: {e}")
                return
            if events:
                self.dispatch(events)

        start()

    def _connect_wait(self) -> float:
        """Seconds until this exchange's shared connection budget allows an attempt (0: now, and it is taken)."""
        if self._connect_budget is None:
            return 0.0
        try:
            return self._connect_budget.reserve(1.0)
        except OSError as e:
            self.log.warning("connection budget unavailable (%s); connecting unpaced", e)
            self._connect_budget = None
            return 0.0

    def _observe_usage(self, url: str, headers: Mapping[str, str]) -> None:
        """An answer's report of the IP's use (where its exchange gives one) for the shared budget: weight that other
        programs on the IP spent is counted too."""
        try:
            restbudget.observe(url, headers)
        except (OSError, ValueError) as e:  # the budget's file failed: the answer stands
            self.log.warning("REST budget unavailable for %s (%s); the server's count is not taken", url, e)

    def _budget_for(self, url: str) -> tuple[restbudget.RestBudget, float] | None:
        """The shared REST budget of `url` (mdengine.restbudget), or None: an unknown URL, or a budget file that
        cannot be opened (logged; the feed then relies on its own back-off, as a fault outside it must not stop it)."""
        try:
            return restbudget.for_url(url)
        except (OSError, ValueError) as e:
            self.log.warning("REST budget unavailable for %s (%s); this GET is not paced", url, e)
            return None

    def connections(self) -> dict[str, str]:
        """conn name -> state (idle, connecting, open, closed)."""
        return {name: c.state for name, c in self._conns.items()}

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        self._thread_id = threading.get_ident()
        if self.opts.sched_slice_us > 0:
            refused = sched.request_slice(self.opts.sched_slice_us)
            if refused:
                self.log.info("scheduler slice of %g us not applied: %s", self.opts.sched_slice_us, refused)
        sel, ready, timers = self._sel, self._ready, self._timers
        next_tick = next_beat = 0.0
        busy_poll_s = self.opts.busy_poll_s
        poll_until = 0.0  # busy polling: select() with no timeout until then
        warm_at = 0.0  # while idle, the next warm-up pass is due then (monotonic)
        wake_readers = getattr(self.sink, "wake_readers", None) or (lambda: None)
        if self._warm_s > 0:
            self.log.info("warm-up pass every %g ms while idle", self._warm_s * 1e3)
        try:
            while not self._stopping:
                now = time.monotonic()
                if now >= next_tick:
                    if now >= next_beat:
                        self.sink.heartbeat()
                        next_beat = now + self.opts.heartbeat_interval_s
                    self._tick(now)
                    next_tick = now + TICK_S
                deadline = min(next_tick, timers[0][0]) if timers else next_tick
                if self._last_frame is not None and self._warm_s > 0 and warm_at < deadline:
                    deadline = warm_at
                timeout = 0.0 if ready or now < poll_until else max(0.0, deadline - now)
                events = sel.select(timeout)
                if events:
                    if busy_poll_s > 0:
                        poll_until = time.monotonic() + busy_poll_s
                    if self._warm_s > 0:  # the first pass after two intervals: a busy feed (gaps ~ one
                        warm_at = time.monotonic() + 2 * self._warm_s  # interval) gains nothing from passes
                elif not ready and self._last_frame is not None and self._warm_s > 0:
                    t = time.monotonic()
                    if t >= warm_at:
                        self._warm(t)
                        warm_at = time.monotonic() + self._warm_s
                for key, _ in events:
                    conn = key.data
                    if conn is None:
                        self._run_calls()
                    elif conn.state is OPEN:
                        self._read(conn)
                if ready:
                    for conn in list(ready):
                        ready.discard(conn)
                        if conn.state is OPEN:
                            self._read(conn)
                if timers and timers[0][0] <= time.monotonic():
                    self._run_timers()
                wake_readers()  # one wake-up per round, however many frames it published
        finally:
            self._shutdown()

    def _warm(self, now: float) -> None:
        """Replay the newest data frame through the adapter's and the sink's warm-up paths (scratch copies of
        book, sequence state and segment; see Adapter.warm). A frame whose replay meets a verdict or a failure is
        not routine: it is dropped and never replayed again. An exception there is a bug: reported once, and the
        loop stops warming rather than risk anything else."""
        name, data = self._last_frame  # type: ignore[misc]
        c = self._conns.get(name)
        if c is None or c.state is not OPEN or now - c.last_recv > self.opts.warm_for_s or len(data) > WARM_MAX_CHARS:
            self._last_frame = None  # the next (short) data frame starts warming again
            return
        try:
            events = self.adapter.warm(name, data, time.time_ns())
            clean = all(ev.__class__ is BookChanged or ev.__class__ is TradesReceived for ev in events)
            if self._sink_warm is not None and self._sink_warm(events) is False:
                clean = False
        except Exception as e:
            self.log.exception("conn=%s warm-up pass failed; warm-up is off from now on", name)
            self.sink.error(f"{name}: warm-up pass: {type(e).__name__}: {e}")
            self._warm_s = 0.0
            return
        self.warm_passes += 1
        if not clean:
            self._last_frame = None

    def _failures(self) -> int:
        """The sink's count of failures (the Publisher's `failures`), 0 if it keeps none: a frame that failed is
        never warmed."""
        n = getattr(self.sink, "failures", 0)
        return n if n.__class__ is int else 0

    def _run_calls(self) -> None:
        # Drain first, then clear the flag, then run the queue. Clearing first loses wake-ups: a poster
        # could set the flag and send a byte that this drain swallows, leaving the flag set after the
        # queue ran dry, so the next poster would skip its wake-up and its call would wait indefinitely.
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._woken = False
        while True:
            try:
                fn = self._calls.get_nowait()
            except Empty:
                return
            try:
                fn()
            except Exception as e:  # a bug in posted work: reported, and the loop lives on
                self.log.exception("posted call failed")
                self.sink.error(f"loop call: {type(e).__name__}: {e}")

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            fn = heapq.heappop(timers)[2]
            try:
                fn()
            except Exception as e:
                self.log.exception("timer failed")
                self.sink.error(f"loop timer: {type(e).__name__}: {e}")

    def _tick(self, now: float) -> None:
        nbytes = 0
        wall_ns = time.time_ns()
        for c in list(self._conns.values()):
            nbytes += c.nbytes
            c.nbytes = 0
            if c.state is OPEN:
                timeout = self.opts.silence_timeout_s
                if timeout is None:
                    timeout = self.adapter.silence_timeout(c.name)
                if 0 < timeout < now - c.last_recv:
                    self._lost(c, f"nothing received for {now - c.last_recv:.1f}s (watchdog, limit {timeout:g}s)")
                    continue
                if self._confirm(c, now, wall_ns):
                    continue
                if not c.healthy and now - c.opened_at >= self.opts.healthy_after_s:
                    c.healthy = True
                    c.backoff.reset()
                if not c.rotation_asked:
                    max_age = self.adapter.rotate_after(c.name)
                    if 0 < max_age <= now - c.opened_at:
                        c.rotation_asked = True  # once per connection; the adapter closes it when replaced
                        self.log.info("conn=%s open for %.0fs: rotating", c.name, now - c.opened_at)
                        self.dispatch(self.adapter.on_rotate(c.name))
                interval = self.adapter.ping_interval(c.name)
                if interval > 0 and now - c.last_ping >= interval:
                    c.last_ping = now
                    payload = self.adapter.ping_payload(c.name)
                    if payload is not None:
                        c.outq.append((ABNF.OPCODE_TEXT, payload))
                        self._flush(c)
            elif c.state is IDLE and c.wanted and now >= c.retry_at:
                self._connect(c)
            elif c.state is CONNECTING and now - c.connect_started > self.opts.connect_timeout_s + 5.0:
                # The handshake thread neither finished nor failed: abandon that attempt (its answer will be
                # ignored) and retry, rather than waiting forever.
                c.attempt += 1
                c.state = IDLE
                delay = c.backoff.next()
                c.retry_at = now + delay
                self.sink.connect_failed(c.name, c.url, "handshake did not finish (stuck connect)", delay)
        if self._frames or nbytes:
            self.sink.received(self._frames, nbytes)
            self._frames = 0
        due = self.adapter.poll(now)  # scheduled requests (REST-only data polled at an interval)
        if due:
            self.dispatch(due)

    def _confirm(self, c: WsConn, now: float, wall_ns: int) -> bool:
        """Freshness of an open connection: tell the sink when it last received anything (readers call its books
        stale once that is stale_after_s old), probe it with a ping after half that silence, and replace it after
        1.5 times it. True if it was replaced."""
        if self._sink_confirm is not None and self._confirmed.get(c.name) != c.last_recv:
            self._confirmed[c.name] = c.last_recv
            books, perps = self.adapter.freshness_on(c.name)
            self._sink_confirm(books, wall_ns - int((now - c.last_recv) * 1e9), perps)
        stale_after = self.opts.stale_after_s
        silent = now - c.last_recv
        if stale_after <= 0 or silent < stale_after / 2:
            return False
        if silent > 1.5 * stale_after:
            self._lost(c, f"nothing received for {silent:.1f}s, not even the answer to a ping (stale_after_s "
                          f"{stale_after:g}): replacing the connection")
            return True
        if self._probed.get(c.name, 0.0) < c.last_recv:  # one probe per silence
            self._probed[c.name] = now
            payload = self.adapter.ping_payload(c.name)  # the exchange's own ping goes through its application
            c.outq.append((ABNF.OPCODE_TEXT, payload) if payload is not None else (ABNF.OPCODE_PING, b"mdengine"))
            self._flush(c)
        return False

    # ------------------------------------------------------------------ reading
    def _read(self, c: WsConn) -> None:
        ws = c.ws
        next_frame = c.next_frame
        on_frame, dispatch, tap, name = self.on_frame or self.adapter.on_frame, self.dispatch, self.tap, c.name
        n = got = 0
        failures = self._failures()
        try:
            while n < self.opts.max_batch:
                try:
                    op, fin, payload = next_frame()
                except WOULD_BLOCK:
                    break
                got += 1
                if op == _TEXT and fin and not c.in_message:
                    # straight from the receive buffer (no bytes copy); invalid UTF-8 fails in the JSON parser
                    data = str(payload, "utf-8", "surrogateescape")
                elif op < 8:  # a fragment, a continuation, binary, or a reserved data opcode (an error)
                    data = c.message(op, fin, payload)
                    if data is None:
                        continue
                elif not fin or len(payload) > 125:
                    raise websocket.WebSocketProtocolException(f"control frame {op:#x} fragmented or over 125 bytes")
                elif op == ABNF.OPCODE_PING:  # answer ahead of queued messages, echoing the payload
                    c.outq.appendleft((ABNF.OPCODE_PONG, bytes(payload)))
                    self._flush(c)
                    continue
                elif op == ABNF.OPCODE_CLOSE:
                    payload = bytes(payload)
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    self._lost(c, f"closed by server (code {code}: {payload[2:].decode('utf-8', 'replace')})",
                               answer_close=True)
                    return
                elif op == ABNF.OPCODE_PONG:
                    continue
                else:
                    raise websocket.WebSocketProtocolException(f"reserved control opcode {op:#x}")
                recv_ns = time.time_ns()
                n += 1
                if tap is not None:
                    tap("recv", c.url, data, recv_ns)
                try:
                    events = on_frame(name, data, recv_ns)
                except Exception as e:  # adapters must not raise; if one does, the frame is lost, not the feed
                    self._repeats(logging.ERROR, ("on_frame", name), "conn=%s adapter.on_frame raised", name,
                                  exc_info=True)
                    self.sink.error(f"{name}: adapter bug: {type(e).__name__}: {e}")
                    continue
                if events:
                    dispatch(events)
                    if c.ws is not ws:  # the events closed this connection
                        break
        except _WS_ERRORS as e:
            self._frames += n
            self._lost(c, f"{type(e).__name__}: {e}")
            return
        self._frames += n
        # The first batch after a freshness probe of a silent connection is its answer (a pong): not worth warming,
        # and it must not restart warming after a silence. Otherwise the warm-up candidate is a frame the adapter
        # took, in a batch where none failed.
        if n and data is not None and not self._probed.get(name, 0.0) > c.last_recv:
            handled = self._lane is not None and self._lane.last_handled
            self._last_frame = (name, data) if not handled and self._failures() == failures else None
        if got:
            c.last_recv = time.monotonic()
            if c.ws is ws and c.has_buffered():
                self._ready.add(c)

    # ------------------------------------------------------------------ connections
    def _on_open_request(self, ev: OpenConnection) -> None:
        c = self._conns.get(ev.conn)
        if c is None:
            o = self.opts
            c = self._conns[ev.conn] = WsConn(ev.conn, ev.url, Backoff(o.backoff_initial_s, o.backoff_max_s),
                                              self.adapter.send_rate(ev.conn), max_message=self._max_message)
        c.url = ev.url  # used from the next connect on
        c.wanted = True
        if c.state is CLOSED or (c.state is IDLE and c.attempt == 0):
            self._connect(c)

    def _connect(self, c: WsConn) -> None:
        wait = self._connect_wait()
        if wait > 0:  # the box's shared budget of connection attempts to this exchange: the tick connects later
            c.state = IDLE
            c.retry_at = time.monotonic() + wait
            return
        self.log.info("conn=%s connecting to %s", c.name, c.url)
        c.connect_async(self.opts.connect_timeout_s, self._post, self._on_connected)

    def _on_connected(self, c: WsConn, attempt: int, ws: websocket.WebSocket | None, error: str | None) -> None:
        if attempt != c.attempt or not c.wanted or self._stopping or self._conns.get(c.name) is not c:
            if ws is not None:
                ws.shutdown()
            if c.state is CONNECTING and attempt == c.attempt:
                c.state = CLOSED if not c.wanted else IDLE
            return
        now = time.monotonic()
        if ws is None:
            c.state = IDLE
            delay = c.backoff.next()
            c.retry_at = now + delay
            self.sink.connect_failed(c.name, c.url, error or "?", delay)
            return
        reconnect = c.opens > 0
        c.opens += 1
        sock = c.attach(ws, now)
        self._sel.register(sock, selectors.EVENT_READ, c)
        if self.tap is not None:
            self.tap("connect", c.url, "", time.time_ns())
        self.sink.connected(c.name, c.url, reconnect)
        self.dispatch(self.adapter.on_open(c.name))

    def _lost(self, c: WsConn, reason: str, *, reconnect: bool = True, requested: bool = False,
              answer_close: bool = False) -> None:
        """`c` is gone (or being closed): tell tap, sink and adapter, then schedule the reconnect if wanted."""
        if c.sock is not None:
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
        self._ready.discard(c)
        was_open = c.state is OPEN
        if requested or answer_close:
            c.close(reason=reason[:100])
        else:
            c.close_quietly()
        if not reconnect:
            c.wanted = False
        if not was_open:
            c.state = CLOSED if not c.wanted else IDLE
            return
        if self.tap is not None:
            self.tap("disconnect", c.url, reason, time.time_ns())
        self.sink.connection_lost(c.name, c.url, reason, requested, self.adapter.symbols_on(c.name))
        events = self.adapter.on_close(c.name, reason)
        if c.wanted:
            delay = c.backoff.next()
            c.retry_at = time.monotonic() + delay
            c.state = IDLE
            self.log.info("conn=%s reconnecting in %.2fs", c.name, delay)
        else:
            c.state = CLOSED
        if events:
            self.dispatch(events)

    def _on_close_request(self, ev: CloseConnection) -> None:
        c = self._conns.get(ev.conn)
        if c is None:
            return
        if c.state is OPEN:
            self._lost(c, ev.reason, reconnect=ev.reconnect, requested=True)
        elif not ev.reconnect:
            c.wanted = False
            if c.state is IDLE:
                c.state = CLOSED

    # ------------------------------------------------------------------ sending
    def _on_send(self, ev: Send) -> None:
        c = self._conns.get(ev.conn)
        if c is None or c.state is not OPEN:
            self.log.debug("conn=%s not open; dropped %s (the adapter resends on open)", ev.conn, ev.payload[:80])
            return
        c.outq.append((ABNF.OPCODE_TEXT, ev.payload))
        self._flush(c)

    def _flush(self, c: WsConn) -> None:
        now = time.monotonic()
        while c.outq:
            if not c.bucket.take(now):
                if not c.flush_scheduled:
                    c.flush_scheduled = True
                    self.call_later(c.bucket.wait(now), lambda: self._flush_later(c))
                return
            op, payload = c.outq.popleft()
            try:
                c.send_now(op, payload)
            except _WS_ERRORS as e:
                self._lost(c, f"send failed: {type(e).__name__}: {e}")
                return
            if self.tap is not None and op == ABNF.OPCODE_TEXT:
                self.tap("send", c.url, payload, time.time_ns())

    def _flush_later(self, c: WsConn) -> None:
        c.flush_scheduled = False
        if c.state is OPEN:
            self._flush(c)

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        for c in self._conns.values():
            if c.state is OPEN:
                if self.tap is not None:
                    self.tap("disconnect", c.url, "feed stopping", time.time_ns())
                c.close(reason="feed stopping")
            elif c.state is CONNECTING:
                c.abort_connect()
            c.wanted = False
            c.state = CLOSED
        self._rest.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
