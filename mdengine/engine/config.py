"""Engine configuration: what each feed process subscribes and where it connects.

TOML loading and validation live in `mdengine.engine.configfile`; these dataclasses are what every part of
the engine passes around (they pickle, so the supervisor hands them to feed processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..exchanges import EXCHANGES as EXCHANGES  # the registry's list: config files name these

DEFAULT_NAMESPACE = "default"
NAMESPACE_ENV = "MDENGINE_NAMESPACE"  # the namespace when none is given (Client() and every command)
NAMESPACE_RULE = "1-12 characters of a-z, 0-9 or _"


def namespace_error(source: str, value: object) -> str | None:
    """Why `value` (from `source`, e.g. "--namespace") is not a namespace, or None if it is one."""
    from ..store.shm import segment_name  # the segment-name rule is the namespace rule

    if value == "":
        return f"{source} is empty: give a namespace ({NAMESPACE_RULE}), or leave it out for the default"
    try:
        segment_name(value, "x")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"{source}: expected {NAMESPACE_RULE}, got {value!r}"
    return None


def resolve_namespace(namespace: str | None = None, default: str = DEFAULT_NAMESPACE, source: str = "namespace") -> str:
    """`namespace` if given, else $MDENGINE_NAMESPACE if set, else `default`.

    Raises ValueError naming where the bad value came from (an empty string is never taken for the default).
    """
    if namespace is None:
        if NAMESPACE_ENV not in os.environ:
            return default
        namespace, source = os.environ[NAMESPACE_ENV], NAMESPACE_ENV
    error = namespace_error(source, namespace)
    if error:
        raise ValueError(error)
    return namespace


@dataclass
class ExchangeConfig:
    name: str  # one of EXCHANGES
    symbols: list[str] = field(default_factory=list)  # unified ("BTC/USDT", "BTC/USDT:USDT") or native ids
    markets: list[str] | None = None  # restrict instrument loading to these markets (None: all the adapter knows)
    book_depth: int = 50  # levels published per side (<= book_capacity)
    book_mode: str = "diff"  # "diff": full incremental book; "partial": the exchange's lighter top-N snapshots
    trades: bool = True
    perp: bool = True  # mark, index, funding, open interest and liquidations of perpetuals (where implemented)
    endpoints: dict[str, str] = field(default_factory=dict)  # overrides of the adapter's DEFAULT_ENDPOINTS
    max_symbols: int = 32
    book_capacity: int = 50
    trade_capacity: int = 4096
    # a book whose connection received nothing (data, heartbeat, pong) this long is stale for readers; the feed
    # probes such a connection at half of it and replaces it at 1.5 times it (published in the segment, layout 1.3)
    stale_after_s: float = 3.0
    heartbeat_interval_s: float = 0.5  # how often the feed writes its heartbeat
    silence_timeout_s: float | None = None  # None: the adapter's default per connection
    record_dir: str | None = None  # write every frame to this directory (recorder)
    busy_poll_s: float = 0.0  # > 0: the feed polls its sockets without sleeping this long after a frame (a core)
    sched_slice_us: float = 100.0  # the loop thread's scheduler slice (Linux >= 6.12; 0: the kernel's default)
    warm_interval_ms: float = 1.0  # while idle, keep the frame path warm by replaying the last frame (0: off)
    # the last good instrument lists (None: $XDG_CACHE_HOME/mdengine/instruments or ~/.cache/mdengine/instruments)
    instrument_cache_dir: str | None = None
    instrument_refresh_s: float = 3600.0  # the lists are fetched again this often: wildcards follow (de)listings
    max_message_bytes: int | None = None  # largest WebSocket message accepted (None: the adapter's, 4 MiB)
    options: dict = field(default_factory=dict)  # adapter-specific knobs


@dataclass
class RestartPolicy:
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stall_after_s: float = 5.0  # heartbeat older than this: the feed is stalled and gets restarted
    max_restarts: int = 10  # within `window_s`; more is a crash loop and the supervisor gives up
    window_s: float = 300.0


@dataclass
class EngineConfig:
    namespace: str = DEFAULT_NAMESPACE
    exchanges: list[ExchangeConfig] = field(default_factory=list)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    log_level: str = "INFO"
    keep_segments: bool = False  # leave segments in /dev/shm on shutdown (post-mortem)
    # who may use the control socket besides the engine's own user and root (engine.toml [control])
    control_uids: list[int] = field(default_factory=list)
    control_gids: list[int] = field(default_factory=list)
    # the longest a control request may hold a control worker waiting for a feed: a larger "timeout" is cut to it
    control_max_wait_s: float = 60.0
