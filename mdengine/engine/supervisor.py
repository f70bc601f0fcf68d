"""The supervisor: owns a namespace's segments, runs one feed process per exchange and keeps it alive.

Lifecycle of the namespace:
- binding the control socket (``\\0mdengine-<namespace>``) is the lock: a second supervisor fails there,
  before it touches any segment;
- the supervisor creates every segment (owner pid + start time in the header) and unlinks them on
  shutdown (unless keep_segments); a feed only ever attaches, so a restarted feed takes over the same
  segment and readers keep their mappings.

Per feed, the watch loop (main thread only: it is the only thread that spawns or kills) moves it through::

    pending --spawn--> starting --ready--> running --exit / heartbeat stall--> backoff --delay--> starting
                                                             \\--too many restarts in window_s--> failed

A stalled feed (alive but its heartbeat older than stall_after_s) gets SIGKILL, never SIGCONT: a
process that stopped heartbeating cannot be trusted to have consistent state. Backoff doubles per
consecutive failure up to backoff_max_s and resets once a feed has stayed up for a while.

A feed's death is seen at once: a thread per feed process waits on its pidfd and, the moment it exits,
marks its segment's writer DEAD (layout 1.3; readers call its books stale without waiting for a heartbeat
to age) and wakes the watch loop.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import psutil

from ..store import SegmentReader, create_segment, process_start_ns, shm
from ..store import layout as L
from ..store.segment import LayoutError
from ..store.writer import mark_dead
from .config import EngineConfig, ExchangeConfig
from .configfile import exchange_config
from .control import ControlServer

log = logging.getLogger("mdengine.supervisor")

TICK_S = 0.1  # watch-loop period
STARTUP_GRACE_S = 30.0  # a feed that has not attached its segment after this long is stalled
HEALTHY_AFTER_S = 10.0  # a feed up this long has its backoff reset
STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL
FORWARD_TIMEOUT_S = 20.0  # default wait for a feed to answer an (un)subscribe (it may be starting)
# A caller's "timeout" is cut to engine.toml [control] max_wait_s (default 60 s): the control server has WORKERS (8)
# handler threads, and a caller allowed on the socket must not hold them all for as long as it likes.
PARENT_POLL_S = 0.5

FeedTarget = Callable[..., int]


def _feed_main(target: FeedTarget, namespace: str, cfg: ExchangeConfig, control: Any, ready: Any,
               log_level: str, log_file: str | None, parent_pid: int) -> None:
    """Body of a feed process: own process group (the terminal's Ctrl-C goes to the supervisor, which
    stops feeds in order), logging like the supervisor's, exit when the supervisor dies."""
    os.setpgrp()
    configure_logging(log_level, log_file)

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        logging.getLogger("mdengine.feed").error("exchange=%s pid=%d supervisor %d is gone: stopping",
                                                 cfg.name, os.getpid(), parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    raise SystemExit(target(namespace, cfg, control, ready))


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged, as logging's last resort does, not to the
    stream that was stderr when logging was set up: the CLI run in-process (tests, an embedding program)
    must not keep a stream its caller has since replaced and closed (pytest's capture: "--- Logging error
    --- ValueError: I/O operation on closed file"). In a real process it is always the process's stderr."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's: it would store a stream

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # setStream(): nothing to keep, sys.stderr is looked up each time
        pass


def configure_logging(level: str = "INFO", log_file: str | None = None) -> None:
    """One line per event: time, level, process id, logger, message (messages carry exchange=/symbol=).
    To stderr (the current one at each line), or appended to `log_file` (feeds and supervisor share it)."""
    destination: dict[str, Any] = {"filename": log_file} if log_file else {"handlers": [StderrHandler()]}
    logging.basicConfig(level=level.upper(), force=True,
                        format="%(asctime)s %(levelname)-5s [%(process)d] %(name)s: %(message)s", **destination)
    if level.upper() != "DEBUG":
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_libraries)


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Below DEBUG level, other libraries' INFO chatter (websockets.server's line per connection) stays out."""
    return record.levelno >= logging.WARNING or record.name.partition(".")[0] in ("mdengine", "__main__")


def _default_target() -> FeedTarget:
    from ..feed.process import run_feed

    return run_feed


@dataclasses.dataclass
class Feed:
    """The supervisor's record of one exchange's feed process."""

    cfg: ExchangeConfig
    state: str = "pending"  # pending, starting, running, backoff, failed, stopped
    process: Any = None  # multiprocessing.Process
    conn: Any = None  # parent end of the control Pipe
    ready: Any = None  # multiprocessing.Event, set by the feed once its segment is attached
    reader: SegmentReader | None = None
    ps: psutil.Process | None = None
    started_at: float = 0.0
    next_start_at: float = 0.0
    failures: int = 0  # consecutive, for the backoff
    restarts: int = 0  # total
    restart_times: deque = dataclasses.field(default_factory=deque)  # when each failure that restarted was seen
    backoffs: list = dataclasses.field(default_factory=list)  # the wait before each of those restarts, s
    last_exit: str | None = None
    rss_bytes: int | None = None
    cpu_percent: float | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one forwarded request at a time

    @property
    def exchange(self) -> str:
        return self.cfg.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Runs `cfg`'s feeds. `start()` takes the namespace (raises control.SupervisorRunning if taken),
    `run(stop)` watches until `stop` is set, `stop()` shuts everything down."""

    def __init__(self, cfg: EngineConfig, *, sim_endpoints: dict[str, tuple[str, str]] | None = None,
                 feed_target: FeedTarget | None = None, sim: bool = False, log_file: str | None = None) -> None:
        self.cfg = cfg
        self.log_file = log_file
        self.namespace = cfg.namespace
        self.policy = cfg.restart
        self.sim_endpoints = sim_endpoints
        self.sim = sim or sim_endpoints is not None
        self._target = feed_target
        self._ctx = multiprocessing.get_context("spawn")
        self.feeds: dict[str, Feed] = {}
        self._feeds_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._wake = threading.Event()
        self._stopping = False
        self._tick_lock = threading.Lock()  # tick() and stop() may run on different threads
        self._server: ControlServer | None = None
        self._exit_watches: list[threading.Thread] = []  # one per feed process started; stop() joins them
        self.started_ns = 0

    # ------------------------------------------------------------------ lifecycle
    def acquire(self) -> Supervisor:
        """Take the namespace's lock (its control socket). Raises control.SupervisorRunning if another
        supervisor holds it, control.Squatter if a process of another user does."""
        if self._server is None:
            self._server = ControlServer(self.namespace, self.handle, allow_uids=self.cfg.control_uids,
                                         allow_gids=self.cfg.control_gids).start()
        return self

    def set_sim(self, endpoints: dict[str, tuple[str, str]]) -> None:
        """Point every feed (configured or added later) at a simulator's {market: (ws_url, rest_url)}."""
        self.sim_endpoints = endpoints
        self.sim = True

    def start(self) -> Supervisor:
        """Take the lock if not yet taken, then register the configured feeds (spawned by the first `tick`)."""
        shm.check_room({shm.segment_name(self.namespace, ex.name): L.segment_size(ex.max_symbols, ex.book_capacity,
                                                                                  ex.trade_capacity)
                        for ex in self.cfg.exchanges if ex.symbols})  # every feed's segment, before any starts
        self.acquire()
        self.started_ns = time.time_ns()
        log.info("namespace=%s supervisor started%s", self.namespace, " against the simulator" if self.sim else "")
        for ex in self.cfg.exchanges:
            if ex.symbols:
                self._add_feed(ex)
            else:  # configured (endpoints, capacities) but started by its first subscription
                log.info("exchange=%s no symbols configured: feed starts on the first subscribe", ex.name)
        return self

    def run(self, stop: threading.Event) -> None:
        """Watch the feeds until `stop` is set (then call `stop()` yourself, or use `serve`)."""
        while not stop.is_set():
            self.tick()
            self._wake.wait(TICK_S)
            self._wake.clear()

    def serve(self, stop: threading.Event) -> None:
        try:
            self.run(stop)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop every feed (SIGTERM, then SIGKILL after STOP_GRACE_S), unlink segments, release the lock."""
        with self._tick_lock, self._feeds_lock:  # no spawn and no new feed after this
            if self._stopping:
                return
            self._stopping = True
        with self._feeds_lock:
            feeds = list(self.feeds.values())
        log.info("namespace=%s stopping %d feeds", self.namespace, len(feeds))
        for f in feeds:
            if f.process is not None and f.process.is_alive():
                f.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for f in feeds:
            if f.process is not None:
                f.process.join(max(0.0, deadline - time.monotonic()))
                if f.process.is_alive():
                    log.warning("exchange=%s pid=%d did not stop within %.0f s: SIGKILL", f.exchange, f.pid,
                                STOP_GRACE_S)
                    f.process.kill()
                    f.process.join(2.0)
                log.info("exchange=%s pid=%d stopped (exit code %s)", f.exchange, f.pid, f.process.exitcode)
            f.state = "stopped"
            self._close_ipc(f)
            if f.reader is not None:
                f.reader.close()
                f.reader = None
        for t in self._exit_watches:  # each ends once its process has exited (joined above): none logs after stop()
            t.join(2.0)
        for f in feeds:
            name = shm.segment_name(self.namespace, f.exchange)
            if self.cfg.keep_segments:
                log.info("exchange=%s segment %s kept (keep_segments)", f.exchange, name)
            elif shm.unlink(name):
                log.info("exchange=%s segment %s unlinked", f.exchange, name)
        if self._server is not None:
            self._server.close()  # last: the namespace stays locked until its segments are gone
        log.info("namespace=%s supervisor stopped", self.namespace)

    # ------------------------------------------------------------------ feeds
    def _add_feed(self, ex: ExchangeConfig) -> Feed:
        with self._feeds_lock:
            if ex.name in self.feeds:
                return self.feeds[ex.name]
            if self._stopping:  # stop() has taken its list of segments to unlink
                raise RuntimeError("the supervisor is shutting down")
            if self.sim_endpoints is not None:
                from ..exchanges import get_adapter

                # The simulator wins over configured endpoints: --sim must never reach a real exchange.
                ex.endpoints = {**ex.endpoints, **get_adapter(ex.name).sim_endpoints(self.sim_endpoints)}
            feed = self.feeds[ex.name] = Feed(cfg=ex)
        self._create_segment(feed)
        return feed

    def _create_segment(self, feed: Feed) -> None:
        ex = feed.cfg
        name = shm.segment_name(self.namespace, ex.name)
        try:
            create_segment(self.namespace, ex.name, max_symbols=ex.max_symbols, book_capacity=ex.book_capacity,
                           trade_capacity=ex.trade_capacity)
        except shm.SegmentExists:
            # We hold the namespace lock, so its owner is a dead supervisor (or kept for post-mortem).
            log.warning("exchange=%s segment %s left by a previous supervisor: recreating it", ex.name, name)
            shm.unlink(name)
            create_segment(self.namespace, ex.name, max_symbols=ex.max_symbols, book_capacity=ex.book_capacity,
                           trade_capacity=ex.trade_capacity)
        feed.reader = SegmentReader(self.namespace, ex.name)

    def _spawn(self, feed: Feed) -> None:
        target = self._target or _default_target()
        parent_conn, child_conn = self._ctx.Pipe()
        feed.ready = self._ctx.Event()
        feed.conn = parent_conn
        feed.process = self._ctx.Process(
            target=_feed_main, name=f"mdengine-feed-{feed.exchange}", daemon=False,
            args=(target, self.namespace, feed.cfg, child_conn, feed.ready, self.cfg.log_level, self.log_file,
                  os.getpid()))
        feed.process.start()
        child_conn.close()
        self._watch_exit(feed, feed.process)
        feed.state = "starting"
        feed.started_at = time.monotonic()
        feed.cpu_percent = None
        try:
            feed.ps = psutil.Process(feed.process.pid)
            feed.ps.cpu_percent(None)  # prime: the next call measures since now
        except psutil.Error:
            feed.ps = None
        log.info("exchange=%s pid=%d feed started (%d symbols%s)", feed.exchange, feed.pid, len(feed.cfg.symbols),
                 f", restart {feed.restarts}" if feed.restarts else "")

    def _watch_exit(self, feed: Feed, proc: Any) -> None:
        """Mark the feed's segment DEAD the moment `proc` exits (a pidfd thread), so readers need not wait for its
        heartbeat to age. Opened here, on the thread that reaps, so the pid cannot be reaped (and reused) first."""
        pid = proc.pid
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError) as e:  # Linux < 5.3: the watch loop's tick notices within TICK_S
            log.debug("exchange=%s no pidfd (%s): death is noticed by the watch loop", feed.exchange, e)
            return

        def watch() -> None:
            try:
                waiter = select.poll()  # not select(): the fd may be past FD_SETSIZE
                waiter.register(fd, select.POLLIN)
                while not waiter.poll():
                    pass
            finally:
                os.close(fd)
            with self._tick_lock:  # the watch loop has not handled this exit yet, so no successor was spawned
                if feed.process is proc:
                    self._mark_dead(feed, pid)
            self._wake.set()

        thread = threading.Thread(target=watch, name=f"mdengine-exit-{feed.exchange}", daemon=True)
        self._exit_watches = [t for t in self._exit_watches if t.is_alive()] + [thread]
        thread.start()

    def _mark_dead(self, feed: Feed, pid: int | None) -> None:
        """Owner's write (layout 1.3): the writer `pid` has exited; if the segment still names it, say DEAD."""
        if pid is not None and mark_dead(shm.segment_name(self.namespace, feed.exchange), pid):
            log.info("exchange=%s pid=%d feed exited: its books are marked stale (writer state dead)",
                     feed.exchange, pid)

    @staticmethod
    def _close_ipc(feed: Feed) -> None:
        if feed.conn is not None:
            feed.conn.close()
        if feed.process is not None and feed.process.exitcode is not None:
            feed.process.close()  # releases its sentinel fd; pid/exitcode are gone after this
        feed.process = None
        feed.ps = None

    def tick(self) -> None:
        """One pass of the watch loop: spawn what is due, notice deaths and stalls, sample psutil."""
        with self._tick_lock:
            if not self._stopping:
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        for feed in list(self.feeds.values()):
            if feed.state in ("failed", "stopped"):
                continue
            if feed.state in ("pending", "backoff"):
                if now >= feed.next_start_at:
                    self._spawn(feed)
                continue
            proc = feed.process
            if proc.exitcode is not None:
                code = proc.exitcode
                why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                self._failed(feed, why, now)
                continue
            if feed.state == "starting" and feed.ready.is_set():
                feed.state = "running"
                log.info("exchange=%s pid=%d feed attached its segment", feed.exchange, feed.pid)
            self._sample(feed)
            stalled = self._stall_reason(feed, now)
            if stalled:
                log.error("exchange=%s pid=%d %s: SIGKILL", feed.exchange, feed.pid, stalled)
                proc.kill()
                proc.join(2.0)
                self._failed(feed, stalled, now)

    def _stall_reason(self, feed: Feed, now: float) -> str | None:
        up = now - feed.started_at
        if feed.state == "starting":
            grace = max(STARTUP_GRACE_S, self.policy.stall_after_s)
            return f"no segment attach after {up:.0f} s" if up > grace else None
        reader = feed.reader
        if reader is None or reader.view.writer_pid != feed.pid:
            return None  # the new feed has not taken over yet (ready is set right after, normally)
        age = reader.heartbeat_age_ns() / 1e9
        if age > self.policy.stall_after_s and up > self.policy.stall_after_s:
            return f"stalled (heartbeat {age:.1f} s old)"
        return None

    def _sample(self, feed: Feed) -> None:
        if feed.ps is None:
            return
        try:
            with feed.ps.oneshot():
                feed.rss_bytes = feed.ps.memory_info().rss
                feed.cpu_percent = round(feed.ps.cpu_percent(None), 1)
        except psutil.Error:
            pass

    def _failed(self, feed: Feed, why: str, now: float) -> None:
        """A feed died or was killed: schedule its restart with backoff, or give up on a crash loop."""
        up = now - feed.started_at
        feed.last_exit = why
        pid = feed.pid
        self._mark_dead(feed, pid)  # before any successor can be spawned (the exit watcher may have done it)
        self._close_ipc(feed)
        if self._stopping:
            feed.state = "stopped"
            return
        feed.failures = 1 if up >= HEALTHY_AFTER_S else feed.failures + 1
        window = self.policy.window_s
        while feed.restart_times and now - feed.restart_times[0] > window:
            feed.restart_times.popleft()
        if len(feed.restart_times) >= self.policy.max_restarts:
            feed.state = "failed"
            log.error("exchange=%s pid=%s %s; %d restarts within %.0f s: crash loop, giving up on this feed "
                      "(the others keep running)", feed.exchange, pid, why, len(feed.restart_times), window)
            return
        delay = min(self.policy.backoff_initial_s * 2 ** (feed.failures - 1), self.policy.backoff_max_s)
        feed.restart_times.append(now)
        feed.backoffs.append(delay)
        feed.restarts += 1
        feed.state = "backoff"
        feed.next_start_at = now + delay
        log.warning("exchange=%s pid=%s %s after %.1f s up; restart %d in %.2f s", feed.exchange, pid, why, up,
                    feed.restarts, delay)

    # ------------------------------------------------------------------ control requests
    def handle(self, msg: dict) -> dict:
        """Answer one control request (runs on a control connection thread)."""
        op = msg.get("op")
        if op == "ping":
            return {"ok": True, "namespace": self.namespace, "pid": os.getpid()}
        if op == "status":
            return self.status()
        if op in ("subscribe", "unsubscribe"):
            return self._forward(op, msg)
        return {"ok": False, "error": f"unknown op {op!r}; expected ping, status, subscribe or unsubscribe"}

    def status(self) -> dict:
        feeds = []
        for f in list(self.feeds.values()):
            feeds.append({"exchange": f.exchange, "pid": f.pid, "state": f.state, "restarts": f.restarts,
                          "last_exit": f.last_exit, "rss_bytes": f.rss_bytes, "cpu_percent": f.cpu_percent,
                          "uptime_s": round(time.monotonic() - f.started_at, 1) if f.process is not None else None,
                          "symbols": list(f.cfg.symbols)})
        answer = {"ok": True, "namespace": self.namespace, "pid": os.getpid(), "started_ns": self.started_ns,
                  "sim": self.sim, "feeds": feeds}
        if self.sim_endpoints is not None:  # lets clients point their REST fallback at the simulator
            answer["sim_endpoints"] = {m: list(v) for m, v in self.sim_endpoints.items()}
        return answer

    def _forward(self, op: str, msg: dict) -> dict:
        exchange, symbol, market = msg.get("exchange"), msg.get("symbol"), msg.get("market")
        if not isinstance(exchange, str) or not isinstance(symbol, str) or not symbol:
            return {"ok": False, "error": f'{op} needs "exchange" and "symbol" strings'}
        if market is not None and not isinstance(market, str):
            return {"ok": False, "error": '"market" must be a string or null'}
        if self._stopping:
            return {"ok": False, "error": "the supervisor is shutting down"}
        feed = self.feeds.get(exchange)
        if feed is None:
            if op == "unsubscribe":
                return {"ok": False, "error": f"no feed for exchange {exchange!r}"}
            try:
                ex = exchange_config(self.cfg, exchange)  # raises for an unknown exchange
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
            log.info("exchange=%s symbol=%s first subscription: starting a feed", exchange, symbol)
            feed = self._add_feed(ex)
            self._wake.set()
        timeout = msg.get("timeout", FORWARD_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:  # NaN too
            timeout = FORWARD_TIMEOUT_S
        timeout = min(timeout, self.cfg.control_max_wait_s)  # json reads Infinity as well as 1e300
        # the feed waits up to half the caller's time for a new symbol to go live or be refused by the exchange
        answer = self._ask_feed(feed, {"op": op, "symbol": symbol, "market": market, "wait_s": timeout / 2},
                                float(timeout))
        if answer.get("ok"):
            self._remember(feed, op, symbol, answer)
            log.info("exchange=%s pid=%s symbol=%s %sd", exchange, feed.pid, answer.get("symbol", symbol), op)
        else:
            log.warning("exchange=%s symbol=%s %s refused: %s", exchange, symbol, op, answer.get("error"))
        return answer

    def _ask_feed(self, feed: Feed, req: dict, timeout: float) -> dict:
        """Send `req` over the feed's Pipe and wait for the answer with its id; waits for a starting feed."""
        deadline = time.monotonic() + timeout
        # requests to one feed take turns; the wait for the turn counts against the same deadline
        if not feed.lock.acquire(timeout=timeout):
            return {"ok": False, "error": f"the {feed.exchange} feed is busy with other requests; none answered "
                                          f"within {timeout:.0f} s"}
        try:
            while True:
                remaining = deadline - time.monotonic()
                if feed.state == "failed":
                    return {"ok": False, "error": f"the {feed.exchange} feed failed ({feed.last_exit}); "
                                                  "restart the supervisor"}
                if self._stopping:  # the feed is going away: answer now rather than at the deadline
                    return {"ok": False, "error": "the supervisor is shutting down"}
                if remaining <= 0:
                    return {"ok": False, "error": f"the {feed.exchange} feed did not answer within {timeout:.0f} s "
                                                  f"(state {feed.state})"}
                conn, ready = feed.conn, feed.ready
                if feed.state not in ("starting", "running") or conn is None or not ready.wait(min(remaining, 0.2)):
                    time.sleep(0.05 if feed.state not in ("starting", "running") else 0)
                    continue
                rid = next(self._ids)
                try:
                    conn.send({"id": rid, **req})
                    while not self._stopping:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        if not conn.poll(min(remaining, 0.2)):  # in slices: a stop() meanwhile is noticed
                            continue
                        answer = conn.recv()
                        if isinstance(answer, dict) and answer.get("id") == rid:
                            answer.pop("id", None)
                            answer.setdefault("error", None)
                            answer["exchange"] = feed.exchange
                            return answer
                except (EOFError, OSError):  # the feed died under us: wait for its successor
                    time.sleep(0.05)
                    continue
        finally:
            feed.lock.release()

    def _remember(self, feed: Feed, op: str, symbol: str, answer: dict) -> None:
        """Keep the feed's config in step so a restarted feed resubscribes what was added at runtime."""
        unified = answer.get("symbol") or symbol
        names = {symbol, unified, answer.get("native")}
        symbols = feed.cfg.symbols
        if op == "subscribe":
            if not names & set(symbols):
                symbols.append(unified)
        else:
            feed.cfg.symbols = [s for s in symbols if s not in names]


def owner_alive(reader: SegmentReader) -> bool:
    """True if the segment's owner (the supervisor that created it) is still the same running process."""
    pid = reader.view.owner_pid
    return pid > 0 and process_start_ns(pid) == reader.view.owner_start_ns and reader.view.owner_start_ns != 0


def clean(namespace: str | None = None, force: bool = False) -> list[tuple[str, str]]:
    """Unlink segments whose owning supervisor is dead; returns [(segment name, what was done)].

    A segment that cannot be read (half-created, foreign layout) is only removed with `force`.
    """
    from .control import ControlError, NoSupervisor, request

    done = []
    for name in shm.list_names(namespace):
        rest = name[len(shm.NAME_PREFIX):]
        ns, _, exchange = rest.rpartition("-")
        try:
            reader = SegmentReader(ns, exchange)
        except (LayoutError, ValueError, shm.SegmentNotFound) as exc:
            if force and shm.unlink(name):
                done.append((name, f"unlinked (unreadable: {exc})"))
            else:
                done.append((name, f"kept: unreadable ({exc}); use --force to remove"))
            continue
        try:
            alive = owner_alive(reader)
        finally:
            reader.close()
        if not alive:
            try:
                alive = bool(request(ns, {"op": "ping"}, timeout=1.0).get("ok"))
            except NoSupervisor:
                pass
            except ControlError as exc:  # a squatter, a refusal, a flooded socket: we cannot tell, so keep it
                done.append((name, f"kept: {exc}"))
                continue
        if alive:
            done.append((name, "kept: its supervisor is running"))
        elif shm.unlink(name):
            done.append((name, "unlinked"))
    return done
