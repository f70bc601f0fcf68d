"""``mdengine replay`` and ``mdengine export`` (wired by ``mdengine.engine.cli``; the library never imports this).

replay: the recording is decompressed into plain JSON Lines with its URLs moved onto the real exchange
hosts (the simulator's replay mode picks the market by host; a recording made against the simulator
carries 127.0.0.1), served by ``Simulator(replay=..., speed=...)``, and the supervisor runs a feed for the
recorded symbols against it, so a strategy attaches to ``--namespace`` and reads what it would have read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from ..engine.signals import stop_on_signals
from ..exchanges import EXCHANGES, recording_rules
from .export import FORMATS, ExportError, export
from .reader import RecordingReader

log = logging.getLogger("mdengine.replay")


@dataclass
class ReplayPlan:
    exchange: str
    path: str  # the plain JSON Lines file the simulator serves
    keys: list[tuple[str, str]]  # (market, native) the recording holds
    records: int
    truncated: bool
    symbols: list[str] = field(default_factory=list)  # unified symbols of `keys`: never ambiguous across markets
    markets: list[str] = field(default_factory=list)
    book: dict[str, Any] = field(default_factory=dict)  # book_mode / book_depth that subscribe the recorded book
    options: dict[str, Any] = field(default_factory=dict)  # adapter options (e.g. the recorded trade stream)
    synthesised: list[str] = field(default_factory=list)  # instrument-list URLs the recording did not answer


def _query_key(url: str) -> tuple[str, tuple]:
    parts = urlsplit(url)
    return parts.path, tuple(sorted(parse_qsl(parts.query)))


def prepare_replay(path: str, out_path: str, exchange: str | None = None) -> ReplayPlan:
    """Write `path` as plain JSON Lines for the simulator's replay, URLs moved onto the real hosts, plus the
    instrument lists the engine will ask for when the recording holds none under the engine's own URLs
    (built from whatever instrument lists it does hold, else derived from the symbols its frames carry)."""
    reader = RecordingReader(path, exchange)
    records = list(reader)
    ex = exchange or next((r.exchange for r in records if r.exchange), None) or reader.exchange
    if not ex or ex not in EXCHANGES:
        raise ExportError(f"{path}: cannot tell the exchange; pass --exchange")
    rules = recording_rules(ex)
    sim_market = rules.sim_market_of(records)
    keys = sorted(rules.discover_symbols(records))
    insts = rules.instruments(records, keys)
    markets = sorted({i.market for i in insts})
    answered = {_query_key(r.url) for r in records if r.kind == "http" and r.data}
    t0 = records[0].ts_ns if records else 0
    synthesised: list[str] = []
    rewrite = rules.frame_rewriter(records)  # a recorded book channel the adapter does not subscribe
    with open(out_path, "wb") as fh:
        for market in markets:
            req = rules.ADAPTER.instrument_requests({}, [market])[0]  # the engine's own URL, on the real host
            if _query_key(req.url) in answered:
                continue
            target, body = rules.instrument_list(market, [i for i in insts if i.market == market])
            rest_host = rules.REPLAY_HOSTS[sim_market(req.url)][1]
            url = f"https://{rest_host}{target}"
            synthesised.append(url)
            fh.write(orjson.dumps({"kind": "http", "ts": t0 / 1e9, "ts_ns": t0, "url": url, "exchange": ex,
                                   "data": body}) + b"\n")
        for r in records:
            parts = urlsplit(r.url)
            ws_host, rest_host = rules.REPLAY_HOSTS[sim_market(r.url)]
            is_ws = parts.scheme in ("ws", "wss")
            url = urlunsplit(("wss" if is_ws else "https", ws_host if is_ws else rest_host, parts.path or "/",
                              parts.query, ""))
            obj = {"kind": r.kind, "ts": r.ts, "ts_ns": r.ts_ns, "url": url, "exchange": ex}
            if r.data is not None:
                obj["data"] = r.data.decode("utf-8", "replace") if isinstance(r.data, bytes) else r.data
                if rewrite is not None and r.kind == "recv":
                    obj["data"] = rewrite(obj["data"])
            fh.write(orjson.dumps(obj) + b"\n")
    return ReplayPlan(ex, out_path, keys, len(records), reader.truncated, [i.unified for i in insts], markets,
                      rules.book_config(records), rules.adapter_options(records), synthesised)


def replay_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="mdengine replay", description="Serve a recording through the simulator "
                                 "and run the engine against it.")
    ap.add_argument("file", help="recording (.jsonl, .jsonl.gz, .jsonl.zst)")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor (0: as fast as possible)")
    ap.add_argument("--namespace", help="store namespace strategies attach to (default: $MDENGINE_NAMESPACE, "
                    "else replay)")
    ap.add_argument("--exchange", help="exchange, if the recording does not say")
    ap.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    try:
        from ..engine.config import EngineConfig, ExchangeConfig, resolve_namespace
        from ..engine.supervisor import Supervisor, configure_logging
        from ..sim import Simulator
    except ImportError as e:
        print(f"mdengine replay: not available ({e})", file=sys.stderr)
        return 1
    configure_logging(args.log_level)
    with tempfile.TemporaryDirectory(prefix="mdengine-replay-") as tmp:
        try:
            ns = resolve_namespace(args.namespace, "replay", "--namespace")
            plan = prepare_replay(args.file, os.path.join(tmp, "replay.jsonl"), args.exchange)
        except (ExportError, FileNotFoundError, ValueError) as e:
            print(f"mdengine replay: {e}", file=sys.stderr)
            return 2
        if not plan.keys:
            print(f"mdengine replay: {args.file}: no subscribed symbols found", file=sys.stderr)
            return 2
        # unified symbols: a native id listed in two markets (BTCUSDT spot and perpetual) names both
        depth = plan.book.get("book_depth", 50)
        cfg = EngineConfig(namespace=ns, exchanges=[ExchangeConfig(
            name=plan.exchange, symbols=plan.symbols, markets=plan.markets, max_symbols=max(32, len(plan.symbols)),
            book_depth=depth, book_capacity=max(50, depth), book_mode=plan.book.get("book_mode", "diff"),
            options=plan.options)])
        stop = threading.Event()
        with stop_on_signals(stop):
            timer = None
            if args.seconds is not None:
                timer = threading.Timer(args.seconds, stop.set)
                timer.daemon = True  # a pending timer must not keep the process alive after Ctrl-C
                timer.start()
            sim = Simulator(replay=plan.path, speed=args.speed).start()
            sup = Supervisor(cfg, sim_endpoints=sim.endpoints())
            log.info("replaying %s (%s, %d records, %d symbols) into namespace %s at speed %g",
                     args.file, plan.exchange, plan.records, len(plan.keys), ns, args.speed)
            try:
                sup.start()
                sup.run(stop)
            finally:
                if timer is not None:
                    timer.cancel()
                sup.stop()
                sim.stop()
    return 0


def export_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="mdengine export", description="Rebuild books from a recording with the "
                                 "engine's adapters and write them for backtesting.")
    ap.add_argument("file", help="recording (.jsonl, .jsonl.gz, .jsonl.zst)")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    ap.add_argument("--exchange", help="exchange, if the recording does not say")
    ap.add_argument("--depth", type=int, default=0, help="levels per side to export (0: the whole book)")
    ap.add_argument("--symbol", action="append", dest="symbols", metavar="NATIVE",
                    help="only this symbol (repeatable)")
    args = ap.parse_args(argv)
    try:
        summary = export(args.file, args.format, args.out, exchange=args.exchange, depth=args.depth,
                         symbols=args.symbols)
    except (ExportError, FileNotFoundError) as e:
        print(f"mdengine export: {e}", file=sys.stderr)
        return 1
    gaps = sum(summary["book_invalid"].values())
    print(f"{summary['exchange']}: {summary['frames']} frames, {len(summary['symbols'])} symbols, "
          f"{sum(summary['snapshots'].values())} snapshots, {sum(summary['updates'].values())} updates, "
          f"{sum(summary['trades'].values())} trades, {gaps} book invalidations"
          + (" (input truncated)" if summary["input_truncated"] else ""))
    for f in summary["files"]:
        print(f"  {f}")
    return 0


__all__ = ["ReplayPlan", "export_main", "prepare_replay", "replay_main"]
