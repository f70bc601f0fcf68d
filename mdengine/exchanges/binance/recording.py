"""What a Binance recording says (sans-I/O): the market of a URL, the (market, native, channel) of a frame by its
own content, the symbols a recording holds, the adapter options that subscribe what was recorded, instrument
lists for a replay, and Tardis's exchange ids."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ...core.types import MarketKind
from ...symbols import Instrument
from .._recording import json_of, recorded_instruments, synthesise
from . import endpoints
from .adapter import _GROUPS, MARKETS, SPOT, USDM, BinanceAdapter

ADAPTER = BinanceAdapter
TARDIS_IDS = {SPOT: "binance", USDM: "binance-futures"}
# simulator market -> (WebSocket host, REST host) of the real exchange, and every host that names it
REPLAY_HOSTS = {"binance-spot": ("stream.binance.com", "api.binance.com"),
                "binance-usdm": ("fstream.binance.com", "fapi.binance.com")}
HOST_ALIASES = {"data-stream.binance.vision": "binance-spot", "data-api.binance.vision": "binance-spot"}
SIM_MARKET = {SPOT: "binance-spot", USDM: "binance-usdm"}
# book streams: diffs (1 s, 100 ms, USDⓈ-M's 250/500 ms) and partial top-N books
_BOOK = re.compile(r"^depth(?P<levels>5|10|20)?(?:@(?:100|250|500|1000)ms)?$")
_STREAM = re.compile(r"([a-z0-9_]+)@((?:depth|trade|aggTrade|bookTicker)[@a-z0-9]*)")
_EVENT_CHANNEL = {"depthUpdate": "depth", "trade": "trade", "aggTrade": "aggTrade"}


def usdm_hosts(records: Iterable[Any]) -> set[str]:
    """Hosts that answered USDⓈ-M REST paths (a simulator's 127.0.0.1:port says nothing by itself)."""
    return endpoints.usdm_hosts(r.url for r in records)


market_of_url = endpoints.market_of_url  # the package's one rule for "which market does this URL serve"


def is_book_channel(channel: str) -> bool:
    return bool(_BOOK.match(channel))


def route(data: Any, url: str, usdm: set[str] = frozenset()) -> tuple[str, str, str] | None:
    """(market, native, channel) of a frame: a combined stream's `stream`, else a raw stream's `e`/`s`."""
    msg = json_of(data)
    if not isinstance(msg, dict):
        return None
    market = market_of_url(url, usdm)
    stream = msg.get("stream")
    if isinstance(stream, str) and "@" in stream:
        native, _, channel = stream.partition("@")
        return market, native.upper(), channel
    sym = msg.get("s")
    if isinstance(sym, str):
        channel = _EVENT_CHANNEL.get(msg.get("e"), "bookTicker" if "b" in msg and "a" in msg and "e" not in msg
                                     else str(msg.get("e")))
        return market, sym.upper(), channel
    return None


def adapter_frame(data: Any, url: str, usdm: set[str] = frozenset()) -> tuple[str, Any] | None:
    """(path of the adapter connection that carries it, the frame as that connection receives it) for a frame
    recorded on another URL: a raw stream's event (``/ws/btcusdt@depth``) is wrapped as a combined-stream frame,
    whose stream name is the adapter's own (``btcusdt@depth@100ms``, ``btcusdt@aggTrade``)."""
    hit = route(data, url, usdm)
    if hit is None:
        return None
    market, native, channel = hit
    groups = _GROUPS[market]  # books on the first connection group, trades (and the rest) on the last
    path = groups[0][1] if is_book_channel(channel) else groups[-1][1]
    msg = json_of(data)
    if "stream" in msg:
        return path, data
    stream = f"{native.lower()}@{_adapter_stream(channel)}"
    return path, orjson.dumps({"stream": stream, "data": msg}).decode()


def frame_placer(records: list):
    """(url, frame) -> `adapter_frame` for this recording (its USDⓈ-M hosts worked out once)."""
    usdm = usdm_hosts(records)
    return lambda url, data: adapter_frame(data, url, usdm)


def discover_symbols(records: list) -> set[tuple[str, str]]:
    """(market, native) pairs: from subscribed stream names (URLs, sends), REST depth requests and the frames."""
    usdm = usdm_hosts(records)
    out: set[tuple[str, str]] = set()
    for r in records:
        parts = urlsplit(r.url)
        if r.kind == "http" and parts.path.endswith("/depth"):
            sym = dict(parse_qsl(parts.query)).get("symbol")
            if sym:
                out.add((USDM if "/fapi/" in parts.path else SPOT, sym.upper()))
        elif r.kind in ("connect", "send"):
            text = r.url + (r.data if isinstance(r.data, str) else "")
            out.update((market_of_url(r.url, usdm), s.upper()) for s, _ in _STREAM.findall(text))
        elif r.kind == "recv":
            hit = route(r.data, r.url, usdm)
            if hit is not None and (is_book_channel(hit[2]) or hit[2] in ("trade", "aggTrade")):
                out.add(hit[:2])
    return out


def book_channels(records: list) -> set[str]:
    usdm = usdm_hosts(records)
    chans: set[str] = set()
    for r in records:
        if r.kind == "recv":
            hit = route(r.data, r.url, usdm)
            if hit is not None and is_book_channel(hit[2]):
                chans.add(hit[2])
        elif r.kind in ("connect", "send"):
            text = r.url + (r.data if isinstance(r.data, str) else "")
            chans.update(c for _, c in _STREAM.findall(text) if is_book_channel(c))
    return chans


def adapter_options(records: list) -> dict[str, Any]:
    """Options that make the adapter subscribe the streams the recording holds."""
    opts: dict[str, Any] = {}
    trades = set()
    usdm = usdm_hosts(records)
    for r in records:
        if r.kind in ("connect", "send"):
            text = r.url + (r.data if isinstance(r.data, str) else "")
            trades.update(c for _, c in _STREAM.findall(text) if c in ("trade", "aggTrade"))
        elif r.kind == "recv":
            hit = route(r.data, r.url, usdm)
            if hit is not None and hit[2] in ("trade", "aggTrade"):
                trades.add(hit[2])
    if "aggTrade" in trades and "trade" not in trades:
        opts["trade_stream"] = "aggTrade"
    return opts


def book_config(records: list) -> dict[str, Any]:
    """book_mode/book_depth subscribing the recorded book stream: diffs when any were recorded, else the partial
    top-N books."""
    chans = book_channels(records)
    levels = [int(m.group("levels")) for c in chans if (m := _BOOK.match(c)) and m.group("levels")]
    if levels and len(levels) == len(chans):
        return {"book_mode": "partial", "book_depth": max(levels)}
    return {}


def _adapter_stream(channel: str) -> str:
    """The stream the adapter subscribes for a recorded book channel (it asks for every book at 100 ms)."""
    m = _BOOK.match(channel)
    return f"depth{m.group('levels') or ''}@100ms" if m else channel


def frame_rewriter(records: list):
    """frame -> the frame under the stream name the adapter subscribes (``btcusdt@depth`` at 1 s becomes
    ``btcusdt@depth@100ms``: same messages, less often), or None when every recorded stream is the adapter's."""
    renames = {c: _adapter_stream(c) for c in book_channels(records) if _adapter_stream(c) != c}
    if not renames:
        return None

    def rewrite(data: Any) -> Any:
        msg = json_of(data)
        stream = msg.get("stream") if isinstance(msg, dict) else None
        if not isinstance(stream, str):
            return data
        native, _, channel = stream.partition("@")
        if channel not in renames:
            return data
        msg["stream"] = f"{native}@{renames[channel]}"
        return orjson.dumps(msg).decode()

    return rewrite


def _request_id(url: str) -> str | None:
    path = urlsplit(url).path
    if path.endswith("/api/v3/exchangeInfo"):
        return "instruments:" + SPOT
    if path.endswith("/fapi/v1/exchangeInfo"):
        return "instruments:" + USDM
    return None


def instruments(records: list, keys: Iterable[tuple[str, str]]) -> list[Instrument]:
    """The instruments of `keys`: from the recording's own exchangeInfo answers, else derived from the id."""
    listed = {i.key: i for i in recorded_instruments(BinanceAdapter, records, _request_id)}
    return [listed.get(k) or synthesise(BinanceAdapter, k, _kind) for k in sorted(keys)]


def _kind(market: str) -> int:
    return MarketKind.SPOT if market == SPOT else MarketKind.LINEAR


def _step(x: float) -> str:
    return repr(x) if x else "0"


def instrument_list(market: str, insts: list[Instrument]) -> tuple[str, str]:
    """(path, body) of the exchangeInfo answer listing `insts`, for a replay whose recording has none."""
    rows = []
    for i in insts:
        row: dict[str, Any] = {"symbol": i.native, "status": "TRADING", "baseAsset": i.base, "quoteAsset": i.quote,
                               "filters": [{"filterType": "PRICE_FILTER", "tickSize": _step(i.tick_size)},
                                           {"filterType": "LOT_SIZE", "stepSize": _step(i.lot_size)}]}
        if market == USDM:
            row.update(contractType="PERPETUAL", marginAsset=i.settle or i.quote)
        rows.append(row)
    path = "/api/v3/exchangeInfo" if market == SPOT else "/fapi/v1/exchangeInfo"
    return path, orjson.dumps({"symbols": rows}).decode()


def sim_market_of(records: list):
    """url -> the simulator market (see REPLAY_HOSTS) serving it in a replay of `records`."""
    usdm = usdm_hosts(records)
    return lambda url: SIM_MARKET[market_of_url(url, usdm)]


__all__ = ["ADAPTER", "HOST_ALIASES", "MARKETS", "REPLAY_HOSTS", "SIM_MARKET", "TARDIS_IDS", "adapter_frame",
           "adapter_options", "book_channels", "book_config", "discover_symbols", "frame_placer", "frame_rewriter",
           "instrument_list", "instruments", "is_book_channel", "market_of_url", "route", "sim_market_of",
           "usdm_hosts"]
