"""FeedSession: what a feed is subscribed to. Loads the instrument lists, resolves symbols, (un)subscribes.

All methods run on the loop thread (the process submits control requests there). An unknown symbol is
logged, counted as `subscribe_errors` and answered as an error; the other symbols carry on.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..config import ExchangeConfig
from ..events import Event, FetchRest, ProtocolError
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

    def subscribe(self, symbol: str, market: str | None = None) -> dict[str, Any]:
        try:
            inst = self.index.resolve(symbol, market)
        except UnknownSymbolError as e:
            return self._refuse(f"subscribe {symbol}: {e}")
        answer = {"ok": True, "error": None, "symbol": inst.unified, "market": inst.market, "native": inst.native}
        if inst.key in self.publisher.slots:
            return answer
        try:
            self.publisher.add(inst)
        except StoreFull as e:
            return {**answer, **self._refuse(f"subscribe {inst.unified}: {e}")}
        self.log.info("symbol=%s subscribing (%s %s)", inst.unified, inst.market, inst.native)
        self.loop.dispatch(self.adapter.subscribe(inst))
        return answer

    def unsubscribe(self, symbol: str, market: str | None = None) -> dict[str, Any]:
        try:
            inst = self.index.resolve(symbol, market)
        except UnknownSymbolError as e:
            return {"ok": False, "error": f"unsubscribe {symbol}: {e}"}
        answer = {"ok": True, "error": None, "symbol": inst.unified, "market": inst.market, "native": inst.native}
        if inst.key not in self.publisher.slots:
            return {**answer, "ok": False, "error": f"{inst.unified} is not subscribed"}
        self.log.info("symbol=%s unsubscribing", inst.unified)
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
        return self.subscribe(symbol, market) if op == "subscribe" else self.unsubscribe(symbol, market)
