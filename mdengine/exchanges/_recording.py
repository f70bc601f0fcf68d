"""Shared helpers of the exchanges' recording rules (`exchanges/<name>/recording.py`): pure functions over
recorded records (`mdengine.recording.reader.Record`-like: kind, url, data)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..symbols import Instrument


def json_of(data: Any) -> Any:
    """The JSON value of a recorded frame or body, or None when it is not JSON (binary, text pongs)."""
    if not isinstance(data, str | bytes) or not data:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def walk(obj: Any) -> Iterator[Any]:
    """Every value nested in a JSON value, the value itself first."""
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def body_bytes(data: Any) -> bytes:
    return data.encode() if isinstance(data, str) else (data or b"")


def recorded_instruments(adapter_cls: Any, records: Iterable[Any], request_id_of) -> list[Instrument]:
    """Instruments from every instrument-list answer in the recording, whatever query it was asked with.
    `request_id_of(url)` names the adapter's request id for a recorded URL (None: not an instrument list)."""
    out: dict[tuple[str, str], Instrument] = {}
    for r in records:
        if r.kind != "http" or not r.data:
            continue
        rid = request_id_of(r.url)
        if rid is None:
            continue
        try:
            insts, _ = adapter_cls.parse_instruments(rid, body_bytes(r.data))
        except Exception:  # noqa: BLE001 - a damaged list only costs the metadata; symbols are synthesised
            continue
        for inst in insts:
            out[inst.key] = inst
    return list(out.values())


def arg_symbols(records: Iterable[Any], route, is_book_channel, trade_channel: str,
                market_of_arg) -> set[tuple[str, str]]:
    """(market, instId) of every symbol an OKX-style recording names: in its subscribe `args` (market from
    `market_of_arg(arg)`) and in the book and `trade_channel` frames `route` places."""
    out: set[tuple[str, str]] = set()
    for r in records:
        if r.kind == "send":
            for node in walk(json_of(r.data)):
                if isinstance(node, dict) and isinstance(node.get("instId"), str):
                    out.add((market_of_arg(node), node["instId"]))
        elif r.kind == "recv":
            hit = route(r.data)
            if hit is not None and (is_book_channel(hit[2]) or hit[2] == trade_channel):
                out.add(hit[:2])
    return out


def routed_book_channels(records: Iterable[Any], route, is_book_channel) -> set[str]:
    """The book channels among the received frames that `route` (a frame -> (market, native, channel)) places."""
    out = set()
    for r in records:
        if r.kind == "recv":
            hit = route(r.data)
            if hit is not None and is_book_channel(hit[2]):
                out.add(hit[2])
    return out


def path_of(url: str) -> str:
    return urlsplit(url).path


def synthesise(adapter_cls: Any, key: tuple[str, str], kind_of) -> Instrument:
    """The instrument the adapter derives from a native id alone, else a minimal one (unified = native)."""
    market, native = key
    inst = adapter_cls.native_instrument(native, market)
    if inst is not None:
        return inst
    return Instrument(adapter_cls.exchange, market, native, native, kind_of(market), "", "")
