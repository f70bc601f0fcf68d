"""One REST budget per exchange endpoint group and IP, shared by every process on the box.

Exchanges limit public REST per IP: Binance counts request weight per minute (a depth snapshot's weight grows with
its `limit`), OKX and Bitget count requests per endpoint, Bybit all requests together. Every feed process and
every client's REST fallback on a machine share that IP, so they share one token bucket per budget, in a small
shared-memory segment of its own (``/dev/shm/mdb-<scope>-<key>``; not part of the exchange segment layout). Each
exchange's limits and weights live in its package (`exchanges/<name>/limits.py`: BUDGETS and cost()).

The bucket holds at most BURST_SHARE of the safe allowance (SAFETY x the exchange's limit), or the heaviest single
request if that is more, and refills the rest over the window, so no window of the exchange's length ever grants
more than the safe allowance: a start-up or resync storm is paced inside the budget rather than answered with 429s.
When a 429 or 418 comes anyway, its Retry-After (without one: a window, or BAN_418_S for a ban) blocks the bucket
for everyone, and it restarts empty.

Other programs on the IP spend the same limit. Where an exchange reports the IP's use in its answers (Binance's
X-MBX-USED-WEIGHT-1M; the exchange's `limits.server_usage` reads it), `observe()` hands the figure to the bucket:
what the server counted beyond this box's own grants in its window is other programs' use, expected to go on at
its pace until the window ends; when that leaves less of the safe allowance than the bucket holds, the bucket keeps
only what is left, and when nothing is left it holds everyone until the server's window ends.

Every change to a bucket is made under an exclusive flock on its file: the kernel drops the lock of a process
that dies, so a killed holder never wedges the others. `usage()` is what `mdengine status` shows.
"""

from __future__ import annotations

import fcntl
import importlib
import mmap
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

from .errors import MdengineError
from .exchanges import EXCHANGES
from .store.shm import SHM_DIR

SAFETY = 0.9  # of the exchange's limit: room for what this box does not count (another tool on the same IP)
BURST_SHARE = 0.25  # of the safe allowance that may go at once; the rest is spread over the window
BAN_418_S = 120.0  # a 418 (IP ban) without a usable Retry-After blocks the budget this long; a 429 one window
MAX_BAN_S = 3 * 24 * 3600.0  # Binance bans for up to 3 days
NAME_PREFIX = "mdb-"
SCOPE_ENV = "MDENGINE_REST_BUDGET_SCOPE"  # tests and side-by-side setups give their processes a scope of their own
DEFAULT_SCOPE = "box"

# Layout (little-endian): one 512-byte segment.
_MAGIC = 0x31_54_45_47_44_55_42  # b"BUDGET1" read as a little-endian uint64
_FIXED = struct.Struct("<QQdqdd")  # magic, version, limit, window_ns, capacity, rate (tokens per ns)  @0
_BUCKET = struct.Struct("<dq")  # tokens, updated_ns                                                    @64
_BLOCK = struct.Struct("<qqq")  # blocked_until_ns, last_status, penalties                             @128
_TOTALS = struct.Struct("<dqqq")  # granted weight, grants, waits, waited_ns                           @192
_WINDOW = struct.Struct("<qdd")  # window_start_ns, window_used, peak_window_used                      @256
_SERVER = struct.Struct("<dqqq")  # server_used, server_seen_ns, hold_until_ns, adoptions               @320
_OWN = struct.Struct("<qd")  # start of the aligned window (a multiple of its length), weight granted in it  @352
SIZE = 512


class BudgetExhausted(MdengineError):
    """A request could not get its weight from the shared REST budget within its timeout."""


_SCOPE = re.compile(r"[a-z0-9_]{1,24}\Z")


def scope() -> str:
    """The budgets' scope: DEFAULT_SCOPE (the whole box), or $MDENGINE_REST_BUDGET_SCOPE."""
    value = os.environ.get(SCOPE_ENV, DEFAULT_SCOPE)
    if not _SCOPE.match(value):
        raise ValueError(f"{SCOPE_ENV}={value!r}: a scope is 1-24 of a-z, 0-9 and _")
    return value


def _limits(name: str):
    return importlib.import_module(f"mdengine.exchanges.{name}.limits")


def budgets() -> dict[str, tuple[float, float]]:
    """Every budget the exchanges define: key -> (limit, window seconds)."""
    out: dict[str, tuple[float, float]] = {}
    for name in EXCHANGES:
        out.update(_limits(name).BUDGETS)
    return out


def max_weight(key: str) -> float:
    """The heaviest single request of budget `key` (its exchange's MAX_WEIGHT; 1 where it names none)."""
    for name in EXCHANGES:
        limits = _limits(name)
        if key in limits.BUDGETS:
            return getattr(limits, "MAX_WEIGHT", {}).get(key, 1.0)
    return 1.0


