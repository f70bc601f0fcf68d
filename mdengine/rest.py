"""REST fallback: per-exchange depth and recent-trade URLs, pure parsers, and one small urllib fetch.

Used by the Client when a book is stale or its symbol is not subscribed yet. Everything here except
`fetch` is pure (URL in, bytes in, values out), so the parsers are tested on exact exchange bodies.

Endpoints are keyed by *REST market*, the simulator's market names: ``binance-spot``, ``binance-usdm``,
``okx``, ``bybit``, ``bitget``. `resolve` turns (exchange, symbol, market/kind) into a `RestSymbol`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import numpy as np

from .exchanges._wire import trade_id  # the feed's own id mapping, so REST and stream ids match
from .limits import sane, trade_numbers
from .store.layout import TRADE_DTYPE, MarketKind, Side

DEFAULT_REST: dict[str, str] = {
    "binance-spot": "https://api.binance.com",
    "binance-usdm": "https://fapi.binance.com",
    "okx": "https://www.okx.com",
    "bybit": "https://api.bybit.com",
    "bitget": "https://api.bitget.com",
}
USER_AGENT = "mdengine-client/0.1"
_MAX_ERROR_TEXT = 300


class RestError(RuntimeError):
    """A REST request failed: transport error, HTTP error status or an exchange error code.

    `status` is the HTTP status (0 for a transport error); the message carries the exchange's own text.
    """

    def __init__(self, message: str, status: int = 0, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


@dataclass(frozen=True)
class RestSymbol:
    """What the REST endpoints need to name one instrument."""

    exchange: str
    rest_market: str  # key of DEFAULT_REST
    native: str
    kind: int  # MarketKind
    settle: str = ""


@dataclass(frozen=True)
class RestBook:
    """A REST depth snapshot: (n, 2) float arrays of [price, qty], best first."""

    bids: np.ndarray
    asks: np.ndarray
    update_id: int  # 0 where the exchange gives none (OKX, Bitget)
    exch_ts_ns: int  # 0 where the exchange gives none (Binance spot)


# ----------------------------------------------------------------------------- symbols
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
            native = _native(exchange, base, quote, kind)
    else:
        native = native or symbol
        kind = MarketKind.SPOT if kind is None else kind
    if kind not in (MarketKind.SPOT, MarketKind.LINEAR, MarketKind.INVERSE):
        raise ValueError(f"{exchange}: no REST fallback for {symbol!r} (market kind {kind})")
    if exchange == "binance":
        if kind == MarketKind.INVERSE:
            raise ValueError(f"binance: no REST fallback for coin-margined {symbol!r}")
        market = "binance-spot" if kind == MarketKind.SPOT else "binance-usdm"
    elif exchange in ("okx", "bybit", "bitget"):
        market = exchange
    else:
        raise ValueError(f"unknown exchange {exchange!r}")
    return RestSymbol(exchange, market, native, kind, settle)


def _native(exchange: str, base: str, quote: str, kind: int) -> str:
    if exchange == "okx":
        return f"{base}-{quote}" if kind == MarketKind.SPOT else f"{base}-{quote}-SWAP"
    return f"{base}{quote}"


_BYBIT_CATEGORY = {MarketKind.SPOT: "spot", MarketKind.LINEAR: "linear", MarketKind.INVERSE: "inverse"}


def _bitget_product(sym: RestSymbol) -> str:
    if sym.kind == MarketKind.INVERSE:
        return "COIN-FUTURES"
    return "USDC-FUTURES" if sym.settle == "USDC" else "USDT-FUTURES"


# ----------------------------------------------------------------------------- URLs
def depth_url(base: str, sym: RestSymbol, depth: int) -> str:
    """GET url of a depth snapshot of at least min(depth, the exchange's maximum) levels per side."""
    ex, spot = sym.exchange, sym.kind == MarketKind.SPOT
    if ex == "binance":
        if spot:
            q = {"symbol": sym.native, "limit": min(max(depth, 1), 5000)}
            return f"{base}/api/v3/depth?{urlencode(q)}"
        allowed = (5, 10, 20, 50, 100, 500, 1000)
        q = {"symbol": sym.native, "limit": next((a for a in allowed if a >= depth), 1000)}
        return f"{base}/fapi/v1/depth?{urlencode(q)}"
    if ex == "okx":
        return f"{base}/api/v5/market/books?{urlencode({'instId': sym.native, 'sz': min(max(depth, 1), 400)})}"
    if ex == "bybit":
        q = {"category": _BYBIT_CATEGORY[sym.kind], "symbol": sym.native, "limit": min(max(depth, 1), 200)}
        return f"{base}/v5/market/orderbook?{urlencode(q)}"
    if ex == "bitget":
        if spot:
            q = {"symbol": sym.native, "type": "step0", "limit": min(max(depth, 1), 150)}
            return f"{base}/api/v2/spot/market/orderbook?{urlencode(q)}"
        limit = next((str(a) for a in (1, 5, 15, 50) if a >= depth), "max")
        q = {"symbol": sym.native, "productType": _bitget_product(sym), "precision": "scale0", "limit": limit}
        return f"{base}/api/v2/mix/market/merge-depth?{urlencode(q)}"
    raise ValueError(f"unknown exchange {ex!r}")


def trades_url(base: str, sym: RestSymbol, limit: int = 100) -> str:
    """GET url of the most recent public trades."""
    ex, spot = sym.exchange, sym.kind == MarketKind.SPOT
    if ex == "binance":
        path = "/api/v3/trades" if spot else "/fapi/v1/trades"
        return f"{base}{path}?{urlencode({'symbol': sym.native, 'limit': min(max(limit, 1), 1000)})}"
    if ex == "okx":
        return f"{base}/api/v5/market/trades?{urlencode({'instId': sym.native, 'limit': min(max(limit, 1), 500)})}"
    if ex == "bybit":
        cap = 60 if spot else 1000
        q = {"category": _BYBIT_CATEGORY[sym.kind], "symbol": sym.native, "limit": min(max(limit, 1), cap)}
        return f"{base}/v5/market/recent-trade?{urlencode(q)}"
    if ex == "bitget":
        if spot:
            return f"{base}/api/v2/spot/market/fills?{urlencode({'symbol': sym.native, 'limit': min(limit, 500)})}"
        q = {"symbol": sym.native, "productType": _bitget_product(sym), "limit": min(max(limit, 1), 100)}
        return f"{base}/api/v2/mix/market/fills?{urlencode(q)}"
    raise ValueError(f"unknown exchange {ex!r}")


# ----------------------------------------------------------------------------- parsers
def _load(exchange: str, body: bytes | str) -> object:
    try:
        return json.loads(body)
    except ValueError as e:
        raise RestError(f"{exchange}: REST answer is not JSON: {_short(body)}") from e


def _short(body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text[:_MAX_ERROR_TEXT]


def _payload(exchange: str, doc: object) -> object:
    """The data part of an exchange envelope; raises RestError with the exchange's message on an error code."""
    if exchange == "binance":
        if isinstance(doc, dict) and "code" in doc and "msg" in doc:
            raise RestError(f"binance: {doc['msg']} (code {doc['code']})")
        return doc
    if not isinstance(doc, dict):
        raise RestError(f"{exchange}: unexpected REST answer {str(doc)[:_MAX_ERROR_TEXT]}")
    if exchange == "okx":
        if str(doc.get("code")) != "0":
            raise RestError(f"okx: {doc.get('msg') or 'error'} (code {doc.get('code')})")
        return doc.get("data")
    if exchange == "bybit":
        if doc.get("retCode") != 0:
            raise RestError(f"bybit: {doc.get('retMsg') or 'error'} (retCode {doc.get('retCode')})")
        return doc.get("result")
    if exchange == "bitget":
        if str(doc.get("code")) != "00000":
            raise RestError(f"bitget: {doc.get('msg') or 'error'} (code {doc.get('code')})")
        return doc.get("data")
    raise ValueError(f"unknown exchange {exchange!r}")


def _levels(exchange: str, rows: object, what: str) -> np.ndarray:
    """(n, 2) float64 from [[px, qty, ...], ...]; strings or numbers (Bitget mix sends numbers)."""
    if not isinstance(rows, list):
        raise RestError(f"{exchange}: REST depth has no {what} list")
    out = np.empty((len(rows), 2), dtype=np.float64)
    try:
        for i, row in enumerate(rows):
            out[i, 0] = float(row[0])
            out[i, 1] = float(row[1])
            if not sane(out[i, 0], out[i, 1]):  # the book's own rule (mdengine.limits)
                raise ValueError("not a valid price and quantity")
    except (TypeError, ValueError, LookupError) as e:  # LookupError: a dict (or other mapping) for a level
        raise RestError(f"{exchange}: bad {what} level {rows[i]!r} in REST depth") from e
    return out


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def parse_depth(exchange: str, body: bytes | str) -> RestBook:
    """Parse a depth answer of `exchange`. Raises RestError (with the exchange's message) on error bodies."""
    data = _payload(exchange, _load(exchange, body))
    if exchange == "okx":
        if not isinstance(data, list) or not data:
            raise RestError("okx: REST depth has no data")
        data = data[0]
    if not isinstance(data, dict):
        raise RestError(f"{exchange}: unexpected REST depth {str(data)[:_MAX_ERROR_TEXT]}")
    if exchange == "binance":
        return RestBook(_levels(exchange, data.get("bids"), "bids"), _levels(exchange, data.get("asks"), "asks"),
                        _int(data.get("lastUpdateId")), _int(data.get("E")) * 1_000_000)
    if exchange == "bybit":
        return RestBook(_levels(exchange, data.get("b"), "bids"), _levels(exchange, data.get("a"), "asks"),
                        _int(data.get("u")), _int(data.get("ts")) * 1_000_000)
    return RestBook(_levels(exchange, data.get("bids"), "bids"), _levels(exchange, data.get("asks"), "asks"),
                    0, _int(data.get("ts")) * 1_000_000)


def parse_trades(exchange: str, body: bytes | str, recv_ts_ns: int = 0) -> np.ndarray:
    """Recent trades as a TRADE_DTYPE array, oldest first (`index` is -1: they never were in a ring)."""
    data = _payload(exchange, _load(exchange, body))
    if exchange == "bybit":
        data = data.get("list") if isinstance(data, dict) else None
    if not isinstance(data, list):
        raise RestError(f"{exchange}: unexpected REST trades {str(data)[:_MAX_ERROR_TEXT]}")
    rows = []
    try:
        for t in data:
            if exchange == "binance":
                side = Side.SELL if t["isBuyerMaker"] else Side.BUY
                tid, flags = trade_id(t["id"])
                rows.append((int(t["time"]) * 1_000_000, recv_ts_ns, *trade_numbers(t["price"], t["qty"]), tid, side,
                             flags, -1))
                continue
            if exchange == "okx":
                px, qty, ts, raw_id = t["px"], t["sz"], t["ts"], t["tradeId"]
            elif exchange == "bybit":
                px, qty, ts, raw_id = t["price"], t["size"], t["time"], t["execId"]
            else:
                px, qty, ts, raw_id = t["price"], t["size"], t["ts"], t["tradeId"]
            side = Side.BUY if str(t["side"]).lower() == "buy" else Side.SELL
            tid, flags = trade_id(raw_id)
            rows.append((int(ts) * 1_000_000, recv_ts_ns, *trade_numbers(px, qty), tid, side, flags, -1))
    except (KeyError, TypeError, ValueError) as e:
        raise RestError(f"{exchange}: bad trade in REST answer: {e!r}") from e
    if exchange != "binance":  # OKX, Bybit and Bitget list newest first
        rows.reverse()
    try:
        return np.array(rows, dtype=TRADE_DTYPE)
    except OverflowError as e:  # a time or id beyond int64
        raise RestError(f"{exchange}: out-of-range value in REST trades: {e}") from e


# ----------------------------------------------------------------------------- I/O
def fetch(url: str, timeout: float = 2.0, exchange: str = "") -> bytes:
    """GET `url` and return the body.

    Raises RestError with the HTTP status and, when the error body is an `exchange` envelope, the
    exchange's own code and message (e.g. Binance ``Invalid symbol. (code -1121)``).
    """
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) urls we build
            return resp.read()
    except urllib.error.HTTPError as e:
        body = e.read() if e.fp is not None else b""
        e.close()
        text = _short(body)
        if exchange:
            try:
                _payload(exchange, json.loads(body))
            except RestError as inner:
                text = str(inner)
            except ValueError:
                pass
        raise RestError(f"HTTP {e.code} from {url}: {text}", e.code, url) from None
    except (urllib.error.URLError, OSError) as e:
        raise RestError(f"GET {url} failed: {getattr(e, 'reason', e)}", 0, url) from e


def fetch_depth(base: str, sym: RestSymbol, depth: int, timeout: float = 2.0) -> RestBook:
    return parse_depth(sym.exchange, fetch(depth_url(base, sym, depth), timeout, sym.exchange))


def fetch_trades(base: str, sym: RestSymbol, limit: int = 100, timeout: float = 2.0,
                 recv_ts_ns: int = 0) -> np.ndarray:
    return parse_trades(sym.exchange, fetch(trades_url(base, sym, limit), timeout, sym.exchange), recv_ts_ns)


__all__ = ["DEFAULT_REST", "RestBook", "RestError", "RestSymbol", "depth_url", "fetch", "fetch_depth", "fetch_trades",
           "parse_depth", "parse_trades", "resolve", "rest_endpoints", "trade_id", "trades_url"]
