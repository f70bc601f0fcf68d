"""What travels on the bus: subject names, KV keys and message bodies (orjson objects).

A book message is a compact snapshot of the levels the engine published (all of them, up to the slot's
capacity), keyed by what the exchange gave: its update id `u` (equal across independent engines reading the same
exchange, so two engines back each other up), with `pu`, the live `u` this publisher sent before for the symbol
(so a receiver sees a message it missed), the book state, the engine's own version `v` (informational only) and
`src`, the publisher's source id. Trades are keyed by their exchange trade ids.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

STREAM_PREFIX = "MD_"
KV_PREFIX = "md_"
_SAFE = re.compile(r"[A-Za-z0-9_-]")


def token(symbol: str) -> str:
    """A subject token (and KV key part) for a symbol: [A-Za-z0-9_-] kept, any other character as =XX (its
    UTF-8 bytes in hex), so the mapping is reversible and "BTC/USDT" and "BTC_USDT" stay apart."""
    return "".join(c if _SAFE.match(c) else "".join(f"={b:02X}" for b in c.encode()) for c in symbol)


def subject_root(namespace: str) -> str:
    return f"md.{namespace}"


def book_subject(namespace: str, exchange: str, symbol: str) -> str:
    return f"md.{namespace}.{exchange}.{token(symbol)}.book"


def trades_subject(namespace: str, exchange: str, symbol: str) -> str:
    return f"md.{namespace}.{exchange}.{token(symbol)}.trades"


def status_subject(namespace: str, exchange: str) -> str:
    """Per-exchange liveness: every symbol's state, version and freshness, a few times a second."""
    return f"md.{namespace}.{exchange}._status"


def stream_name(namespace: str) -> str:
    return f"{STREAM_PREFIX}{namespace}"


def bucket_name(namespace: str) -> str:
    return f"{KV_PREFIX}{namespace}"


def kv_key(exchange: str, symbol: str, source: str) -> str:
    """Each source keeps its own snapshot of a symbol: its recent trades are numbered by its engine's ring."""
    return f"{exchange}.{token(symbol)}.{token(source)}"


def book_msg_id(exchange: str, symbol: str, update_id: int, exch_ts_ns: int) -> str:
    """A live book at exchange update id `update_id`: the same id from every engine, sent once to the stream. The
    exchange's timestamp keeps an id apart from the same `u` before the exchange restarted its sequence."""
    return f"{exchange}.{token(symbol)}.b.{update_id}.{exch_ts_ns}"


def state_msg_id(exchange: str, symbol: str, source: str, version: int) -> str:
    """A book that is not live (resyncing, stale) is one source's news, never deduplicated against another's."""
    return f"{exchange}.{token(symbol)}.b.{token(source)}.{version}"


def trades_msg_id(exchange: str, symbol: str, first_id: int, last_id: int) -> str:
    """A batch by its first and last exchange trade ids: two engines' batches that start at the same trade but
    end elsewhere are different messages."""
    return f"{exchange}.{token(symbol)}.t.{first_id}-{last_id}"


def status_msg_id(exchange: str, source: str, now_ns: int) -> str:
    return f"{exchange}.s.{token(source)}.{now_ns}"


def default_source_id(namespace: str) -> str:
    import socket

    return f"{socket.gethostname()}:{namespace}"


def encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def decode(raw: bytes) -> dict[str, Any]:
    body = orjson.loads(raw)
    if not isinstance(body, dict) or "x" not in body:
        raise ValueError(f"not a bridge message: {raw[:80]!r}")
    return body
