"""An FMZ-style facade over the Client, for strategies ported from the old driver.

    ex = Exchange("binance", "ETH_USDT")            # or "BTC_USDT.swap" for the USDT perpetual
    depth = ex.GetDepth()                            # {"Asks": [{"Price", "Amount"}], "Bids": [...], "Time": ms}
    trades = ex.GetTrades()                          # [{"Id", "Time", "Price", "Amount", "Type"}], Type 0 buy, 1 sell
    fundings = ex.GetFundings("BTC_USDT.swap")       # [{"Symbol", "Rate", "Time", "Interval", "Info"}]

As in the old driver, the first use of a symbol the engine does not carry yet subscribes it through the
supervisor and serves REST until the stream is live, and a book older than `max_age` (3 s) is served
from REST. Errors raise (unknown symbol: SubscribeError with the exchange's message) rather than
returning None as FMZ does.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping

from ..core.types import Side
from ..engine import control
from ..errors import SubscribeError
from .shm import Book, Client

log = logging.getLogger(__name__)

ORDER_TYPE_BUY = 0
ORDER_TYPE_SELL = 1
_TYPE = {Side.BUY: ORDER_TYPE_BUY, Side.SELL: ORDER_TYPE_SELL}
_FMZ = re.compile(r"^([A-Za-z0-9]+)_([A-Za-z][A-Za-z0-9]*)(?:\.(swap|spot))?$")  # not BTCUSDT_250627


def to_unified(symbol: str) -> str:
    """``ETH_USDT`` → ``ETH/USDT``; ``BTC_USDT.swap`` → ``BTC/USDT:USDT``; ``BTC_USD.swap`` → ``BTC/USD:BTC``.

    Anything else (unified symbols, native ids) is returned unchanged.
    """
    m = _FMZ.match(symbol)
    if m is None:
        return symbol
    base, quote, contract = m.group(1).upper(), m.group(2).upper(), m.group(3)
    if contract != "swap":
        return f"{base}/{quote}"
    return f"{base}/{quote}:{base if quote == 'USD' else quote}"


class Exchange:
    """One exchange, FMZ style. Pass `client` to share one Client between several Exchange objects."""

    def __init__(self, name: str, currency: str = "BTC_USDT", *, namespace: str | None = None,
                 client: Client | None = None, max_age: float = 3.0,
                 endpoints: Mapping[str, str | tuple[str, str]] | None = None, depth: int = 20) -> None:
        self.name = name
        self.currency = currency
        self.depth = depth
        self.client = client or Client(namespace, max_age=max_age, rest_fallback=True, endpoints=endpoints)
        self._asked: set[str] = set()  # symbols already sent to the supervisor
        self._errors: dict[str, SubscribeError] = {}  # refusals, raised by the next call for that symbol
        self._lock = threading.Lock()
        self._no_supervisor = False

    # ------------------------------------------------------------------ FMZ API
    def GetName(self) -> str:  # noqa: N802 - FMZ's names
        return self.name

    def GetCurrency(self) -> str:  # noqa: N802
        return self.currency

    def SetCurrency(self, currency: str) -> None:  # noqa: N802
        self.currency = currency

    def GetDepth(self, symbol: str | None = None) -> dict:  # noqa: N802
        """``{"Asks": [{"Price", "Amount"}, ...] best first, "Bids": [...], "Time": ms}`` (REST while unsubscribed)."""
        d = self._book(symbol).snapshot(self.depth)
        ts = d.exch_ts_ns or d.recv_ts_ns
        return {"Asks": [{"Price": float(p), "Amount": float(a)} for p, a in d.asks],
                "Bids": [{"Price": float(p), "Amount": float(a)} for p, a in d.bids],
                "Time": ts // 1_000_000, "Source": d.source}

    def GetTrades(self, symbol: str | None = None, limit: int = 100) -> list[dict]:  # noqa: N802
        """The most recent trades, oldest first: ``[{"Id", "Time", "Price", "Amount", "Type"}]``.

        Type is 0 for a taker buy, 1 for a taker sell (-1 if the exchange did not say).
        """
        sym = self._symbol(symbol)
        self._book(symbol)  # subscribes on first use
        t = self.client.recent_trades(self.name, sym, limit)
        return [{"Id": int(r["trade_id"]), "Time": int(r["exch_ts_ns"] or r["recv_ts_ns"]) // 1_000_000,
                 "Price": float(r["price"]), "Amount": float(r["qty"]), "Type": _TYPE.get(int(r["side"]), -1)}
                for r in t.records]

    def GetTicker(self, symbol: str | None = None) -> dict:  # noqa: N802
        """Best bid ("Buy") and ask ("Sell"), "Last" = the last trade price (mid if none), "Time" in ms."""
        top = self._book(symbol).top()
        last = self.client.recent_trades(self.name, self._symbol(symbol), 1).records
        mid = (top.bid + top.ask) / 2 if not (math.isnan(top.bid) or math.isnan(top.ask)) else math.nan
        return {"Buy": top.bid, "Sell": top.ask, "Last": float(last["price"][-1]) if len(last) else mid,
                "Time": int(time.time() * 1000 - (top.age_s * 1000 if math.isfinite(top.age_s) else 0)),
                "Source": top.source}

    def GetFundings(self, symbol: str | None = None) -> list[dict]:  # noqa: N802
        """The perpetual's funding as FMZ's ``Funding`` structure (FMZ syntax guide: Info, Symbol, Interval, Time,
        Rate), in a list as FMZ's GetFundings returns: Rate is the rate of the coming settlement, Time that settlement
        in ms (None if the exchange does not publish it), Interval None (the settlement period in ms: no exchange
        stream carries it, so it is absent, not guessed), Info the rest of the perp record (mark, index, next rate,
        open interest, age, stale, and Source: "shm", or "rest" when it was read over REST). From shared memory;
        with the facade's client (rest_fallback on) a stale, too old or unsubscribed record comes from REST;
        NoPerpData for a spot symbol."""
        sym = self._symbol(symbol)
        p = self.client.perp(self.name, sym)
        return [{"Symbol": symbol or self.currency, "Rate": p.funding_rate,
                 "Time": p.next_funding_ns // 1_000_000 if p.next_funding_ns else None, "Interval": None,
                 "Info": {"MarkPrice": p.mark_price, "IndexPrice": p.index_price, "NextRate": p.next_funding_rate,
                          "OpenInterest": p.open_interest, "AgeS": p.age_s, "Stale": p.stale, "Source": p.source,
                          "StaleFields": list(p.stale_fields)}}]

    # ------------------------------------------------------------------ plumbing
    def _symbol(self, symbol: str | None) -> str:
        return to_unified(symbol or self.currency)

    def _book(self, symbol: str | None) -> Book:
        sym = self._symbol(symbol)
        with self._lock:
            error = self._errors.pop(sym, None)
        if error is not None:
            raise error
        book = self.client.book(self.name, sym)
        if not book.bound and sym not in self._asked and not self._no_supervisor:
            self._asked.add(sym)
            threading.Thread(target=self._subscribe, args=(sym,), name=f"subscribe {sym}", daemon=True).start()
        return book

    def _subscribe(self, sym: str) -> None:
        """Off the caller's thread, so REST serves meanwhile; touches no Client state (it is not thread-safe)."""
        msg = {"op": "subscribe", "exchange": self.name, "symbol": sym, "market": None, "timeout": 20.0}
        try:
            answer = control.request(self.client.namespace, msg, 22.0)
        except control.ControlError as e:
            self._no_supervisor = True  # serve REST only, as the old driver did without a feed
            log.warning("cannot subscribe %s %s (%s); serving it from REST", self.name, sym, e)
            return
        if not answer.get("ok"):
            with self._lock:
                self._errors[sym] = SubscribeError(f"subscribe {self.name} {sym}: {answer.get('error') or 'refused'}")
                self._asked.discard(sym)


__all__ = ["Exchange", "ORDER_TYPE_BUY", "ORDER_TYPE_SELL", "to_unified"]
