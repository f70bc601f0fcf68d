"""Every error mdengine raises on purpose, in one tree rooted in `MdengineError`.

``except mdengine.MdengineError`` catches any of them. Each also keeps the built-in base it had before the tree
existed (KeyError, RuntimeError, ValueError, FileNotFoundError, ...), so code that catches those still works.
This module imports nothing of mdengine's own: every layer may raise these.
"""

from __future__ import annotations


class MdengineError(Exception):
    """The root of every error mdengine raises on purpose."""


class UnknownSymbol(MdengineError, KeyError):
    """The symbol is not known: not listed by the exchange, not in the segment's directory, or ambiguous.

    The one unknown-symbol type: the instrument index, the store reader and the client all raise it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown symbol"


class NoPerpData(MdengineError, LookupError):
    """The symbol has no perpetual-futures record: it is spot (or an option), or its segment predates layout 1.4."""


class ConfigError(MdengineError, ValueError):
    """The configuration is invalid; the message names the offending key."""


# ----------------------------------------------------------------------------- the shared-memory store
class LayoutError(MdengineError, RuntimeError):
    """The segment is not an mdengine segment of a layout this code can read."""


class SegmentNotFound(MdengineError, FileNotFoundError):
    """No engine has created this segment (or it was cleaned up)."""


class SegmentExists(MdengineError, FileExistsError):
    """A segment with this name already exists."""


class StoreFull(MdengineError, RuntimeError):
    """The segment has no free symbol slot."""


class ReadContention(MdengineError, RuntimeError):
    """The writer changed the book on every one of `retry_limit` attempts; no consistent copy was had."""


# ----------------------------------------------------------------------------- the client and the control channel
class EngineNotFound(MdengineError, RuntimeError):
    """No engine publishes in this namespace (no segment for any exchange)."""


class StaleBookError(MdengineError, RuntimeError):
    """The data is stale (not live, dead or silent writer) or older than `max_age`, and no REST fallback served it."""

    def __init__(self, exchange: str, symbol: str, age_s: float, state: str, reason: str) -> None:
        super().__init__(f"{exchange} {symbol}: stale book ({reason}; state {state}, age {age_s:.3f} s)")
        self.exchange, self.symbol, self.age_s, self.state, self.reason = exchange, symbol, age_s, state, reason

    def __reduce__(self) -> tuple:  # picklable across processes despite the five-argument __init__
        return type(self), (self.exchange, self.symbol, self.age_s, self.state, self.reason)


class SubscribeError(MdengineError, RuntimeError):
    """The supervisor refused a subscribe/unsubscribe; the message is the exchange's or supervisor's own."""


class ControlError(MdengineError, RuntimeError):
    """The control channel failed: no supervisor, no answer in time, garbage, a squatter, or permission
    denied. The message is a sentence for the user."""


# ----------------------------------------------------------------------------- adapters
class AdapterError(MdengineError):
    """The adapter was misused by the engine (a local bug), e.g. a frame for a connection it never asked for."""


__all__ = ["AdapterError", "ConfigError", "ControlError", "EngineNotFound", "LayoutError", "MdengineError",
           "NoPerpData", "ReadContention", "SegmentExists", "SegmentNotFound", "StaleBookError", "StoreFull",
           "SubscribeError", "UnknownSymbol"]
