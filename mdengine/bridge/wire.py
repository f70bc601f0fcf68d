"""What travels on the bus: subject names, KV keys and message bodies (orjson objects).

A book message is a compact snapshot of the levels the engine published (all of them, up to the slot's
capacity), with the engine's per-symbol sequence (the book `version`), the version this publisher sent before
for the symbol (`pv`, so a receiver sees a message it missed), the exchange update id and the book state.
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


def kv_key(exchange: str, symbol: str) -> str:
    return f"{exchange}.{token(symbol)}"


def book_msg_id(exchange: str, symbol: str, version: int) -> str:
    return f"{exchange}.{token(symbol)}.b.{version}"


def trades_msg_id(exchange: str, symbol: str, first_index: int) -> str:
    return f"{exchange}.{token(symbol)}.t.{first_index}"


def encode(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def decode(raw: bytes) -> dict[str, Any]:
    body = orjson.loads(raw)
    if not isinstance(body, dict) or "x" not in body:
        raise ValueError(f"not a bridge message: {raw[:80]!r}")
    return body
