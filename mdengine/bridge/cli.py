"""`mdengine bridge publish|mirror`: the two ends of the bus (see the README, "Running on several hosts")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import asdict

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mdengine bridge", description="Books and trades over NATS JetStream.")
    sub = ap.add_subparsers(dest="role", metavar="ROLE", required=True)
    pub = sub.add_parser("publish", help="read a namespace's shared memory and publish it")
    pub.add_argument("--nats", required=True, help="NATS server URL(s), comma separated")
    pub.add_argument("--namespace", required=True, help="the engine's namespace to read")
    pub.add_argument("--bus-namespace", "--as", dest="bus_namespace",
                     help="the subjects' <ns> (default: --namespace); engines backing each other up share one")
    pub.add_argument("--source-id", help="this publisher's name in its messages (default: hostname:namespace)")
    pub.add_argument("--exchanges", help="comma-separated exchanges (default: every segment of the namespace)")
    pub.add_argument("--symbols", help="comma-separated unified or native symbols (default: all)")
    pub.add_argument("--snapshot-interval", type=float, default=5.0, help="seconds between KV snapshots")
    pub.add_argument("--replicas", type=int, default=1, help="JetStream replicas of the stream and bucket")
    pub.add_argument("--stop-grace", type=float, default=2.0,
                     help="on SIGTERM, seconds messages still held for sending again may take (the rest: unsent)")
    mir = sub.add_parser("mirror", help="rebuild the published books and trades into local shared memory")
    mir.add_argument("--nats", required=True, help="NATS server URL(s), comma separated")
    mir.add_argument("--namespace", required=True, help="the local namespace to write (Client(namespace) reads it)")
    mir.add_argument("--source", help="the bus namespace the publishers use (--as; default: the same as --namespace)")
    mir.add_argument("--silence", type=float, default=1.5, help="seconds without messages before books go stale")
    mir.add_argument("--replicas", type=int, default=1, help="JetStream replicas, if the mirror creates the stream")
    mir.add_argument("--repair-wait", type=float, default=3.0,
                     help="seconds a lost trade batch is asked for again from its publisher's KV snapshot (which "
                          "the publisher refreshes once it learns a publish failed); that source's later trades "
                          "of the symbol wait behind it")
    for p in (pub, mir):
        p.add_argument("--seconds", type=float, help="stop by itself after this many seconds")
        p.add_argument("--connect-timeout", type=float, default=10.0,
                       help="seconds the first connection may take (later, it reconnects for ever)")
        p.add_argument("--log-level", default="INFO")
    return ap


async def _run(args: argparse.Namespace) -> dict:
    from .transport import NatsTransport

    servers = [u.strip() for u in args.nats.split(",") if u.strip()]
    if args.role == "publish":
        from .publisher import BridgePublisher

        bus = args.bus_namespace or args.namespace
        transport = NatsTransport(servers, bus, replicas=args.replicas, name="mdengine-bridge-publish")
        transport.stop_grace_s = args.stop_grace
        node = BridgePublisher(transport, args.namespace, bus_namespace=bus, source_id=args.source_id,
                               exchanges=args.exchanges.split(",") if args.exchanges else None,
                               symbols=args.symbols.split(",") if args.symbols else None,
                               snapshot_s=args.snapshot_interval)
    else:
        from .mirror import BridgeMirror

        source = args.source or args.namespace
        transport = NatsTransport(servers, source, replicas=args.replicas, name="mdengine-bridge-mirror")
        node = BridgeMirror(transport, args.namespace, source_namespace=source, silence_s=args.silence,
                            repair_wait_s=args.repair_wait)
    transport.connect_timeout_s = args.connect_timeout
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    await node.run(args.seconds)
    return {"role": args.role, **asdict(node.stats), "failed": transport.failed, "retried": transport.retried,
            "unsent_at_stop": transport.unsent_at_stop, "why_failed": dict(transport.why_failed)}


def main(argv: list[str]) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.role == "mirror" and not args.repair_wait >= 0:  # NaN too
        ap.error("--repair-wait must be 0 or more seconds")
    logging.basicConfig(format=LOG_FORMAT, level=args.log_level)
    try:
        summary = asyncio.run(_run(args))
    except OSError as e:  # ConnectionError included
        print(f"mdengine bridge {args.role}: cannot reach NATS at {args.nats}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)  # what it sent or applied, and what it could not publish
    return 0
