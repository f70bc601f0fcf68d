"""Bitget v2 public wire format (exchanges.md §5; BG-DOC 2024-2026, re-checked 2026: v2 books carry
``seq`` and no ``pseq``; integrity is the signed CRC32 checksum of the top 25 interleaved levels).

Model keys are "instType/SYMBOL" (SPOT/BTCUSDT, USDT-FUTURES/BTCUSDT, COIN-FUTURES/BTCUSD).
``books``: snapshot then updates, seq +1 per update, checksum on both; books1/5/15: snapshots
with checksum 0. ``trade``: a snapshot of recent trades first, newest-first, then updates.
``ticker`` of futures: a snapshot on subscribe, then one every 200 ms while it changes (BG-DOC: 100-300 ms), with
markPrice, indexPrice, fundingRate, nextFundingTime and holdingAmount from the shared perp model (formats/perp.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from mdengine.sim.formats.base import Out, Reply, Session, Venue, int_param, now_ms
from mdengine.sim.formats.perp import PerpModel, PerpModels, model_now
from mdengine.sim.market import BookModel, Instrument, Step, checksum_string, crc32_signed

_INST_TYPE = {"spot": "SPOT", "linear": "USDT-FUTURES", "inverse": "COIN-FUTURES"}
_BOOKS = {"books": 0, "books1": 1, "books5": 5, "books15": 15}


def _lv(levels: list[tuple[str, str]]) -> list[list[str]]:
    return [[p, q] for p, q in levels]


class BitgetSession(Session):
    def __init__(self, venue: BitgetVenue, path: str, query: dict[str, str]) -> None:
        super().__init__(venue, path, query)
        self.gv = venue
        self.subs: set[tuple[str, str]] = set()  # (channel, key)
        self.window: list[float] = []
        self.ticker_sent: dict[str, tuple[int, Any]] = {}  # key -> (ms, perp fields last pushed)

    def handle(self, text: str) -> Reply:
        now = time.monotonic()
        self.last_in = now
        self.window = [t for t in self.window if now - t < 1.0] + [now]
        if len(self.window) > self.gv.cfg.bitget_msg_rate:
            return Reply([Out({"event": "error", "code": 30007, "msg": "Request over limit,connection close"})],
                         close=(1008, "over limit"))
        if text == "ping":
            self.last_ping = now
            return Reply([Out("pong")], ping=True)
        try:
            req = json.loads(text)
            op, args = req.get("op"), req.get("args")
        except (ValueError, AttributeError):
            return Reply([Out({"event": "error", "code": 30002, "msg": "illegal request"})])
        if op not in ("subscribe", "unsubscribe"):
            return Reply([Out({"event": "error", "code": 30003, "msg": "invalid op"})])
        if not isinstance(args, list) or not all(isinstance(a, dict) for a in args):
            return Reply([Out({"event": "error", "code": 30016, "msg": "param error"})])
        out: list[Out] = []
        for a in args:
            it, ch, inst = a.get("instType"), a.get("channel"), a.get("instId")
            key = f"{it}/{inst}"
            arg = {"instType": it, "channel": ch, "instId": inst}
            futures = key in self.gv.models and self.gv.models[key].inst.kind != "spot"
            if (ch not in _BOOKS and ch != "trade" and not (ch == "ticker" and futures)) or key not in self.gv.models \
                    or (op == "subscribe" and self.refuse(key, ch)):
                out.append(Out({"event": "error", "arg": arg, "code": 30001,
                                "msg": f"instType:{it},channel:{ch},instId:{inst} doesn't exist"}))
                continue
            out.append(Out({"event": op, "arg": arg}))
            if op == "unsubscribe":
                self.subs.discard((ch, key))
                continue
            self.subs.add((ch, key))
            self.subscribed_any = True
            model = self.gv.models[key]
            if ch == "ticker":
                out.append(Out(self._ticker(key, model, model_now(model), "snapshot"), key, "perp"))
            elif ch == "trade":
                recent = list(model.trades)[::-1][:50]
                out.append(Out(self.gv.trades(key, model, recent, "snapshot"), key, "trade"))
            else:
                out.append(Out(self.gv.book(key, ch, model, "snapshot", *model.top(_BOOKS[ch] or 10**6),
                                            model.book_seq), key, "snapshot"))
        self.keys = {k for _, k in self.subs}
        return Reply(out)

    def _ticker(self, key: str, model: BookModel, ts: int, action: str) -> dict:
        perp = self.gv.perps.of(model, ts)
        data = self.gv.ticker(model, perp, ts)
        self.ticker_sent[key] = (ts, {k: v for k, v in data.items() if k != "ts"})
        return {"action": action, "arg": self.gv._arg(key, "ticker"), "data": [data], "ts": ts}  # noqa: SLF001

    def step(self, key: str, model: BookModel, st: Step) -> list[Out]:
        out: list[Out] = []
        if ("ticker", key) in self.subs:
            sent_ms, sent = self.ticker_sent.get(key, (0, None))
            if not 0 <= st.ts - sent_ms < 200:  # negative: the model runs on its own clock
                now = self.gv.ticker(model, self.gv.perps.of(model, st.ts), st.ts)
                if {k: v for k, v in now.items() if k != "ts"} != sent:
                    out.append(Out(self._ticker(key, model, st.ts, "snapshot"), key, "perp"))
        for ch in ("books", "books1", "books5", "books15", "trade"):
            if (ch, key) not in self.subs:
                continue
            if ch == "trade":
                if st.trades:
                    out.append(Out(self.gv.trades(key, model, st.trades[::-1], "update"), key, "trade"))
            elif ch == "books" and not st.reset:
                b, a = model.render(st.bids, True), model.render(st.asks, False)
                out.append(Out(self.gv.book(key, ch, model, "update", b, a, st.book_seq), key, "diff"))
            else:
                typ = "snapshot"
                out.append(Out(self.gv.book(key, ch, model, typ, *model.top(_BOOKS[ch] or 10**6), st.book_seq),
                               key, "snapshot"))
        return out

    def idle_close(self, now: float, last_out: float) -> tuple[int, str] | None:
        if now - max(self.last_ping, self.opened) > self.gv.cfg.bitget_idle_timeout:
            return 1000, "ping timeout"  # close code (unverified)
        return None


class BitgetVenue(Venue):
    name = "bitget"

    def __init__(self, instruments: list[Instrument], seed: int, *a: Any, **kw: Any) -> None:
        super().__init__(instruments, seed, *a, **kw)
        self.perps = PerpModels(seed)

    def ticker(self, model: BookModel, perp: PerpModel, ts: int) -> dict[str, Any]:
        """A futures ticker push's data (v2 public ticker): bid/ask from the book, perp fields from the model."""
        (b, bq), (a, aq) = model.top(1)[0][0], model.top(1)[1][0]
        inst = model.inst
        return {"instId": inst.native, "lastPr": b, "bidPr": b, "askPr": a, "bidSz": bq, "askSz": aq,
                "open24h": b, "high24h": a, "low24h": b, "change24h": "0", "fundingRate": f"{perp.funding_rate:.6f}",
                "nextFundingTime": str(perp.next_funding), "markPrice": perp.price_text(perp.mark()),
                "indexPrice": perp.price_text(perp.index()), "holdingAmount": inst.qty(perp.open_interest_lots),
                "baseVolume": "0", "quoteVolume": "0", "openUtc": b, "symbolType": 1, "symbol": inst.native,
                "deliveryPrice": "0", "ts": str(ts)}

    @staticmethod
    def key(inst: Instrument) -> str:
        return f"{_INST_TYPE[inst.kind]}/{inst.native}"

    def seq_of(self, model: BookModel, depth: int = 25) -> int:
        return model.book_seq

    def session(self, path: str, query: dict[str, str]) -> Session | None:
        return BitgetSession(self, path, query) if path == "/v2/ws/public" else None

    def _arg(self, key: str, ch: str) -> dict[str, str]:
        it, inst = key.split("/")
        return {"instType": it, "channel": ch, "instId": inst}

    def book(self, key: str, ch: str, model: BookModel, action: str, bids: Any, asks: Any, seq: int) -> dict:
        ts = now_ms()
        if ch == "books":
            tb, ta = model.top(25)
            cs = crc32_signed(checksum_string([list(x) for x in tb], [list(x) for x in ta]))
        else:
            cs = 0
        data = {"asks": _lv(asks), "bids": _lv(bids), "checksum": cs, "seq": seq, "ts": str(ts)}
        return {"action": action, "arg": self._arg(key, ch), "data": [data], "ts": ts}

    def trades(self, key: str, model: BookModel, trades: list, action: str) -> dict:
        inst = model.inst
        data = [{"ts": str(t.ts), "price": inst.px(t.ticks), "size": inst.qty(t.lots),
                 "side": "buy" if t.taker_buy else "sell", "tradeId": str(t.last_id)} for t in trades]
        return {"action": action, "arg": self._arg(key, "trade"), "data": data, "ts": now_ms()}

    def book_lists(self, obj: Any) -> tuple[list, list] | None:
        try:
            d = obj["data"][0]
            return d["bids"], d["asks"]
        except (KeyError, IndexError, TypeError):
            return None

    def corrupt_checksum(self, obj: Any) -> bool:
        try:
            d = obj["data"][0]
            d["checksum"] = (d["checksum"] ^ 0x5A5A5A5A) or 1
            return True
        except (KeyError, IndexError, TypeError):
            return False

    def too_many(self) -> Any:
        return {"code": "429", "msg": "Too Many Requests", "requestTime": now_ms(), "data": None}

    def bad_param(self, name: str, value: str) -> tuple[int, Any]:
        """Bitget documents no answer to a parameter it cannot read: HTTP 400 in its envelope; code and text ours."""
        return 400, {"code": "400", "msg": f"Parameter {name} error: {value!r} is not a whole number",
                     "requestTime": now_ms(), "data": None}

    def _ok(self, data: Any) -> tuple[int, Any]:
        return 200, {"code": "00000", "msg": "success", "requestTime": now_ms(), "data": data}

    def rest(self, path: str, q: dict[str, str]) -> tuple[int, Any] | None:
        if path == "/api/v2/spot/public/symbols":
            return self._ok([self._spot(i) for i in self.instruments.values() if i.kind == "spot"
                             and q.get("symbol", i.native) == i.native])
        if path == "/api/v2/mix/market/contracts":
            pt = q.get("productType", "").upper()
            return self._ok([self._contract(i) for i in self.instruments.values() if _INST_TYPE[i.kind] == pt
                             and q.get("symbol", i.native) == i.native])
        if path in ("/api/v2/mix/market/ticker", "/api/v2/mix/market/funding-time"):
            return self._perp_rest(path, q)
        spot = path.startswith("/api/v2/spot/market/")
        if path not in ("/api/v2/spot/market/orderbook", "/api/v2/spot/market/fills", "/api/v2/mix/market/merge-depth",
                        "/api/v2/mix/market/fills"):
            return None
        it = "SPOT" if spot else q.get("productType", "").upper()
        model = self.models.get(f"{it}/{q.get('symbol', '')}")
        if model is None:
            return 400, {"code": "40034", "msg": "Parameter does not exist", "requestTime": now_ms(), "data": None}
        if path.endswith("fills"):
            rows = [{"symbol": model.inst.native, "tradeId": str(t.last_id), "side": "buy" if t.taker_buy else "sell",
                     "price": model.inst.px(t.ticks), "size": model.inst.qty(t.lots), "ts": str(t.ts)}
                    for t in list(model.trades)[::-1][: int_param(q, "limit", 100)]]
            return self._ok(rows)
        limit = 10**6 if q.get("limit") == "max" else int_param(q, "limit", 150 if spot else 100)
        bids, asks = model.top(limit)
        if spot:
            return self._ok({"asks": _lv(asks), "bids": _lv(bids), "ts": str(now_ms())})
        # mix merge-depth returns numbers in the doc example (exchanges.md §5.6)
        num = [[[float(p), float(s)] for p, s in side] for side in (asks, bids)]
        return self._ok({"asks": num[0], "bids": num[1], "precision": "scale0", "scale": model.inst.tick,
                          "isMaxPrecision": "NO", "ts": str(now_ms())})

    def _perp_rest(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        """"Get Ticker" and "Get Next Funding Time": the ticker channel's values, from the same model."""
        model = self.models.get(f"{q.get('productType', '').upper()}/{q.get('symbol', '')}")
        if model is None:
            return 400, {"code": "40034", "msg": "Parameter does not exist", "requestTime": now_ms(), "data": None}
        perp = self.perps.of(model, model_now(model))
        t = self.ticker(model, perp, model_now(model))
        if path.endswith("funding-time"):
            return self._ok([{"symbol": t["symbol"], "nextFundingTime": t["nextFundingTime"], "ratePeriod": "8"}])
        row = {k: v for k, v in t.items() if k not in ("instId", "nextFundingTime", "symbolType", "deliveryPrice")}
        return self._ok([{**row, "ts": str(row["ts"]), "usdtVolume": "0", "deliveryStatus": ""}])

    def _spot(self, i: Instrument) -> dict[str, Any]:
        return {"symbol": i.native, "baseCoin": i.base, "quoteCoin": i.quote, "minTradeAmount": "0",
                "maxTradeAmount": "900000000000000000000", "takerFeeRate": "0.001", "makerFeeRate": "0.001",
                "pricePrecision": str(_dp(i.tick)), "quantityPrecision": str(_dp(i.lot)), "quotePrecision": "8",
                "status": "online", "minTradeUSDT": "1"}

    def _contract(self, i: Instrument) -> dict[str, Any]:
        dp = _dp(i.tick)
        end = i.tick.replace(".", "").lstrip("0") or "1"
        return {"symbol": i.native, "baseCoin": i.base, "quoteCoin": i.quote, "pricePlace": str(dp),
                "priceEndStep": end, "volumePlace": str(_dp(i.lot)), "sizeMultiplier": i.lot, "minTradeNum": i.lot,
                "symbolType": "perpetual", "symbolStatus": "normal", "deliveryTime": "",
                "supportMarginCoins": [i.base if i.kind == "inverse" else i.quote]}


def _dp(step: str) -> int:
    return len(step.split(".")[1]) if "." in step else 0
