"""Numbers that break mdengine.limits' rule (NaN, inf, negative, zero or absurd prices and quantities) on every
adapter: the frame is malformed (a ProtocolError or a BookInvalid "malformed"), the symbol's book is resynced, and
nothing of it is published (no BookChanged, no TradesReceived). The C lane's side of the rule is in
tests/test_fastlane.py (side-by-side replays); the book functions' in tests/test_book_speedups.py."""

from __future__ import annotations

import json

import pytest

from mdengine.events import BookChanged, BookInvalid, FetchRest, ProtocolError, Send, TradesReceived
from mdengine.exchanges.binance import LIVE as BN_LIVE
from mdengine.exchanges.binance import UNSYNCED as BN_UNSYNCED
from mdengine.exchanges.binance import BinanceAdapter
from mdengine.exchanges.bitget import BitgetAdapter
from mdengine.exchanges.bybit import BybitAdapter
from mdengine.exchanges.okx import OkxAdapter
from mdengine.limits import PRICE_MAX, QTY_MAX, sane, trade_numbers
from mdengine.store.layout import MarketKind
from mdengine.symbols import Instrument, InstrumentIndex

BAD_QTY = ["-5", "1e400", "-1e400", "nan", "inf", "2e15", "-0.001"]
BAD_PRICE = ["-1", "0", "-0", "1e400", "nan", "2e12", "1e13"]
BAD_LEVELS = [["100.5", q] for q in BAD_QTY] + [[p, "1"] for p in BAD_PRICE]


def names(events) -> list[str]:
    return [type(e).__name__ for e in events]


def assert_malformed(events, key) -> None:
    """The verdict on a frame with a bad number: reported as malformed for `key`, nothing published."""
    assert not [e for e in events if isinstance(e, BookChanged | TradesReceived)], events
    bad = [e for e in events if (isinstance(e, ProtocolError) and e.malformed)
           or (isinstance(e, BookInvalid) and e.kind == "malformed")]
    assert bad and all(e.key == key for e in bad), events
    assert any("not a valid price and quantity" in (getattr(e, "message", None) or getattr(e, "detail", ""))
               for e in bad), events


def test_the_rule():
    assert sane(1e-12, 0.0) and sane(PRICE_MAX, QTY_MAX) and sane(60000.5, 1e12)
    for p, q in [(0.0, 1.0), (-1.0, 1.0), (1.0, -1e-9), (float("nan"), 1.0), (1.0, float("nan")),
                 (float("inf"), 1.0), (1.0, float("inf")), (PRICE_MAX * 1.01, 1.0), (1.0, QTY_MAX * 1.01)]:
        assert not sane(p, q)
    assert trade_numbers("100.5", "0.001") == (100.5, 0.001)
    for p, q in [("-5", "1"), ("100", "1e400"), ("nan", "1"), ("0", "1")]:
        with pytest.raises(ValueError, match="not a valid price and quantity"):
            trade_numbers(p, q)


# ----------------------------------------------------------------------------- Binance
BN_BTC = Instrument("binance", "spot", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT")


def bn_diff(U: int, u: int, b=(("100.0", "1"),), a=(("101.0", "1"),)) -> str:
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1_700_000_000_000,
                       "s": "BTCUSDT", "U": U, "u": u, "b": [list(x) for x in b], "a": [list(x) for x in a]}})


def bn_snapshot(last: int, bids=(("99.0", "5"),), asks=(("102.0", "5"),)) -> bytes:
    return json.dumps({"lastUpdateId": last, "bids": [list(x) for x in bids], "asks": [list(x) for x in asks]}
                      ).encode()


def bn_live() -> tuple[BinanceAdapter, str]:
    a = BinanceAdapter(InstrumentIndex([BN_BTC]))
    conn = a.subscribe(BN_BTC)[0].conn
    a.on_open(conn)
    (req,) = [e for e in a.on_frame(conn, bn_diff(1, 1), 1) if isinstance(e, FetchRest)]
    assert names(a.on_rest(req.request_id, 200, bn_snapshot(0), 2)) == ["SymbolSynced", "BookChanged"]
    return a, conn


