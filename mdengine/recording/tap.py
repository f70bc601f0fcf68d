"""Recording tap: every frame a feed sends and receives, written to compressed JSON Lines off the hot path.

One file per exchange per UTC day, ``DIR/<exchange>-YYYY-MM-DD.jsonl.zst`` (``.jsonl.gz`` when the
``zstandard`` package is missing), in the format of ``shared/recordings`` plus ``ts_ns`` and ``exchange``::

    {"kind":"recv","ts":1700000000.123456,"ts_ns":1700000000123456789,"url":"wss://...","data":"...",
     "exchange":"binance"}

Where the work happens:
- ``tap()`` (feed thread) only queues a reference to its four arguments in a bounded FIFO: a C type
  (``_speedups.tap_queue``; ``rec.tap`` is its METH_FASTCALL method, so no Python frame runs per record), or its
  pure-Python twin `_TapQueue` (a deque) without the C module. If the writer falls behind, the oldest entries
  are dropped and counted; the feed never blocks.
- A shipper thread wakes every ``poll_interval_s`` and takes up to 4096 entries per C call, handed over already
  column-wise (the parts of ``_speedups.record_columns``: no tuple per record, no Python code per record), and
  sends them, ``marshal``-ed, over a socket to a writer child process (`mdengine.recording.writer`), which
  serialises (orjson), compresses (zstd) and writes. The socket send releases the GIL.
- Feed-process cost per record (tight loops over one 356 B frame, see docs/recording.md): the
  tap ~40 ns of the feed thread (~150 ns as a Python method on a deque), the shipper ~50 ns of GIL time
  (~100 ns popping tuples and encoding them). On fresh frames whose memory has gone cold by the time the
  shipper reads it, both grow (``perf/record_cpu.py``). ``perf/feed_throughput.py`` reports the frames/s a
  CPU-bound feed (~1 µs per frame) loses to the tap: ~3 % (was ~15 %).
- ``process=False``, or when no child can be started, the same writer (`RecordWriter`) runs in the shipper
  thread instead (the previous design; it costs the feed thread the serialisation's GIL time).

Rules this module keeps:
- The writer ends its compressed frame (an independent zstd frame / gzip member) at most
  ``flush_interval_s`` after its first record, then the bytes go to the OS, so a crash loses at most that
  much and a cut file is readable up to its last complete frame (``mdengine.recording.reader`` handles the tail).
- The feed dies (even SIGKILL): the child sees end of stream, writes everything shipped (all but the last
  ``poll_interval_s`` of taps), ends its frame and exits 0. The child ignores SIGINT/SIGTERM for this.
- The child dies: the records shipped to it and not yet reported written are counted as dropped, reported
  once through ``on_error``, and a new child is started after a backoff (0.5 s doubling to 5 s); the
  records tapped meanwhile wait in the tap queue.
- An I/O failure (disk full, unwritable directory) is reported once per failure episode through
  ``on_error(text)`` and the log; the batch is dropped (counted) and the file is reopened later.
"""

from __future__ import annotations

import collections
import logging
import marshal
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._native import speedups
from .writer import (
    HEADER,
    KINDS,
    MessageReader,
    RecordWriter,
    default_compression,
    encode_batch,
    encode_columns,
    file_name,
    zstandard,
)

log = logging.getLogger("mdengine.recorder")  # the name logs have always shown

