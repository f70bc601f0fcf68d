"""The supervisor's control channel: newline-delimited JSON over a Linux abstract Unix socket.

The socket is named ``\\0mdengine-<namespace>``. Binding it is the "one supervisor per namespace" lock:
the kernel refuses a second bind while the first process lives, and the name vanishes with the process
(no file to clean up after a SIGKILL).

An abstract name has no file permissions: any local user can connect to it, or bind it first. So both ends
check the other's credentials (``SO_PEERCRED``, which the kernel fills in; a peer cannot forge it):
- the server answers only the engine's own user, root, and the uids and groups named in engine.toml
  (``[control] allow_users / allow_groups``); anyone else gets one "permission denied" line and is logged
  with their uid and pid (once, then with a count);
- the client believes only a server run by its own user or root (or a user named in
  ``$MDENGINE_SUPERVISOR_USER``); any other holder of the name is a squatter and is reported as one.

Requests (one JSON object per line; one answer line per request, in order)::

    {"op": "ping"}
    {"op": "status"}
    {"op": "subscribe" | "unsubscribe", "exchange": "okx", "symbol": "BTC/USDT", "market": null,
     "timeout": 4.5}

``timeout`` (seconds, optional; `request` fills it in) bounds how long the supervisor waits for the feed,
which may still be starting (first subscription on an exchange starts its feed); the supervisor cuts it to
engine.toml ``[control] max_wait_s`` (default 60 s), so no caller holds a worker longer; and a user allowed in
``[control]`` (not the engine's own user or root) has at most PER_USER_FORWARDED of them with the workers at once:
more are answered at once with an error.
Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.

Client side: `request(namespace, message)`; every failure is a `ControlError` whose message is a sentence.
Server side: `ControlServer(namespace, handler)`. One thread does all the socket work through a selector,
with a cap on connections and an idle timeout; the handler gets the request dict and returns the answer dict
on a small, bounded pool of worker threads (a subscribe may wait seconds for a starting feed, and must not hold
up a status request). A handler exception becomes an ``ok: false`` answer, never a dead server; a failing
``accept`` (EMFILE and the like) pauses accepting briefly, never for good (out of descriptors, connections idle
for a second are closed to make room).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pwd
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue

from ..errors import ControlError

log = logging.getLogger("mdengine.control")  # the name logs have always shown

MAX_LINE = 1 << 20  # a request longer than this is garbage, not a request
FORWARDED_OPS = ("subscribe", "unsubscribe")  # ops the supervisor relays to a feed process
MAX_CONNECTIONS = 64  # open control connections; more are answered "busy" and closed at once
IDLE_TIMEOUT_S = 10.0  # a connection with no request in flight and no traffic this long is closed
WORKERS = 8  # threads that run handlers
# subscribe/unsubscribe requests one allowed user other than the engine's own and root may have with the workers at
# once (each may wait up to [control] max_wait_s for a feed); more are answered at once. The engine's user and root
# are not capped: a trader's strategies all run as that user and all subscribe when they start.
PER_USER_FORWARDED = WORKERS // 2
CLOSE_JOIN_S = 5.0  # close() waits this long for handlers in flight (their answers still go out), then gives up
ACCEPT_BACKOFF_S = (0.05, 1.0)  # pause after a failed accept (EMFILE, ...), doubling up to the second
SHED_IDLE_S = 1.0  # out of descriptors, connections idle this long are closed to make room
REFUSAL_REPORT_S = 60.0  # repeated refusals of one uid are logged at most this often, with a count
SUPERVISOR_USER_ENV = "MDENGINE_SUPERVISOR_USER"  # uids or user names a client also trusts (comma-separated)
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; not exported by every Python
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Handler = Callable[[dict], dict]


class NoSupervisor(ControlError):
    """Nothing listens on the namespace's control socket."""


class SupervisorRunning(ControlError):
    """Another supervisor already owns the namespace (its control socket is bound)."""


class Squatter(ControlError):
    """The namespace's control socket is held by a process of a user we do not trust."""

    def __init__(self, message: str, peer: Peer | None) -> None:
        super().__init__(message)
        self.peer = peer


