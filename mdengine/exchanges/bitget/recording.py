"""What a Bitget v2 recording says (sans-I/O): the (instType, instId, channel) of a frame by its `arg`, the symbols
a recording holds, the adapter options that subscribe what was recorded, instrument lists for a replay, and
Tardis's exchange ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ...core.types import MarketKind
from ...symbols import Instrument
from .._recording import arg_symbols, json_of, recorded_instruments, routed_book_channels, synthesise
from .adapter import BitgetAdapter

ADAPTER = BitgetAdapter
MARKETS = BitgetAdapter.MARKETS
TARDIS_IDS = {m: "bitget" if m == "SPOT" else "bitget-futures" for m in MARKETS}
REPLAY_HOSTS = {"bitget": ("ws.bitget.com", "api.bitget.com")}
HOST_ALIASES: dict[str, str] = {}
SIM_MARKET = dict.fromkeys(MARKETS, "bitget")
BOOK_CHANNELS = ("books", "books1", "books5", "books15")
_BOOK_CONFIG = {"books": {"book_mode": "diff"}, "books1": {"book_mode": "partial", "book_depth": 1},
                "books5": {"book_mode": "partial", "book_depth": 5},
                "books15": {"book_mode": "partial", "book_depth": 15}}
_SPOT_PATH, _MIX_PATH = "/api/v2/spot/public/symbols", "/api/v2/mix/market/contracts"


def _market(inst_type: Any) -> str:
    it = str(inst_type or "SPOT").upper()
    return it if it in MARKETS else "SPOT"


def is_book_channel(channel: str) -> bool:
    return channel in BOOK_CHANNELS


def route(data: Any, url: str = "") -> tuple[str, str, str] | None:
    """(instType, instId, channel) of a data frame by its `arg`."""
    msg = json_of(data)
    arg = msg.get("arg") if isinstance(msg, dict) else None
    if not isinstance(arg, dict) or "data" not in msg:
        return None
    native, channel = arg.get("instId"), arg.get("channel")
    if not isinstance(native, str) or not isinstance(channel, str):
        return None
    return _market(arg.get("instType")), native, channel


def discover_symbols(records: list) -> set[tuple[str, str]]:
    return arg_symbols(records, route, is_book_channel, "trade", lambda arg: _market(arg.get("instType")))


def book_channels(records: list) -> set[str]:
    return routed_book_channels(records, route, is_book_channel)


def adapter_options(records: list) -> dict[str, Any]:
    return {}


def book_config(records: list) -> dict[str, Any]:
    chans = book_channels(records)
    for ch in BOOK_CHANNELS:
        if ch in chans:
            return dict(_BOOK_CONFIG[ch])
    return {}


def frame_rewriter(records: list) -> None:
    """None: the adapter subscribes every book channel Bitget offers (books, books1/5/15) as recorded."""
    return None


def _request_id(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.path.endswith(_SPOT_PATH):
        return "instruments:SPOT"
    pt = dict(parse_qsl(parts.query)).get("productType")
    return f"instruments:{pt.upper()}" if parts.path.endswith(_MIX_PATH) and pt else None


def _kind(market: str) -> int:
    return MarketKind.SPOT if market == "SPOT" else MarketKind.INVERSE if market == "COIN-FUTURES" \
        else MarketKind.LINEAR


def instruments(records: list, keys: Iterable[tuple[str, str]]) -> list[Instrument]:
    listed = {i.key: i for i in recorded_instruments(BitgetAdapter, records, _request_id)}
    return [listed.get(k) or synthesise(BitgetAdapter, k, _kind) for k in sorted(keys)]


def _places(step: float) -> str:
    """Decimal places of a power-of-ten step (Bitget lists precisions, not steps)."""
    text = f"{step:.12f}".rstrip("0")
    return str(len(text.partition(".")[2])) if step else "8"


def instrument_list(market: str, insts: list[Instrument]) -> tuple[str, str]:
    rows = []
    for i in insts:
        if market == "SPOT":
            rows.append({"symbol": i.native, "baseCoin": i.base, "quoteCoin": i.quote,
                         "pricePrecision": _places(i.tick_size), "quantityPrecision": _places(i.lot_size)})
        else:
            rows.append({"symbol": i.native, "baseCoin": i.base, "quoteCoin": i.quote, "pricePlace":
                         _places(i.tick_size), "priceEndStep": "1", "sizeMultiplier": repr(i.lot_size or 1.0),
                         "symbolType": "perpetual"})
    url = _SPOT_PATH if market == "SPOT" else f"{_MIX_PATH}?productType={market}"
    return url, orjson.dumps({"code": "00000", "msg": "success", "data": rows}).decode()


def sim_market_of(records: list):
    """url -> the simulator market (see REPLAY_HOSTS) serving it in a replay: one for every URL."""
    return lambda url: next(iter(REPLAY_HOSTS))


def frame_placer(records: list) -> None:
    """No placer: frames are recorded on the adapter's own connection paths (one public path per market)."""
    return None


__all__ = ["ADAPTER", "BOOK_CHANNELS", "HOST_ALIASES", "MARKETS", "REPLAY_HOSTS", "SIM_MARKET", "TARDIS_IDS",
           "adapter_options", "book_channels", "book_config", "discover_symbols", "frame_placer", "frame_rewriter",
           "instrument_list", "instruments", "is_book_channel", "route", "sim_market_of"]
