"""``mdengine``: run, status, top, clean; plus thin dispatchers to sim, replay, export and feed.

The library never imports this module. Other subcommands' modules are imported only when used, so a
missing one gives a clear message instead of breaking every command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from .. import __version__
from .config import DEFAULT_NAMESPACE, NAMESPACE_ENV, EngineConfig
from .signals import stop_on_signals

# name -> (module, function, help); the function takes argv and returns an exit code.
DISPATCHED = {
    "sim": ("mdengine.sim.cli", "main", "run the local exchange simulator"),
    "replay": ("mdengine.recording.replay", "replay_main", "replay a recording"),
    "export": ("mdengine.recording.replay", "export_main", "export a recording"),
    "feed": ("mdengine.feed.__main__", "main", "run one feed process by hand (debugging)"),
    "bridge": ("mdengine.bridge.cli", "main", "publish books and trades to NATS JetStream, or mirror them from it"),
}
EXIT_CONFIG = 2


def _dispatch(name: str, argv: list[str]) -> int:
    module, func, _ = DISPATCHED[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        print(f"mdengine {name}: not available ({module} cannot be imported: {exc})", file=sys.stderr)
        return 1
    fn = getattr(mod, func, None)
    if fn is None:
        print(f"mdengine {name}: {module} has no {func}()", file=sys.stderr)
        return 1
    return int(fn(argv) or 0)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mdengine", description="Shared-memory market-data engine.")
    ap.add_argument("--version", action="version", version=f"mdengine {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def ns_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", help=f"store namespace (default: ${NAMESPACE_ENV}, else the config's, "
                       f"else {DEFAULT_NAMESPACE!r})")

    run = sub.add_parser("run", help="start the supervisor and its feed processes")
    run.add_argument("--config", metavar="TOML", help="engine configuration (see engine.example.toml)")
    ns_arg(run)
    run.add_argument("--sim", action="store_true", help="run against the built-in exchange simulator")
    run.add_argument("--sim-seed", type=int, default=1, help="simulator seed")
    run.add_argument("--sim-rate", type=float, default=20.0, help="simulator updates per second per symbol")
    run.add_argument("--record", metavar="DIR", help="record every raw frame to DIR (sets every record_dir)")
    run.add_argument("--keep-segments", action="store_true", help="leave segments in /dev/shm on exit")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default: the config's, else INFO)")
    run.add_argument("--log-file", help="write logs here instead of stderr")
    run.add_argument("--top", action="store_true", help="show the live status view (logs go to --log-file)")
    run.add_argument("--seconds", type=float, help="stop by itself after this many seconds")

    status = sub.add_parser("status", help="health of every feed and symbol in a namespace (without one: "
                            "the namespaces that are running)")
    ns_arg(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--interval", type=float, default=0.5,
                        help="seconds between the two samples that rates come from (0: one sample, no rates)")

    top = sub.add_parser("top", help="live status view")
    ns_arg(top)
    top.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds")
    top.add_argument("--once", action="store_true", help="print one frame (with rates) and exit")

    clean = sub.add_parser("clean", help="unlink segments left by dead supervisors")
    clean.add_argument("--namespace", help=f"only this namespace (default: ${NAMESPACE_ENV}, else all)")
    clean.add_argument("--force", action="store_true", help="also remove unreadable segments")

    for name, (_, _, help_text) in DISPATCHED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DISPATCHED:
        return _dispatch(argv[0], argv[1:])
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return EXIT_CONFIG
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------------------- run
def _engine_config(args: argparse.Namespace) -> EngineConfig:
    from .configfile import ConfigError, default_config, load_config

    cfg = load_config(args.config) if args.config else default_config()
    if _namespace_given(args):
        cfg.namespace = _namespace_arg(args)
    if args.record:
        for ex in cfg.exchanges:
            ex.record_dir = args.record
    if args.keep_segments:
        cfg.keep_segments = True
    if args.log_level:
        level = args.log_level.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"--log-level: expected DEBUG, INFO, WARNING or ERROR, got {args.log_level!r}")
        cfg.log_level = level
    if not cfg.exchanges and not args.sim:
        raise ConfigError(f"{args.config}: no [[exchanges]] configured")
    return cfg


def _tail(path: str, n: int = 8) -> list[str]:
    """The last `n` lines of a log file (supervisor and feeds write to the same one)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