@dataclass(frozen=True)
class Peer:
    """The credentials of the process at the other end of a Unix socket (from the kernel)."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid} ({_user_name(self.uid)}), pid {self.pid}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no such user"


def peer_credentials(sock: socket.socket) -> Peer:
    """Who is at the other end of a connected Unix socket (SO_PEERCRED: set by the kernel at connect)."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return Peer(pid, uid, gid)


def _peer_groups(sock: socket.socket) -> set[int]:
    """The peer's supplementary groups (SO_PEERGROUPS), or an empty set where the kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * 1024)
    except OSError:
        return set()
    return set(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))


def socket_address(namespace: str) -> str:
    """The abstract socket name of `namespace`'s supervisor (leading NUL: Linux abstract namespace)."""
    return f"\0mdengine-{namespace}"


def trusted_server_uids() -> set[int]:
    """The users whose supervisor a client believes: itself, root, and ``$MDENGINE_SUPERVISOR_USER``."""
    uids = {os.geteuid(), 0}
    for item in os.environ.get(SUPERVISOR_USER_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            uids.add(int(item))
            continue
        try:
            uids.add(pwd.getpwnam(item).pw_uid)
        except KeyError:
            log.warning("$%s names an unknown user %r: ignored", SUPERVISOR_USER_ENV, item)
    return uids


def _squatter(namespace: str, peer: Peer | None) -> Squatter:
    who = str(peer) if peer is not None else "a process that does not accept connections and is not this user's"
    return Squatter(f"the control socket of namespace {namespace!r} is held by {who}, which is not this user "
                    f"or root: not a supervisor we trust (stop that process, or name its user in "
                    f"${SUPERVISOR_USER_ENV} if it is yours)", peer)


def _connect(namespace: str, deadline: float) -> socket.socket:
    """A socket connected to `namespace`'s control name. Retries while the listen queue is full."""
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise ControlError(f"cannot open a control socket: {exc.strerror or exc}") from exc
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(socket_address(namespace))
            return sock
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            sock.close()
            raise NoSupervisor(f"no supervisor is running for namespace {namespace!r}") from exc
        except (BlockingIOError, InterruptedError) as exc:  # EAGAIN: the server's listen queue is full
            sock.close()
            if time.monotonic() >= deadline:
                raise ControlError(f"the supervisor of {namespace!r} is not accepting connections (its queue "
                                   "stayed full); it may be flooded, try again later") from exc
            time.sleep(0.02)
        except TimeoutError as exc:
            sock.close()
            raise ControlError(f"the supervisor of {namespace!r} did not accept the connection in time") from exc
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot connect to the supervisor of {namespace!r}: {exc.strerror or exc}") from exc


def request(namespace: str, message: dict, timeout: float = 5.0, *,
            trusted_uids: Iterable[int] | None = None) -> dict:
    """Send one request to `namespace`'s supervisor and return its answer.

    For subscribe/unsubscribe, the supervisor is told to answer a little before `timeout` (a
    ``"timeout"`` field is added unless present), so a slow feed yields ``ok: false`` rather than an
    exception. Returns the answer dict; ``answer["ok"]`` is False for a refused request (unknown symbol, ...),
    which is not an exception: the caller decides.
    Raises ControlError (with a sentence) when no supervisor listens (NoSupervisor), the socket is held by an
    untrusted user (Squatter; `trusted_uids` defaults to `trusted_server_uids()`), the supervisor refuses this
    user, the connection breaks, the answer is not JSON, or `timeout` seconds pass (a whole-request deadline).
    """
    if message.get("op") in FORWARDED_OPS and "timeout" not in message:
        # Tell the supervisor our deadline so that it answers "feed did not answer" before we give up.
        message = {**message, "timeout": max(timeout - min(0.5, timeout * 0.1), 0.01)}
    trusted = set(trusted_uids) if trusted_uids is not None else trusted_server_uids()
    deadline = time.monotonic() + timeout
    sock = _connect(namespace, deadline)
    try:
        try:
            peer = peer_credentials(sock)
        except OSError as exc:
            raise ControlError(f"cannot tell who holds the control socket of {namespace!r}: {exc}") from exc
        if peer.uid not in trusted:
            raise _squatter(namespace, peer)  # before we send it anything or believe a byte of it
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(sock, deadline - time.monotonic())
        except TimeoutError as exc:
            raise ControlError(f"the supervisor of {namespace!r} did not answer within {timeout} s") from exc
        except OSError as exc:
            raise ControlError(f"the control connection to {namespace!r} failed: {exc.strerror or exc}") from exc
    finally:
        sock.close()
    if not line:
        raise ControlError(f"the supervisor of {namespace!r} closed the connection without answering")
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"the supervisor of {namespace!r} sent a non-JSON answer: {line[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise ControlError(f"the supervisor of {namespace!r} sent a non-object answer: {answer!r}")
    if answer.get("refused"):
        raise ControlError(f"the supervisor of {namespace!r} refused this user: {answer.get('error')}")
    return answer


def is_running(namespace: str, timeout: float = 2.0) -> bool:
    """True if a trusted supervisor answers a ping on `namespace`."""
    try:
        return bool(request(namespace, {"op": "ping"}, timeout).get("ok"))
    except ControlError:
        return False


def holder(namespace: str, timeout: float = 1.0) -> Peer | None:
    """Who holds `namespace`'s control name, if the holder accepts connections (None otherwise)."""
    try:
        sock = _connect(namespace, time.monotonic() + timeout)
    except ControlError:
        return None
    try:
        return peer_credentials(sock)
    except OSError:
        return None
    finally:
        sock.close()


def _bound_by(namespace: str) -> Peer | None:
    """The process holding `namespace`'s name without accepting on it, found through /proc (the socket's inode in
    /proc/net/unix, then the process with a descriptor on it). None if this user cannot see it."""
    path = "@" + socket_address(namespace)[1:]
    try:
        with open("/proc/net/unix") as fh:
            inodes = {line.split()[6] for line in fh if line.rstrip("\n").endswith(" " + path)}
    except (OSError, IndexError):
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in targets for fd in fds):
                st = os.stat(f"/proc/{pid}")
                return Peer(int(pid), st.st_uid, st.st_gid)
        except OSError:  # gone, or not ours to look at
            continue
    return None


