"""What a Bybit v5 recording says (sans-I/O): the category of a URL, the (category, native, channel) of a frame by
its `topic`, the symbols a recording holds, the adapter options that subscribe what was recorded, instrument
lists for a replay, and Tardis's exchange ids."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ...symbols import Instrument
from .._recording import json_of, recorded_instruments, synthesise, walk
from .adapter import BybitAdapter
from .instruments import _KINDS

ADAPTER = BybitAdapter
MARKETS = BybitAdapter.MARKETS
TARDIS_IDS = {"spot": "bybit-spot", "linear": "bybit", "inverse": "bybit"}
REPLAY_HOSTS = {"bybit": ("stream.bybit.com", "api.bybit.com")}
HOST_ALIASES: dict[str, str] = {}
SIM_MARKET = dict.fromkeys(MARKETS, "bybit")
# every order-book depth Bybit publishes (spot 1/50/200/1000, derivatives 1/50/200/500/1000)
BOOK_DEPTHS = (1, 50, 200, 500, 1000)
_TOPIC = re.compile(r"^(orderbook\.\d+|publicTrade)\.([A-Z0-9-]+)$")
_INSTRUMENTS_PATH = "/v5/market/instruments-info"


def market_of_url(url: str) -> str | None:
    """The category a public stream URL (/v5/public/<category>) or a REST query (category=) names."""
    parts = urlsplit(url)
    cat = dict(parse_qsl(parts.query)).get("category") or parts.path.rstrip("/").rsplit("/", 1)[-1]
    return cat if cat in MARKETS else None


def is_book_channel(channel: str) -> bool:
    head, _, depth = channel.partition(".")
    return head == "orderbook" and depth.isdigit() and int(depth) in BOOK_DEPTHS


def route(data: Any, url: str) -> tuple[str, str, str] | None:
    """(category, native, channel) of a frame by its `topic` (the category is the connection's)."""
    msg = json_of(data)
    topic = msg.get("topic") if isinstance(msg, dict) else None
    cat = market_of_url(url)
    if not isinstance(topic, str) or cat is None:
        return None
    m = _TOPIC.match(topic)
    return (cat, m.group(2), m.group(1)) if m else None


def discover_symbols(records: list) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for r in records:
        if r.kind == "send":
            cat = market_of_url(r.url)
            if cat is not None:
                for node in walk(json_of(r.data)):
                    if isinstance(node, str) and (m := _TOPIC.match(node)):
                        out.add((cat, m.group(2)))
        elif r.kind == "recv":
            hit = route(r.data, r.url)
            if hit is not None and (is_book_channel(hit[2]) or hit[2] == "publicTrade"):
                out.add(hit[:2])
    return out


def book_channels(records: list) -> set[str]:
    out = set()
    for r in records:
        if r.kind == "recv":
            hit = route(r.data, r.url)
            if hit is not None and is_book_channel(hit[2]):
                out.add(hit[2])
        elif r.kind == "send":
            out.update(m.group(1) for node in walk(json_of(r.data))
                       if isinstance(node, str) and (m := _TOPIC.match(node)) and is_book_channel(m.group(1)))
    return out


def adapter_options(records: list) -> dict[str, Any]:
    return {}


def book_config(records: list) -> dict[str, Any]:
    """book_mode/book_depth that subscribe the recorded `orderbook.<depth>` topic (the deepest one recorded)."""
    depths = sorted(int(c.partition(".")[2]) for c in book_channels(records))
    if not depths:
        return {}
    if depths[-1] == 1:
        return {"book_mode": "partial", "book_depth": 1}
    return {"book_mode": "diff", "book_depth": depths[-1]}


def _adapter_depth(depth: int) -> int:
    """The orderbook depth the adapter subscribes for a book_depth (it knows 1, 50, 200 and 1000)."""
    return depth if depth == 1 else 50 if depth <= 50 else 200 if depth <= 200 else 1000


def frame_rewriter(records: list):
    """frame -> the frame under the topic the adapter subscribes (``orderbook.500.X`` is read as
    ``orderbook.1000.X``: the same snapshot-and-delta messages), or None when every recorded depth is the
    adapter's own."""
    renames = {f"orderbook.{d}": f"orderbook.{_adapter_depth(d)}"
               for d in (int(c.partition(".")[2]) for c in book_channels(records)) if _adapter_depth(d) != d}
    if not renames:
        return None

    def rewrite(data: Any) -> Any:
        msg = json_of(data)
        topic = msg.get("topic") if isinstance(msg, dict) else None
        if not isinstance(topic, str):
            return data
        channel, _, native = topic.rpartition(".")
        if channel not in renames:
            return data
        msg["topic"] = f"{renames[channel]}.{native}"
        return orjson.dumps(msg).decode()

    return rewrite


def _request_id(url: str) -> str | None:
    # the adapter's request id is the first page's URL; any query naming a category parses the same way
    return url if urlsplit(url).path.endswith(_INSTRUMENTS_PATH) and market_of_url(url) else None


def instruments(records: list, keys: Iterable[tuple[str, str]]) -> list[Instrument]:
    listed = {i.key: i for i in recorded_instruments(BybitAdapter, records, _request_id)}
    return [listed.get(k) or synthesise(BybitAdapter, k, _KINDS.get) for k in sorted(keys)]


def instrument_list(market: str, insts: list[Instrument]) -> tuple[str, str]:
    """(path?query, body) of the instruments-info answer listing `insts` as the adapter asks for it."""
    rows = []
    for i in insts:
        row: dict[str, Any] = {"symbol": i.native, "baseCoin": i.base, "quoteCoin": i.quote,
                               "priceFilter": {"tickSize": repr(i.tick_size)},
                               "lotSizeFilter": {"basePrecision": repr(i.lot_size), "qtyStep": repr(i.lot_size)}}
        if market != "spot":
            row.update(settleCoin=i.settle, contractType="LinearPerpetual" if market == "linear"
                       else "InversePerpetual")
        rows.append(row)
    query = f"category={market}" + ("" if market == "spot" else "&limit=1000")
    body = {"retCode": 0, "retMsg": "OK", "result": {"category": market, "list": rows, "nextPageCursor": ""}}
    return f"{_INSTRUMENTS_PATH}?{query}", orjson.dumps(body).decode()


def sim_market_of(records: list):
    """url -> the simulator market (see REPLAY_HOSTS) serving it in a replay: one for every URL."""
    return lambda url: next(iter(REPLAY_HOSTS))


def frame_placer(records: list) -> None:
    """No placer: frames are recorded on the adapter's own connection paths (one public path per market)."""
    return None


__all__ = ["ADAPTER", "BOOK_DEPTHS", "HOST_ALIASES", "MARKETS", "REPLAY_HOSTS", "SIM_MARKET", "TARDIS_IDS",
           "adapter_options", "book_channels", "book_config", "discover_symbols", "frame_placer", "frame_rewriter",
           "instrument_list", "instruments", "is_book_channel", "market_of_url", "route", "sim_market_of"]
