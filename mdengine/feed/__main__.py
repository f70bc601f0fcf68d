"""``python -m mdengine.feed``: run one exchange's feed in this process (for tests and debugging)."""

from __future__ import annotations

import argparse
import sys

from ..engine.config import ExchangeConfig, resolve_namespace
from .process import run_feed


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"--{what} expects NAME=VALUE, got {item!r}")
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mdengine.feed", description=__doc__)
    p.add_argument("--namespace", help="store namespace (default: $MDENGINE_NAMESPACE, else default)")
    p.add_argument("--exchange", required=True)
    p.add_argument("--symbols", default="", help="comma-separated unified or native symbols")
    p.add_argument("--markets", default=None, help="comma-separated markets to load (default: all)")
    p.add_argument("--endpoint", action="append", default=[], metavar="NAME=URL",
                   help="override an endpoint, e.g. spot_ws=ws://127.0.0.1:9000 (repeatable)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="adapter option, e.g. trade_stream=aggTrade (repeatable; strings)")
    p.add_argument("--book-depth", type=int, default=50)
    p.add_argument("--book-mode", choices=("diff", "partial"), default="diff")
    p.add_argument("--no-trades", action="store_true")
    p.add_argument("--max-symbols", type=int, default=32)
    p.add_argument("--book-capacity", type=int, default=50)
    p.add_argument("--trade-capacity", type=int, default=4096)
    p.add_argument("--heartbeat", type=float, default=0.5, help="heartbeat interval, seconds")
    p.add_argument("--silence-timeout", type=float, default=None, help="watchdog, seconds (default: adapter's)")
    p.add_argument("--record-dir", default=None)
    p.add_argument("--instrument-cache-dir", default=None,
                   help="where the last good instrument lists are kept (default: ~/.cache/mdengine/instruments)")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    cfg = ExchangeConfig(
        name=a.exchange, symbols=[s for s in a.symbols.split(",") if s],
        markets=a.markets.split(",") if a.markets else None, book_depth=a.book_depth, book_mode=a.book_mode,
        trades=not a.no_trades, endpoints=_pairs(a.endpoint, "endpoint"), max_symbols=a.max_symbols,
        book_capacity=a.book_capacity, trade_capacity=a.trade_capacity, heartbeat_interval_s=a.heartbeat,
        silence_timeout_s=a.silence_timeout, record_dir=a.record_dir, options=_pairs(a.option, "option"),
        instrument_cache_dir=a.instrument_cache_dir)
    try:
        namespace = resolve_namespace(a.namespace, source="--namespace")
    except ValueError as e:
        p.error(str(e))
    return run_feed(namespace, cfg, log_level=a.log_level)


if __name__ == "__main__":
    sys.exit(main())