def _limits_of(key: str):
    for name in EXCHANGES:
        limits = _limits(name)
        if key in limits.BUDGETS:
            return limits
    return None


def cost(url: str) -> tuple[str, float] | None:
    """(budget key, weight) of a GET of `url`, asked of each exchange's limits by path; None if none knows it."""
    parts = urlsplit(url)
    params: Mapping[str, str] = dict(parse_qsl(parts.query))
    for name in EXCHANGES:
        found = _limits(name).cost(parts.path, params)
        if found is not None:
            return found
    return None


class RestBudget:
    """The shared token bucket of budget `key` (e.g. "binance-spot"); created on first use by anyone.

    The first process to create it fixes its limit and window (from the exchange's BUDGETS unless given).
    """

    def __init__(self, key: str, *, limit: float | None = None, window_s: float | None = None,
                 scope_name: str | None = None, create: bool = True) -> None:
        if limit is None or window_s is None:
            if key not in budgets():
                raise ValueError(f"unknown REST budget {key!r}; known: {', '.join(sorted(budgets()))}")
            lim, win = budgets()[key]
            limit = lim if limit is None else limit
            window_s = win if window_s is None else window_s
        sc = scope_name or scope()
        if not _SCOPE.match(sc):
            raise ValueError(f"bad budget scope {sc!r}: 1-24 of a-z, 0-9 and _")
        self.key = key
        self._tlock = threading.Lock()  # flock excludes other processes, not this one's threads
        self.name = f"{NAME_PREFIX}{sc}-{key}"
        self.path = os.path.join(SHM_DIR, self.name)
        fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                raise PermissionError(f"{self.path} is not a budget file of this user")
            with self._Lock(fd, self._tlock):
                if os.fstat(fd).st_size < SIZE:
                    os.ftruncate(fd, SIZE)
                self._mm = mmap.mmap(fd, SIZE)
                if struct.unpack_from("<Q", self._mm, 0)[0] != _MAGIC:
                    self._initialise(limit, window_s)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _, _, self.limit, self.window_ns, self.capacity, self.rate = _FIXED.unpack_from(self._mm, 0)

    def _initialise(self, limit: float, window_s: float) -> None:
        allowance = SAFETY * limit
        # the bucket must hold the heaviest request whole, or that request would overdraw a window
        capacity = min(allowance, max(BURST_SHARE * allowance, max_weight(self.key)))
        window_ns = int(window_s * 1e9)
        rate = (allowance - capacity) / window_ns
        self._mm[:SIZE] = bytes(SIZE)
        _BUCKET.pack_into(self._mm, 64, capacity, time.time_ns())
        _FIXED.pack_into(self._mm, 0, _MAGIC, 1, limit, window_ns, capacity, rate)

    class _Lock:
        def __init__(self, fd: int, tlock: threading.Lock) -> None:
            self.fd, self.tlock = fd, tlock

        def __enter__(self) -> None:
            self.tlock.acquire()
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except BaseException:
                self.tlock.release()
                raise

        def __exit__(self, *exc: object) -> None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                self.tlock.release()

    def _locked(self, fd: int) -> RestBudget._Lock:
        return self._Lock(fd, self._tlock)

    # ------------------------------------------------------------------ the bucket
    def reserve(self, weight: float, now_ns: int | None = None) -> float:
        """Take `weight` now if the bucket holds it (returns 0.0), else take nothing and return the seconds to wait
        (the refill time, or what is left of a 429/418 block). A weight above the bucket's capacity (a budget whose
        limit is below its exchange's MAX_WEIGHT) waits for a full bucket and then takes it all."""
        mm = self._mm
        with self._locked(self._fd):
            now = time.time_ns() if now_ns is None else now_ns
            blocked_until = max(struct.unpack_from("<q", mm, 128)[0], struct.unpack_from("<q", mm, 320 + 16)[0])
            if blocked_until > now:
                return (blocked_until - now) / 1e9
            tokens, updated = _BUCKET.unpack_from(mm, 64)
            tokens = min(self.capacity, tokens + max(0, now - updated) * self.rate)
            need = min(weight, self.capacity)
            if tokens < need:
                _BUCKET.pack_into(mm, 64, tokens, now)
                return (need - tokens) / self.rate / 1e9
            _BUCKET.pack_into(mm, 64, tokens - need, now)
            granted, grants, waits, waited = _TOTALS.unpack_from(mm, 192)
            _TOTALS.pack_into(mm, 192, granted + weight, grants + 1, waits, waited)
            start, used, peak = _WINDOW.unpack_from(mm, 256)
            if now - start >= self.window_ns:
                start, used = now, 0.0
            used += weight
            _WINDOW.pack_into(mm, 256, start, used, max(peak, used))
            own_start, own = _OWN.unpack_from(mm, 352)
            aligned = now // self.window_ns * self.window_ns
            _OWN.pack_into(mm, 352, aligned, (own if own_start == aligned else 0.0) + weight)
            return 0.0

    def note_wait(self, seconds: float) -> None:
        """Count a wait a caller made for this budget (shown by status)."""
        with self._locked(self._fd):
            granted, grants, waits, waited = _TOTALS.unpack_from(self._mm, 192)
            _TOTALS.pack_into(self._mm, 192, granted, grants, waits + 1, waited + int(seconds * 1e9))

    def acquire(self, weight: float, timeout: float | None = None) -> float:
        """Block until `weight` is granted; returns the seconds waited. Raises BudgetExhausted past `timeout`."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while True:
            wait = self.reserve(weight)
            if wait <= 0:
                waited = time.monotonic() - start
                if waited > 0.001:
                    self.note_wait(waited)
                return waited
            if deadline is not None and time.monotonic() + wait > deadline:
                raise BudgetExhausted(f"REST budget {self.key}: weight {weight:g} is not available within "
                                      f"{timeout:g} s (next in {wait:.2f} s; {self.describe()})")
            time.sleep(min(wait, 1.0))

    def penalise(self, status: int, retry_after_s: float | None) -> None:
        """A 429 / 418 answer (or the exchange's own ban status, see is_limit_answer): block the bucket for everyone
        for its Retry-After, and empty it."""
        own = getattr(_limits_of(self.key), "BAN_STATUS", {}).get(status)
        if retry_after_s is None and own is not None:  # the exchange's documented block
            ban = own
        elif retry_after_s is None:  # one window (a Binance ban lasts 2 minutes at least)
            ban = max(self.window_ns / 1e9, BAN_418_S if status == 418 else 0.0)
        else:
            ban = min(max(retry_after_s, 0.0), MAX_BAN_S)
        mm = self._mm
        with self._locked(self._fd):
            now = time.time_ns()
            blocked_until, _, penalties = _BLOCK.unpack_from(mm, 128)
            _BLOCK.pack_into(mm, 128, max(blocked_until, now + int(ban * 1e9)), status, penalties + 1)
            _BUCKET.pack_into(mm, 64, 0.0, now + int(ban * 1e9))

    def adopt(self, server_used: float, window_end_s: float, now_ns: int | None = None) -> bool:
        """The exchange says this IP used `server_used` in its window that ends at `window_end_s` (wall clock; the
        window is as long as this budget's). What this box did not send there came from other programs on the IP,
        and they are expected to go on at that pace until the window ends. If that leaves less of the safe allowance
        than the bucket holds, keep only what is left, and if nothing is left hold everyone until the window ends.
        True if it took anything."""
        mm = self._mm
        with self._locked(self._fd):
            now = time.time_ns() if now_ns is None else now_ns
            end_ns = int(window_end_s * 1e9)
            if end_ns <= now:  # an answer from a window already over
                return False
            tokens, updated = _BUCKET.unpack_from(mm, 64)
            tokens = min(self.capacity, tokens + max(0, now - updated) * self.rate)
            start_ns = end_ns - self.window_ns
            own_start, own = _OWN.unpack_from(mm, 352)
            others = max(0.0, server_used - (own if own_start == start_ns else 0.0))
            # their pace so far (over a quarter window at least, so one early request is not taken for a flood)
            pace = others / max(now - start_ns, self.window_ns / 4)
            room = SAFETY * self.limit - server_used - pace * (end_ns - now)
            _, _, hold_until, adoptions = _SERVER.unpack_from(mm, 320)
            took = room < tokens
            if took:
                _BUCKET.pack_into(mm, 64, max(room, 0.0), max(now, updated))
            if room <= 0.0:
                hold_until = max(hold_until, end_ns)
            _SERVER.pack_into(mm, 320, server_used, now, hold_until, adoptions + took)
            return took

    # ------------------------------------------------------------------ status
    def usage(self) -> dict[str, object]:
        mm = self._mm
        with self._locked(self._fd):
            now = time.time_ns()
            tokens, updated = _BUCKET.unpack_from(mm, 64)
            blocked_until, last_status, penalties = _BLOCK.unpack_from(mm, 128)
            granted, grants, waits, waited = _TOTALS.unpack_from(mm, 192)
            start, used, peak = _WINDOW.unpack_from(mm, 256)
            server_used, server_seen, hold_until, adoptions = _SERVER.unpack_from(mm, 320)
        tokens = min(self.capacity, tokens + max(0, now - updated) * self.rate)
        return {"key": self.key, "limit": self.limit, "window_s": self.window_ns / 1e9, "tokens": tokens,
                "capacity": self.capacity, "window_used": used if now - start < self.window_ns else 0.0,
                "peak_window_used": peak, "peak_ratio": peak / self.limit, "granted_weight": granted,
                "requests": grants, "waits": waits, "waited_s": waited / 1e9, "penalties": penalties,
                "last_penalty_status": last_status, "blocked_s": max(0, blocked_until - now) / 1e9,
                "server_used": server_used, "server_seen_s": server_seen / 1e9, "adoptions": adoptions,
                "held_s": max(0, hold_until - now) / 1e9}

    def describe(self) -> str:
        u = self.usage()
        text = (f"{u['window_used']:g}/{u['limit']:g} per {u['window_s']:g} s used (peak {u['peak_ratio']:.0%}), "
                f"{u['requests']} requests, {u['waits']} waits")
        if u["penalties"]:
            text += f", {u['penalties']} x 429/418 (last {u['last_penalty_status']})"
        if u["blocked_s"]:
            text += f", blocked {u['blocked_s']:.0f} s more"
        if u["adoptions"]:
            text += f", server counted more {u['adoptions']} times (last {u['server_used']:g})"
        if u["held_s"]:
            text += f", held {u['held_s']:.1f} s more for the server's window"
        return text

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            os.close(self._fd)
            self._mm = None

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- per-process access by URL
_OPEN: dict[tuple[str, str], RestBudget] = {}


def for_url(url: str) -> tuple[RestBudget, float] | None:
    """The shared budget a GET of `url` draws on, and its weight; None for a URL no exchange claims."""
    found = cost(url)
    if found is None:
        return None
    key, weight = found
    sc = scope()
    budget = _OPEN.get((sc, key))
    if budget is None:
        budget = _OPEN[(sc, key)] = RestBudget(key, scope_name=sc)
    return budget, weight


def is_limit_answer(key: str, status: int) -> bool:
    """Does HTTP `status` on budget `key` say the IP is over its limit (429, a 418 ban, or the exchange's own, e.g.
    Bybit's 403)? Everyone on the box then honours it (RestBudget.penalise)."""
    return status in (418, 429) or status in getattr(_limits_of(key), "BAN_STATUS", {})


def observe(url: str, headers: Mapping[str, str], now_s: float | None = None) -> bool:
    """Hand an answer's headers to the budget of `url`, when its exchange reports the IP's use in them (the
    exchange's `limits.server_usage`); True if the budget took less for it. Raises OSError if the budget's file
    fails, as for_url does."""
    found = cost(url)
    if found is None:
        return False
    limits = _limits_of(found[0])
    reader = getattr(limits, "server_usage", None)
    if reader is None:
        return False
    opened = for_url(url)
    if opened is None:
        return False
    budget = opened[0]
    now = time.time() if now_s is None else now_s
    usage = reader(budget.key, headers, now, budget.window_ns / 1e9)
    if usage is None:
        return False
    return budget.adopt(usage[0], usage[1], int(now * 1e9))


def for_connect(exchange: str) -> RestBudget | None:
    """The shared budget of `exchange`'s WebSocket connection attempts per IP ("<exchange>-connect"), if it has one."""
    key = f"{exchange}-connect"
    if key not in budgets():
        return None
    sc = scope()
    budget = _OPEN.get((sc, key))
    if budget is None:
        budget = _OPEN[(sc, key)] = RestBudget(key, scope_name=sc)
    return budget


def existing(scope_name: str | None = None) -> list[RestBudget]:
    """The budgets of a scope that some process created on this box (for status)."""
    prefix = f"{NAME_PREFIX}{scope_name or scope()}-"
    known = budgets()
    try:
        names = sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except OSError:
        return []
    out = []
    for n in names:
        key = n[len(prefix):]
        if key in known:
            try:
                out.append(RestBudget(key, scope_name=scope_name or scope(), create=False))
            except OSError:  # removed meanwhile, or not ours
                continue
    return out


def usage_all(scope_name: str | None = None) -> list[dict[str, object]]:
    """`usage()` of every budget some process on this box created (what `mdengine status` shows)."""
    out = []
    for budget in existing(scope_name):
        try:
            out.append(budget.usage())
        finally:
            budget.close()
    return out


__all__ = ["BudgetExhausted", "RestBudget", "budgets", "cost", "existing", "for_connect", "for_url", "is_limit_answer",
           "observe", "scope", "usage_all"]
