"""What an OKX v5 recording says (sans-I/O): the (instType, instId, channel) of a frame by its `arg`, the symbols a
recording holds, the adapter options that subscribe what was recorded, instrument lists for a replay, and
Tardis's exchange ids."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ...core.types import MarketKind
from ...symbols import Instrument
from .._recording import arg_symbols, json_of, recorded_instruments, routed_book_channels, synthesise
from .adapter import OkxAdapter

ADAPTER = OkxAdapter
MARKETS = OkxAdapter.MARKETS
TARDIS_IDS = {"SPOT": "okex", "SWAP": "okex-swap", "FUTURES": "okex-futures", "OPTION": "okex-options"}
REPLAY_HOSTS = {"okx": ("ws.okx.com", "www.okx.com")}
HOST_ALIASES: dict[str, str] = {}
SIM_MARKET = dict.fromkeys(MARKETS, "okx")
BOOK_CHANNELS = ("books", "books5", "bbo-tbt", "books-l2-tbt", "books50-l2-tbt")
# what the adapter subscribes for each book channel (the tick-by-tick ones need a login it does not do)
_BOOK_CONFIG = {"books": {"book_mode": "diff"}, "books5": {"book_mode": "partial", "book_depth": 5},
                "bbo-tbt": {"book_mode": "partial", "book_depth": 1}}
_FUTURE = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+-\d{6}$")
_INSTRUMENTS_PATH = "/api/v5/public/instruments"


def market_of(native: str) -> str:
    """The instType an instId spells: -SWAP, -YYMMDD (futures), five parts (options), else spot."""
    if native.endswith("-SWAP"):
        return "SWAP"
    if _FUTURE.match(native):
        return "FUTURES"
    return "OPTION" if native.count("-") >= 4 else "SPOT"


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
    return market_of(native), native, channel


def discover_symbols(records: list) -> set[tuple[str, str]]:
    return arg_symbols(records, route, is_book_channel, "trades", lambda arg: market_of(arg["instId"]))


def book_channels(records: list) -> set[str]:
    return routed_book_channels(records, route, is_book_channel)


def adapter_options(records: list) -> dict[str, Any]:
    return {}


def book_config(records: list) -> dict[str, Any]:
    chans = book_channels(records)
    for ch in BOOK_CHANNELS:  # the fullest book recorded first
        if ch in chans and ch in _BOOK_CONFIG:
            return dict(_BOOK_CONFIG[ch])
    return {"book_mode": "diff"} if chans else {}  # tick-by-tick books only: read as `books` (frame_rewriter)


def frame_rewriter(records: list):
    """frame -> the frame under the channel the adapter subscribes when the recording holds only tick-by-tick
    books (``books-l2-tbt``/``books50-l2-tbt`` carry `books`' snapshot, updates, seqId and checksum, more
    often), or None when the recording holds a channel the adapter subscribes."""
    chans = book_channels(records)
    if not chans or chans & set(_BOOK_CONFIG):
        return None

    def rewrite(data: Any) -> Any:
        msg = json_of(data)
        arg = msg.get("arg") if isinstance(msg, dict) else None
        if not isinstance(arg, dict) or arg.get("channel") not in chans:
            return data
        arg["channel"] = "books"
        return orjson.dumps(msg).decode()

    return rewrite


def _request_id(url: str) -> str | None:
    parts = urlsplit(url)
    it = dict(parse_qsl(parts.query)).get("instType")
    return f"instruments:{it}" if parts.path.endswith(_INSTRUMENTS_PATH) and it else None


def _kind(market: str) -> int:
    return MarketKind.SPOT if market == "SPOT" else MarketKind.LINEAR


def instruments(records: list, keys: Iterable[tuple[str, str]]) -> list[Instrument]:
    listed = {i.key: i for i in recorded_instruments(OkxAdapter, records, _request_id)}
    return [listed.get(k) or synthesise(OkxAdapter, k, _kind) for k in sorted(keys)]


def instrument_list(market: str, insts: list[Instrument]) -> tuple[str, str]:
    rows = []
    for i in insts:
        row: dict[str, Any] = {"instType": market, "instId": i.native, "tickSz": repr(i.tick_size),
                               "lotSz": repr(i.lot_size)}
        if market in ("SPOT", "MARGIN"):
            row.update(baseCcy=i.base, quoteCcy=i.quote)
        else:
            row.update(instFamily=f"{i.base}-{i.quote}", settleCcy=i.settle, ctVal=repr(i.contract_value or 1.0),
                       ctType="inverse" if i.kind == MarketKind.INVERSE else "linear")
        rows.append(row)
    return f"{_INSTRUMENTS_PATH}?instType={market}", orjson.dumps({"code": "0", "msg": "", "data": rows}).decode()


def sim_market_of(records: list):
    """url -> the simulator market (see REPLAY_HOSTS) serving it in a replay: one for every URL."""
    return lambda url: next(iter(REPLAY_HOSTS))


def frame_placer(records: list) -> None:
    """No placer: frames are recorded on the adapter's own connection paths (one public path per market)."""
    return None


__all__ = ["ADAPTER", "BOOK_CHANNELS", "HOST_ALIASES", "MARKETS", "REPLAY_HOSTS", "SIM_MARKET", "TARDIS_IDS",
           "adapter_options", "book_channels", "book_config", "discover_symbols", "frame_placer", "frame_rewriter",
           "instrument_list", "instruments", "is_book_channel", "market_of", "route", "sim_market_of"]
