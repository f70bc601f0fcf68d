"""Engine configuration: what each feed process subscribes and where it connects.

TOML loading and validation live in `mdengine.configfile`; these dataclasses are what every part of
the engine passes around (they pickle, so the supervisor hands them to feed processes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_NAMESPACE = "default"
EXCHANGES = ("binance", "okx", "bybit", "bitget")


@dataclass
class ExchangeConfig:
    name: str  # one of EXCHANGES
    symbols: list[str] = field(default_factory=list)  # unified ("BTC/USDT", "BTC/USDT:USDT") or native ids
    markets: list[str] | None = None  # restrict instrument loading to these markets (None: all the adapter knows)
    book_depth: int = 50  # levels published per side (<= book_capacity)
    book_mode: str = "diff"  # "diff": full incremental book; "partial": the exchange's lighter top-N snapshots
    trades: bool = True
    endpoints: dict[str, str] = field(default_factory=dict)  # overrides of the adapter's DEFAULT_ENDPOINTS
    max_symbols: int = 32
    book_capacity: int = 50
    trade_capacity: int = 4096
    stale_after_s: float = 3.0  # a book older than this (or whose writer is silent this long) is stale
    heartbeat_interval_s: float = 0.5  # how often the feed writes its heartbeat
    silence_timeout_s: float | None = None  # None: the adapter's default per connection
    record_dir: str | None = None  # write every frame to this directory (recorder)
    busy_poll_s: float = 0.0  # > 0: the feed polls its sockets without sleeping this long after a frame (a core)
    sched_slice_us: float = 100.0  # the loop thread's scheduler slice (Linux >= 6.12; 0: the kernel's default)
    warm_interval_ms: float = 1.0  # while idle, keep the frame path warm by replaying the last frame (0: off)
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
