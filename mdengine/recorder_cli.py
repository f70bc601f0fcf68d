"""``mdengine replay`` and ``mdengine export`` (wired by ``mdengine.cli``; the library never imports this).

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
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import orjson

from .export import FORMATS, ExportError, discover_symbols, export
from .recording import RecordingReader
from .signals import stop_on_signals

log = logging.getLogger("mdengine.replay")

# market -> (WebSocket host, REST host) of the real exchange, as mdengine.sim.replay maps them back
_HOSTS = {"binance-spot": ("stream.binance.com", "api.binance.com"),
          "binance-usdm": ("fstream.binance.com", "fapi.binance.com"),
          "okx": ("ws.okx.com", "www.okx.com"), "bybit": ("stream.bybit.com", "api.bybit.com"),
          "bitget": ("ws.bitget.com", "api.bitget.com")}


@dataclass
class ReplayPlan:
    exchange: str
    path: str  # the plain JSON Lines file the simulator serves
    keys: list[tuple[str, str]]  # (market, native) the recording subscribed
    records: int
    truncated: bool


def _sim_market(exchange: str, url: str, usdm_hosts: set[str]) -> str:
    if exchange != "binance":
        return exchange
    parts = urlsplit(url)
    usdm = (parts.netloc in usdm_hosts or "fstream" in parts.netloc or "fapi" in parts.netloc
            or parts.path.startswith(("/public/", "/market/", "/fapi/")))
    return "binance-usdm" if usdm else "binance-spot"


def prepare_replay(path: str, out_path: str, exchange: str | None = None) -> ReplayPlan:
    """Write `path` as plain JSON Lines for the simulator's replay, URLs moved onto the real hosts."""
    reader = RecordingReader(path, exchange)
    records = list(reader)
    ex = exchange or next((r.exchange for r in records if r.exchange), None) or reader.exchange
    if not ex or ex not in ("binance", "okx", "bybit", "bitget"):
        raise ExportError(f"{path}: cannot tell the exchange; pass --exchange")
    usdm_hosts = {urlsplit(r.url).netloc for r in records if "/fapi/" in urlsplit(r.url).path}
    with open(out_path, "wb") as fh:
        for r in records:
            parts = urlsplit(r.url)
            ws_host, rest_host = _HOSTS[_sim_market(ex, r.url, usdm_hosts)]
            is_ws = parts.scheme in ("ws", "wss")
            url = urlunsplit(("wss" if is_ws else "https", ws_host if is_ws else rest_host, parts.path or "/",
                              parts.query, ""))
            obj = {"kind": r.kind, "ts": r.ts, "ts_ns": r.ts_ns, "url": url, "exchange": ex}
            if r.data is not None:
                obj["data"] = r.data.decode("utf-8", "replace") if isinstance(r.data, bytes) else r.data
            fh.write(orjson.dumps(obj) + b"\n")
    keys = sorted(discover_symbols(ex, records))
    return ReplayPlan(ex, out_path, keys, len(records), reader.truncated)


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
        from .config import EngineConfig, ExchangeConfig, resolve_namespace
        from .sim import Simulator
        from .supervisor import Supervisor, configure_logging
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
        markets = sorted({m for m, _ in plan.keys})
        cfg = EngineConfig(namespace=ns, exchanges=[ExchangeConfig(
            name=plan.exchange, symbols=sorted({n for _, n in plan.keys}), markets=markets)])
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
