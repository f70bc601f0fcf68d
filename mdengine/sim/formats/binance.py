"""Binance spot and USDⓈ-M futures wire formats (exchanges.md §1-2).

Spot chains diffs U == prev u + 1; USDⓈ-M chains pu == prev u with non-contiguous U (the model's
``id_gaps``). USDⓈ-M routes depth/bookTicker to /public (and unrouted /ws, /stream) and aggTrade,
markPrice and forceOrder to /market; a stream on the wrong route, or for an unknown symbol, is acked and gets no
data. markPrice frames come every 1 s (@1s) or 3 s from the shared perp model (formats/perp.py); forceOrder
pushes the model's liquidations (at most one per second per symbol, as Binance's snapshot stream); REST
``/fapi/v1/openInterest`` answers the model's open interest and ``/fapi/v1/premiumIndex`` its markPrice values.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from mdengine.sim.formats.base import Out, Reply, Session, Venue, int_param, now_ms
from mdengine.sim.formats.perp import PerpModels
from mdengine.sim.market import BookModel, Step

_STREAM = re.compile(
    r"^([a-z0-9_]+)@(depth(5|10|20)?(@(100|250|500)ms)?|trade|aggTrade|bookTicker|markPrice(@1s)?|forceOrder)$")
_PERP_KINDS = ("markPrice", "markPrice@1s", "forceOrder")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def _lv(levels: list[tuple[str, str]]) -> list[list[str]]:
    return [[p, q] for p, q in levels]


class BinanceSession(Session):
    def __init__(self, venue: BinanceVenue, path: str, query: dict[str, str]) -> None:
        super().__init__(venue, path, query)
        self.bv = venue
        route, rest = "public", path
        if venue.futures:
            for r in ("/public", "/market"):
                if path.startswith(r + "/"):
                    route, rest = r[1:], path[len(r) :]
        self.route = route
        self.combined = rest.startswith("/stream")
        self.streams: list[str] = []
        self._known: set[str] = set()
        raw = query.get("streams", "") if self.combined else rest[len("/ws/") :] if rest.startswith("/ws/") else ""
        for s in filter(None, raw.split("/")):
            self._add(s)
        self._rekey()
        self.window: list[float] = []
        self.perp_sent: dict[str, int] = {}  # perp stream -> ms of its last markPrice / seq of its last forceOrder

    def _add(self, stream: str) -> None:
        """Add a stream; `_rekey` must follow (once, after a whole request's streams)."""
        if stream not in self._known:
            self._known.add(stream)
            self.streams.append(stream)

    def _rekey(self) -> None:
        """Index the streams by symbol (in subscription order) once per change, so a step looks up its own
        symbol's streams instead of parsing all of them: a whole-market connection carries about a thousand."""
        self.keys = set()
        self._known = set(self.streams)
        self._by_symbol: dict[str, list[tuple[str, str, str | None]]] = {}
        for s in self.streams:
            m = _STREAM.match(s)
            if m and self._routed(m.group(2)):
                self._by_symbol.setdefault(m.group(1), []).append((s, m.group(2), m.group(3)))
                if m.group(1).upper() in self.bv.models:
                    self.keys.add(m.group(1).upper())
        self.subscribed_any = bool(self.streams)

    def _routed(self, kind: str) -> bool:
        if not self.bv.futures:
            return kind not in _PERP_KINDS  # spot has no perp streams
        if kind == "trade":
            return False  # no @trade on USDⓈ-M
        return (kind == "aggTrade" or kind in _PERP_KINDS) == (self.route == "market")

    def handle(self, text: str) -> Reply:
        now = time.monotonic()
        self.last_in = now
        self.window = [t for t in self.window if now - t < 1.0] + [now]
        if len(self.window) > self.bv.msg_rate:
            return Reply(close=(1008, "Too many messages"))
        try:
            req = json.loads(text)
        except ValueError:
            return Reply([Out({"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"})])
        if not isinstance(req, dict) or "method" not in req:
            return Reply([Out({"code": 2, "msg": "Invalid request: missing field `method` at line 1 column 1"})])
        rid = req.get("id")
        if not (rid is None or isinstance(rid, int | str)) or isinstance(rid, bool):
            return Reply([Out({"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"})])
        method, params = req["method"], req.get("params", [])
        if method not in _METHODS:
            msg = f"Invalid request: unknown variant `{method}`, expected one of " + ", ".join(
                f"`{m}`" for m in _METHODS
            )
            return Reply([Out({"code": 2, "msg": msg, "id": rid})])
        if method == "LIST_SUBSCRIPTIONS":
            return Reply([Out({"result": list(self.streams), "id": rid})])
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return Reply([Out({"code": 0, "msg": "Unknown property", "id": rid})])
            return Reply([Out({"result": self.combined, "id": rid})])
        if method == "SET_PROPERTY":
            if len(params) != 2 or params[0] != "combined":
                return Reply([Out({"code": 0, "msg": "Unknown property", "id": rid})])
            if not isinstance(params[1], bool):
                return Reply([Out({"code": 1, "msg": "Invalid value type: expected Boolean"})])
            self.combined = params[1]
            return Reply([Out({"result": None, "id": rid})])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return Reply([Out({"code": 2, "msg": "Invalid request: invalid params", "id": rid})])
        if method == "UNSUBSCRIBE":
            self.streams = [s for s in self.streams if s not in params]
            self._rekey()
            return Reply([Out({"result": None, "id": rid})])
        if len(set(self.streams) | set(params)) > self.bv.max_streams:
            return Reply([Out({"code": 2, "msg": "Invalid request: too many streams", "id": rid})])  # synthetic
        for p in params:
            m = _STREAM.match(p)
            if m and self.refuse(m.group(1).upper(), p):
                return Reply([Out({"code": 2, "msg": f"Invalid request: cannot subscribe to {p}", "id": rid})])
        for p in params:
            self._add(p)
        self._rekey()
        return Reply([Out({"result": None, "id": rid})])

    def _wrap(self, stream: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"stream": stream, "data": data} if self.combined else data

    def step(self, key: str, model: BookModel, st: Step) -> list[Out]:
        out: list[Out] = []
        for s, kind, depth in self._by_symbol.get(key.lower(), ()):
            if kind.startswith("depth") and depth:
                out.append(Out(self._wrap(s, self.bv.partial(model, st, int(depth))), key, "snapshot"))
            elif kind.startswith("depth"):
                out.append(Out(self._wrap(s, self.bv.diff(model, st)), key, "diff"))
            elif kind == "bookTicker":
                out.append(Out(self._wrap(s, self.bv.book_ticker(model, st)), key, "ticker"))
            elif kind in _PERP_KINDS:
                out += [Out(self._wrap(s, d), key, "perp") for d in self._perp(s, kind, model, st)]
            else:
                for d in self.bv.trades(model, st, kind):
                    out.append(Out(self._wrap(s, d), key, "trade"))
        return out

    def _perp(self, stream: str, kind: str, model: BookModel, st: Step) -> list[dict[str, Any]]:
        perp = self.bv.perps.of(model, st.ts)
        last = self.perp_sent.get(stream)
        if kind == "forceOrder":
            if last is None:  # a new subscriber gets the liquidations from now on
                self.perp_sent[stream] = perp._liq_seq  # noqa: SLF001
                return []
            new = perp.new_liquidations(last)
            if new:
                self.perp_sent[stream] = new[-1].seq
            return [self.bv.force_order(model, perp, x) for x in new]
        every = 1000 if kind.endswith("@1s") else 3000
        if last is not None and st.ts - last < every:
            return []
        self.perp_sent[stream] = st.ts
        return [self.bv.mark_price(model, perp, st.ts)]

    def idle_close(self, now: float, last_out: float) -> tuple[int, str] | None:
        return None  # liveness is the server's WS ping frames


class BinanceVenue(Venue):
    futures = False

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        c = self.cfg
        self.msg_rate = c.binance_usdm_msg_rate if self.futures else c.binance_spot_msg_rate
        self.max_streams = c.binance_usdm_max_streams if self.futures else c.binance_spot_max_streams
        self.perps = PerpModels(a[1] if len(a) > 1 else kw.get("seed", 0))

    def session(self, path: str, query: dict[str, str]) -> Session | None:
        p = path
        if self.futures:
            for r in ("/public", "/market"):
                if p.startswith(r + "/"):
                    p = p[len(r) :]
        if p in ("/ws", "/stream") or p.startswith("/ws/"):
            return BinanceSession(self, path, query)
        return None

    # ---- stream payloads ----
    def diff(self, model: BookModel, st: Step) -> dict[str, Any]:
        d: dict[str, Any] = {"e": "depthUpdate", "E": st.ts}
        if self.futures:
            d["T"] = st.ts - 1
        d.update({"s": model.inst.native, "U": st.first_id, "u": st.last_id})
        if self.futures:
            d["pu"] = st.prev_id
        d["b"] = _lv(model.render(st.bids, True))
        d["a"] = _lv(model.render(st.asks, False))
        return d

    def partial(self, model: BookModel, st: Step, n: int) -> dict[str, Any]:
        bids, asks = model.top(n)
        if not self.futures:
            return {"lastUpdateId": st.last_id, "bids": _lv(bids), "asks": _lv(asks)}
        return {"e": "depthUpdate", "E": st.ts, "T": st.ts - 1, "s": model.inst.native, "U": st.first_id,
                "u": st.last_id, "pu": st.prev_id, "b": _lv(bids), "a": _lv(asks)}

    def book_ticker(self, model: BookModel, st: Step) -> dict[str, Any]:
        (b, bq), (a, aq) = model.top(1)[0][0], model.top(1)[1][0]
        d: dict[str, Any] = {"e": "bookTicker"} if self.futures else {}
        d["u"] = st.last_id
        if self.futures:
            d.update({"E": st.ts, "T": st.ts - 1})
        d.update({"s": model.inst.native, "b": b, "B": bq, "a": a, "A": aq})
        return d

    def trades(self, model: BookModel, st: Step, kind: str) -> list[dict[str, Any]]:
        inst, out = model.inst, []
        for t in st.trades:
            px, maker_buyer = inst.px(t.ticks), not t.taker_buy  # m: buyer is maker -> aggressor sold
            if kind == "trade":
                for i, lots in enumerate(t.fills):
                    out.append({"e": "trade", "E": st.ts, "s": inst.native, "t": t.first_id + i, "p": px,
                                "q": inst.qty(lots), "T": t.ts, "m": maker_buyer, "M": True})
            elif self.futures:
                out.append({"e": "aggTrade", "E": st.ts, "s": inst.native, "a": t.agg_id, "p": px,
                            "q": inst.qty(t.lots), "nq": inst.qty(t.lots), "f": t.first_id, "l": t.last_id,
                            "T": t.ts, "m": maker_buyer})
            else:
                out.append({"e": "aggTrade", "E": st.ts, "s": inst.native, "a": t.agg_id, "p": px,
                            "q": inst.qty(t.lots), "f": t.first_id, "l": t.last_id, "T": t.ts,
                            "m": maker_buyer, "M": True})
        return out

    def mark_price(self, model: BookModel, perp: Any, ts: int) -> dict[str, Any]:
        """A markPriceUpdate (BN-UM "Mark Price Stream"); P, the estimated settle price, is the index here."""
        mark, index = perp.mark(), perp.index()
        return {"e": "markPriceUpdate", "E": ts, "s": model.inst.native, "p": f"{mark:.8f}", "i": f"{index:.8f}",
                "P": f"{index:.8f}", "r": f"{perp.funding_rate:.8f}", "T": perp.next_funding}

    def force_order(self, model: BookModel, perp: Any, x: Any) -> dict[str, Any]:
        """A forceOrder (BN-UM "Liquidation Order Streams")."""
        px, qty = perp.price_text(x.price), model.inst.qty(x.lots)
        return {"e": "forceOrder", "E": x.ts + 1, "o": {
            "s": model.inst.native, "S": "SELL" if x.sell else "BUY", "o": "LIMIT", "f": "IOC", "q": qty, "p": px,
            "ap": px, "X": "FILLED", "l": qty, "z": qty, "T": x.ts}}

    def book_lists(self, obj: Any) -> tuple[list, list] | None:
        d = obj.get("data", obj) if isinstance(obj, dict) else None
        if not isinstance(d, dict):
            return None
        if "b" in d:
            return d["b"], d["a"]
        if "bids" in d:
            return d["bids"], d["asks"]
        return None

    def shutdown_notice(self, session: Session) -> list[Out]:
        ev = {"e": "serverShutdown", "E": now_ms()}
        combined = isinstance(session, BinanceSession) and session.combined
        return [Out({"stream": "!serverShutdown", "data": ev} if combined else ev)]

    def usage_headers(self, key: str, used: float) -> list[tuple[str, str]]:
        """Every answer reports the weight the IP used in the current minute (BN-SPOT rest-api.md "IP Limits")."""
        return [("X-MBX-USED-WEIGHT-1M", str(int(used)))]

    def bad_param(self, name: str, value: str) -> tuple[int, Any]:
        """-1100 ILLEGAL_CHARS, HTTP 400 (BN-SPOT errors.md: "Illegal characters found in parameter '%s'; legal
        range is '%s'.")."""
        return 400, {"code": -1100, "msg": f"Illegal characters found in parameter '{name}'; legal range is "
                                           "'^[0-9]{1,20}$'."}

    def too_many(self) -> Any:
        return {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."}

    # ---- REST ----
    def rest(self, path: str, q: dict[str, str]) -> tuple[int, Any] | None:
        base = "/fapi/v1/" if self.futures else "/api/v3/"
        if not path.startswith(base):
            return None
        ep = path[len(base) :]
        if ep == "exchangeInfo":
            return 200, self.exchange_info(q.get("symbol"))
        if ep in ("openInterest", "premiumIndex") and self.futures:  # BN-UM "Open Interest", "Mark Price"
            model = self.models.get(q.get("symbol", ""))
            if model is None:
                return 400, {"code": -1121, "msg": "Invalid symbol."}
            perp = self.perps.of(model, now_ms())
            if ep == "premiumIndex":  # the markPrice stream's values (mark_price), under the REST names
                m = self.mark_price(model, perp, now_ms())
                return 200, {"symbol": m["s"], "markPrice": m["p"], "indexPrice": m["i"],
                             "estimatedSettlePrice": m["P"], "lastFundingRate": m["r"], "interestRate": "0.00010000",
                             "nextFundingTime": m["T"], "time": m["E"]}
            return 200, {"openInterest": model.inst.qty(perp.open_interest_lots), "symbol": model.inst.native,
                         "time": now_ms()}
        if ep not in ("depth", "trades"):
            return None
        sym = q.get("symbol", "")
        if not sym:
            msg = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            return 400, {"code": -1102, "msg": msg}
        model = self.models.get(sym)
        if model is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if ep == "depth":
            bids, asks = model.top(int_param(q, "limit", 500 if self.futures else 100, 5000))
            d: dict[str, Any] = {"lastUpdateId": model.update_id}
            if self.futures:
                d.update({"E": now_ms(), "T": now_ms()})
            d.update({"bids": _lv(bids), "asks": _lv(asks)})
            return 200, d
        limit = int_param(q, "limit", 500, 1000)
        fills = []
        for t in model.trades:
            for i, lots in enumerate(t.fills):
                px, qty = model.inst.px(t.ticks), model.inst.qty(lots)
                f = {"id": t.first_id + i, "price": px, "qty": qty, "quoteQty": f"{float(px) * float(qty):.8f}",
                     "time": t.ts, "isBuyerMaker": not t.taker_buy}
                if not self.futures:
                    f["isBestMatch"] = True
                fills.append(f)
        return 200, fills[len(fills) - limit :]

    def exchange_info(self, only: str | None) -> dict[str, Any]:
        syms = []
        for i in self.instruments.values():
            if only and i.native != only:
                continue
            filters = [
                {"filterType": "PRICE_FILTER", "minPrice": i.tick, "maxPrice": "1000000.00000000", "tickSize": i.tick},
                {"filterType": "LOT_SIZE", "minQty": i.lot, "maxQty": "9000.00000000", "stepSize": i.lot},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0", "maxQty": "1000.00000000", "stepSize": "0"},
            ]
            s: dict[str, Any] = {"symbol": i.native, "status": "TRADING", "baseAsset": i.base, "quoteAsset": i.quote}
            if self.futures:
                s.update({"pair": i.native, "contractType": "PERPETUAL", "marginAsset": i.quote,
                          "pricePrecision": i.px_dp or 2, "quantityPrecision": i.qty_dp or 3})
            else:
                s.update({"baseAssetPrecision": 8, "quotePrecision": 8, "permissionSets": [["SPOT"]]})
            s["filters"] = filters
            syms.append(s)
        return {"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [], "exchangeFilters": [], "symbols": syms}


class BinanceSpot(BinanceVenue):
    name = "binance-spot"


class BinanceUsdm(BinanceVenue):
    name = "binance-usdm"
    futures = True
    id_gaps = True
