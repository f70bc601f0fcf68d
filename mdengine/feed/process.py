"""The body of a feed OS process: segment, adapter, loop, session, control channel, signals, recorder.

`run_feed` returns the process exit code: 0 after SIGTERM/SIGINT/`stop` (segment closed clean, books STALE),
1 after a crash (logged; the segment is left for the supervisor to take over).
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from ..engine.config import ExchangeConfig
from ..exchanges import get_adapter
from ..store.writer import SegmentWriter
from ..symbols import InstrumentIndex
from . import fastlane
from .loop import FeedLoop, LoopOptions
from .publisher import Publisher
from .session import FeedSession

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"
CONTROL_OPS = ("subscribe", "unsubscribe", "list")
CONTROL_TIMEOUT_S = 30.0


def _setup_logging(level: str | None) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT, level=level or "INFO")
    elif level:
        root.setLevel(level)


def run_feed(namespace: str, cfg: ExchangeConfig, control: Connection | None = None, ready: Any = None, *,
             options: LoopOptions | None = None, log_level: str | None = None) -> int:
    """Run one exchange's feed until stopped. `control`: a multiprocessing Connection answering
    {"id", "op": subscribe|unsubscribe|list, "symbol", "market"} requests; `ready`: an Event set once the
    segment is attached. `options` overrides loop timings (heartbeat and silence come from `cfg`)."""
    _setup_logging(log_level)
    log = logging.getLogger(f"mdengine.feed.{cfg.name}")
    adapter_cls = get_adapter(cfg.name)
    writer = SegmentWriter(namespace, cfg.name, create=True, max_symbols=cfg.max_symbols,
                           book_capacity=cfg.book_capacity, trade_capacity=cfg.trade_capacity)
    recorder = None
    publisher: Publisher | None = None
    clean = False
    try:
        log.info("feed starting: namespace=%s segment=%s symbols=%s", namespace, writer.name, ",".join(cfg.symbols))
        if ready is not None:
            ready.set()
        publisher = Publisher(writer, cfg.name, depth=cfg.book_depth, log=log)
        index = InstrumentIndex()
        adapter = adapter_cls(index, cfg.endpoints, book_depth=cfg.book_depth, book_mode=cfg.book_mode,
                              trades=cfg.trades, perp=cfg.perp, **cfg.options)
        opts = options or LoopOptions()
        opts.heartbeat_interval_s = cfg.heartbeat_interval_s
        opts.silence_timeout_s = cfg.silence_timeout_s if cfg.silence_timeout_s is not None else opts.silence_timeout_s
        opts.busy_poll_s = cfg.busy_poll_s or opts.busy_poll_s
        opts.sched_slice_us = cfg.sched_slice_us
        opts.warm_interval_s = cfg.warm_interval_ms / 1e3
        opts.stale_after_s = cfg.stale_after_s
        writer.set_freshness(cfg.stale_after_s, opts.heartbeat_interval_s)
        writer.set_perp_freshness(adapter.perp_stale_after(len(cfg.symbols)))
        writer.set_rest_endpoints(adapter.rest_bases())
        opts.max_message_bytes = cfg.max_message_bytes or opts.max_message_bytes
        fastlane.attach(adapter, publisher)
        loop = FeedLoop(adapter, publisher, options=opts, log=log, lane=publisher.lane)
        recorder = _recorder(cfg, loop, publisher, log)
        if recorder is not None:
            loop.tap = recorder.tap
        session = FeedSession(loop, adapter, publisher, index, cfg, log)
        _on_signals(loop.stop)
        if control is not None:
            threading.Thread(target=_serve_control, args=(control, session, loop, log), name="mdengine-control",
                             daemon=True).start()
        loop.submit(session.start)
        writer.set_running()
        loop.run()
        publisher.close()
        clean = True
        log.info("feed stopped")
        return 0
    except Exception:
        log.exception("feed crashed")
        return 1
    finally:
        if recorder is not None:
            recorder.close()
        if publisher is not None:
            publisher.close_lane()  # after a crash too: the lane holds the segment's buffer, which must go first
        writer.close(clean=clean)


def _on_signals(stop: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>`: every thread's stack to stderr


def _recorder(cfg: ExchangeConfig, loop: FeedLoop, publisher: Publisher, log: logging.Logger) -> Any:
    """A Recorder writing every frame to cfg.record_dir, or None. Its errors reach the segment via the loop."""
    if not cfg.record_dir:
        return None
    try:
        from ..recording.tap import Recorder
    except ImportError as e:
        publisher.error(f"record_dir is set but the recorder is unavailable: {e}")
        return None
    # Nothing here may stop the feed: a directory that cannot be created or written (read-only filesystem, a
    # path under a plain file, a full disk) is the recorder's error to report and retry, never the feed's.
    try:
        os.makedirs(cfg.record_dir, exist_ok=True)
    except OSError as e:
        publisher.record_failed(f"cannot create {cfg.record_dir}: {e.strerror or e} (the recorder keeps retrying)")
    try:
        return Recorder(cfg.record_dir, cfg.name,
                        on_error=lambda text: loop.submit(lambda: publisher.record_failed(text)))
    except Exception as e:  # noqa: BLE001 - a recorder that cannot start costs the recording, not the books
        publisher.record_failed(f"cannot start: {type(e).__name__}: {e}")
        return None


def _serve_control(conn: Connection, session: FeedSession, loop: FeedLoop, log: logging.Logger) -> None:
    """Answer control requests until the other end goes away. The work itself runs on the loop thread."""
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # an unpicklable message: answer and carry on
            req = {"bad": f"{type(e).__name__}: {e}"}
        reply: dict[str, Any] = {"id": None, "ok": False, "error": None, "symbol": None, "market": None,
                                 "native": None}
        if not isinstance(req, dict) or req.get("op") not in CONTROL_OPS:
            reply["error"] = f"a request is a dict with op in {CONTROL_OPS}, got {req!r}"[:300]
            if isinstance(req, dict):
                reply["id"] = req.get("id")
        else:
            reply["id"] = req.get("id")
            if not session.loaded.wait(CONTROL_TIMEOUT_S):
                reply["error"] = "instrument lists are not loaded yet (exchange unreachable?)"
            else:
                work = functools.partial(session.handle, req["op"], req.get("symbol"), req.get("market"))
                try:
                    reply.update(loop.submit(work).result(CONTROL_TIMEOUT_S))
                except Exception as e:
                    log.exception("control request %r failed", req)
                    reply["error"] = f"{type(e).__name__}: {e}"
                key = reply.pop("key", None)
                if key is not None:  # a new subscription: wait for the exchange's verdict (off the loop thread)
                    wait_s = req.get("wait_s", 0)
                    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float):
                        wait_s = 0
                    live, refusal = session.verdict(key, min(max(float(wait_s), 0.0), CONTROL_TIMEOUT_S))
                    if refusal is not None:
                        reply.update(ok=False, error=f"subscribe {reply.get('symbol')}: {refusal}")
                    else:
                        reply["live"] = live
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
