"""Bybit v5 public wire format (exchanges.md §4; BY-DOC 2026-07-24).

One venue, three WS paths (/v5/public/spot|linear|inverse); model keys are "category/SYMBOL".
``orderbook.{1,50,200,1000}``: snapshot then deltas; each topic has its own u, +1 per push of that topic
(BY-DOC orderbook: "normally continuous"; level 1 re-sent unchanged keeps its u), so a step that changes nothing
a depth shows costs that topic no id; u == 1 after a service restart (sent as a snapshot); level 1 is
snapshot-only, re-sent when unchanged.
Linear and inverse also serve ``tickers.{symbol}`` (a snapshot on subscribe, then deltas of the fields that changed,
at most every 100 ms) and ``allLiquidation.{symbol}`` from the shared perp model (formats/perp.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from mdengine.sim.formats.base import BadParam, Out, Reply, Session, Venue, conn_id, int_param, now_ms
from mdengine.sim.formats.perp import PerpModel, PerpModels, model_now
from mdengine.sim.market import BookModel, Instrument, Step

_DEPTHS = (1, 50, 200, 1000)
_TICKERS, _LIQUIDATIONS = -1, -2  # topic codes beside book depths (and 0, trades)
_CONTRACT = {"linear": "LinearPerpetual", "inverse": "InversePerpetual"}
# /v5/market/orderbook `limit` per category: (default, maximum) (BY-DOC market/orderbook.mdx, 2026-07-24)
_BOOK_LIMIT = {"spot": (1, 1000), "linear": (25, 1000), "inverse": (25, 1000)}
# Largest limit order of a derivative, by value: BY-DOC instrument.mdx's BTCUSDT allows 1190 BTC (about 120 M USDT),
# its market orders 500 (42% of it); a simulated instrument allows 100 M in its quote unit and 40% at market
_MAX_ORDER_VALUE, _MAX_MARKET_SHARE = 100_000_000, 0.4


def _lv(levels: list[tuple[str, str]]) -> list[list[str]]:
    return [[p, q] for p, q in levels]


class BybitSession(Session):
    def __init__(self, venue: BybitVenue, path: str, query: dict[str, str]) -> None:
        super().__init__(venue, path, query)
        self.yv = venue
        self.cat = path.rsplit("/", 1)[1]
        c = conn_id()
        self.conn_id = f"{c}-{c[:4]}-4{c[5:8]}-a{c[1:4]}-{c}{c[:4]}"  # UUID-shaped
        self.topics: dict[str, tuple[str, int]] = {}  # topic -> (key, depth or 0 for trades)
        self.l1_sent: dict[str, tuple[float, Any]] = {}
        self.perp_sent: dict[str, Any] = {}  # tickers topic -> (ms, fields last sent); allLiquidation -> last seq

    def _ack(self, op: str, rid: str, ok: bool = True, msg: str | None = None) -> Out:
        d: dict[str, Any] = {"success": ok, "ret_msg": msg if msg is not None else (op if self.cat == "spot" else ""),
                             "conn_id": self.conn_id}
        if rid or self.cat != "spot":
            d["req_id"] = rid
        d["op"] = op
        return Out(d)

    def handle(self, text: str) -> Reply:
        self.last_in = time.monotonic()
        try:
            req = json.loads(text)
            op, rid, args = req.get("op"), req.get("req_id", ""), req.get("args")
        except (ValueError, AttributeError):
            return Reply([Out({"success": False, "ret_msg": "error:request not json", "conn_id": self.conn_id,
                               "request": {"op": "", "args": None}})])  # text (unverified)
        if op == "ping":
            self.last_ping = self.last_in
            pong = {"success": True, "ret_msg": "pong", "conn_id": self.conn_id}
            if self.cat != "spot":
                pong["req_id"] = rid
            pong["op"] = "ping"
            return Reply([Out(pong)], ping=True)
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            return Reply([Out({"success": False, "ret_msg": f"error:invalid op:{op}", "conn_id": self.conn_id,
                               "request": {"op": op or "", "args": args}})])
        if self.cat == "spot" and len(args) > self.yv.cfg.bybit_spot_max_args:
            return Reply([self._ack(op, rid, False, f"args size >{self.yv.cfg.bybit_spot_max_args}")])  # (unverified)
        parsed = []
        for a in args:
            t = self._parse(a)
            if t is None or (op == "subscribe" and self.refuse(t[0], str(a))):
                return Reply([self._ack(op, rid, False, f"Invalid symbol :[{a}]")])  # text (unverified)
            parsed.append((a, t))
        out = [self._ack(op, rid)]
        for topic, (key, depth) in parsed:
            if op == "unsubscribe":
                self.topics.pop(topic, None)
                continue
            self.topics[topic] = (key, depth)
            self.subscribed_any = True
            model = self.yv.models[key]
            if depth < 0:
                now = model_now(model)
                perp = self.yv.perps.of(model, now)
                if depth == _TICKERS:
                    fields = self.yv.ticker_fields(model, perp)
                    self.perp_sent[topic] = (now, fields)
                    out.append(Out(self.yv.ticker(topic, "snapshot", fields), key, "perp"))
                else:
                    self.perp_sent[topic] = perp._liq_seq  # noqa: SLF001 - from now on
                continue
            if depth == 1:
                self.l1_sent[topic] = (time.monotonic(), model.top(1))
            if depth:
                model.register_view(depth)
                out.append(Out(self.yv.book(topic, model, "snapshot", *model.top(depth), model.topic_seq(depth)),
                               key, "snapshot"))
        self.keys = {k for k, _ in self.topics.values()}
        return Reply(out)

    def _parse(self, topic: Any) -> tuple[str, int] | None:
        if not isinstance(topic, str):
            return None
        parts = topic.split(".")
        key = f"{self.cat}/{parts[-1]}"
        if key not in self.yv.models:
            return None
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1].isdigit() and int(parts[1]) in _DEPTHS:
            return key, int(parts[1])
        if len(parts) == 2 and parts[0] == "publicTrade":
            return key, 0
        if len(parts) == 2 and self.cat != "spot" and parts[0] in ("tickers", "allLiquidation"):
            return key, _TICKERS if parts[0] == "tickers" else _LIQUIDATIONS
        return None

    def step(self, key: str, model: BookModel, st: Step) -> list[Out]:
        out: list[Out] = []
        for topic, (k, depth) in self.topics.items():
            if k != key:
                continue
            if depth < 0:
                out += self._perp(topic, depth, key, model, st)
            elif depth == 0:
                if st.trades:
                    out.append(Out(self.yv.trades(topic, model, st), key, "trade"))
            elif depth == 1:
                top = model.top(1)
                if self.l1_sent.get(topic, (0, None))[1] != top or st.reset:
                    self.l1_sent[topic] = (time.monotonic(), top)
                    out.append(Out(self.yv.book(topic, model, "snapshot", *top, st.seq(1)), key, "snapshot"))
            elif st.reset:
                out.append(Out(self.yv.book(topic, model, "snapshot", *model.top(depth), st.seq(depth)), key,
                               "snapshot"))
            else:
                b, a = st.diff(depth, model.levels)
                if not b and not a:
                    continue  # nothing changed within this depth: Bybit sends nothing
                out.append(Out(self.yv.book(topic, model, "delta", model.render(b, True), model.render(a, False),
                                            st.seq(depth)), key, "diff"))
        return out

    def _perp(self, topic: str, code: int, key: str, model: BookModel, st: Step) -> list[Out]:
        perp = self.yv.perps.of(model, st.ts)
        if code == _LIQUIDATIONS:
            new = perp.new_liquidations(self.perp_sent.get(topic, 0))
            if not new:
                return []
            self.perp_sent[topic] = new[-1].seq
            return [Out(self.yv.all_liquidation(topic, model, perp, new), key, "perp")]
        sent_ms, sent = self.perp_sent.get(topic, (0, {}))
        if 0 <= st.ts - sent_ms < 100:  # (a negative gap: the driver runs the model on its own clock)
            return []
        fields = self.yv.ticker_fields(model, perp)
        changed = {k: v for k, v in fields.items() if sent.get(k) != v}
        if not changed:
            return []
        self.perp_sent[topic] = (st.ts, fields)
        return [Out(self.yv.ticker(topic, "delta", {"symbol": model.inst.native, **changed}), key, "perp")]

    def idle(self, now: float) -> list[Out]:
        out = []
        for topic, (sent, top) in list(self.l1_sent.items()):
            if topic in self.topics and now - sent >= self.yv.cfg.bybit_l1_repeat:
                key = self.topics[topic][0]
                model = self.yv.models[key]
                self.l1_sent[topic] = (now, top)
                out.append(Out(self.yv.book(topic, model, "snapshot", *top, model.topic_seq(1)), key, "snapshot"))
        return out

    def idle_close(self, now: float, last_out: float) -> tuple[int, str] | None:
        t = self.yv.cfg.bybit_idle_timeout
        if now - max(self.last_ping, self.opened) > t and now - last_out > t:
            return 1000, "idle timeout"
        return None


class BybitVenue(Venue):
    name = "bybit"

    def __init__(self, instruments: list[Instrument], seed: int, *a: Any, **kw: Any) -> None:
        super().__init__(instruments, seed, *a, **kw)
        self.perps = PerpModels(seed)

    @staticmethod
    def key(inst: Instrument) -> str:
        return f"{inst.kind}/{inst.native}"

    def seq_of(self, model: BookModel, depth: int = 50) -> int:
        """The `u` of the topic a feed keeping ``depth`` levels subscribes (orderbook.50 up to 50 levels, ...)."""
        return model.topic_seq(next((d for d in _DEPTHS[1:] if d >= depth), _DEPTHS[-1]))

    def session(self, path: str, query: dict[str, str]) -> Session | None:
        if path in ("/v5/public/spot", "/v5/public/linear", "/v5/public/inverse"):
            return BybitSession(self, path, query)
        return None

    def book(self, topic: str, model: BookModel, typ: str, bids: Any, asks: Any, u: int) -> dict[str, Any]:
        ts = now_ms()
        data = {"s": model.inst.native, "b": _lv(bids), "a": _lv(asks), "u": u, "seq": model.update_id}
        return {"topic": topic, "type": typ, "ts": ts, "data": data, "cts": ts - 2}

    def trades(self, topic: str, model: BookModel, st: Step) -> dict[str, Any]:
        inst, data = model.inst, []
        for t in st.trades:
            d: dict[str, Any] = {"T": t.ts, "s": inst.native, "S": "Buy" if t.taker_buy else "Sell",
                                 "v": inst.qty(t.lots), "p": inst.px(t.ticks)}
            if inst.kind != "spot":
                d["L"] = "PlusTick" if t.taker_buy else "MinusTick"
            d.update({"i": str(t.last_id) if inst.kind == "spot" else t.uid, "BT": False, "seq": st.last_id})
            data.append(d)
        return {"topic": topic, "type": "snapshot", "ts": now_ms(), "data": data}

    def ticker_fields(self, model: BookModel, perp: PerpModel) -> dict[str, str]:
        """The perp fields of a linear/inverse ticker (BY-DOC ticker.mdx), as text. Open interest is in base coin on
        linear, in USD contracts on inverse, whose value is in the base coin (BY-DOC tickers: BTCUSD "240113967" USD
        is worth "2089.79" BTC at mark 114898.43)."""
        oi = model.inst.qty(perp.open_interest_lots)
        value = float(oi) / perp.mark() if model.inst.kind == "inverse" else float(oi) * perp.mark()
        return {"markPrice": perp.price_text(perp.mark()), "indexPrice": perp.price_text(perp.index()),
                "openInterest": oi, "openInterestValue": f"{value:.2f}",
                "nextFundingTime": str(perp.next_funding), "fundingRate": f"{perp.funding_rate:.6f}"}

    def ticker(self, topic: str, typ: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"topic": topic, "type": typ, "data": data, "cs": 1, "ts": now_ms()}

    def all_liquidation(self, topic: str, model: BookModel, perp: PerpModel, new: list) -> dict[str, Any]:
        """allLiquidation: S is the liquidated position's side (a SELL order closes a long: "Buy")."""
        data = [{"T": x.ts, "s": model.inst.native, "S": "Buy" if x.sell else "Sell", "v": model.inst.qty(x.lots),
                 "p": perp.price_text(x.price)} for x in new]
        return {"topic": topic, "type": "snapshot", "ts": now_ms(), "data": data}

    def book_lists(self, obj: Any) -> tuple[list, list] | None:
        try:
            return obj["data"]["b"], obj["data"]["a"]
        except (KeyError, TypeError):
            return None

    def too_many(self) -> Any:
        return {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}, "time": now_ms()}

    def bad_param(self, name: str, value: str) -> tuple[int, Any]:
        """retCode 10001 ("Request parameter error", BY-DOC error.mdx) with HTTP 200, as any Bybit answer; text ours."""
        return self._wrap({}, 10001, f"params error: {name} is invalid")

    def _wrap(self, result: Any, code: int = 0, msg: str = "OK") -> tuple[int, Any]:
        return 200, {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms()}

    def rest(self, path: str, q: dict[str, str]) -> tuple[int, Any] | None:
        cat = q.get("category", "")
        if path not in ("/v5/market/orderbook", "/v5/market/instruments-info", "/v5/market/recent-trade",
                        "/v5/market/tickers"):
            return None
        if cat not in ("spot", "linear", "inverse"):
            return self._wrap({}, 10001, "params error: Category is invalid")
        if path == "/v5/market/instruments-info":
            return self.instruments_info(cat, q)
        model = self.models.get(f"{cat}/{q.get('symbol', '')}")
        if model is None:
            return self._wrap({}, 10001, "params error: Symbol Is Invalid")  # text (unverified)
        if path == "/v5/market/tickers":  # the tickers topic's perp fields, from the same model
            if cat == "spot":
                return self._wrap({"category": cat, "list": []})  # only derivatives are simulated with perp fields
            (b, bq), (a, aq) = model.top(1)[0][0], model.top(1)[1][0]
            row = {"symbol": model.inst.native, "lastPrice": b, "bid1Price": b, "bid1Size": bq, "ask1Price": a,
                   "ask1Size": aq, **self.ticker_fields(model, self.perps.of(model, model_now(model)))}
            return self._wrap({"category": cat, "list": [row]})
        if path == "/v5/market/orderbook":
            default, most = _BOOK_LIMIT[cat]
            try:
                limit = int_param(q, "limit", default)
            except BadParam:
                limit = 0
            if not 1 <= limit <= most:  # 10001 is Bybit's "Request parameter error" (BY-DOC error.mdx)
                return self._wrap({}, 10001, "params error: limit is invalid")  # text (unverified)
            bids, asks = model.top(limit)
            ts = now_ms()
            return self._wrap({"s": model.inst.native, "a": _lv(asks), "b": _lv(bids), "ts": ts,
                               "u": model.topic_seq(1000), "seq": model.update_id, "cts": ts - 2})
        rows = []
        for t in list(model.trades)[::-1][: int_param(q, "limit", 60, 60 if cat == "spot" else 1000)]:
            rows.append({"execId": str(t.last_id) if cat == "spot" else t.uid, "symbol": model.inst.native,
                         "price": model.inst.px(t.ticks), "size": model.inst.qty(t.lots),
                         "side": "Buy" if t.taker_buy else "Sell", "time": str(t.ts), "isBlockTrade": False,
                         "isRPITrade": False})
        return self._wrap({"category": cat, "list": rows})

    def instruments_info(self, cat: str, q: dict[str, str]) -> tuple[int, Any]:
        rows = [self._instrument(i) for i in self.instruments.values() if i.kind == cat]
        if cat == "spot":
            return self._wrap({"category": cat, "list": rows})
        limit = int_param(q, "limit", 500, 1000)
        start = int_param(q, "cursor", 0) if q.get("cursor") else 0
        page = rows[start : start + limit]
        nxt = str(start + limit) if start + limit < len(rows) else ""
        return self._wrap({"category": cat, "list": page, "nextPageCursor": nxt})

    def _instrument(self, i: Instrument) -> dict[str, Any]:
        d: dict[str, Any] = {"symbol": i.native, "baseCoin": i.base, "quoteCoin": i.quote, "status": "Trading"}
        if i.kind == "spot":
            d.update({"innovation": "0", "marginTrading": "both",
                      "lotSizeFilter": {"basePrecision": i.lot, "quotePrecision": "0.00000001", "minOrderQty": i.lot,
                                        "maxOrderQty": "1000", "minOrderAmt": "5", "maxOrderAmt": "8000000"},
                      "priceFilter": {"tickSize": i.tick}})
            return d
        d.update({"contractType": _CONTRACT[i.kind], "settleCoin": i.base if i.kind == "inverse" else i.quote,
                  "priceScale": str(i.px_dp if i.px_dp is not None else len(i.tick.split(".")[-1])),
                  "priceFilter": {"minPrice": i.tick, "maxPrice": "1999999.80", "tickSize": i.tick},
                  "lotSizeFilter": self._lot_size(i), "fundingInterval": 480})
        return d

    @staticmethod
    def _lot_size(i: Instrument) -> dict[str, str]:
        """A derivative's order sizes in its own unit: base coin on linear (BY-DOC BTCUSDT "1190.000", step 0.001),
        whole USD contracts on inverse (qtyStep 1), so the same order value is a plausible count of either.
        minNotionalValue is BY-DOC's 5 USDT on linear; for inverse (undocumented) ours: one contract's worth."""
        lot_value = float(i.lot) * (float(i.ct_val or 1) if i.kind == "inverse" else i.price)
        lots = max(1, round(_MAX_ORDER_VALUE / lot_value))
        return {"maxOrderQty": i.qty(lots), "minOrderQty": i.lot, "qtyStep": i.lot,
                "postOnlyMaxOrderQty": i.qty(lots), "maxMktOrderQty": i.qty(max(1, round(lots * _MAX_MARKET_SHARE))),
                "minNotionalValue": "5" if i.kind == "linear" else i.qty(1)}