@pytest.mark.parametrize("level", BAD_LEVELS)
@pytest.mark.parametrize("side", ["b", "a"])
def test_binance_diff_with_a_bad_number_is_malformed_and_resyncs(level, side):
    a, conn = bn_live()
    levels = {"b": (("100.0", "2"),), "a": (("101.0", "2"),)}
    levels[side] = (("100.0" if side == "b" else "101.0", "3"), tuple(level))
    events = a.on_frame(conn, bn_diff(2, 2, levels["b"], levels["a"]), 3)
    assert_malformed(events, BN_BTC.key)
    assert any(isinstance(e, FetchRest) for e in events)  # a fresh snapshot
    sym = a.syms[BN_BTC.key]
    assert sym.state is not BN_LIVE and len(sym.book.bids) == len(sym.book.asks) == 0


@pytest.mark.parametrize("level", BAD_LEVELS)
@pytest.mark.parametrize("fast", [True, False], ids=["c-reader", "orjson"])
def test_binance_rest_snapshot_with_a_bad_number_is_malformed(level, fast, monkeypatch):
    if not fast:
        monkeypatch.setattr("mdengine.exchanges.binance.adapter.parse_depth_snapshot", lambda body: None)
    a = BinanceAdapter(InstrumentIndex([BN_BTC]))
    conn = a.subscribe(BN_BTC)[0].conn
    a.on_open(conn)
    (req,) = [e for e in a.on_frame(conn, bn_diff(1, 1), 1) if isinstance(e, FetchRest)]
    events = a.on_rest(req.request_id, 200, bn_snapshot(0, bids=(("99.0", "5"), tuple(level))), 2)
    assert_malformed(events, BN_BTC.key)
    assert a.syms[BN_BTC.key].state == BN_UNSYNCED  # the next diff fetches a snapshot again
    assert any(isinstance(e, FetchRest) for e in a.on_frame(conn, bn_diff(2, 2), 3))


@pytest.mark.parametrize("px,qty", [("-5", "1"), ("100", "1e400"), ("100", "-1"), ("nan", "1"), ("0", "1"),
                                    ("100", "2e15")])
def test_binance_trade_with_a_bad_number_is_malformed_and_not_published(px, qty):
    a = BinanceAdapter(InstrumentIndex([BN_BTC]))
    conn = next(e.conn for e in a.subscribe(BN_BTC) if e.__class__.__name__ == "OpenConnection")
    a.on_open(conn)

    def trade(tid: int, p: str, q: str) -> str:
        return json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": tid,
                                                               "p": p, "q": q, "T": 1, "m": True}})

    assert_malformed(a.on_frame(conn, trade(5, px, qty), 1), BN_BTC.key)
    (ev,) = a.on_frame(conn, trade(5, "100", "1"), 2)  # the id was not taken by the bad trade
    assert isinstance(ev, TradesReceived) and ev.trades[0][2:4] == (100.0, 1.0)


# ----------------------------------------------------------------------------- OKX, Bybit, Bitget
class Ws:
    """One exchange's frames for a LIVE book and its trades (OKX, Bybit, Bitget)."""

    def __init__(self, cls, inst: Instrument, conn: str) -> None:
        self.cls, self.inst, self.conn = cls, inst, conn

    def live(self):
        a = self.cls(InstrumentIndex([self.inst]))
        a.subscribe(self.inst)
        a.on_open(self.conn)
        assert names(a.on_frame(self.conn, self.book(True, 1, [["100", "1"]], [["101", "1"]]), 1)) == [
            "SymbolSynced", "BookChanged"]
        return a

    def book(self, snapshot: bool, seq: int, bids, asks) -> str:
        raise NotImplementedError

    def trades(self, px: str, qty: str) -> str:
        raise NotImplementedError


