"""Each exchange's recording rules (exchanges/<name>/recording.py): frames routed by their own content, every book
depth the exchange offers recognised, and the adapter options that subscribe what a recording holds."""

from __future__ import annotations

import orjson
import pytest

from mdengine.events import OpenConnection, Send
from mdengine.exchanges import get_adapter, recording_rules
from mdengine.recording.reader import Record
from mdengine.symbols import InstrumentIndex


def _recv(url: str, msg: dict) -> Record:
    return Record("recv", 1, url, orjson.dumps(msg).decode())


@pytest.mark.parametrize("exchange,url,msg,want", [
    ("binance", "wss://stream.binance.com:9443/stream", {"stream": "btcusdt@depth@100ms", "data": {}},
     ("spot", "BTCUSDT", "depth@100ms")),
    ("binance", "wss://fstream.binance.com/ws", {"e": "depthUpdate", "s": "ETHUSDT", "pu": 1},
     ("usdm", "ETHUSDT", "depth")),
    ("binance", "wss://fstream.binance.com/market/stream", {"stream": "ethusdt@aggTrade", "data": {}},
     ("usdm", "ETHUSDT", "aggTrade")),
    ("bybit", "wss://stream.bybit.com/v5/public/linear", {"topic": "orderbook.500.BTCUSDT", "data": {}},
     ("linear", "BTCUSDT", "orderbook.500")),
    ("bybit", "wss://stream.bybit.com/v5/public/spot", {"topic": "publicTrade.ETHUSDT", "data": []},
     ("spot", "ETHUSDT", "publicTrade")),
    ("okx", "wss://ws.okx.com:8443/ws/v5/public", {"arg": {"channel": "books50-l2-tbt", "instId": "BTC-USDT-SWAP"},
                                                   "data": []}, ("SWAP", "BTC-USDT-SWAP", "books50-l2-tbt")),
    ("okx", "wss://ws.okx.com:8443/ws/v5/public", {"arg": {"channel": "trades", "instId": "BTC-USD-220527"},
                                                   "data": []}, ("FUTURES", "BTC-USD-220527", "trades")),
    ("bitget", "wss://ws.bitget.com/v2/ws/public", {"arg": {"instType": "USDT-FUTURES", "channel": "books15",
                                                            "instId": "BTCUSDT"}, "data": []},
     ("USDT-FUTURES", "BTCUSDT", "books15")),
])
def test_frames_route_by_their_own_content(exchange, url, msg, want):
    rules = recording_rules(exchange)
    assert rules.route(orjson.dumps(msg).decode(), url) == want
    assert rules.discover_symbols([_recv(url, msg)]) == ({want[:2]} if rules.is_book_channel(want[2])
                                                         or "rade" in want[2] else set())


@pytest.mark.parametrize("exchange,channels", [
    ("binance", ["depth", "depth@100ms", "depth@500ms", "depth5", "depth10@100ms", "depth20@1000ms"]),
    ("bybit", ["orderbook.1", "orderbook.50", "orderbook.200", "orderbook.500", "orderbook.1000"]),
    ("okx", ["books", "books5", "bbo-tbt", "books-l2-tbt", "books50-l2-tbt"]),
    ("bitget", ["books", "books1", "books5", "books15"]),
])
def test_every_book_depth_the_exchange_offers_is_a_book_channel(exchange, channels):
    rules = recording_rules(exchange)
    assert all(rules.is_book_channel(c) for c in channels)
    assert not any(rules.is_book_channel(c) for c in ("trade", "publicTrade.X", "tickers", "kline_1m", "orderbook.7"))


def test_bybit_book_depth_of_the_recording_sets_the_adapter_depth():
    rules = recording_rules("bybit")
    url = "wss://stream.bybit.com/v5/public/linear"
    rec = [_recv(url, {"topic": "orderbook.200.BTCUSDT", "type": "snapshot", "data": {}})]
    cfg = rules.book_config(rec)
    assert cfg == {"book_mode": "diff", "book_depth": 200}
    (inst,) = rules.instruments(rec, rules.discover_symbols(rec))
    adapter = get_adapter("bybit")(InstrumentIndex([inst]), None, **cfg)
    opens = [e for e in adapter.subscribe(inst) if isinstance(e, OpenConnection)]
    sends = [e for o in opens for e in adapter.on_open(o.conn) if isinstance(e, Send)]
    assert any("orderbook.200.BTCUSDT" in e.payload for e in sends)


@pytest.mark.parametrize("exchange,key,unified", [
    ("binance", ("usdm", "BTCUSDT"), "BTC/USDT:USDT"), ("binance", ("spot", "LRCBTC"), "LRC/BTC"),
    ("bybit", ("linear", "ETHUSDT"), "ETH/USDT:USDT"), ("okx", ("SWAP", "BTC-USDT-SWAP"), "BTC/USDT:USDT"),
    ("bitget", ("SPOT", "BTCUSDT"), "BTC/USDT"),
])
def test_synthesised_instrument_lists_parse_back_to_the_same_instruments(exchange, key, unified):
    """A replay without instrument lists serves these; the adapter reads them back as the same symbols."""
    rules = recording_rules(exchange)
    (inst,) = rules.instruments([], [key])
    assert inst.key == key and inst.unified == unified
    target, body = rules.instrument_list(key[0], [inst])
    req = next(r for r in get_adapter(exchange).instrument_requests({}, [key[0]]))
    assert req.url.endswith(target)
    parsed, errors = get_adapter(exchange).parse_instruments(req.request_id, body.encode())
    assert errors == [] and [(i.key, i.unified) for i in parsed] == [(key, unified)]
