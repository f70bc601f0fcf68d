"""Load and validate ``engine.toml`` into `mdengine.engine.config.EngineConfig`.

Every problem is reported as a `ConfigError` whose message starts with the key's path
(``exchanges[1].book_depth: expected an integer 1..5000, got "x"``), before anything starts.
Unknown keys are errors too: a typo must not silently fall back to a default. See
``engine.example.toml`` for every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ..exchanges import get_adapter
from ..store import layout as L
from .config import (
    DEFAULT_NAMESPACE,
    EXCHANGES,
    NAMESPACE_RULE,
    EngineConfig,
    ExchangeConfig,
    RestartPolicy,
    namespace_error,
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
BOOK_MODES = ("diff", "partial")
# BTC and ETH, spot and USDT perpetuals: what `run --sim` without a config subscribes on every exchange.
DEFAULT_SYMBOLS = ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return repr(value)


def _fail(path: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{path}: expected {expected}, got {_show(value)}")


# ---------------------------------------------------------------------------- typed readers
def _int(path: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(path, f"an integer {lo}..{hi}", v)
    return v


def _pos_float(path: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v != v or v == float("inf"):
        raise _fail(path, "a positive number of seconds", v)
    return float(v)


def _nonneg_float(path: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0 or v == float("inf"):
        raise _fail(path, "a number >= 0", v)
    return float(v)


def _bool(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(path, "true or false", v)
    return v


def _str(path: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(path, "a non-empty string", v)
    return v


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(path: str, v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            raise _fail(path, "one of " + ", ".join(choices), v)
        return v

    return check


def _str_list(path: str, v: Any) -> list[str]:
    if not isinstance(v, list):
        raise _fail(path, "a list of strings", v)
    return [_str(f"{path}[{i}]", x) for i, x in enumerate(v)]


def _str_map(path: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise _fail(path, "a table of strings", v)
    return {k: _str(f"{path}.{k}", x) for k, x in v.items()}


def _table(path: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _fail(path, "a table", v)
    return dict(v)


def check_namespace(path: str, v: Any) -> str:
    """`v` if it is a valid namespace, else ConfigError naming `path`."""
    error = namespace_error(path, v)
    if error and v != "":
        raise _fail(path, NAMESPACE_RULE, v)  # the config file's own quoting of the value
    if error:
        raise ConfigError(error)
    return v


def _trade_capacity(path: str, v: Any) -> int:
    n = _int(path, v, 2, L.MAX_TRADE_CAPACITY)
    if n & (n - 1):
        raise _fail(path, "a power of two", v)
    return n


def _check_unknown(path: str, table: dict, known: set[str]) -> None:
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"{where}: unknown key{hint}; known keys: {', '.join(sorted(known))}")


def _sched_slice(path: str, v: Any) -> float:
    us = _nonneg_float(path, v)
    if us and not 100 <= us <= 100_000:
        raise ConfigError(f"{path}: {us} us; Linux takes slices of 100 to 100000 us (0: the kernel's default)")
    return us


def _warm_interval(path: str, v: Any) -> float:
    ms = _nonneg_float(path, v)
    if ms and not 0.1 <= ms <= 1000:
        raise ConfigError(f"{path}: {ms} ms; a warm-up interval is 0.1 to 1000 ms (0: no warm-up)")
    return ms


# Keys of one exchange (and of [defaults]) -> reader. Anything else is an error.
_EXCHANGE_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "symbols": _str_list,
    "markets": _str_list,
    "book_depth": lambda p, v: _int(p, v, 1, L.MAX_BOOK_CAPACITY),
    "book_mode": _choice(BOOK_MODES),
    "trades": _bool,
    "perp": _bool,
    "endpoints": _str_map,
    "max_symbols": lambda p, v: _int(p, v, 1, L.MAX_SYMBOLS),
    "book_capacity": lambda p, v: _int(p, v, 1, L.MAX_BOOK_CAPACITY),
    "trade_capacity": _trade_capacity,
    "stale_after_s": _pos_float,
    "instrument_refresh_s": _pos_float,
    "heartbeat_interval_s": _pos_float,
    "silence_timeout_s": _pos_float,
    "record_dir": _str,
    "busy_poll_s": _nonneg_float,
    "sched_slice_us": _sched_slice,
    "warm_interval_ms": _warm_interval,
    "instrument_cache_dir": _str,
    "options": _table,
    "max_message_bytes": lambda p, v: _int(p, v, 1024, 1 << 30),
}
_RESTART_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "backoff_initial_s": _nonneg_float,
    "backoff_max_s": _nonneg_float,
    "stall_after_s": _pos_float,
    "max_restarts": lambda p, v: _int(p, v, 1, 1_000_000),
    "window_s": _pos_float,
}
_TOP_KEYS = {"namespace", "log_level", "keep_segments", "record_dir", "restart", "defaults", "exchanges", "control"}


def _ids(path: str, v: Any, lookup: Callable[[str], int], what: str) -> list[int]:
    """A list of numeric ids or names (resolved now: an unknown name is an error, not a silent no-op)."""
    if not isinstance(v, list):
        raise _fail(path, f"a list of {what} names or ids", v)
    out = []
    for i, x in enumerate(v):
        if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 - 1:
            out.append(x)
        elif isinstance(x, str) and x:
            try:
                out.append(lookup(x))
            except KeyError:
                raise ConfigError(f"{path}[{i}]: no {what} named {x!r} on this machine") from None
        else:
            raise _fail(f"{path}[{i}]", f"a {what} name or id", x)
    return out


def _control(cfg: EngineConfig, raw: Any) -> None:
    """[control]: who may use the control socket besides the engine's own user and root, and how long one request
    may wait for a feed."""
    import grp
    import pwd

    table = _table("control", raw)
    _check_unknown("control", table, {"allow_users", "allow_groups", "max_wait_s"})
    if "max_wait_s" in table:
        cfg.control_max_wait_s = _pos_float("control.max_wait_s", table["max_wait_s"])
    if "allow_users" in table:
        cfg.control_uids = _ids("control.allow_users", table["allow_users"], lambda n: pwd.getpwnam(n).pw_uid, "user")
    if "allow_groups" in table:
        cfg.control_gids = _ids("control.allow_groups", table["allow_groups"], lambda n: grp.getgrnam(n).gr_gid,
                                "group")


def _exchange(path: str, raw: Any, defaults: dict[str, Any]) -> ExchangeConfig:
    table = _table(path, raw)
    _check_unknown(path, table, set(_EXCHANGE_KEYS) | {"name"})
    if "name" not in table:
        raise ConfigError(f"{path}.name: missing; expected one of {', '.join(EXCHANGES)}")
    name = _choice(EXCHANGES)(f"{path}.name", table.pop("name"))
    values = dict(defaults)
    for key, v in table.items():
        values[key] = _EXCHANGE_KEYS[key](f"{path}.{key}", v)
    if "endpoints" in defaults and "endpoints" in table:  # per-exchange endpoints extend the defaults
        values["endpoints"] = {**defaults["endpoints"], **values["endpoints"]}
    known = get_adapter(name).DEFAULT_ENDPOINTS
    for key in values.get("endpoints", {}):
        if key not in known:  # a misspelt endpoint would silently leave the real exchange's URL in place
            where = f"{path}.endpoints.{key}" if key in table.get("endpoints", {}) else f"defaults.endpoints.{key}"
            raise ConfigError(f"{where}: {name} has no endpoint {key!r}; expected one of {', '.join(sorted(known))}")
    depth = values.get("book_depth", ExchangeConfig.book_depth)
    if "book_capacity" not in values:
        values["book_capacity"] = max(depth, ExchangeConfig.book_capacity)  # room for the depth asked
    elif depth > values["book_capacity"]:
        key = "book_depth" if "book_depth" in table else "book_capacity"
        raise ConfigError(f"{path}.{key}: book_depth {depth} exceeds book_capacity {values['book_capacity']}")
    symbols = values.get("symbols", [])
    max_symbols = values.get("max_symbols", ExchangeConfig.max_symbols)
    if len(symbols) > max_symbols:
        raise ConfigError(f"{path}.symbols: {len(symbols)} symbols exceed max_symbols {max_symbols}")
    return ExchangeConfig(name=name, **values)


def parse_config(data: dict[str, Any]) -> EngineConfig:
    """Validate an already-parsed TOML document. Raises ConfigError naming the bad key."""
    _check_unknown("", data, _TOP_KEYS)
    cfg = EngineConfig()
    if "namespace" in data:
        cfg.namespace = check_namespace("namespace", data["namespace"])
    if "log_level" in data:
        v = data["log_level"]
        cfg.log_level = _choice(LOG_LEVELS)("log_level", v.upper() if isinstance(v, str) else v)
    if "keep_segments" in data:
        cfg.keep_segments = _bool("keep_segments", data["keep_segments"])
    if "control" in data:
        _control(cfg, data["control"])
    if "restart" in data:
        table = _table("restart", data["restart"])
        _check_unknown("restart", table, set(_RESTART_KEYS))
        cfg.restart = RestartPolicy(**{k: _RESTART_KEYS[k](f"restart.{k}", v) for k, v in table.items()})
        if cfg.restart.backoff_max_s < cfg.restart.backoff_initial_s:
            raise ConfigError(f"restart.backoff_max_s: {cfg.restart.backoff_max_s} is below backoff_initial_s "
                              f"{cfg.restart.backoff_initial_s}")
    defaults: dict[str, Any] = {}
    if "defaults" in data:
        table = _table("defaults", data["defaults"])
        _check_unknown("defaults", table, set(_EXCHANGE_KEYS))
        defaults = {k: _EXCHANGE_KEYS[k](f"defaults.{k}", v) for k, v in table.items()}
    if "record_dir" in data:
        defaults.setdefault("record_dir", _str("record_dir", data["record_dir"]))
    raw_exchanges = data.get("exchanges", [])
    if not isinstance(raw_exchanges, list):
        raise _fail("exchanges", "an array of tables ([[exchanges]])", raw_exchanges)
    seen: set[str] = set()
    for i, raw in enumerate(raw_exchanges):
        ex = _exchange(f"exchanges[{i}]", raw, defaults)
        if ex.name in seen:
            raise ConfigError(f"exchanges[{i}].name: {ex.name!r} is configured twice")
        seen.add(ex.name)
        cfg.exchanges.append(ex)
    return cfg


def load_config(path: str) -> EngineConfig:
    """Read and validate a TOML file. Raises ConfigError (also for unreadable files and TOML syntax)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_config(namespace: str = DEFAULT_NAMESPACE, symbols: tuple[str, ...] = DEFAULT_SYMBOLS) -> EngineConfig:
    """BTC and ETH spot and USDT perpetuals on all four exchanges (what `run --sim` uses without a config)."""
    return EngineConfig(namespace=namespace,
                        exchanges=[ExchangeConfig(name=name, symbols=list(symbols)) for name in EXCHANGES])


def exchange_config(cfg: EngineConfig, name: str) -> ExchangeConfig:
    """`name`'s config, or a fresh one (no symbols) modelled on the first configured exchange."""
    for ex in cfg.exchanges:
        if ex.name == name:
            return ex
    if name not in EXCHANGES:
        raise ConfigError(f"unknown exchange {name!r}; supported: {', '.join(EXCHANGES)}")
    template = cfg.exchanges[0] if cfg.exchanges else ExchangeConfig(name=name)
    ex = dataclasses.replace(template, name=name, symbols=[], markets=None, endpoints={}, options={})
    cfg.exchanges.append(ex)
    return ex