DEFAULT_MAX_QUEUE = 200_000  # entries; ~10 s of a very busy feed
_BATCH = 256  # records per RecordWriter.write call in the in-process mode
_SHIP_MAX = 4096  # records per message to the child
_native = speedups()
_columns = _native.record_columns if _native is not None else None  # a batch's column-wise parts, in C
_tap_queue = _native.tap_queue if _native is not None else None  # the tap queue, in C
_READY_TIMEOUT_S = 30.0  # a child that has not said "ready" by then is not going to
_BACKOFF_S = (0.5, 5.0)  # first and longest wait before restarting a dead child
_HEALTHY_S = 10.0  # a child that ran this long resets the backoff
_WRITER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "writer.py")
_ZERO = {"written": 0, "io_dropped": 0, "bad": 0, "errors": 0, "bytes_written": 0, "path": None}


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """Counters of one Recorder (a consistent-enough copy; the writer keeps updating).

    Every tapped entry is in exactly one of written / dropped / queued / in_flight (up to races with tap()).
    """

    tapped: int  # entries handed to tap()
    written: int  # records in a file (their frame was ended and handed to the OS)
    dropped: int  # entries lost: queue overflow, an I/O failure, not serialisable, or a writer process died
    errors: int  # I/O failures (every failed attempt, not only the first of an episode) + writer deaths
    bytes_written: int  # compressed bytes written
    queued: int  # entries waiting in the tap queue
    in_flight: int  # entries handed to the writer, not yet in a file (socket, unended frame)
    path: str | None  # file currently open
    mode: str  # "process" (writer child) or "thread" (in-process writer)
    restarts: int  # writer processes started after one died


class _Child:
    """One writer process and the parent's end of its socket. Owned by the shipper thread."""

    def __init__(self, cmd: list[str]) -> None:
        ours, theirs = socket.socketpair()
        try:
            fd = theirs.fileno()
            self.proc = subprocess.Popen([*cmd, "--fd", str(fd)], pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                         start_new_session=False)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # only the child holds it now: its exit is our end of stream
        self.sock = ours
        self.reader = MessageReader()
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self.status: dict[str, Any] = _ZERO
        self.final = False  # its last status (after end of stream) arrived
        self.dead = False  # end of stream or a send failure seen
        self.shipped = 0  # records sent to it

    @property
    def accounted(self) -> int:
        st = self.status
        return st["written"] + st["io_dropped"] + st["bad"]

    def send(self, meta: bytes, raw: bytes = b"") -> bool:
        """One message in one system call (each call gives the GIL away and takes it back)."""
        parts = [HEADER.pack(len(meta), len(raw)), meta, raw]
        try:
            sent = self.sock.sendmsg(parts)  # releases the GIL while the child catches up
            total = HEADER.size + len(meta) + len(raw)
            if sent < total:  # cut short by a signal: send the rest
                self.sock.sendall(memoryview(b"".join(parts))[sent:])
        except OSError:
            self.dead = True
            return False
        return True

    def receive(self) -> list[Any]:
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.dead = True
            return []
        return list(self.reader.feed(data))

    def reap(self, timeout: float) -> int:
        """Wait for the process to exit (kill it after `timeout`); returns its exit code."""
        try:
            return self.proc.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.sock.close()


def _describe_exit(rc: int) -> str:
    return f"signal {-rc}" if rc < 0 else f"exit code {rc}"


class _TapQueue:
    """The pure-Python twin of ``mdengine._speedups.tap_queue`` (used when the C module is missing): a bounded
    FIFO of ``(kind, url, data, ns)`` whose full queue evicts the oldest entry, counted in `overflow`."""

    def __init__(self, maxlen: int) -> None:
        self._q: collections.deque[tuple[Any, Any, Any, Any]] = collections.deque(maxlen=maxlen)
        self.maxlen = maxlen
        self.tapped = 0  # tap() calls
        self.overflow = 0  # entries evicted by a full queue

    def tap(self, kind: Any, url: Any, data: Any, ns: Any) -> None:
        q = self._q
        if len(q) == self.maxlen:
            self.overflow += 1  # deque(maxlen) evicts the oldest on append
        q.append((kind, url, data, ns))
        self.tapped += 1

    def take(self, n: int, columns: bool = True) -> list[tuple[Any, Any, Any, Any]]:
        """Up to `n` of the oldest entries, always as a list of tuples here (the C queue returns
        `record_columns`' parts when `columns` and every entry fits them)."""
        q = self._q
        pop = q.popleft  # atomic: tap() may append meanwhile
        return [pop() for _ in range(min(len(q), n))]

    def __len__(self) -> int:
        return len(self._q)