class OkxFrames(Ws):
    def book(self, snapshot, seq, bids, asks):
        return json.dumps({"arg": {"channel": "books", "instId": "BTC-USDT"},
                           "action": "snapshot" if snapshot else "update",
                           "data": [{"bids": [[*lv, "0", "1"] for lv in bids], "asks": [[*lv, "0", "1"] for lv in asks],
                                     "ts": "1700000000000", "checksum": 0, "seqId": seq,
                                     "prevSeqId": -1 if snapshot else seq - 1}]})

    def trades(self, px, qty):
        return json.dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [
            {"instId": "BTC-USDT", "tradeId": "7", "px": px, "sz": qty, "side": "buy", "ts": "1700000000000"}]})


class BybitFrames(Ws):
    def book(self, snapshot, seq, bids, asks):
        return json.dumps({"topic": "orderbook.50.BTCUSDT", "type": "snapshot" if snapshot else "delta",
                           "ts": 1700000000000, "data": {"s": "BTCUSDT", "b": bids, "a": asks, "u": seq, "seq": seq},
                           "cts": 1700000000000})

    def trades(self, px, qty):
        return json.dumps({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1700000000000, "data": [
            {"T": 1700000000000, "s": "BTCUSDT", "S": "Buy", "v": qty, "p": px, "i": "7"}]})


class BitgetFrames(Ws):
    def book(self, snapshot, seq, bids, asks):
        return json.dumps({"action": "snapshot" if snapshot else "update",
                           "arg": {"instType": "SPOT", "channel": "books", "instId": "BTCUSDT"},
                           "data": [{"bids": bids, "asks": asks, "checksum": 0, "seq": seq, "ts": "1700000000000"}]})

    def trades(self, px, qty):
        return json.dumps({"action": "update", "arg": {"instType": "SPOT", "channel": "trade", "instId": "BTCUSDT"},
                           "data": [{"ts": "1700000000000", "price": px, "size": qty, "side": "buy", "tradeId": "7"}]})


WS = {
    "okx": OkxFrames(OkxAdapter, Instrument("okx", "SPOT", "BTC-USDT", "BTC/USDT", MarketKind.SPOT, "BTC", "USDT"),
                     "public-0"),
    "bybit": BybitFrames(BybitAdapter, Instrument("bybit", "spot", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC",
                                                  "USDT"), "spot-0"),
    "bitget": BitgetFrames(BitgetAdapter, Instrument("bitget", "SPOT", "BTCUSDT", "BTC/USDT", MarketKind.SPOT, "BTC",
                                                     "USDT"), "public-0"),
}


@pytest.mark.parametrize("exchange", sorted(WS))
@pytest.mark.parametrize("level", BAD_LEVELS)
@pytest.mark.parametrize("snapshot", [False, True], ids=["update", "snapshot"])
def test_a_book_frame_with_a_bad_number_is_malformed_and_the_book_resubscribed(exchange, level, snapshot):
    f = WS[exchange]
    a = f.live()
    events = a.on_frame(f.conn, f.book(snapshot, 2, [["100", "2"], level], [["101", "2"]]), 2)
    assert_malformed(events, f.inst.key)
    assert "BookInvalid" in names(events) and not a.is_live(f.inst.key)
    sends = [e.payload for e in events if isinstance(e, Send)]
    assert any("unsubscribe" in p for p in sends) and any('"subscribe"' in p for p in sends)  # a fresh snapshot
    # the resubscription's snapshot makes it live again
    assert "SymbolSynced" in names(a.on_frame(f.conn, f.book(True, 9, [["100", "1"]], [["101", "1"]]), 3))


@pytest.mark.parametrize("exchange", sorted(WS))
@pytest.mark.parametrize("px,qty", [("-5", "1"), ("100", "1e400"), ("100", "-1"), ("nan", "1"), ("0", "1"),
                                    ("1e13", "1"), ("100", "2e15")])
def test_a_trade_with_a_bad_number_is_malformed_and_not_published(exchange, px, qty):
    f = WS[exchange]
    a = f.live()
    assert_malformed(a.on_frame(f.conn, f.trades(px, qty), 2), f.inst.key)
    assert a.is_live(f.inst.key)  # a trade is not the book: the book stays live
    (ev,) = a.on_frame(f.conn, f.trades("100.5", "0.25"), 3)  # the same trade id, sane, is still new
    assert isinstance(ev, TradesReceived) and ev.trades[0][2:4] == (100.5, 0.25)