def _op_of(line: bytes) -> object:
    """The "op" of a request line, None if it is not a JSON object (the worker answers that)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message.get("op") if isinstance(message, dict) else None


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    """One line (without the newline), b"" if the peer closed first. Deadline spans all recv calls."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ControlError(f"answer longer than {MAX_LINE} bytes")
    return bytes(buf[: buf.index(b"\n")])


# ---------------------------------------------------------------------------------------------- server
class _Workers:
    """At most `n` daemon threads running handlers (daemon: a handler stuck on a feed must not hold up the
    interpreter's exit, as a ThreadPoolExecutor's worker would). Threads start on demand."""

    def __init__(self, n: int, name: str) -> None:
        self._jobs: SimpleQueue[tuple[Callable[[], dict], Callable[[dict], None]] | None] = SimpleQueue()
        self._n, self._name = n, name
        self._lock = threading.Lock()
        self._threads = 0
        self._started: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, job: Callable[[], dict], done: Callable[[dict], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the control server is closing")
            start = self._idle <= 0 and self._threads < self._n
            if start:
                self._threads += 1
            else:
                self._idle -= 1  # reserved: a later submit must not count on the same idle thread
            self._jobs.put((job, done))
        if start:
            thread = threading.Thread(target=self._run, name=f"{self._name}-{self._threads}", daemon=True)
            self._started.append(thread)
            thread.start()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, done = item
            try:
                answer = job()
            except BaseException as exc:  # noqa: BLE001 - answer() catches handler errors; this is a last resort
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            done(answer)
            with self._lock:
                self._idle += 1

    def shutdown(self, join_s: float = 0.0) -> None:
        """Refuse new jobs, let each thread finish its job and end; wait up to `join_s` for them all (a handler
        that outlives its server would run, and log, after whoever owned the server has moved on)."""
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._jobs.put(None)
        deadline = time.monotonic() + join_s
        for thread in self._started:
            if thread is threading.current_thread():  # a handler closing its own server
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("control worker %s still busy after %.0f s; not waiting for it", thread.name, join_s)


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: Peer
    last_active: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    busy: bool = False  # a request of this connection is with a worker
    forwarding: bool = False  # ... and it is a subscribe/unsubscribe (counted against its uid's cap)
    close_when_sent: bool = False
    closed: bool = False


@dataclass
class _Refusals:
    count: int = 0  # refusals not yet logged
    last_pid: int = 0
    logged_at: float = 0.0


class ControlServer:
    """Listens on `namespace`'s abstract socket and answers requests with `handler`.

    `allow_uids` / `allow_gids`: who may connect besides this process's user and root (a peer is allowed
    if its uid is listed, or its primary or a supplementary group is). Raises SupervisorRunning from the
    constructor if a trusted process holds the namespace, Squatter if anyone else does.
    """

    def __init__(self, namespace: str, handler: Handler, *, allow_uids: Iterable[int] = (),
                 allow_gids: Iterable[int] = (), max_connections: int = MAX_CONNECTIONS,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, workers: int = WORKERS,
                 per_user_forwarded: int = PER_USER_FORWARDED) -> None:
        self.namespace = namespace
        self._handler = handler
        self.allow_uids = {os.geteuid(), 0, *allow_uids}
        self.uncapped_uids = {os.geteuid(), 0}  # the engine's user and root: no cap on forwarded requests
        self.per_user_forwarded = per_user_forwarded
        self._forwarding: dict[int, int] = {}  # uid -> its subscribe/unsubscribe requests with the workers
        self._capped: dict[int, _Refusals] = {}  # uid -> over-cap answers not yet logged
        self.capped_total = 0  # requests answered at once for their uid's cap (tests, status)
        self.allow_gids = set(allow_gids)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(socket_address(namespace))
        except OSError as exc:
            self._sock.close()
            peer = holder(namespace) or _bound_by(namespace)
            if peer is not None and peer.uid in trusted_server_uids():
                raise SupervisorRunning(f"a supervisor is already running for namespace {namespace!r} "
                                        f"(pid {peer.pid})") from exc
            raise _squatter(namespace, peer) from exc
        self._sock.listen(64)
        self._sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._sock, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pool = _Workers(workers, f"control-{namespace}")
        self._answers: SimpleQueue[tuple[_Conn, dict]] = SimpleQueue()
        self._conns: set[_Conn] = set()
        self._accept_paused_until = 0.0
        self._accept_backoff = ACCEPT_BACKOFF_S[0]
        self._accept_failures = 0  # failed accepts since the last one logged
        self._accept_logged_at = -REFUSAL_REPORT_S
        self._accept_failing = False  # a failure was logged and no accept succeeded since
        self._busy_refusals = 0  # connections over the cap since the last log line
        self._busy_logged_at = 0.0
        self._refused: dict[int, _Refusals] = {}
        self.refused_total = 0  # peers refused for their credentials (tests, status)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"control-{namespace}", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the name (a new supervisor may bind it right after)."""
        if self._closed.is_set():
            return
        # handlers in flight finish first, while the control thread still sends their answers; new requests are
        # refused (their connections dropped) from here on
        self._pool.shutdown(join_s=CLOSE_JOIN_S if self._thread.is_alive() else 0.0)
        self._closed.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        else:
            self._teardown()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """Open control connections (read on the server thread; approximate elsewhere)."""
        return len(self._conns)

    # ------------------------------------------------------------------ the control thread
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (the thread is awake anyway) or closed

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                try:
                    self._round()
                except Exception:  # noqa: BLE001 - a bug here must not end the control channel
                    log.exception("namespace=%s control thread: unexpected error", self.namespace)
                    time.sleep(0.1)
        finally:
            self._teardown()

    def _round(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        if self._accept_paused_until:
            if now >= self._accept_paused_until:
                self._accept_paused_until = 0.0
                self._sel.register(self._sock, selectors.EVENT_READ, "listen")
            else:
                timeout = min(timeout, self._accept_paused_until - now)
        for key, mask in self._sel.select(timeout):
            if key.data == "listen":
                self._accept()
            elif key.data == "wake":
                self._drain_wake()
            else:
                conn: _Conn = key.data
                if mask & selectors.EVENT_READ and not conn.closed:
                    self._receive(conn)
                if mask & selectors.EVENT_WRITE and not conn.closed:
                    self._send(conn)
        self._deliver_answers()
        self._expire(time.monotonic())

    def _accept(self) -> None:
        for _ in range(64):  # a burst per round, so answers and timeouts still get their turn
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED, ...: transient
                if self._closed.is_set():
                    return
                self._pause_accept(exc)
                return
            self._accept_backoff = ACCEPT_BACKOFF_S[0]
            if self._accept_failing:
                log.warning("namespace=%s control socket accepting again", self.namespace)
                self._accept_failing = False
            self._admit(sock)

    def _pause_accept(self, exc: OSError) -> None:
        """Stop watching the listening socket for a while: it stays readable while accept fails."""
        self._accept_failures += 1
        now = time.monotonic()
        if now - self._accept_logged_at >= REFUSAL_REPORT_S:  # once per minute at most, with a count
            more = self._accept_failures - 1
            log.error("namespace=%s control socket: accept failed (%s)%s; pausing %.2f s and retrying, connections "
                      "wait in the queue", self.namespace, errno.errorcode.get(exc.errno or 0, exc),
                      f" ({more} more failures since the last report)" if more else "", self._accept_backoff)
            self._accept_logged_at, self._accept_failures, self._accept_failing = now, 0, True
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of descriptors: shed connections that sit idle
            limit = now - SHED_IDLE_S
            for conn in [c for c in self._conns if not c.busy and c.last_active < limit]:
                self._drop(conn)
        self._sel.unregister(self._sock)
        self._accept_paused_until = time.monotonic() + self._accept_backoff
        self._accept_backoff = min(self._accept_backoff * 2, ACCEPT_BACKOFF_S[1])

    def _admit(self, sock: socket.socket) -> None:
        try:
            peer = peer_credentials(sock)
            allowed = self._allowed(sock, peer)
        except OSError:
            sock.close()
            return
        if not allowed:
            self._refuse(sock, peer)
            return
        if len(self._conns) >= self.max_connections:
            self._busy_refusals += 1
            now = time.monotonic()
            if now - self._busy_logged_at >= REFUSAL_REPORT_S:
                log.warning("namespace=%s control socket: %d connections open (the cap): %d refused as busy",
                            self.namespace, len(self._conns), self._busy_refusals)
                self._busy_logged_at, self._busy_refusals = now, 0
            self._say_and_close(sock, {"ok": False, "error": f"the supervisor has {self.max_connections} control "
                                                              "connections open already; try again"})
            return
        sock.setblocking(False)
        conn = _Conn(sock, peer, time.monotonic())
        self._conns.add(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)

    def _allowed(self, sock: socket.socket, peer: Peer) -> bool:
        if peer.uid in self.allow_uids:
            return True
        if not self.allow_gids:
            return False
        return peer.gid in self.allow_gids or bool(_peer_groups(sock) & self.allow_gids)

    def _refuse(self, sock: socket.socket, peer: Peer) -> None:
        self.refused_total += 1
        r = self._refused.setdefault(peer.uid, _Refusals())
        now = time.monotonic()
        r.last_pid = peer.pid
        if r.logged_at == 0.0:
            r.logged_at = now
            log.warning("namespace=%s control socket: refused %s (not this engine's user, root, or allowed in "
                        "engine.toml [control])", self.namespace, peer)
        else:
            r.count += 1
            if now - r.logged_at >= REFUSAL_REPORT_S:
                log.warning("namespace=%s control socket: refused %d more connections from uid %d (last pid %d)",
                            self.namespace, r.count, peer.uid, peer.pid)
                r.count, r.logged_at = 0, now
        self._say_and_close(sock, {"ok": False, "refused": True,
                                   "error": f"permission denied: uid {peer.uid} may not control this engine"})

    @staticmethod
    def _say_and_close(sock: socket.socket, answer: dict) -> None:
        """One best-effort answer line to a connection we do not keep, then close it."""
        try:
            sock.setblocking(False)
            sock.send(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass
        sock.close()

    def _receive(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not chunk:
            self._drop(conn)  # the client went away; an answer in flight is dropped on delivery
            return
        conn.last_active = time.monotonic()
        conn.inbuf += chunk
        if len(conn.inbuf) > MAX_LINE and b"\n" not in conn.inbuf:
            conn.inbuf.clear()
            self._sel.modify(conn.sock, selectors.EVENT_WRITE, conn)  # read no more: answer, then close
            conn.outbuf += json.dumps({"ok": False, "error": "request too long"}).encode() + b"\n"
            conn.close_when_sent = True
            self._send(conn)
            return
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        """Hand the connection's next complete line to a worker (one request per connection at a time)."""
        while not conn.busy and not conn.close_when_sent and not conn.closed and b"\n" in conn.inbuf:
            i = conn.inbuf.index(b"\n")
            line = bytes(conn.inbuf[:i])
            del conn.inbuf[: i + 1]
            if not line.strip():
                continue
            if _op_of(line) in FORWARDED_OPS and conn.peer.uid not in self.uncapped_uids:
                uid = conn.peer.uid
                if self._forwarding.get(uid, 0) >= self.per_user_forwarded:
                    self._over_cap(conn)
                    continue
                self._forwarding[uid] = self._forwarding.get(uid, 0) + 1
                conn.forwarding = True
            conn.busy = True
            try:
                self._pool.submit(lambda line=line: self.answer(line), lambda a, c=conn: self._answered(c, a))
            except RuntimeError:  # we are closing
                self._drop(conn)
                return

    def _over_cap(self, conn: _Conn) -> None:
        """Answer a subscribe/unsubscribe over its uid's cap at once (no worker), logged once a minute per uid."""
        uid, cap = conn.peer.uid, self.per_user_forwarded
        self.capped_total += 1
        r = self._capped.setdefault(uid, _Refusals())
        r.count += 1
        now = time.monotonic()
        if r.logged_at == 0.0 or now - r.logged_at >= REFUSAL_REPORT_S:
            log.warning("namespace=%s control socket: %s has %d subscribe/unsubscribe requests in flight (the cap "
                        "per user): %d answered at once", self.namespace, conn.peer, cap, r.count)
            r.count, r.logged_at = 0, now
        conn.outbuf += json.dumps({"ok": False, "error": f"uid {uid} already has {cap} subscribe/unsubscribe "
                                   "requests waiting for a feed (the cap per user of this engine, other than its "
                                   "own user and root); try again when one is answered"}).encode() + b"\n"
        conn.last_active = now
        self._send(conn)

    def _answered(self, conn: _Conn, answer: dict) -> None:
        """Worker thread: hand the answer back to the control thread."""
        self._answers.put((conn, answer))
        self._wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _deliver_answers(self) -> None:
        while True:
            try:
                conn, answer = self._answers.get_nowait()
            except Empty:
                return
            conn.busy = False
            if conn.forwarding:
                conn.forwarding = False
                left = self._forwarding.get(conn.peer.uid, 1) - 1
                if left > 0:
                    self._forwarding[conn.peer.uid] = left
                else:
                    self._forwarding.pop(conn.peer.uid, None)
            if conn.closed:
                continue
            conn.outbuf += json.dumps(answer).encode() + b"\n"
            conn.last_active = time.monotonic()
            self._send(conn)
            if not conn.closed:
                self._next_request(conn)

    def _send(self, conn: _Conn) -> None:
        try:
            while conn.outbuf:
                n = conn.sock.send(conn.outbuf)
                del conn.outbuf[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        if not conn.outbuf and conn.close_when_sent:
            self._drop(conn)
            return
        want = selectors.EVENT_WRITE if conn.outbuf else 0
        if not conn.close_when_sent:
            want |= selectors.EVENT_READ
        try:
            self._sel.modify(conn.sock, want, conn)
        except (KeyError, ValueError):
            pass

    def _expire(self, now: float) -> None:
        limit = now - self.idle_timeout_s
        for conn in [c for c in self._conns if not c.busy and c.last_active < limit]:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _teardown(self) -> None:
        for conn in list(self._conns):
            self._drop(conn)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()  # releases the name
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ requests (worker threads)
    def answer(self, line: bytes) -> dict:
        """The answer to one raw request line (bad JSON and handler errors become ok: false)."""
        try:
            message = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"request is not JSON: {exc}"}
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            return {"ok": False, "error": 'request must be a JSON object with a string "op"'}
        try:
            answer = self._handler(message)
        except Exception as exc:  # the server must survive any one bad request
            log.exception("control request %r failed", message.get("op"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(answer, dict):
            return {"ok": False, "error": "internal error: handler returned no answer"}
        return answer
