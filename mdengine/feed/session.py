"""FeedSession: what a feed is subscribed to. Loads the instrument lists, resolves symbols, (un)subscribes.

All methods run on the loop thread (the process submits control requests there), except `verdict`, which the
control thread calls to wait for a new subscription's outcome. An unknown symbol is logged, counted as
`subscribe_errors` and answered as an error; so is a symbol the exchange refuses, if it refuses within the
caller's wait; the other symbols carry on.

The instrument lists are no single point of failure. Each good list is kept on disk (feed/instcache.py). When a
list's GET fails (an HTTP error, a transport error, a body that is not a list), the feed starts at once from the
cached copy, records the failure as the segment's last error, and fetches again in the background until it gets a
fresh list (then subscribes what could not start before). While a list is missing or old, a symbol given by its
native id that no list names starts anyway, as the adapter's `native_instrument` makes it (tick and lot unknown).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from ..core.events import Event, FetchRest, ProtocolError, SymbolKey
from ..engine.config import ExchangeConfig
from ..errors import UnknownSymbol
from ..exchanges.base import Adapter
from ..store.writer import StoreFull
from ..symbols import Instrument, InstrumentIndex
from .instcache import InstrumentCache
from .loop import FeedLoop
from .publisher import Publisher
from .timing import Backoff


class FeedSession:
    def __init__(self, loop: FeedLoop, adapter: Adapter, publisher: Publisher, index: InstrumentIndex,
                 cfg: ExchangeConfig, log: logging.Logger, cache: InstrumentCache | None = None) -> None:
        self.loop = loop
        self.adapter = adapter
        self.publisher = publisher
        self.index = index
        self.cfg = cfg
        self.log = log
        self.loaded = threading.Event()  # set once the instrument lists are in (any thread may wait on it)
        self.cache = cache if cache is not None else InstrumentCache(adapter.exchange, cfg.instrument_cache_dir)
        self._pending: dict[str, FetchRest] = {}  # instrument requests in flight (their next page, say)
        self._waiting: set[str] = set()  # requests the start waits for: neither a fresh nor a cached list yet
        self._stale: set[str] = set()  # requests that failed and have no fresh list yet (fetched again)
        self._pages: dict[str, list[Instrument]] = {}  # a paged list's instruments so far
        self._urls: dict[str, str] = {}  # request id -> its first page's URL (the list's name in the cache)
        self.instrument_failures = 0  # failed instrument GETs (each attempt)
        self._retry = Backoff(1.0, 60.0)
        self._listed: dict[str, set[tuple[str, str]]] = {}  # market -> keys its latest fresh list names
        # new subscriptions a control caller waits on: key -> (done, [refusal text or None])
        self._verdicts: dict[SymbolKey, tuple[threading.Event, list[str | None]]] = {}
        self._verdicts_lock = threading.Lock()
        publisher.on_synced = self._synced
        publisher.on_subscribe_failed = self._refused

    # ------------------------------------------------------------------ instruments
    def start(self) -> None:
        """Fetch the instrument lists; subscribe cfg.symbols once each is in (fresh or from the cache)."""
        for req in type(self.adapter).instrument_requests(self.adapter.endpoints, self.cfg.markets):
            self._waiting.add(req.request_id)
            self._urls[req.request_id] = req.url
            self._fetch(req)
        self.loop.call_later(self.cfg.instrument_refresh_s, self._refresh)

    def _refresh(self) -> None:
        """Fetch every list again (each on its own once in flight); a wildcard then follows (de)listings."""
        self.loop.call_later(self.cfg.instrument_refresh_s, self._refresh)
        for req in type(self.adapter).instrument_requests(self.adapter.endpoints, self.cfg.markets):
            if req.request_id not in self._pending:
                self._urls.setdefault(req.request_id, req.url)
                self._fetch(req)

    def _fetch(self, req: FetchRest) -> None:
        self._pending[req.request_id] = req
        self.loop.fetch(req, self._on_instruments,
                        on_retry=lambda status, error: self._failed(req, f"HTTP {status}" if status else "transport",
                                                                    error))

    def _on_instruments(self, request_id: str, status: int, body: bytes, recv_ns: int) -> list[Event]:
        req = self._pending.get(request_id)
        if req is None:
            return []
        if status != 200:  # one the loop does not retry (a 404, say): this session fetches again later
            self._failed(req, f"HTTP {status}", body[:200].decode("utf-8", "replace"))
            self._fetch_later(req)
            return []
        insts, events = type(self.adapter).parse_instruments(request_id, body)
        follow = None
        for ev in events:
            if isinstance(ev, FetchRest):
                follow = ev
            else:
                self.loop.dispatch([ev])
        if not insts and any(isinstance(ev, ProtocolError) for ev in events):
            self._failed(req, "bad body", "the answer is not an instrument list")
            self._fetch_later(req)
            return []
        self._pages.setdefault(request_id, []).extend(insts)
        if follow is not None:  # the next page, under the same request id
            self._fetch(follow)
            return []
        self._fresh(request_id, self._pages.pop(request_id))
        return []

    def _fetch_later(self, req: FetchRest) -> None:
        delay = self._retry.next()
        self.log.info("instrument list %s: fetching again in %.1fs", req.url, delay)
        self.loop.call_later(delay, lambda: self._fetch(req))

    def _failed(self, req: FetchRest, what: str, detail: str) -> None:
        """A GET of an instrument list failed (`what`: "HTTP 404", "transport", "bad body"): the first time, start
        from the cached copy (or none); each time, record it (the segment's last error; the log once per
        interval)."""
        rid = req.request_id
        self.instrument_failures += 1
        if rid not in self._waiting:  # already started from the cache (or had a list): only say it again
            self.publisher.error(f"instrument list failed ({what}): {req.url}: {detail}; still fetching",
                                 key=("instruments", rid))
            return
        self._stale.add(rid)
        cached = self.cache.load(self._urls.get(rid, req.url))
        if cached is None:
            then = "no cached copy: its symbols start only by their native ids"
        else:
            insts, saved_at = cached
            for inst in insts:
                self.index.add(inst)
            then = (f"starting from the cached copy of {len(insts)} instruments saved "
                    f"{datetime.fromtimestamp(saved_at, UTC):%Y-%m-%d %H:%M:%S} UTC")
        self.publisher.error(f"instrument list failed ({what}): {req.url}: {detail}; {then}; fetching again in "
                             "the background", key=("instruments", rid))
        self._resolved(rid)

    def _fresh(self, request_id: str, insts: list[Instrument]) -> None:
        """A good list: into the index and the cache; if it follows a failure, subscribe what could not start."""
        self._pending.pop(request_id, None)
        self._retry.reset()
        for inst in insts:
            self.index.add(inst)
        try:
            self.cache.save(self._urls.get(request_id, request_id), insts)
        except OSError as e:  # the disk is the cache's problem, never the feed's
            self.log.warning("instrument cache %s not written: %s", self.cache.path, e)
        for market in {i.market for i in insts}:  # what each market lists now (wildcards expand over it)
            self._listed[market] = {i.key for i in insts if i.market == market}
        if self.loaded.is_set() and insts and self._wildcards():
            self._follow_listing(insts)
        if request_id in self._stale:
            self._stale.discard(request_id)
            self.log.info("instrument list %s: %d instruments loaded after %s", self._urls.get(request_id), len(insts),
                          "failures" if self.loaded.is_set() else "a failure")
            if self.loaded.is_set():
                self._subscribe_missing()
        self._resolved(request_id)

    def _resolved(self, request_id: str) -> None:
        self._waiting.discard(request_id)
        if not self._waiting and not self.loaded.is_set():
            self.log.info("%d instruments loaded", len(self.index))
            self._subscribe_configured()
            self.loop.dispatch(self.adapter.start())
            self.loaded.set()

    def _configured(self) -> list[tuple[str, str | None]]:
        """cfg.symbols as (symbol, market), wildcards expanded over the instrument lists: "*" is every instrument
        they name (the configured markets' trading instruments), "<market>:*" (e.g. "usdm:*") every one of a market."""
        out: list[tuple[str, str | None]] = []
        for symbol in self.cfg.symbols:
            if symbol == "*" or symbol.endswith(":*"):
                market = None if symbol == "*" else symbol[:-2].lower()
                out += [(i.native, i.market) for i in self.index if (market is None or i.market.lower() == market)
                        and (i.market not in self._listed or i.key in self._listed[i.market])]
            else:
                out.append((symbol, None))
        return out

    def _wildcards(self) -> bool:
        return any(x == "*" or x.endswith(":*") for x in self.cfg.symbols)

    def _follow_listing(self, insts: list[Instrument]) -> None:
        """A fresh list of a running feed with wildcards: subscribe what it lists anew, unsubscribe what a wildcard
        subscribed and its market's list no longer names (delisted). Symbols configured by name stay."""
        listed = {i.key for i in insts}
        markets = {i.market for i in insts}
        named = {(m, s) for s, m in self._configured() if m is None}
        for key, slot in list(self.publisher.slots.items()):
            inst = slot.inst
            if inst.market in markets and key not in listed and not any(
                    s in (inst.unified, inst.native) for _, s in named):
                self.log.info("symbol=%s no longer listed: unsubscribing", inst.unified)
                self.unsubscribe(inst.native, inst.market)
        self._subscribe_missing()

    def _subscribe_configured(self) -> None:
        """Subscribe the configured symbols; a wildcard that names more than the segment holds takes what fits and
        says once how many did not (max_symbols sizes the segment)."""
        wanted = self._configured()
        room = self.cfg.max_symbols - len(self.publisher.slots)
        fresh = [(sym, m) for sym, m in wanted if not self._subscribed(sym, m)]
        if len(fresh) > room and any(x == "*" or x.endswith(":*") for x in self.cfg.symbols):
            self._refuse(f"{len(fresh)} instruments are configured but the segment has room for {room} more "
                         f"(max_symbols {self.cfg.max_symbols}): {len(fresh) - room} are not subscribed; raise "
                         "max_symbols")
            fresh = fresh[:max(room, 0)]
        for symbol, market in fresh:
            self.subscribe(symbol, market)

    def _subscribed(self, symbol: str, market: str | None) -> bool:
        try:
            return self.index.resolve(symbol, market).key in self.publisher.slots
        except UnknownSymbol:
            return False

    def _subscribe_missing(self) -> None:
        """The configured symbols that a list now names and that are not subscribed (they failed to resolve, or a
        wildcard's list now names more)."""
        for symbol, market in self._configured():
            try:
                inst = self.index.resolve(symbol, market)
            except UnknownSymbol:
                continue
            if inst.key not in self.publisher.slots and len(self.publisher.slots) < self.cfg.max_symbols:
                self.subscribe(symbol, market)

    def _native(self, symbol: str, market: str | None) -> Instrument | None:
        """While a list failed, an instrument for `symbol` as a native id (see Adapter.native_instrument)."""
        if not self._stale:
            return None
        if market is None and self.cfg.markets and len(self.cfg.markets) == 1:
            market = self.cfg.markets[0]
        inst = type(self.adapter).native_instrument(symbol, market)
        if inst is not None:
            self.index.add(inst)
            self.log.warning("symbol=%s is in no instrument list (one failed): starting it by its native id as %s %s,"
                             " tick and lot size unknown", symbol, inst.market, inst.unified)
        return inst

    # ------------------------------------------------------------------ subscriptions
    def _refuse(self, text: str) -> dict[str, Any]:
        self.publisher.subscribe_error(text)
        return {"ok": False, "error": text}

    def subscribe(self, symbol: str, market: str | None = None, *, track: bool = False) -> dict[str, Any]:
        """Subscribe (if not yet). `track`: a caller will wait for the outcome with `verdict(answer["key"])`."""
        try:
            inst = self.index.resolve(symbol, market)
        except UnknownSymbol as e:
            native = self._native(symbol, market)
            if native is None:
                return self._refuse(f"subscribe {symbol}: {e}")
            inst = native
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
        except UnknownSymbol as e:
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
