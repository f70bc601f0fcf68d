"""OKX v5 public wire format (exchanges.md §3; OKX-DOC 2026-07-07, checksum deprecation 2026-05-21).

``books``: snapshot (prevSeqId -1) then updates chained prevSeqId == last seqId; an idle book sends
an empty update with prevSeqId == seqId; a maintenance reset sends seqId < prevSeqId. checksum is 0
(current OKX) or, with okx_checksum="crc32", the legacy signed CRC32 of the top 25 interleaved levels.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mdengine.sim.formats.base import Out, Reply, Session, Venue, conn_id, now_ms
from mdengine.sim.market import BookModel, Step, checksum_string, crc32_signed

_CHANNELS = {"books": 400, "books5": 5, "bbo-tbt": 1, "trades": 0}
_INST_TYPE = {"spot": "SPOT", "linear": "SWAP", "inverse": "SWAP"}


def _orders(lots: int) -> str:
    return str(1 + lots % 5)  # stable per level, so snapshot and updates agree


class OkxSession(Session):
    def __init__(self, venue: OkxVenue, path: str, query: dict[str, str]) -> None:
        super().__init__(venue, path, query)
        self.ov = venue
        self.conn_id = conn_id()
        self.subs: set[tuple[str, str]] = set()  # (channel, instId)
        self.last_seq: dict[str, int] = {}  # instId -> last seqId sent on books
        self.last_sent: dict[str, float] = {}

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
            if ch not in _CHANNELS or inst not in self.ov.models:
                out.append(self._err(rid, "60018", f"Wrong URL or channel:{ch},instId:{inst} doesn't exist. "
                                     "Please use the correct URL, channel and parameters referring to API document."))
                continue
            if op == "subscribe" and self.refuse(inst):
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
        self.keys = {i for _, i in self.subs}
        return Reply(out)

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
        return out

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

    def seq_of(self, model: BookModel) -> int:
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
        if path not in ("/api/v5/market/books", "/api/v5/market/trades"):
            return None
        model = self.models.get(q.get("instId", ""))
        if model is None:
            return 200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []}
        if path.endswith("books"):
            bids, asks = model.top(min(400, int(q.get("sz", 1))))
            return 200, {"code": "0", "msg": "", "data": [{"asks": self.lv(asks), "bids": self.lv(bids),
                                                           "ts": str(now_ms())}]}
        ts = list(model.trades)[-int(q.get("limit", 100)) :][::-1]
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
