"""REST fallback: depth, recent trades and perp records of any exchange, by pure builders and parsers, and one
small urllib fetch.

Used by the Client when a book (or perp record) is stale or its symbol is not subscribed yet. Everything here except
`fetch` is pure (URL in, bytes in, values out), so the parsers are tested on exact exchange bodies. This module
names no exchange: each exchange's URLs, envelopes and parsers live in its package (`mdengine.exchanges.<name>.rest`),
which these functions ask through `mdengine.exchanges.exchange`.

Endpoints are keyed by *REST market*, the simulator's market names (each exchange package's
``endpoints.DEFAULT_REST``). `resolve` turns (exchange, symbol, market/kind) into a `RestSymbol`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from types import ModuleType

import numpy as np

from . import restbudget
from .exchanges import EXCHANGES, trade_id
from .exchanges import exchange as _exchange
from .exchanges._rest import RestBook, RestError, RestPerp, RestSymbol
from .exchanges._rest import short as _short
from .store.layout import TRADE_DTYPE, MarketKind

DEFAULT_REST: dict[str, str] = {market: url for name in EXCHANGES
                                for market, url in _exchange(name).endpoints.DEFAULT_REST.items()}
USER_AGENT = "mdengine-client/0.1"


def _rest_of(exchange: str) -> ModuleType:
    return _exchange(exchange).rest


# ----------------------------------------------------------------------------- symbols
def market_kind(exchange: str, market: str) -> int | None:
    """The MarketKind of `exchange`'s market named `market` (any case), or None when the exchange has no such market."""
    return _exchange(exchange).naming.MARKET_KINDS.get(market.lower())


def rest_endpoints(endpoints: Mapping[str, str | tuple[str, str]] | None) -> dict[str, str]:
    """DEFAULT_REST overridden by `endpoints`: {rest market: base url} or a Simulator's {market: (ws, rest)}."""
    out = dict(DEFAULT_REST)
    for market, value in (endpoints or {}).items():
        out[market] = value[1] if isinstance(value, tuple | list) else value
    return {k: v.rstrip("/") for k, v in out.items()}


def _split_unified(symbol: str) -> tuple[str, str, str, str] | None:
    """(base, quote, settle, expiry) of a unified symbol, or None if it is not one."""
    if "/" not in symbol:
        return None
    pair, _, contract = symbol.partition(":")
    base, _, quote = pair.partition("/")
    settle, _, expiry = contract.partition("-")
    if not base or not quote:
        return None
    return base, quote, settle, expiry


def resolve(exchange: str, symbol: str, kind: int | None = None, native: str | None = None) -> RestSymbol:
    """The REST naming of `symbol` on `exchange`.

    `symbol` is unified (``BTC/USDT``, ``BTC/USDT:USDT``, ``BTC/USD:BTC``) or, with `native` unset, a native id
    (then `kind` says which market; spot if None). With `native` and `kind` known (from the segment
    directory) nothing is guessed. Raises ValueError for what has no REST fallback (dated futures, options).
    """
    parts = _split_unified(symbol)
    settle = ""
    if parts is not None:
        base, quote, settle, expiry = parts
        if expiry:
            raise ValueError(f"{exchange}: no REST fallback for dated future {symbol!r}")
        derived = MarketKind.SPOT if not settle else (MarketKind.LINEAR if settle == quote else MarketKind.INVERSE)
        kind = derived if kind is None else kind
        if native is None:
            native = _exchange(exchange).naming.native_id(base, quote, kind)
    else:
        native = native or symbol
        kind = MarketKind.SPOT if kind is None else kind
    if kind not in (MarketKind.SPOT, MarketKind.LINEAR, MarketKind.INVERSE):
        raise ValueError(f"{exchange}: no REST fallback for {symbol!r} (market kind {kind})")
    market = _exchange(exchange).naming.rest_market(kind)
    if market is None:
        what = "coin-margined" if kind == MarketKind.INVERSE else f"market kind {kind}"
        raise ValueError(f"{exchange}: no REST fallback for {what} {symbol!r}")
    return RestSymbol(exchange, market, native, kind, settle)