def _plain(item: tuple[Any, ...]) -> tuple[str, str, Any, int] | None:
    """An entry marshal can take (data: str, bytes or None), or None if it cannot be recorded at all."""
    try:
        kind, url, data, ns = item
        if data is not None and data.__class__ is not str and data.__class__ is not bytes:
            data = bytes(data) if isinstance(data, (bytearray, memoryview)) else str(data)
        out = (str(kind), str(url), data, int(ns))
        marshal.dumps(out)
        return out
    except Exception:  # noqa: BLE001 - a released memoryview, an unconvertible timestamp: counted, not raised
        return None


class Recorder:
    """Records one exchange's raw traffic. Thread-safe ``tap``; call ``close()`` to flush and stop.

    Args:
        directory: where the daily files go (created if missing; failure is reported, not raised).
        exchange: exchange name, written into every record and the file name.
        on_error: called with a one-line description at the start of each failure episode and when a writer
            process dies (from the shipper thread; keep it cheap and thread-safe).
        compression: "zstd" (default when installed), "gzip" or "none".
        flush_interval_s: the longest time a record stays only in memory once the writer has it.
        max_queue: bound of the tap queue; beyond it the oldest entries are dropped.
        retry_interval_s: wait after an I/O failure before reopening.
        poll_interval_s: how often the shipper thread empties the tap queue.
        process: write from a child process (default) or from a thread of this process.
        executable: the Python interpreter for the child (default ``sys.executable``).
    """

    def __init__(self, directory: str | os.PathLike[str], exchange: str, *,
                 on_error: Callable[[str], None] | None = None, compression: str | None = None, level: int = 1,
                 flush_interval_s: float = 1.0, max_queue: int = DEFAULT_MAX_QUEUE,
                 retry_interval_s: float = 5.0, poll_interval_s: float = 0.02, process: bool = True,
                 executable: str | None = None) -> None:
        compression = compression or default_compression()
        if compression not in ("zstd", "gzip", "none"):
            raise ValueError(f"compression must be 'zstd', 'gzip' or 'none', not {compression!r}")
        if compression == "zstd" and zstandard is None:
            raise ValueError("compression='zstd' needs the zstandard package: pip install zstandard "
                             '(the extra "mdengine-shm[record]")')
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.directory = os.path.abspath(os.fspath(directory))
        self.exchange = exchange
        self.compression = compression
        self.level = level if compression == "zstd" else min(max(level, 1), 9)
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        self.poll_interval_s = poll_interval_s
        self.on_error = on_error
        self.executable = executable or sys.executable
        self._q = _tap_queue(max_queue) if _tap_queue is not None else _TapQueue(max_queue)
        self.tap = self._q.tap  # the feed calls the queue's own tap: in C, no Python frame per record
        # writer side: owned by the shipper thread; what stats() and flush() read changes under _cond
        self._cond = threading.Condition()
        self._mode = "process" if process else "thread"
        self._writer: RecordWriter | None = None if process else self._new_writer()
        self._child: _Child | None = None
        self._base = dict(_ZERO)  # counters of writer processes that are gone
        self._lost = 0  # shipped to a writer process that died before reporting them written
        self._unshippable = 0  # entries marshal could not take even after conversion
        self._deaths = 0
        self._restarts = 0
        self._restart_at: float | None = None
        self._backoff = _BACKOFF_S[0]
        self._flush_seq = 0  # flushes requested
        self._flush_sent = 0  # ... handed to the current writer
        self._acked_seq = 0  # ... done
        self._done = False
        self._stop = False
        self._deadline = 0.0
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=f"mdengine-recorder-{exchange}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ hot path
    def tap(self, kind: str, url: str, data: Any, recv_ns: int) -> None:
        """Queue one event: kind in connect|disconnect|recv|send|http, `data` text/bytes/None,
        `recv_ns` the local wall-clock receive time in ns. Never blocks, never raises on input.

        An instance's ``tap`` attribute is its queue's own ``tap`` (``_speedups.TapQueue.tap`` where the C module
        is built), which does exactly this without a Python call; this method is for callers of
        ``Recorder.tap(rec, ...)``."""
        self._q.tap(kind, url, data, recv_ns)

    # ------------------------------------------------------------------ lifecycle
    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, end the frame, close the file and wait for the writer process to exit
        (killed after `timeout`). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._deadline = time.monotonic() + timeout
        self._stop = True
        self._wake()
        self._thread.join(timeout + 1.0)
        if self._thread.is_alive():  # stuck sending to a hung child, or on a hung disk
            child = self._child
            if child is not None:
                child.proc.kill()  # unblocks the send
            self._thread.join(5.0)
        if not self._thread.is_alive():
            self._wake_r.close()
            self._wake_w.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything tapped so far is written and its frame ended, or dropped (tests, shutdown
        hooks). Returns False on timeout."""
        target = self._q.tapped
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_seq += 1
            seq = self._flush_seq
        self._wake()
        with self._cond:
            while not ((self._acked_seq >= seq or self._done) and self._accounted() >= target):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stats(self) -> RecorderStats:
        with self._cond:
            st = self._counters()
            child = self._child
            w = self._writer
            in_flight = (child.shipped - child.accounted if child else 0) + (w.unflushed if w else 0)
            path = child.status["path"] if child else (w.path if w else None)
            return RecorderStats(tapped=self._q.tapped, written=st["written"], dropped=self._dropped(st),
                                 errors=st["errors"] + self._deaths, bytes_written=st["bytes_written"],
                                 queued=len(self._q), in_flight=in_flight, path=path, mode=self._mode,
                                 restarts=self._restarts)

    @property
    def path(self) -> str | None:
        """The file being written now (None before the first record or during a failure)."""
        return self.stats().path

    @property
    def writer_pid(self) -> int | None:
        """The writer process, if one is running."""
        child = self._child
        return child.proc.pid if child is not None else None

    # ------------------------------------------------------------------ counters (under _cond)
    def _counters(self) -> dict[str, int]:
        out = {k: v for k, v in self._base.items() if k != "path"}
        sources = []
        if self._child is not None:
            sources.append(self._child.status)
        if self._writer is not None:
            sources.append(self._writer.status())
        for st in sources:
            for k in out:
                out[k] += st[k]
        return out

    def _dropped(self, st: dict[str, int]) -> int:
        return self._q.overflow + self._lost + self._unshippable + st["io_dropped"] + st["bad"]

    def _accounted(self) -> int:
        st = self._counters()
        return st["written"] + self._dropped(st)

    # ------------------------------------------------------------------ shipper thread
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already awake (buffer full) or closed

    def _new_writer(self) -> RecordWriter:
        return RecordWriter(self.directory, self.exchange, compression=self.compression, level=self.level,
                            retry_interval_s=self.retry_interval_s, on_error=self._report)

    def _report(self, text: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(text)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the recorder
                log.exception("recorder on_error callback failed")

    def _run(self) -> None:
        try:
            if self._writer is None:
                self._start_child()
            next_ship = time.monotonic() + self.poll_interval_s
            while True:
                try:
                    if self._step(next_ship):
                        break
                except Exception as e:  # noqa: BLE001 - a recorder bug must never stop recording for good
                    log.exception("recorder %s: unexpected error", self.exchange)
                    self._report(f"recorder {self.exchange}: unexpected error {e!r}")
                    time.sleep(self.poll_interval_s)
                now = time.monotonic()
                if now >= next_ship:
                    next_ship = now + self.poll_interval_s
        finally:
            self._shutdown()

    def _step(self, next_ship: float) -> bool:
        """One wait-and-work round of the shipper thread. Returns True when it is time to shut down."""
        child, writer = self._child, self._writer
        now = time.monotonic()
        stopping = self._stop
        seq = self._flush_seq  # before draining: a flush covers what was tapped before its request
        flush_wanted = seq > self._flush_sent
        timeout = next_ship - now
        if writer is not None and writer.frame_started is not None:
            timeout = min(timeout, writer.frame_started + self.flush_interval_s - now)
        if self._restart_at is not None:
            timeout = min(timeout, self._restart_at - now)
        if child is not None and child.ready_at is None:
            timeout = min(timeout, child.started + _READY_TIMEOUT_S - now)
            if stopping:
                timeout = min(timeout, self._deadline - now)
        elif stopping or flush_wanted:
            timeout = 0.0
        socks: list[socket.socket] = [self._wake_r]
        if child is not None:
            socks.append(child.sock)
        readable, _, _ = select.select(socks, [], [], max(timeout, 0.0))
        if self._wake_r in readable:
            self._wake_r.recv(4096)
        if child is not None:
            if child.sock in readable:
                self._handle(child, child.receive())
            if child.dead or child.proc.poll() is not None:
                self._child_exited(child)
            elif child.ready_at is None and time.monotonic() - child.started > _READY_TIMEOUT_S:
                child.proc.kill()
                child.dead = True
                self._child_exited(child)
        child, writer = self._child, self._writer
        now = time.monotonic()
        if child is None and writer is None and not stopping and self._restart_at is not None \
                and now >= self._restart_at:
            self._start_child()
            child = self._child
        ready = child is not None and child.ready_at is not None
        if now >= next_ship or flush_wanted or stopping:
            if writer is not None:
                self._write_queue(writer)
            elif ready:
                self._ship(child)
        if writer is not None:
            if seq > self._flush_sent or writer.frame_due(now, self.flush_interval_s):
                writer.end_frame()
                with self._cond:
                    self._flush_sent = self._acked_seq = seq
            with self._cond:
                self._cond.notify_all()
        elif ready and seq > self._flush_sent and not child.dead and child.send(marshal.dumps(("flush", seq))):
            self._flush_sent = seq
        return stopping and (writer is not None or child is None or ready
                             or time.monotonic() >= self._deadline)

    def _handle(self, child: _Child, messages: list[Any]) -> None:
        for msg in messages:
            tag = msg[0]
            if tag == "status":
                with self._cond:
                    child.status = msg[2]
                    if msg[1] > 0:
                        self._acked_seq = max(self._acked_seq, msg[1])
                    elif msg[1] < 0:
                        child.final = True
                    self._cond.notify_all()
            elif tag == "error":
                self._report(msg[1])
            elif tag == "ready":
                child.ready_at = time.monotonic()

    def _ship(self, child: _Child) -> None:
        """Send everything queued to the child (the feed's GIL time for recording: see `encode_batch`)."""
        q = self._q
        take = q.take
        while len(q) and not child.dead:
            batch = take(_SHIP_MAX)  # atomic: tap() may append meanwhile
            if batch.__class__ is tuple:  # the C queue's record_columns parts: nothing to convert
                meta, raw = encode_columns(batch)
                with self._cond:
                    child.shipped += len(batch[0])
                child.send(meta, raw)
                continue
            try:
                meta, raw = encode_batch(batch, _columns)
            except ValueError:  # data of another type (e.g. an int): convert, as the writer would str() it
                plain = [p for p in map(_plain, batch) if p is not None]
                with self._cond:
                    self._unshippable += len(batch) - len(plain)
                batch = plain
                meta, raw = encode_batch(batch, _columns)
            with self._cond:
                child.shipped += len(batch)
            child.send(meta, raw)

    def _write_queue(self, writer: RecordWriter) -> None:
        q = self._q
        while len(q):
            writer.write(q.take(_BATCH, False))

    def _start_child(self) -> None:
        self._restart_at = None
        # by path, with -P (no script directory on sys.path): the child skips the package's imports (numpy,
        # the client: ~0.3 s and ~30 MB); -m is the fallback for an installation without the source file
        script = ["-P", _WRITER_SCRIPT] if os.path.isfile(_WRITER_SCRIPT) else ["-m", "mdengine.recording.writer"]
        cmd = [self.executable, *script, "--directory", self.directory, "--exchange", self.exchange,
               "--compression", self.compression, "--level", str(self.level),
               "--flush-interval-s", repr(self.flush_interval_s), "--retry-interval-s", repr(self.retry_interval_s),
               "--log-level", str(log.getEffectiveLevel())]
        try:
            child = _Child(cmd)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            self._fall_back(f"cannot start the writer process ({e})")
            return
        with self._cond:
            self._child = child

    def _fall_back(self, why: str) -> None:
        log.warning("recorder %s: %s; writing from a thread of this process instead", self.exchange, why)
        with self._cond:
            self._writer = self._new_writer()
            self._mode = "thread"
            self._flush_sent = self._acked_seq

    def _child_exited(self, child: _Child) -> None:
        """The child closed its socket or exited: read what it still said, reap it, account, restart."""
        while not child.dead:  # end of stream comes right after its last messages
            readable, _, _ = select.select([child.sock], [], [], 1.0)
            if not readable:
                break
            self._handle(child, child.receive())
        late = self._stop and time.monotonic() >= self._deadline
        rc = child.reap(0.0 if late else 2.0)
        lost = child.shipped - child.accounted
        with self._cond:
            for k in self._base:
                if k != "path":
                    self._base[k] += child.status[k]
            self._lost += lost
            self._child = None
            self._flush_sent = self._acked_seq  # flushes it did not answer go to the next writer
            self._cond.notify_all()
        if child.final and rc == 0:
            return  # a clean close
        now = time.monotonic()
        if child.ready_at is None:
            self._fall_back(f"the writer process exited before it was ready ({_describe_exit(rc)})")
            return
        if now - child.ready_at >= _HEALTHY_S:
            self._backoff = _BACKOFF_S[0]
        delay, self._backoff = self._backoff, min(self._backoff * 2, _BACKOFF_S[1])
        with self._cond:
            self._deaths += 1
        stopping = self._stop
        text = (f"recorder {self.exchange}: writer process died ({_describe_exit(rc)}); "
                f"{'writing the rest in-process' if stopping else 'restarting'}; {lost} records lost")
        log.error("%s", text)
        self._report(text)
        if not stopping:
            self._restart_at = now + delay
            self._restarts += 1

    def _shutdown(self) -> None:
        """End of the shipper thread: ship the rest, close the child (or the in-process writer)."""
        try:
            child = self._child
            if child is not None and child.ready_at is not None and not child.dead:
                self._ship(child)
                try:
                    child.sock.shutdown(socket.SHUT_WR)  # end of stream: the child writes, closes, answers
                except OSError:
                    child.dead = True
                while not child.dead and child.proc.poll() is None:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        break
                    readable, _, _ = select.select([child.sock], [], [], left)
                    if readable:
                        self._handle(child, child.receive())
                self._child_exited(child)
            elif child is not None:  # never became ready
                child.proc.kill()
                child.dead = True
                self._child_exited(child)
            if len(self._q):  # no writer process to take them: write them here rather than lose them
                if self._writer is None:
                    with self._cond:
                        self._writer = self._new_writer()
                self._write_queue(self._writer)
            if self._writer is not None:
                self._writer.close()
        finally:
            with self._cond:
                self._done = True
                self._acked_seq = self._flush_seq
                self._cond.notify_all()


def measure_tap_cost(n: int = 200_000, payload: str | None = None, process: bool = True) -> float:
    """Nanoseconds per ``Recorder.tap`` call (hot-path cost only), measured on a throwaway recorder whose
    shipper thread (and in-process writer, with ``process=False``) runs as in production."""
    import tempfile

    payload = payload or '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","U":1,"u":2,"b":[],"a":[]}}'
    with tempfile.TemporaryDirectory() as d:
        rec = Recorder(d, "perf", max_queue=max(n, 1), process=process)
        tap = rec.tap
        url = "ws://127.0.0.1:1/stream"
        t0 = time.perf_counter_ns()
        for i in range(n):
            tap("recv", url, payload, i)
        dt = time.perf_counter_ns() - t0
        rec.close()
    return dt / n


__all__ = ["KINDS", "Recorder", "RecorderStats", "default_compression", "file_name", "measure_tap_cost"]
