"""FeedSession: what a feed is subscribed to. Loads the instrument lists, resolves symbols, (un)subscribes.

All methods run on the loop thread (the process submits control requests there), except `verdict`, which the
control thread calls to wait for a new subscription's outcome. An unknown symbol is logged, counted as
`subscribe_errors` and answered as an error; so is a symbol the exchange refuses, if it refuses within the
caller's wait; the other symbols carry on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..config import ExchangeConfig
from ..events import Event, FetchRest, ProtocolError, SymbolKey
from ..exchanges.base import Adapter
from ..store.writer import StoreFull
from ..symbols import InstrumentIndex, UnknownSymbolError
from .loop import FeedLoop
from .publisher import Publisher
from .timing import Backoff


class FeedSession:
    def __init__(self, loop: FeedLoop, adapter: Adapter, publisher: Publisher, index: InstrumentIndex,
                 cfg: ExchangeConfig, log: logging.Logger) -> None:
        self.loop = loop
        self.adapter = adapter
        self.publisher = publisher
        self.index = index
        self.cfg = cfg
        self.log = log
        self.loaded = threading.Event()  # set once the instrument lists are in (any thread may wait on it)
        self._pending: dict[str, FetchRest] = {}
        self._retry = Backoff(1.0, 60.0)
        # new subscriptions a control caller waits on: key -> (done, [refusal text or None])
        self._verdicts: dict[SymbolKey, tuple[threading.Event, list[str | None]]] = {}
        self._verdicts_lock = threading.Lock()
        publisher.on_synced = self._synced
        publisher.on_subscribe_failed = self._refused

    # ------------------------------------------------------------------ instruments
    def start(self) -> None:
        """Fetch the instrument lists; subscribe cfg.symbols once all are in."""
        for req in type(self.adapter).instrument_requests(self.adapter.endpoints, self.cfg.markets):
            self._fetch(req)

    def _fetch(self, req: FetchRest) -> None:
        self._pending[req.request_id] = req
        self.loop.fetch(req, self._on_instruments)

    def _on_instruments(self, request_id: str, status: int, body: bytes, recv_ns: int) -> list[Event]:
        req = self._pending.get(request_id)
        if req is None:
            return []
        if status != 200:  # not retryable (the loop retries 429/5xx itself): this market is unavailable
            self.publisher.error(f"instrument list {req.url}: HTTP {status}; its symbols are unavailable")
            return self._done(request_id)
        insts, events = type(self.adapter).parse_instruments(request_id, body)
        for ev in events:
            if isinstance(ev, FetchRest):
                self._fetch(ev)
            else:
                self.loop.dispatch([ev])
        if not insts and any(isinstance(ev, ProtocolError) for ev in events):
            delay = self._retry.next()
            self.log.warning("instrument list %s unusable; fetching again in %.1fs", req.url, delay)
            self.loop.call_later(delay, lambda: self.loop.fetch(req, self._on_instruments))
            return []
        for inst in insts:
            self.index.add(inst)
        return self._done(request_id)

    def _done(self, request_id: str) -> list[Event]:
        self._pending.pop(request_id, None)
        if not self._pending and not self.loaded.is_set():
            self.log.info("%d instruments loaded", len(self.index))
            for symbol in self.cfg.symbols:
                self.subscribe(symbol)
            self.loop.dispatch(self.adapter.start())
            self.loaded.set()
        return []

    # ------------------------------------------------------------------ subscriptions
    def _refuse(self, text: str) -> dict[str, Any]:
        self.publisher.subscribe_error(text)
        return {"ok": False, "error": text}

    def subscribe(self, symbol: str, market: str | None = None, *, track: bool = False) -> dict[str, Any]:
        """Subscribe (if not yet). `track`: a caller will wait for the outcome with `verdict(answer["key"])`."""
        try:
            inst = self.index.resolve(symbol, market)
        except UnknownSymbolError as e:
            return self._refuse(f"subscribe {symbol}: {e}")
        answer = {"ok": True, "error": None, "symbol": inst.unified, "market": inst.market, "native": inst.native}
        if inst.key in self.publisher.slots:
            return {**answer, "live": self.adapter.is_live(inst.key)}
        try:
            self.publisher.add(inst)
        except StoreFull as e:
            return {**answer, **self._refuse(f"subscribe {inst.unified}: {e}")}
        self.log.info("symbol=%s subscribing (%s %s)", inst.unified, inst.market, inst.native)
        if track:
            with self._verdicts_lock:
                self._verdicts[inst.key] = (threading.Event(), [None])
        self.loop.dispatch(self.adapter.subscribe(inst))
        return {**answer, "key": inst.key} if track else answer

    # ------------------------------------------------------------------ subscription outcomes
    def _synced(self, key: SymbolKey) -> None:
        with self._verdicts_lock:
            waiter = self._verdicts.get(key)
        if waiter is not None:
            waiter[0].set()

    def _refused(self, key: SymbolKey | None, message: str) -> None:
        with self._verdicts_lock:
            waiter = self._verdicts.get(key) if key is not None else None
        if waiter is not None and not waiter[0].is_set():
            waiter[1][0] = message
            waiter[0].set()

    def verdict(self, key: SymbolKey, timeout: float) -> tuple[bool, str | None]:
        """Wait (on any thread but the loop's) until a subscription made with `track` is live or refused:
        (live, refusal text); (False, None) when neither happened within `timeout` (still in progress)."""
        with self._verdicts_lock:
            waiter = self._verdicts.get(key)
        if waiter is None:
            return False, None
        try:
            if not waiter[0].wait(timeout):
                return False, None
            refusal = waiter[1][0]
            return refusal is None, refusal
        finally:
            with self._verdicts_lock:
                if self._verdicts.get(key) is waiter:
                    del self._verdicts[key]

    def unsubscribe(self, symbol: str, market: str | None = None) -> dict[str, Any]:
        try:
            inst = self.index.resolve(symbol, market)
        except UnknownSymbolError as e:
            return {"ok": False, "error": f"unsubscribe {symbol}: {e}"}
        answer = {"ok": True, "error": None, "symbol": inst.unified, "market": inst.market, "native": inst.native}
        if inst.key not in self.publisher.slots:
            return {**answer, "ok": False, "error": f"{inst.unified} is not subscribed"}
        self.log.info("symbol=%s unsubscribing", inst.unified)
        self._refused(inst.key, "unsubscribed before it went live")  # a caller still waiting is answered
        self.loop.dispatch(self.adapter.unsubscribe(inst.key))
        self.publisher.remove(inst.key)
        return answer

    def listing(self) -> dict[str, Any]:
        syms = [{"symbol": s.inst.unified, "market": s.inst.market, "native": s.inst.native,
                 "live": self.adapter.is_live(key)} for key, s in self.publisher.slots.items()]
        return {"ok": True, "error": None, "symbols": syms}

    def handle(self, op: str, symbol: Any, market: Any) -> dict[str, Any]:
        """One control request (on the loop thread)."""
        if op == "list":
            return self.listing()
        if not isinstance(symbol, str) or not symbol:
            return {"ok": False, "error": f"{op} needs a symbol (a non-empty string), got {symbol!r}"}
        if market is not None and not isinstance(market, str):
            return {"ok": False, "error": f"market must be a string or null, got {market!r}"}
        return self.subscribe(symbol, market, track=True) if op == "subscribe" else self.unsubscribe(symbol, market)