def cmd_run(args: argparse.Namespace) -> int:
    from .configfile import ConfigError

    try:
        cfg = _engine_config(args)
    except ConfigError as exc:
        print(f"mdengine run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from .supervisor import configure_logging

    log_file = args.log_file or (os.path.join(tempfile.gettempdir(), f"mdengine-{cfg.namespace}.log")
                                 if args.top else None)
    configure_logging(cfg.log_level, log_file)

    stop = threading.Event()
    with stop_on_signals(stop):
        return _run(args, cfg, stop, log_file)


def _run(args: argparse.Namespace, cfg: EngineConfig, stop: threading.Event, log_file: str | None) -> int:
    from .control import ControlError
    from .supervisor import Supervisor

    sup = Supervisor(cfg, sim=args.sim, log_file=log_file)
    try:
        sup.acquire()
    except ControlError as exc:  # another supervisor, or a squatter (named with its uid and pid)
        print(f"mdengine run: {exc}", file=sys.stderr)
        return 1
    sim = None
    try:
        if args.sim:
            from ..sim import Simulator

            sim = Simulator(seed=args.sim_seed, rate_hz=args.sim_rate).start()
            sup.set_sim(sim.endpoints())
            logging.getLogger("mdengine.supervisor").info(
                "simulator serving %s", " ".join(f"{m}={ws}" for m, (ws, _) in sim.endpoints().items()))
        sup.start()
        if args.seconds is not None:
            threading.Timer(args.seconds, stop.set).start()
        if args.top:
            watcher = threading.Thread(target=sup.run, args=(stop,), name="supervisor", daemon=True)
            watcher.start()
            _top_loop(cfg.namespace, 1.0, stop, log_file=log_file)
            stop.set()
            watcher.join()
        else:
            sup.run(stop)
    finally:
        sup.stop()
        if sim is not None:
            sim.stop()
    return 0


# ---------------------------------------------------------------------------- status / top
def _supervisor_status(namespace: str, complain: bool = True) -> dict | None:
    """The supervisor's status answer, or None; a failure other than "none running" (a squatter, a refusal, no
    answer) is printed to stderr as the sentence it is."""
    from .control import ControlError, NoSupervisor, request

    try:
        answer = request(namespace, {"op": "status"}, timeout=3.0)
    except NoSupervisor:
        return None
    except ControlError as exc:
        if complain:
            print(f"mdengine: {exc}", file=sys.stderr)
        return None
    return answer if answer.get("ok") else None


def _namespace_given(args: argparse.Namespace) -> bool:
    """--namespace or $MDENGINE_NAMESPACE was given (either wins over the config file's)."""
    return args.namespace is not None or NAMESPACE_ENV in os.environ


def _namespace_arg(args: argparse.Namespace) -> str:
    """--namespace, else $MDENGINE_NAMESPACE, else "default"; ConfigError if empty or malformed."""
    from .config import resolve_namespace
    from .configfile import ConfigError

    try:
        return resolve_namespace(args.namespace, source="--namespace")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _writer_alive(namespace: str, exchange: str) -> bool:
    from ..store import LayoutError, SegmentNotFound, SegmentReader

    try:
        reader = SegmentReader(namespace, exchange)
    except (SegmentNotFound, LayoutError, ValueError, OSError):
        return False
    try:
        return reader.writer_alive()
    finally:
        reader.close()


def running_namespaces() -> dict[str, dict]:
    """Namespaces with a live supervisor or a segment in /dev/shm: {namespace: {"supervisor_pid": pid or None,
    "exchanges": [segments whose writer lives], "left_over": [segments whose writer is gone]}}.
    Supervisors are found by their control sockets (/proc/net/unix), then asked."""
    from ..store import shm

    found: dict[str, dict] = {}

    def entry(namespace: str) -> dict:
        return found.setdefault(namespace, {"supervisor_pid": None, "exchanges": [], "left_over": []})

    for name in shm.list_names():
        namespace, _, exchange = name[len(shm.NAME_PREFIX):].partition("-")
        entry(namespace)["exchanges" if _writer_alive(namespace, exchange) else "left_over"].append(exchange)
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            paths = [line.split()[-1] for line in f.readlines()[1:] if len(line.split()) >= 8]
    except OSError:
        paths = []
    for path in paths:
        if path.startswith("@mdengine-"):
            entry(path[len("@mdengine-"):])
    for namespace in list(found):
        answer = _supervisor_status(namespace)
        if answer is not None:
            found[namespace]["supervisor_pid"] = answer.get("pid")
        elif not found[namespace]["exchanges"] and not found[namespace]["left_over"]:
            del found[namespace]  # a socket that does not answer and no segment: nothing runs there
    return dict(sorted(found.items()))


def _list_namespaces(as_json: bool) -> int:
    found = running_namespaces()
    if as_json:
        print(json.dumps({"namespaces": [{"namespace": ns, **info} for ns, info in found.items()]}, indent=2))
    elif not found:
        print("no mdengine namespace is running (no supervisor, no segment in /dev/shm)")
    else:
        print(f"{'NAMESPACE':<14}{'SUPERVISOR':<12}FEEDS")
        for ns, info in found.items():
            pid = info["supervisor_pid"]
            feeds = " ".join(info["exchanges"]) or "-"
            if info["left_over"]:
                feeds += f"  (left over, writer gone: {' '.join(info['left_over'])}; `mdengine clean` removes them)"
            print(f"{ns:<14}{'pid ' + str(pid) if pid else 'none':<12}{feeds}")
        print(f"details: mdengine status --namespace NAME (or set {NAMESPACE_ENV})")
    running = any(info["supervisor_pid"] or info["exchanges"] for info in found.values())
    return 0 if running else 1


def cmd_status(args: argparse.Namespace) -> int:
    from .configfile import ConfigError
    from .status import StatusSampler, render_text

    if not _namespace_given(args):
        return _list_namespaces(args.json)
    try:
        namespace = _namespace_arg(args)
    except ConfigError as exc:
        print(f"mdengine status: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with StatusSampler(namespace) as sampler:
        if args.interval > 0:
            sampler.sample()
            time.sleep(args.interval)
        status = sampler.sample(_supervisor_status(namespace))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        sys.stdout.write(render_text(status))
    return 0 if status["feeds"] or status["supervisor"] else 1


CLEAR = "\x1b[H\x1b[2J"


def _top_loop(namespace: str, interval: float, stop: threading.Event, *, once: bool = False,
              log_file: str | None = None,
              out: Callable[[str], object] | None = None) -> None:
    from .status import StatusSampler, render_text

    out = out or sys.stdout.write

    with StatusSampler(namespace) as sampler:
        sampler.sample()
        while not stop.wait(interval):
            frame = render_text(sampler.sample(_supervisor_status(namespace, complain=False)))
            if once:
                out(frame)
                return
            footer = time.strftime("%H:%M:%S") + "  Ctrl-C to stop"
            if log_file:
                footer += f"  (log: {log_file})"
                frame += "\n" + "\n".join(line[:160] for line in _tail(log_file)) + "\n"
            out(CLEAR + frame + "\n" + footer + "\n")
            sys.stdout.flush()


def cmd_top(args: argparse.Namespace) -> int:
    from .configfile import ConfigError

    try:
        namespace = _namespace_arg(args)
    except ConfigError as exc:
        print(f"mdengine top: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    try:
        with stop_on_signals(stop, (signal.SIGTERM,)) if not args.once else contextlib.nullcontext():
            _top_loop(namespace, args.interval, stop, once=args.once)
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------------------- clean
def cmd_clean(args: argparse.Namespace) -> int:
    from .configfile import ConfigError
    from .supervisor import clean

    try:
        namespace = _namespace_arg(args) if _namespace_given(args) else None
    except ConfigError as exc:
        print(f"mdengine clean: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    results = clean(namespace, force=args.force)
    for name, what in results:
        print(f"{name}: {what}")
    if not results:
        print("nothing to clean")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "status": cmd_status, "top": cmd_top, "clean": cmd_clean,
}
