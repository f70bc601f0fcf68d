"""Recording tap: every frame a feed sends and receives, written to compressed JSON Lines off the hot path.

One file per exchange per UTC day, ``DIR/<exchange>-YYYY-MM-DD.jsonl.zst`` (``.jsonl.gz`` when the
``zstandard`` package is missing), in the format of ``shared/recordings`` plus ``ts_ns`` and ``exchange``::

    {"kind":"recv","ts":1700000000.123456,"ts_ns":1700000000123456789,"url":"wss://...","data":"...",
     "exchange":"binance"}

Rules this module keeps:
- ``tap()`` only appends a tuple to a bounded deque; a daemon thread serialises (orjson), compresses and
  writes. If the writer falls behind, the oldest entries are dropped and counted; the feed never blocks.
- The compressor ends its frame (an independent zstd frame / gzip member) at least every
  ``flush_interval_s``, then the bytes are written, so a crash loses at most that much and a cut file is
  readable up to its last complete frame (``mdengine.recording`` handles the truncated tail).
- An I/O failure (disk full, unwritable directory) is reported once per failure episode through
  ``on_error(text)`` and the log; the batch is dropped (counted) and the file is reopened later.
"""

from __future__ import annotations

import base64
import collections
import logging
import operator
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import orjson

try:
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the optional dependency
    zstandard = None

log = logging.getLogger(__name__)

KINDS = ("connect", "disconnect", "recv", "send", "http")
DEFAULT_MAX_QUEUE = 200_000  # entries; ~10 s of a very busy feed
_EPOCH_2001_NS = 978_307_200 * 10**9  # recv_ns below this is not wall-clock time (e.g. monotonic)
_DAY_NS = 86_400 * 10**9
_BATCH = 256  # records serialised per orjson call
_NS_OF = operator.itemgetter(3)
_RECORD_SEPARATOR = b'},{"kind":'
_RECORD_NEWLINE = b'}\n{"kind":'


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """Counters of one Recorder (a consistent-enough copy; the writer thread keeps updating)."""

    tapped: int  # entries handed to tap()
    written: int  # records serialised into a file
    dropped: int  # entries lost: queue overflow or an I/O failure
    errors: int  # I/O failures (every failed attempt, not only the first of an episode)
    bytes_written: int  # compressed bytes written
    queued: int  # entries waiting for the writer thread
    path: str | None  # file currently open


class _Sink:
    """One open output file with its streaming compressor; `end_frame()` makes everything so far durable."""

    def __init__(self, path: str, compression: str, level: int) -> None:
        self.path = path
        self.compression = compression
        self.level = level
        # appending frames/members to an existing file (a restart on the same day) keeps it readable
        self.fh: IO[bytes] = open(path, "ab")  # noqa: SIM115 - lives as long as the sink
        self.good_size = os.fstat(self.fh.fileno()).st_size  # end of the last complete frame
        self._new_compressor()
        self.pending = False

    def _new_compressor(self) -> None:
        if self.compression == "zstd":
            self.comp: Any = zstandard.ZstdCompressor(level=self.level, write_checksum=True).compressobj()
        elif self.compression == "gzip":
            self.comp = zlib.compressobj(self.level, zlib.DEFLATED, 31)
        else:
            self.comp = None

    def write(self, chunk: bytes | memoryview) -> int:
        self.pending = True
        out = self.comp.compress(chunk) if self.comp is not None else chunk
        if out:
            self.fh.write(out)
        return len(out)

    def end_frame(self) -> int:
        """Close the current frame/member and flush to the OS. Returns compressed bytes written."""
        if not self.pending:
            return 0
        n = 0
        if self.compression == "zstd":
            out = self.comp.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        elif self.compression == "gzip":
            out = self.comp.flush(zlib.Z_FINISH)
        else:
            out = b""
        if out:
            self.fh.write(out)
            n = len(out)
        self.fh.flush()
        self.good_size = self.fh.tell()
        self.pending = False
        self._new_compressor()  # zstd compressobj and zlib objects are single-use after a final flush
        return n

    def close(self) -> int:
        try:
            return self.end_frame()
        finally:
            self.fh.close()