# ----------------------------------------------------------------------------- URLs
def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of at least min(depth, the exchange's maximum) levels per side."""
    return _rest_of(sym.exchange).depth_url(base, sym, depth)


def trades_url(base: str, sym: RestSymbol, limit: int = 100) -> str:
    """GET url of the most recent public trades."""
    return _rest_of(sym.exchange).trades_url(base, sym, limit)


def perp_urls(base: str, sym: RestSymbol) -> list[str]:
    """GET urls whose answers together make a perp record (one to four, by exchange); ValueError for spot."""
    return _rest_of(sym.exchange).perp_urls(base, sym)


# ----------------------------------------------------------------------------- parsers
def _load(exchange: str, body: bytes | str) -> object:
    try:
        return json.loads(body)
    except ValueError as e:
        raise RestError(f"{exchange}: REST answer is not JSON: {_short(body)}") from e


def parse_depth(exchange: str, body: bytes | str) -> RestBook:
    """Parse a depth answer of `exchange`. Raises RestError (with the exchange's message) on error bodies."""
    rest = _rest_of(exchange)
    return rest.parse_depth(rest.payload(_load(exchange, body)))


def parse_trades(exchange: str, body: bytes | str, recv_ts_ns: int = 0) -> np.ndarray:
    """Recent trades as a TRADE_DTYPE array, oldest first (`index` is -1: they never were in a ring)."""
    rest = _rest_of(exchange)
    data = rest.payload(_load(exchange, body))
    try:
        rows = rest.trade_rows(data, recv_ts_ns)
    except (KeyError, TypeError, ValueError) as e:
        raise RestError(f"{exchange}: bad trade in REST answer: {e!r}") from e
    try:
        return np.array(rows, dtype=TRADE_DTYPE)
    except OverflowError as e:  # a time or id beyond int64
        raise RestError(f"{exchange}: out-of-range value in REST trades: {e}") from e


def parse_perp(exchange: str, bodies: list[bytes | str]) -> RestPerp:
    """A perp record from the answers to `perp_urls`, in their order. Raises RestError (with the exchange's message)
    on error bodies, and for a value outside the feed's range rule (mdengine.limits.perp_fields)."""
    rest = _rest_of(exchange)
    docs = [_load(exchange, b) for b in bodies]
    try:
        return rest.parse_perp(docs)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, RestError):
            raise
        raise RestError(f"{exchange}: bad REST perp answer: {e!r}") from e


# ----------------------------------------------------------------------------- I/O
def fetch(url: str, timeout: float = 2.0, exchange: str = "") -> bytes:
    """GET `url` and return the body.

    Raises RestError with the HTTP status and, when the error body is an `exchange` envelope, the
    exchange's own code and message (e.g. Binance ``Invalid symbol. (code -1121)``).
    """
    budget = _budget(url)
    if budget is not None:  # the box's shared REST budget: wait for its tokens (or its 429/418 block), in `timeout`
        try:
            budget[0].acquire(budget[1], timeout)
        except restbudget.BudgetExhausted as e:
            raise RestError(str(e), 429, url) from None
        except OSError:  # the budget's file failed: unpaced, as without one
            budget = None
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) urls we build
            body = resp.read()
            if budget is not None:
                _observe(url, resp.headers)
            return body
    except urllib.error.HTTPError as e:
        body = e.read() if e.fp is not None else b""
        if budget is not None and e.headers is not None:
            _observe(url, e.headers)
        if budget is not None and restbudget.is_limit_answer(budget[0].key, e.code):  # everyone honours it
            try:
                budget[0].penalise(e.code, _retry_after(e.headers.get("Retry-After") if e.headers else None))
            except OSError:
                pass  # the budget's file failed: the caller still gets the 429/418 as a RestError
        e.close()
        text = _short(body)
        if exchange:
            try:
                _rest_of(exchange).payload(json.loads(body))
            except RestError as inner:
                text = str(inner)
            except ValueError:
                pass
        raise RestError(f"HTTP {e.code} from {url}: {text}", e.code, url) from None
    except (urllib.error.URLError, OSError) as e:
        raise RestError(f"GET {url} failed: {getattr(e, 'reason', e)}", 0, url) from e


def _budget(url: str) -> tuple[restbudget.RestBudget, float] | None:
    try:
        return restbudget.for_url(url)
    except (OSError, ValueError):  # no budget file (a read-only /dev/shm, a bad scope): unpaced, as before
        return None


def _observe(url: str, headers) -> None:
    """The IP's use as the exchange reports it, for the shared budget (other programs on the IP spend it too)."""
    try:
        restbudget.observe(url, headers)
    except (OSError, ValueError):  # the budget's file failed: the answer stands
        pass


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: the budget's default block applies
        return None


def fetch_depth(base: str, sym: RestSymbol, depth: int, timeout: float = 2.0) -> RestBook:
    return parse_depth(sym.exchange, fetch(depth_url(base, sym, depth), timeout, sym.exchange))


def fetch_trades(base: str, sym: RestSymbol, limit: int = 100, timeout: float = 2.0,
                 recv_ts_ns: int = 0) -> np.ndarray:
    return parse_trades(sym.exchange, fetch(trades_url(base, sym, limit), timeout, sym.exchange), recv_ts_ns)


def fetch_perp(base: str, sym: RestSymbol, timeout: float = 2.0) -> RestPerp:
    """A perp record of `sym` over REST: its requests one after another, each through the shared REST budget."""
    return parse_perp(sym.exchange, [fetch(url, timeout, sym.exchange) for url in perp_urls(base, sym)])


__all__ = ["DEFAULT_REST", "RestBook", "RestError", "RestPerp", "RestSymbol", "depth_url", "fetch", "fetch_depth",
           "fetch_perp", "fetch_trades", "parse_depth", "parse_perp", "parse_trades", "perp_urls", "resolve",
           "rest_endpoints", "trade_id", "trades_url"]
