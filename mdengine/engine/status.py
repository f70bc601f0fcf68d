"""What `mdengine status` and `mdengine top` show: health read from the segments, rendered as text or JSON.

Everything comes from shared memory (counters, per-symbol stats, book headers, heartbeat, writer pid),
so status works without asking a feed anything; restarts and the supervisor's view of each feed
(running / backoff / failed) come from the supervisor's ``status`` op when one is running. Rates
(messages/s, CPU) need two samples: `StatusSampler.sample` computes them against its previous call.
"""

from __future__ import annotations

import math
import os
import struct
import time
from typing import Any

import psutil

from .. import restbudget
from ..store import SegmentReader, list_names
from ..store import layout as L
from ..store.shm import NAME_PREFIX, SHM_DIR, SegmentNotFound

DEFAULT_STALE_AFTER_S = 3.0  # for a feed that publishes no stale_after (layout before 1.3)
WRITER_STATES = L.WriterState.NAMES


def _num(x: float) -> float | None:
    """JSON-safe float (NaN, an empty side, becomes None)."""
    return None if x is None or math.isnan(x) else x


class StatusSampler:
    """Samples a namespace's segments; keep one per view so rates come from consecutive samples."""

    def __init__(self, namespace: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.namespace = namespace
        self.stale_after_s = stale_after_s
        self._readers: dict[str, SegmentReader] = {}
        self._prev: dict[str, tuple[float, dict[str, int], dict[tuple[str, str], int], float | None]] = {}
        self._procs: dict[int, psutil.Process] = {}
        self._inodes: dict[str, int] = {}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    def __enter__(self) -> StatusSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh(self) -> None:
        """Follow the namespace: attach new segments, drop unlinked ones, reattach recreated ones."""
        prefix = f"{NAME_PREFIX}{self.namespace}-"
        present = {}
        for name in list_names(self.namespace):
            try:
                present[name[len(prefix):]] = os.stat(os.path.join(SHM_DIR, name)).st_ino
            except OSError:
                continue
        for exchange in list(self._readers):
            if present.get(exchange) != self._inodes.get(exchange):  # unlinked, or a new supervisor made a new one
                self._readers.pop(exchange).close()
                self._prev.pop(exchange, None)
        for exchange in sorted(set(present) - set(self._readers)):
            try:
                self._readers[exchange] = SegmentReader(self.namespace, exchange)
                self._inodes[exchange] = present[exchange]
            except (SegmentNotFound, RuntimeError):
                continue  # being created right now, or not ours: next sample

    def sample(self, supervisor: dict | None = None) -> dict[str, Any]:
        """The namespace's status as a JSON-able dict: ``{"namespace", "time_ns", "supervisor", "feeds"}``.

        `supervisor` is the answer of the supervisor's ``status`` op (or None if none runs); its feeds'
        pid, state and restarts take precedence, and feeds it knows that have no segment yet are listed.
        """
        self._refresh()
        now = time.monotonic()
        wall = time.time_ns()
        sup_feeds = {f["exchange"]: f for f in (supervisor or {}).get("feeds", [])}
        feeds = []
        for exchange in sorted(set(self._readers) | set(sup_feeds)):
            reader = self._readers.get(exchange)
            sup = sup_feeds.get(exchange)
            if reader is None:
                feeds.append({"exchange": exchange, "pid": sup.get("pid"), "state": sup.get("state", "unknown"),
                              "restarts": sup.get("restarts", 0), "segment": False, "symbols": []})
                continue
            feeds.append(self._feed(exchange, reader, sup, now, wall))
        return {"namespace": self.namespace, "time_ns": wall,
                "supervisor": None if supervisor is None else {k: v for k, v in supervisor.items() if k != "feeds"},
                "feeds": feeds, "rest_budgets": _rest_budgets()}

    def _feed(self, exchange: str, reader: SegmentReader, sup: dict | None, now: float, wall: int) -> dict:
        v = reader.view
        counters = v.counters()
        pid = v.writer_pid
        alive = reader.writer_alive()
        hb_age = max(0.0, (wall - v.heartbeat_ns) / 1e9) if v.heartbeat_ns else None
        wstate = v.writer_state
        # the feed's own promises (layout 1.3), else this sampler's default
        stale_after = v.stale_after_ns / 1e9 if v.stale_after_ns > 0 else self.stale_after_s
        hb_limit = L.HEARTBEAT_MISSES * v.heartbeat_interval_ns / 1e9 if v.heartbeat_interval_ns > 0 \
            else self.stale_after_s
        silent = hb_age is not None and hb_age > hb_limit
        if wstate == L.WriterState.DEAD:
            state = "dead"
        elif not alive:
            state = "stopped" if wstate == L.WriterState.STOPPED else ("waiting" if pid <= 0 else "dead")
        elif silent:
            state = "stalled"
        else:
            state = WRITER_STATES[wstate] if 0 <= wstate < len(WRITER_STATES) else f"state{wstate}"
        writing = alive and not silent and wstate in (L.WriterState.STARTING, L.WriterState.RUNNING)
        cpu_time = self._cpu_time(pid) if alive else None
        prev = self._prev.get(exchange)
        dt = now - prev[0] if prev else 0.0
        rate = (lambda cur, old: round((cur - old) / dt, 1)) if dt > 0 else (lambda cur, old: None)
        sym_msgs: dict[tuple[str, str], int] = {}
        symbols = []
        for e in reader.symbols():
            st = v.stats(e.slot)
            sym_msgs[(e.market, e.native)] = st["messages"]
            symbols.append(self._symbol(reader, e, st, wall, writing, stale_after, prev, rate))
        feed = {
            "exchange": exchange,
            "pid": pid if pid > 0 else None,
            "state": state,
            "restarts": 0,
            "segment": True,
            "alive": alive,
            "generation": v.generation,
            "heartbeat_age_s": None if hb_age is None else round(hb_age, 3),
            "messages_per_s": rate(counters["messages"], prev[1]["messages"]) if prev else None,
            "cpu_percent": (round(100 * (cpu_time - prev[3]) / dt, 1)
                            if prev and dt > 0 and cpu_time is not None and prev[3] is not None else None),
            "rss_bytes": self._rss(pid) if alive else None,
            "latency_us": round(counters["last_latency_ns"] / 1e3, 1) if counters["last_latency_ns"] else None,
            "stale_after_s": stale_after,
            "counters": counters,
            "last_error": self._last_error(reader),
            "symbols": symbols,
        }
        if sup is not None:  # the supervisor knows restarts, backoff and give-ups; its psutil view is current
            for key in ("pid", "state", "restarts", "last_exit"):
                if sup.get(key) is not None:
                    feed[key] = sup[key]
            for key in ("rss_bytes", "cpu_percent"):
                if feed.get(key) is None and sup.get(key) is not None:
                    feed[key] = sup[key]
        # symbols not live yet (or any more): subscribed ones not live, and configured ones not in the directory
        listed = {x for sym in symbols for x in (sym["symbol"], sym["native"])}
        feed["pending"] = [sym["symbol"] for sym in symbols if sym["state"] != "live"] + \
            [name for name in (sup or {}).get("symbols", []) if name not in listed]
        if feed["state"] == "running" and not any(sym["state"] == "live" for sym in symbols):
            # running, but serving nothing: never live yet (first sync, instruments) or lost them all
            first = all(sym["state"] in ("empty", "syncing") for sym in symbols)
            feed["state"] = "starting" if first else "degraded"
        self._prev[exchange] = (now, counters, sym_msgs, cpu_time)
        return feed

    def _symbol(self, reader: SegmentReader, e, st: dict[str, int], wall: int, writing: bool, stale_after: float,
                prev, rate) -> dict:
        (_uid, _exch, recv, pub, _nb, _na, bstate, flags, generation, version,
         bid, bid_qty, ask, ask_qty) = reader.book(e.unified, e.market).top_full()
        state = L.BookState.NAMES[bstate] if bstate < len(L.BookState.NAMES) else f"state{bstate}"
        age = max(0.0, (wall - pub) / 1e9) if pub else None  # published after `wall` was read: 0, not -0.00
        # A book is only as live as its writer (a dead, stopped or silent feed cannot have published lately) and its
        # connection (nothing received within stale_after: the exchange has not confirmed it).
        confirmed = max(st.get("confirmed_ns", 0), recv or pub)
        silent_s = (wall - confirmed) / 1e9 if reader.view.stale_after_ns > 0 else 0.0
        if state == "live" and (not writing or silent_s > stale_after):
            state = "stale"
        old = prev[2].get((e.market, e.native)) if prev else None
        funding, next_funding_s, perp_stale = None, None, None
        if e.kind in L.PERP_KINDS and reader.view.perp_base(e.slot) is not None:  # perpetual data (layout 1.4)
            rec = reader.perp(e.unified, e.market).read()
            if rec[9] != L.BookState.EMPTY:
                funding = _num(rec[2])
                next_funding_s = max(0.0, round((rec[4] - wall) / 1e9, 1)) if rec[4] else None
                # (1.6) field groups older than the bound the writer published; 0 words before 1.6: none
                bounds = struct.unpack_from(L.PERP_GROUP_STALE_MS_FORMAT, reader.view.buf, L.PERP_MARK_STALE_MS_OFFSET)
                perp_stale = [g for g, t, ms in zip(L.PERP_GROUPS, rec[12:16], bounds, strict=True)
                              if ms and t and wall - t > ms * 1_000_000]
        return {
            "symbol": e.unified, "market": e.market, "native": e.native, "state": state,
            "bid": _num(bid), "bid_qty": bid_qty, "ask": _num(ask), "ask_qty": ask_qty,
            "crossed": bool(flags & L.BookFlags.CROSSED),
            "age_s": None if age is None else round(age, 3),
            "messages_per_s": rate(st["messages"], old) if old is not None else None,
            "latency_us": round(st["last_latency_ns"] / 1e3, 1) if st["last_latency_ns"] else None,
            "messages": st["messages"], "book_updates": st["book_updates"], "trades": st["trades"],
            "gaps": st["gaps"], "resyncs": st["resyncs"], "checksum_failures": st["checksum_failures"],
            "generation": generation, "version": version,
            "funding_rate": funding, "next_funding_s": next_funding_s,
            "perp_stale": perp_stale,  # perp field groups gone quiet (layout 1.6), [] if none, None: no perp record
        }

    def _process(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = self._procs[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return proc

    def _cpu_time(self, pid: int) -> float | None:
        proc = self._process(pid)
        try:
            t = proc.cpu_times() if proc else None
        except psutil.Error:
            return None
        return None if t is None else t.user + t.system

    def _rss(self, pid: int) -> int | None:
        proc = self._process(pid)
        try:
            return proc.memory_info().rss if proc else None
        except psutil.Error:
            return None

    @staticmethod
    def _last_error(reader: SegmentReader) -> dict | None:
        ts, text = reader.view.last_error()
        return {"time_ns": ts, "text": text} if ts else None


# ---------------------------------------------------------------------------- rendering
def _fmt(x: Any, spec: str = "", none: str = "-") -> str:
    if x is None:
        return none
    return format(x, spec) if spec else str(x)


def _price(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.8g}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.0f}M"


FEED_COLUMNS = ("EXCHANGE", "PID", "STATE", "RESTARTS", "HB AGE", "MSG/S", "LAT us", "RECONN", "GAPS", "RESYNC",
                "CKSUM", "ERRORS", "RSS", "CPU%")
SYMBOL_COLUMNS = ("  SYMBOL", "MARKET", "STATE", "BID", "ASK", "AGE s", "MSG/S", "LAT us", "GAPS", "RESYNC",
                  "CKSUM", "TRADES", "GEN", "PERP STALE", "FUNDING", "NEXT FUND")


def _funding(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.4f}%"


def _until(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    h, m = divmod(int(seconds) // 60, 60)
    return f"{h}h{m:02d}m"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            .rstrip() for r in rows]


def render_text(status: dict) -> str:
    """A plain-text table: one line per feed, then one per symbol."""
    sup = status.get("supervisor")
    head = f"namespace {status['namespace']}: "
    head += f"supervisor pid {sup.get('pid')}" if sup else "no supervisor running"
    if sup and sup.get("sim"):
        head += " (simulator)"
    lines = [head]
    if not status["feeds"]:
        lines.append("no feeds (no segments in /dev/shm for this namespace)")
        return "\n".join(lines + _budget_lines(status)) + "\n"
    feed_rows = [FEED_COLUMNS]
    for f in status["feeds"]:
        c = f.get("counters", {})
        feed_rows.append((f["exchange"], _fmt(f.get("pid")), f["state"], _fmt(f.get("restarts")),
                          _fmt(f.get("heartbeat_age_s"), ".1f"), _fmt(f.get("messages_per_s"), ".0f"),
                          _fmt(f.get("latency_us"), ".0f"), _fmt(c.get("reconnects")), _fmt(c.get("gaps")),
                          _fmt(c.get("resyncs")), _fmt(c.get("checksum_failures")), _fmt(c.get("errors")),
                          _bytes(f.get("rss_bytes")), _fmt(f.get("cpu_percent"), ".0f")))
    lines += _table(feed_rows)
    sym_rows = [SYMBOL_COLUMNS]
    for f in status["feeds"]:
        for s in f["symbols"]:
            state = s["state"] + ("!" if s["crossed"] else "")
            sym_rows.append((f"  {f['exchange']} {s['symbol']}", s["market"], state,
                             _price(s["bid"]), _price(s["ask"]), _fmt(s["age_s"], ".2f"),
                             _fmt(s["messages_per_s"], ".0f"), _fmt(s["latency_us"], ".0f"), str(s["gaps"]),
                             str(s["resyncs"]), str(s["checksum_failures"]), str(s["trades"]), str(s["generation"]),
                             ",".join(s.get("perp_stale") or ()) or "-",
                             _funding(s.get("funding_rate")), _until(s.get("next_funding_s"))))
    if len(sym_rows) > 1:
        lines.append("")
        lines += _table(sym_rows)
    pending = [(f["exchange"], f["pending"]) for f in status["feeds"] if f.get("pending")]
    if pending:
        lines.append("")
        lines += [f"pending {ex}: {', '.join(names)}" for ex, names in pending]
    errors = [(f["exchange"], f["last_error"]["text"]) for f in status["feeds"] if f.get("last_error")]
    recording = [(f["exchange"], n) for f in status["feeds"] if (n := f.get("counters", {}).get("record_errors"))]
    if errors or recording:
        lines.append("")
        lines += [f"last error {ex}: {text}" for ex, text in errors]
        lines += [f"recorder {ex}: {n} write errors (books are still published; see the log)" for ex, n in recording]
    return "\n".join(lines + _budget_lines(status)) + "\n"


def _budget_lines(status: dict) -> list[str]:
    """One line per shared REST budget in use on this box (they are per IP, not per namespace)."""
    budgets = [b for b in status.get("rest_budgets", []) if b["requests"] or b["penalties"]]
    if not budgets:
        return []
    return [""] + [f"REST budget {b['key']}: {b['window_used']:g}/{b['limit']:g} per {b['window_s']:g} s "
                   f"(peak {b['peak_ratio']:.0%}), {b['requests']} requests, {b['waits']} waits"
                   + (f", {b['penalties']} x 429/418" if b["penalties"] else "")
                   + (f", blocked {b['blocked_s']:.0f} s more" if b["blocked_s"] else "")
                   + (f", the exchange counted more {b['adoptions']} times (last {b['server_used']:g})"
                      if b.get("adoptions") else "")
                   + (f", held {b['held_s']:.1f} s for its window" if b.get("held_s") else "") for b in budgets]


def _rest_budgets() -> list[dict]:
    """The box's shared REST budgets (mdengine.restbudget); [] if they cannot be read (status must not fail)."""
    try:
        return restbudget.usage_all()
    except (OSError, ValueError):
        return []
