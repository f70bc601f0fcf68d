"""OKX v5 public wire format (exchanges.md §3; OKX-DOC 2026-07-07, checksum deprecation 2026-05-21).

``books``: snapshot (prevSeqId -1) then updates chained prevSeqId == last seqId; an idle book sends
an empty update with prevSeqId == seqId; a maintenance reset sends seqId < prevSeqId. checksum is 0
(current OKX) or, with okx_checksum="crc32", the legacy signed CRC32 of the top 25 interleaved levels.
Perpetual channels of SWAP instruments, from the shared perp model (formats/perp.py), each pushed on subscribe and
then as OKX-DOC says: ``mark-price`` every 200 ms when it changed (else every 10 s), ``index-tickers`` (instId: the
index, e.g. BTC-USDT) every 100 ms when it changed, ``funding-rate`` every 30 s, ``open-interest`` every 3 s when it
changed, and ``liquidation-orders`` (by instType) as liquidations happen.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mdengine.sim.formats.base import Out, Reply, Session, Venue, conn_id, int_param, now_ms
from mdengine.sim.formats.perp import PerpModel, PerpModels, model_now
from mdengine.sim.market import BookModel, Step, checksum_string, crc32_signed

_CHANNELS = {"books": 400, "books5": 5, "bbo-tbt": 1, "trades": 0}
_INST_TYPE = {"spot": "SPOT", "linear": "SWAP", "inverse": "SWAP"}
# perp channel -> (least ms between pushes when the value changed, most ms between pushes when it did not)
_PERP_EVERY = {"mark-price": (200, 10_000), "index-tickers": (100, 60_000), "funding-rate": (30_000, 30_000),
               "open-interest": (3_000, 3_000_000)}


def _orders(lots: int) -> str:
    return str(1 + lots % 5)  # stable per level, so snapshot and updates agree


# REST path -> the perp channel whose data it answers
_PERP_REST = {"/api/v5/public/mark-price": "mark-price", "/api/v5/market/index-tickers": "index-tickers",
              "/api/v5/public/funding-rate": "funding-rate", "/api/v5/public/open-interest": "open-interest"}

class OkxSession(Session):
    def __init__(self, venue: OkxVenue, path: str, query: dict[str, str]) -> None:
        super().__init__(venue, path, query)
        self.ov = venue
        self.conn_id = conn_id()
        self.subs: set[tuple[str, str]] = set()  # (channel, instId)
        self.last_seq: dict[str, int] = {}  # instId -> last seqId sent on books
        self.last_sent: dict[str, float] = {}
        self.perp_sent: dict[tuple[str, str], tuple[int, Any]] = {}  # (channel, instId) -> (ms, data last pushed)
        self.liquidations_seen: dict[str, int] = {}  # model key -> last liquidation seq pushed

    def _err(self, rid: Any, code: str, msg: str) -> Out:
        d = {"id": rid} if rid is not None else {}
        d.update({"event": "error", "code": code, "msg": msg, "connId": self.conn_id})
        return Out(d)

    def handle(self, text: str) -> Reply:
        self.last_in = time.monotonic()
        if text == "ping":
            self.last_ping = self.last_in
            return Reply([Out("pong")], ping=True)
        try:
            req = json.loads(text)
        except ValueError:
            return Reply([self._err(None, "60012", f"Invalid request: {text}")])
        if not isinstance(req, dict):
            return Reply([self._err(None, "60012", f"Invalid request: {text}")])
        rid, op, args = req.get("id"), req.get("op"), req.get("args")
        if op not in ("subscribe", "unsubscribe"):
            return Reply([self._err(rid, "60019", f"Invalid op: op:{op}")])
        if not isinstance(args, list) or not args or not all(isinstance(a, dict) for a in args):
            return Reply([self._err(rid, "60012", f"Invalid request: {text}")])
        out: list[Out] = []
        for a in args:
            ch, inst = a.get("channel"), a.get("instId")
            if ch in _PERP_EVERY or ch == "liquidation-orders":
                out += self._perp_request(rid, op, ch, a)
                continue
            if ch not in _CHANNELS or inst not in self.ov.models:
                out.append(self._err(rid, "60018", f"Wrong URL or channel:{ch},instId:{inst} doesn't exist. "
                                     "Please use the correct URL, channel and parameters referring to API document."))
                continue
            if op == "subscribe" and self.refuse(inst, ch):
                out.append(self._err(rid, "60018", f"Wrong URL or channel:{ch},instId:{inst} doesn't exist."))
                continue
            ack = {"id": rid} if rid is not None else {}
            ack.update({"event": op, "arg": {"channel": ch, "instId": inst}, "connId": self.conn_id})
            out.append(Out(ack))
            if op == "unsubscribe":
                self.subs.discard((ch, inst))
                continue
            self.subs.add((ch, inst))
            self.subscribed_any = True
            if ch == "books":
                out.append(Out(self.ov.books_snapshot(self.ov.models[inst]), inst, "snapshot"))
                self.last_seq[inst] = self.ov.models[inst].update_id
        self._rekey()
        return Reply(out)

    def _rekey(self) -> None:
        keys = set()
        for ch, i in self.subs:
            if ch == "liquidation-orders":
                keys |= {k for k, m in self.ov.models.items() if _INST_TYPE[m.inst.kind] == i}
            elif ch == "index-tickers":
                keys |= set(self.ov.index_users(i))
            else:
                keys.add(i)
        self.keys = keys

    def _perp_request(self, rid: Any, op: str, ch: str, a: dict) -> list[Out]:
        """(Un)subscribe one perp channel; a new subscription gets its first push at once."""
        ident = a.get("instType") if ch == "liquidation-orders" else a.get("instId")
        if ch == "liquidation-orders":
            ok = ident in ("SWAP", "FUTURES")
        elif ch == "index-tickers":
            ok = bool(self.ov.index_users(ident))
        else:
            m = self.ov.models.get(ident)
            ok = m is not None and m.inst.kind != "spot" and not (op == "subscribe" and self.refuse(ident, ch))
        if not ok:
            return [self._err(rid, "60018", f"Wrong URL or channel:{ch},instId:{ident} doesn't exist. "
                              "Please use the correct URL, channel and parameters referring to API document.")]
        key = "instType" if ch == "liquidation-orders" else "instId"
        ack = {"id": rid} if rid is not None else {}
        ack.update({"event": op, "arg": {"channel": ch, key: ident}, "connId": self.conn_id})
        out = [Out(ack)]
        if op == "unsubscribe":
            self.subs.discard((ch, ident))
            self.perp_sent.pop((ch, ident), None)
            return out
        self.subs.add((ch, ident))
        self.subscribed_any = True
        if ch == "liquidation-orders":
            for k in self.ov.models:
                m = self.ov.models[k]
                if m.inst.kind != "spot":
                    self.liquidations_seen.setdefault(k, self.ov.perps.of(m, model_now(m))._liq_seq)  # noqa: SLF001
            return out
        users = [ident] if ch != "index-tickers" else self.ov.index_users(ident)
        model = self.ov.models[users[0]]
        now = model_now(model)
        data = self.ov.perp_data(ch, ident, model, self.ov.perps.of(model, now), now)
        self.perp_sent[(ch, ident)] = (now, data)
        out.append(Out({"arg": {"channel": ch, "instId": ident}, "data": [data]}, users[0], "perp"))
        return out

    def _perp_step(self, key: str, model: BookModel, st: Step) -> list[Out]:
        if model.inst.kind == "spot":
            return []
        perp = self.ov.perps.of(model, st.ts)
        out: list[Out] = []
        index = key.rsplit("-", 1)[0]
        for ch, ident in (("mark-price", key), ("index-tickers", index), ("funding-rate", key),
                          ("open-interest", key)):
            if (ch, ident) not in self.subs:
                continue
            sent_ms, sent = self.perp_sent.get((ch, ident), (0, None))
            least, most = _PERP_EVERY[ch]
            data = self.ov.perp_data(ch, ident, model, perp, st.ts)
            same = sent is not None and {k: v for k, v in sent.items() if k != "ts"} == \
                {k: v for k, v in data.items() if k != "ts"}
            if 0 <= st.ts - sent_ms < (most if same else least):  # negative: the model runs on its own clock
                continue
            self.perp_sent[(ch, ident)] = (st.ts, data)
            out.append(Out({"arg": {"channel": ch, "instId": ident}, "data": [data]}, key, "perp"))
        inst_type = _INST_TYPE[model.inst.kind]
        if ("liquidation-orders", inst_type) in self.subs:
            new = perp.new_liquidations(self.liquidations_seen.get(key, 0))
            if new:
                self.liquidations_seen[key] = new[-1].seq
                out.append(Out({"arg": {"channel": "liquidation-orders", "instType": inst_type},
                                "data": [self.ov.liquidation(model, perp, new)]}, key, "perp"))
        return out

    def step(self, key: str, model: BookModel, st: Step) -> list[Out]:
        out: list[Out] = []
        for ch in ("bbo-tbt", "books", "books5", "trades"):  # OKX's fixed push order
            if (ch, key) not in self.subs:
                continue
            arg = {"channel": ch, "instId": key}
            if ch == "books":
                out.append(Out(self.ov.books_update(model, st), key, "diff"))
                self.last_seq[key] = st.last_id
            elif ch == "trades":
                out += [Out({"arg": arg, "data": [self.ov.trade(model, t, st)]}, key, "trade") for t in st.trades]
            else:
                n = _CHANNELS[ch]
                bids, asks = model.top(n)
                d: dict[str, Any] = {"asks": self.ov.lv(asks), "bids": self.ov.lv(bids)}
                if ch == "books5":
                    d["instId"] = key
                d.update({"ts": str(st.ts), "seqId": st.last_id})
                out.append(Out({"arg": arg, "data": [d]}, key, "snapshot"))
            self.last_sent[key] = time.monotonic()
        return out + self._perp_step(key, model, st)

    def idle(self, now: float) -> list[Out]:
        out = []
        for ch, inst in self.subs:
            if ch == "books" and now - self.last_sent.get(inst, now) >= self.ov.cfg.okx_keepalive:
                out.append(Out(self.ov.keepalive(inst, self.last_seq[inst]), inst, "diff"))
                self.last_sent[inst] = now
        return out

    def idle_close(self, now: float, last_out: float) -> tuple[int, str] | None:
        t = self.ov.cfg.okx_idle_timeout
        if now - max(last_out, self.opened) > t and (not self.subs or now - last_out > t):
            return 4004, "No data received in 30s."
        return None


class OkxVenue(Venue):
    name = "okx"

    def __init__(self, instruments: list[Any], seed: int, *a: Any, **kw: Any) -> None:
        super().__init__(instruments, seed, *a, **kw)
        self.perps = PerpModels(seed)

    def index_users(self, index: Any) -> list[str]:
        """Model keys of the derivatives whose index is `index` (BTC-USDT: BTC-USDT-SWAP, ...)."""
        return [k for k, m in self.models.items() if m.inst.kind != "spot" and k.rsplit("-", 1)[0] == index]

    def perp_data(self, ch: str, ident: str, model: BookModel, perp: PerpModel, ts: int | None = None) -> dict:
        ts = ts or now_ms()
        if ch == "mark-price":
            return {"instType": "SWAP", "instId": ident, "markPx": perp.price_text(perp.mark()), "ts": str(ts)}
        if ch == "index-tickers":
            px = perp.price_text(perp.index())
            return {"instId": ident, "idxPx": px, "high24h": px, "low24h": px, "open24h": px, "sodUtc0": px,
                    "sodUtc8": px, "ts": str(ts)}
        if ch == "funding-rate":
            return {"formulaType": "withRate", "fundingRate": f"{perp.funding_rate:.16f}",
                    "fundingTime": str(perp.next_funding), "impactValue": "", "instId": ident, "instType": "SWAP",
                    "interestRate": "0.0001", "method": "current_period", "maxFundingRate": "0.00375",
                    "minFundingRate": "-0.00375", "nextFundingRate": "",
                    "nextFundingTime": str(perp.next_funding + perp.period), "premium": "0.0001",
                    "settFundingRate": f"{perp.funding_rate:.16f}", "settState": "settled", "ts": str(ts)}
        oi = perp.open_interest_lots
        ccy = oi * float(model.inst.ct_val or 1)
        return {"instId": ident, "instType": "SWAP", "oi": str(oi), "oiCcy": f"{ccy:g}",
                "oiUsd": f"{ccy * perp.mark():.2f}", "ts": str(ts)}

    def liquidation(self, model: BookModel, perp: PerpModel, new: list) -> dict[str, Any]:
        index = model.inst.native.rsplit("-", 1)[0]
        details = [{"bkLoss": "0", "bkPx": perp.price_text(x.price), "ccy": "", "posSide": "net",
                    "side": "sell" if x.sell else "buy", "sz": str(x.lots), "ts": str(x.ts)} for x in new]
        return {"details": details, "instFamily": index, "instId": model.inst.native, "instType": "SWAP",
                "uly": index}

    def session(self, path: str, query: dict[str, str]) -> Session | None:
        return OkxSession(self, path, query) if path in ("/ws/v5/public", "/ws/v5/business") else None

    def lv(self, levels: list[tuple[str, str]]) -> list[list[str]]:
        return [[p, q, "0", _orders(int(float(q) * 1e8))] for p, q in levels]

    def checksum(self, model: BookModel) -> int:
        if self.cfg.okx_checksum != "crc32":
            return 0
        bids, asks = model.top(25)
        return crc32_signed(checksum_string([list(b) for b in bids], [list(a) for a in asks]))

    def _books(self, model: BookModel, action: str, bids: list, asks: list, prev: int, seq: int, ts: int) -> dict:
        return {"arg": {"channel": "books", "instId": model.inst.native}, "action": action,
                "data": [{"asks": self.lv(asks), "bids": self.lv(bids), "ts": str(ts),
                          "checksum": self.checksum(model), "prevSeqId": prev, "seqId": seq}]}

    def books_snapshot(self, model: BookModel) -> dict:
        bids, asks = model.top(400)
        return self._books(model, "snapshot", bids, asks, -1, model.update_id, now_ms())

    def books_update(self, model: BookModel, st: Step) -> dict:
        return self._books(model, "update", model.render(st.bids, True), model.render(st.asks, False),
                           st.prev_id, st.last_id, st.ts)

    def keepalive(self, inst: str, seq: int) -> dict:
        return self._books(self.models[inst], "update", [], [], seq, seq, now_ms())

    def trade(self, model: BookModel, t: Any, st: Step) -> dict[str, Any]:
        return {"instId": model.inst.native, "tradeId": str(t.last_id), "px": model.inst.px(t.ticks),
                "sz": model.inst.qty(t.lots), "side": "buy" if t.taker_buy else "sell", "ts": str(t.ts),
                "count": str(len(t.fills)), "source": "0", "seqId": st.last_id}

    def seq_of(self, model: BookModel, depth: int = 25) -> int:
        return model.update_id

    def level(self, model: BookModel, ticks: int, lots: int) -> list[Any]:
        return [model.inst.px(ticks), model.inst.qty(lots), "0", "1"]

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

    def shutdown_notice(self, session: Session) -> list[Out]:
        cid = getattr(session, "conn_id", "")
        return [Out({"event": "notice", "code": "64008",
                     "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
                     "connId": cid})]

    def bad_param(self, name: str, value: str) -> tuple[int, Any]:
        """51000 "Parameter {param0} error", HTTP 400 (OKX-DOC error codes)."""
        return 400, {"code": "51000", "msg": f"Parameter {name} error", "data": []}

    def too_many(self) -> Any:
        return {"code": "50011", "msg": "Too Many Requests", "data": []}

    def rest(self, path: str, q: dict[str, str]) -> tuple[int, Any] | None:
        if path == "/api/v5/public/instruments":
            it = q.get("instType", "")
            if it not in ("SPOT", "SWAP", "FUTURES", "OPTION", "MARGIN"):
                return 400, {"code": "51000", "msg": "Parameter instType error", "data": []}
            data = [self.instrument(i) for i in self.instruments.values() if _INST_TYPE[i.kind] == it]
            if q.get("instId"):
                data = [d for d in data if d["instId"] == q["instId"]]
            return 200, {"code": "0", "msg": "", "data": data}
        perp = _PERP_REST.get(path)
        if perp is not None:  # the perp channels' data, from the same model (OKX-DOC public data: same fields)
            ident = q.get("instId", "")
            model = self.models.get(ident) if perp != "index-tickers" else next(
                (self.models[k] for k in self.index_users(ident)), None)
            if model is None or model.inst.kind == "spot":
                return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
            return 200, {"code": "0", "msg": "", "data": [self.perp_data(perp, ident, model,
                                                                          self.perps.of(model, model_now(model)))]}
        if path not in ("/api/v5/market/books", "/api/v5/market/trades"):
            return None
        model = self.models.get(q.get("instId", ""))
        if model is None:
            return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
        if path.endswith("books"):
            bids, asks = model.top(int_param(q, "sz", 1, 400))
            return 200, {"code": "0", "msg": "", "data": [{"asks": self.lv(asks), "bids": self.lv(bids),
                                                           "ts": str(now_ms())}]}
        ts = list(model.trades)[::-1][: int_param(q, "limit", 100, 500)]
        data = [{"instId": model.inst.native, "side": "buy" if t.taker_buy else "sell", "sz": model.inst.qty(t.lots),
                 "px": model.inst.px(t.ticks), "source": "0", "tradeId": str(t.last_id), "ts": str(t.ts)} for t in ts]
        return 200, {"code": "0", "msg": "", "data": data}

    def instrument(self, i: Any) -> dict[str, Any]:
        spot = i.kind == "spot"
        return {"instType": _INST_TYPE[i.kind], "instId": i.native, "uly": "" if spot else i.native.rsplit("-", 1)[0],
                "instFamily": "" if spot else i.native.rsplit("-", 1)[0],
                "baseCcy": i.base if spot else "", "quoteCcy": i.quote if spot else "",
                "settleCcy": "" if spot else (i.base if i.kind == "inverse" else i.quote),
                "ctVal": i.ct_val, "ctMult": "" if spot else "1",
                "ctValCcy": "" if spot else (i.quote if i.kind == "inverse" else i.base),
                "ctType": "" if spot else i.kind, "tickSz": i.tick, "lotSz": i.lot, "minSz": i.lot,
                "state": "live", "listTime": "1606468572000", "expTime": "", "lever": "" if spot else "100"}