def _record(kind: str, url: str, data: Any, ns: int, exchange: str) -> dict[str, Any]:
    """One record: `data` is text, None (no data key), bytes (UTF-8 text, else base64) or anything (str())."""
    record: dict[str, Any] = {"kind": kind, "url": url, "ts": ns / 1e9, "ts_ns": ns}
    if data is None:
        pass
    elif isinstance(data, str):
        record["data"] = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        try:
            record["data"] = raw.decode()
        except UnicodeDecodeError:  # a binary frame (e.g. compressed): keep it exact
            record["data"] = base64.b64encode(raw).decode()
            record["encoding"] = "base64"
    else:
        record["data"] = str(data)
    record["exchange"] = exchange
    return record


def default_compression() -> str:
    return "zstd" if zstandard is not None else "gzip"


def _suffix(compression: str) -> str:
    return {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz", "none": ".jsonl"}[compression]


def file_name(exchange: str, day: str, compression: str | None = None) -> str:
    """``<exchange>-YYYY-MM-DD.jsonl.zst`` (or .gz / plain)."""
    return f"{exchange}-{day}{_suffix(compression or default_compression())}"


def _utc_day(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%d")


class Recorder:
    """Records one exchange's raw traffic. Thread-safe ``tap``; call ``close()`` to flush and stop.

    Args:
        directory: where the daily files go (created if missing; failure is reported, not raised).
        exchange: exchange name, written into every record and the file name.
        on_error: called with a one-line description at the start of each failure episode (from the
            writer thread; keep it cheap and thread-safe).
        compression: "zstd" (default when installed), "gzip" or "none".
        flush_interval_s: the longest time a received frame stays only in memory.
        max_queue: bound of the tap queue; beyond it the oldest entries are dropped.
        retry_interval_s: wait after an I/O failure before reopening.
    """

    def __init__(self, directory: str | os.PathLike[str], exchange: str, *,
                 on_error: Callable[[str], None] | None = None, compression: str | None = None, level: int = 1,
                 flush_interval_s: float = 1.0, max_queue: int = DEFAULT_MAX_QUEUE,
                 retry_interval_s: float = 5.0, poll_interval_s: float = 0.02) -> None:
        compression = compression or default_compression()
        if compression not in ("zstd", "gzip", "none"):
            raise ValueError(f"compression must be 'zstd', 'gzip' or 'none', not {compression!r}")
        if compression == "zstd" and zstandard is None:
            raise ValueError("compression='zstd' needs the zstandard package: pip install mdengine[record]")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.directory = os.fspath(directory)
        self.exchange = exchange
        self.compression = compression
        self.level = level if compression == "zstd" else min(max(level, 1), 9)
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        self.poll_interval_s = poll_interval_s
        self.on_error = on_error
        self._max_queue = max_queue
        self._q: collections.deque[tuple[str, str, Any, int]] = collections.deque(maxlen=max_queue)
        self._tapped = 0
        self._overflow = 0
        self._io_dropped = 0
        self._bad = 0  # entries that could not be serialised (counted as dropped)
        self._written = 0  # durable: their frame was ended and handed to the OS
        self._unflushed = 0  # written into the current, not yet ended frame
        self._errors = 0
        self._bytes = 0
        self._sink: _Sink | None = None
        self._day: str | None = None
        self._flush_request = False
        self._day_range = (0, 0)  # [start, end) ns of self._day
        self._failing = False  # inside a failure episode: errors are counted, not reported again
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"mdengine-recorder-{exchange}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ hot path
    def tap(self, kind: str, url: str, data: Any, recv_ns: int) -> None:
        """Queue one event: kind in connect|disconnect|recv|send|http, `data` text/bytes/None,
        `recv_ns` the local wall-clock receive time in ns. Never blocks, never raises on input."""
        q = self._q
        if len(q) == self._max_queue:
            self._overflow += 1  # deque(maxlen) evicts the oldest on append
        q.append((kind, url, data, recv_ns))
        self._tapped += 1

    # ------------------------------------------------------------------ lifecycle
    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, end the frame and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything tapped so far is written and its frame ended (tests, shutdown hooks)."""
        target = self._tapped
        deadline = time.monotonic() + timeout
        self._flush_request = True
        while time.monotonic() < deadline:
            if self._written + self._dropped_total() >= target and not self._flush_request:
                return True
            time.sleep(0.005)
        return False

    def stats(self) -> RecorderStats:
        return RecorderStats(tapped=self._tapped, written=self._written, dropped=self._dropped_total(),
                             errors=self._errors, bytes_written=self._bytes, queued=len(self._q),
                             path=self._sink.path if self._sink else None)

    @property
    def path(self) -> str | None:
        """The file being written now (None before the first record or during a failure)."""
        return self._sink.path if self._sink else None

    def _dropped_total(self) -> int:
        return self._overflow + self._io_dropped + self._bad

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        last_frame = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            try:
                self._drain()
            except Exception as e:  # noqa: BLE001 - a recorder bug must never stop recording for good
                log.exception("recorder %s: unexpected error", self.exchange)
                self._fail(f"recorder {self.exchange}: unexpected error {e!r}")
                self._abandon_sink()
            now = time.monotonic()
            flush_req = self._flush_request
            if stopping or flush_req or now - last_frame >= self.flush_interval_s:
                self._end_frame()
                last_frame = now
                if flush_req:
                    self._flush_request = False
            if stopping:
                break
            self._stop.wait(self.poll_interval_s)
        self._close_sink()

    def _drain(self) -> None:
        q = self._q
        while q:
            pop = q.popleft
            batch = [pop() for _ in range(min(len(q), _BATCH))]  # popleft is atomic: tap() may append meanwhile
            stamps = list(map(_NS_OF, batch))
            start, end = self._day_range
            if start <= min(stamps) and max(stamps) < end:
                self._write(self._records(batch))
            else:  # the first batch, a day boundary, or stamps that are not wall-clock time
                self._write_by_day(batch)

    def _records(self, batch: list[tuple[str, str, Any, int]]) -> list[dict[str, Any]]:
        # The writer's per-record Python work is what a CPU-bound feed thread pays for in GIL time, so it is
        # one dict per text record; orjson then serialises the whole batch in one call.
        ex = self.exchange
        return [{"kind": k, "url": u, "ts": n / 1e9, "ts_ns": n, "data": x, "exchange": ex}
                if x.__class__ is str else _record(k, u, x, n, ex) for k, u, x, n in batch]

    def _write_by_day(self, batch: list[tuple[str, str, Any, int]]) -> None:
        run: list[tuple[str, str, Any, int]] = []
        start, end = self._day_range
        for item in batch:
            ns = item[3]
            t = ns if ns >= _EPOCH_2001_NS else time.time_ns()
            if not start <= t < end:
                self._write(self._records(run))
                run = []
                self._rotate(t)
                start, end = self._day_range
            run.append(item)
        self._write(self._records(run))

    def _write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        chunks, n = self._serialise(records)
        if not n:
            return
        sink = self._open_sink()
        if sink is None:
            self._io_dropped += n
            return
        try:
            self._unflushed += n
            for chunk in chunks:
                self._bytes += sink.write(chunk)
        except OSError as e:
            self._fail(f"recorder {self.exchange}: cannot write {sink.path}: {e}")
            self._abandon_sink()

    def _serialise(self, records: list[dict[str, Any]]) -> tuple[tuple[bytes | memoryview, bytes], int]:
        """JSON Lines for `records`, and how many lines. The batch is dumped as one JSON array, then split
        at `},{"kind":`: inside a JSON string every `"` is escaped, so `{"` occurs only where an object starts.
        """
        try:
            out = orjson.dumps(records)
        except (TypeError, orjson.JSONEncodeError):  # e.g. a lone surrogate: find and drop the bad ones
            lines = []
            for r in records:
                try:
                    lines.append(orjson.dumps(r))
                except (TypeError, orjson.JSONEncodeError):
                    self._bad += 1
            return (b"\n".join(lines), b"\n"), len(lines)
        # '[{..},{..}]' -> '{..}\n{..}' + '\n', without copying it once more to drop the brackets
        out = out.replace(_RECORD_SEPARATOR, _RECORD_NEWLINE)
        return (memoryview(out)[1:-1], b"\n"), len(records)

    def _rotate(self, t_ns: int) -> None:
        """Midnight UTC (or first record): end the old file; the next write opens the new day's file."""
        day = _utc_day(t_ns)
        start = (t_ns // _DAY_NS) * _DAY_NS
        self._day_range = (start, start + _DAY_NS)
        if day != self._day:
            self._close_sink()
            self._day = day

    def _open_sink(self) -> _Sink | None:
        if self._sink is not None:
            return self._sink
        if self._failing and time.monotonic() < self._retry_at:
            return None
        path = os.path.join(self.directory, file_name(self.exchange, self._day or _utc_day(time.time_ns()),
                                                      self.compression))
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._sink = _Sink(path, self.compression, self.level)
        except OSError as e:
            self._fail(f"recorder {self.exchange}: cannot open {path}: {e}")
            return None
        return self._sink

    def _end_frame(self) -> None:
        if self._sink is None:
            return
        try:
            self._bytes += self._sink.end_frame()
        except OSError as e:
            self._fail(f"recorder {self.exchange}: cannot write {self._sink.path}: {e}")
            self._abandon_sink()
            return
        self._written += self._unflushed
        self._unflushed = 0
        if self._failing:  # the episode ends only once data really reached the OS again
            log.warning("recorder %s: writing again to %s", self.exchange, self._sink.path)
            self._failing = False

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            self._bytes += sink.close()
        except OSError as e:
            self._io_dropped += self._unflushed
            self._unflushed = 0
            self._fail(f"recorder {self.exchange}: cannot close {sink.path}: {e}")
            return
        self._written += self._unflushed
        self._unflushed = 0

    def _abandon_sink(self) -> None:
        """Give up the current file after a failure; its unended frame is lost (counted)."""
        self._io_dropped += self._unflushed
        self._unflushed = 0
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            sink.fh.close()
        except OSError:
            pass  # the failure was reported already; the descriptor is gone either way
        try:  # cut the half-written frame so the next frames follow a complete one (the reader copes anyway)
            if os.path.isfile(sink.path):
                os.truncate(sink.path, sink.good_size)
        except OSError:
            pass

    def _fail(self, text: str) -> None:
        self._errors += 1
        self._retry_at = time.monotonic() + self.retry_interval_s
        if self._failing:
            return
        self._failing = True
        log.error("%s (recording paused; retrying every %.3g s)", text, self.retry_interval_s)
        if self.on_error is not None:
            try:
                self.on_error(text)
            except Exception:  # noqa: BLE001 - a broken callback must not kill the writer thread
                log.exception("recorder on_error callback failed")


def measure_tap_cost(n: int = 200_000, payload: str | None = None) -> float:
    """Nanoseconds per ``Recorder.tap`` call (hot-path cost only), measured on a throwaway recorder whose
    writer thread runs as in production (so GIL contention with it is included)."""
    import tempfile

    payload = payload or '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","U":1,"u":2,"b":[],"a":[]}}'
    with tempfile.TemporaryDirectory() as d:
        rec = Recorder(d, "perf", max_queue=max(n, 1))
        tap = rec.tap
        url = "ws://127.0.0.1:1/stream"
        t0 = time.perf_counter_ns()
        for i in range(n):
            tap("recv", url, payload, i)
        dt = time.perf_counter_ns() - t0
        rec.close()
    return dt / n


__all__ = ["KINDS", "Recorder", "RecorderStats", "default_compression", "file_name", "measure_tap_cost"]
