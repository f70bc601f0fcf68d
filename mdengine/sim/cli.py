"""``mdengine sim``: serve the simulator until SIGINT/SIGTERM, printing ``NAME WS-URL REST-URL`` per market."""

from __future__ import annotations

import argparse
import sys
import threading

from mdengine.engine.signals import stop_on_signals
from mdengine.sim.listings import MARKETS
from mdengine.sim.simulator import Simulator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mdengine sim", description="Local exchange simulator.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="base port: market i on port+i (0 = free ports)")
    ap.add_argument("--exchanges", default=",".join(MARKETS), help="comma list of " + ",".join(MARKETS))
    ap.add_argument("--symbols", default="", help="comma list: BTC/USDT, BTC/USDT:USDT or native ids")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--replay", metavar="FILE", help="serve a .jsonl recording instead of the models")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor (0 = as fast as possible)")
    ap.add_argument("--rate", type=float, default=20.0, help="model updates per second per symbol (0 = max)")
    ap.add_argument("--okx-checksum", choices=("zero", "crc32"), default="zero")
    a = ap.parse_args(argv)
    try:
        sim = Simulator(seed=a.seed, exchanges=[e for e in a.exchanges.split(",") if e],
                        symbols=[s for s in a.symbols.split(",") if s] or None, rate_hz=a.rate,
                        okx_checksum=a.okx_checksum, host=a.host, port=a.port, replay=a.replay, speed=a.speed)
        sim.start()
    except (ValueError, OSError) as e:
        print(f"mdengine sim: {e}", file=sys.stderr)
        return 2
    done = threading.Event()
    with stop_on_signals(done):
        for name, (ws, rest) in sim.endpoints().items():
            print(name, ws, rest, flush=True)
        done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
