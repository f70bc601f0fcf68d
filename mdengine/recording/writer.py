"""The recorder's writing side: batches of tapped frames -> daily compressed JSON Lines files.

`RecordWriter` is fed lists of ``(kind, url, data, ns)`` tuples. It serialises them (orjson, one call per
256 records), compresses (zstd, else gzip) and writes ``DIR/<exchange>-YYYY-MM-DD.jsonl.zst``, rotating at
midnight UTC by the records' time. It runs in one of two places, with the same code:

- a child process of the feed (the default, see `mdengine.recording.tap`): this module's `main()`, started as
  ``python -P .../recording/writer.py --fd N ...`` (or ``python -m mdengine.recording.writer``), reads batches from a
  socket and answers with status messages;
- a thread of the feed process (``Recorder(..., process=False)``, or when no child can be started).

The module imports nothing from `mdengine`, so the child starts without the package (numpy, the client).

Rules it keeps:
- A frame (an independent zstd frame / gzip member) is ended at most ``flush_interval_s`` after its first
  record (the caller decides when: `frame_due()`), then the bytes go to the OS. A crash loses at most the
  unended frame and a cut file reads up to its last complete frame.
- An I/O failure is reported once per failure episode (``on_error(text)`` and the log); the batch is dropped
  and counted, the half-written frame is cut off the file, and the file is reopened after
  ``retry_interval_s``. The episode ends when a frame reaches the OS again.

Wire protocol of the child (both directions on one stream socket): each message is a header of two 8-byte
little-endian lengths, a `marshal` part and a raw part (empty except in column-wise batches).

    parent -> child   [(kind, url, data, ns), ...]   a batch (data: str, bytes or None), see `encode_batch`
                      ("flush", seq)                  end the frame, then answer ("status", seq, ...)
                      end of stream                   write everything, close the file, answer, exit 0
    child -> parent   ("ready", pid)                  first message: the writer is up
                      ("status", seq, {counters})     after a flush (seq > 0), a frame end or any counter
                                                      change (seq 0), and the last one at close (seq -1)
                      ("error", text)                 the start of a failure episode

The child ignores SIGINT and SIGTERM (a Ctrl-C or a SIGTERM to the process group must not lose what the
feed still ships while it closes): it exits when the socket reaches end of stream, i.e. when the feed closes
the recorder or dies. SIGKILL still kills it.
"""

from __future__ import annotations

import argparse
import base64
import logging
import marshal
import operator
import os
import select
import signal
import socket
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import accumulate
from typing import IO, Any

import orjson

try:
    import zstandard
except ImportError:  # pragma: no cover - exercised only without the optional dependency
    zstandard = None

log = logging.getLogger("mdengine.record_writer")

KINDS = ("connect", "disconnect", "recv", "send", "http")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"
_EPOCH_2001_NS = 978_307_200 * 10**9  # ns below this is not wall-clock time (e.g. monotonic)
_DAY_NS = 86_400 * 10**9
_BATCH = 256  # records serialised per orjson call
_NS_OF = operator.itemgetter(3)
_RECORD_SEPARATOR = b'},{"kind":'
_RECORD_NEWLINE = b'}\n{"kind":'

HEADER = struct.Struct("<QQ")  # lengths of the marshal part and of the raw part
_COLUMNS = "columns"  # tag of a column-wise batch
_RECV_SIZE = 1 << 20


def default_compression() -> str:
    return "zstd" if zstandard is not None else "gzip"


def _suffix(compression: str) -> str:
    return {"zstd": ".jsonl.zst", "gzip": ".jsonl.gz", "none": ".jsonl"}[compression]


def file_name(exchange: str, day: str, compression: str | None = None) -> str:
    """``<exchange>-YYYY-MM-DD.jsonl.zst`` (or .gz / plain)."""
    return f"{exchange}-{day}{_suffix(compression or default_compression())}"


def _utc_day(ns: int) -> str:
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%d")


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


class RecordWriter:
    """Writes batches of ``(kind, url, data, ns)`` tuples to one exchange's daily files. Not thread-safe: one
    thread (or the child process) owns it.

    Every record handed to `write()` ends up in exactly one counter: `written` once its frame was ended and
    handed to the OS, `io_dropped` when an I/O failure lost it, `bad` when it cannot be serialised (e.g. a
    lone surrogate); until its frame ends it is in `unflushed`.

    Args:
        directory, exchange: where the files go and the name in them (the directory is created on open).
        compression: "zstd", "gzip" or "none"; level: its level.
        retry_interval_s: wait after an I/O failure before reopening.
        on_error: called with one line at the start of each failure episode.
    """

    def __init__(self, directory: str, exchange: str, *, compression: str, level: int, retry_interval_s: float,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.exchange = exchange
        self.compression = compression
        self.level = level
        self.retry_interval_s = retry_interval_s
        self.on_error = on_error
        self.written = 0  # durable: their frame was ended and handed to the OS
        self.unflushed = 0  # written into the current, not yet ended frame
        self.io_dropped = 0
        self.bad = 0
        self.errors = 0
        self.bytes_written = 0
        self.frame_started: float | None = None  # monotonic time of the first record of the unended frame
        self._sink: _Sink | None = None
        self._day: str | None = None
        self._day_range = (0, 0)  # [start, end) ns of self._day
        self._failing = False  # inside a failure episode: errors are counted, not reported again
        self._retry_at = 0.0

    @property
    def path(self) -> str | None:
        """The file open now (None before the first record or during a failure)."""
        return self._sink.path if self._sink else None

    def status(self) -> dict[str, Any]:
        return {"written": self.written, "io_dropped": self.io_dropped, "bad": self.bad, "errors": self.errors,
                "bytes_written": self.bytes_written, "path": self.path}

    def frame_due(self, now: float, interval: float) -> bool:
        return self.frame_started is not None and now - self.frame_started >= interval

    # ------------------------------------------------------------------ writing
    def write(self, batch: list[tuple[str, str, Any, int]]) -> None:
        """Serialise, compress and write `batch` into the current frame. Never raises."""
        before = self.written + self.unflushed + self.io_dropped + self.bad
        try:
            for i in range(0, len(batch), _BATCH):
                chunk = batch[i:i + _BATCH]
                stamps = list(map(_NS_OF, chunk))
                start, end = self._day_range
                if start <= min(stamps) and max(stamps) < end:
                    self._write(self._records(chunk))
                else:  # the first batch, a day boundary, or stamps that are not wall-clock time
                    self._write_by_day(chunk)
        except Exception as e:  # noqa: BLE001 - a writer bug must never stop recording for good
            log.exception("recorder %s: unexpected error", self.exchange)
            self._fail(f"recorder {self.exchange}: unexpected error {e!r}")
            self._abandon_sink()
            seen = self.written + self.unflushed + self.io_dropped + self.bad - before
            self.io_dropped += max(0, len(batch) - seen)  # the rest of the batch: lost, but counted

    def _records(self, batch: list[tuple[str, str, Any, int]]) -> list[dict[str, Any]]:
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
            self.io_dropped += n
            return
        if self.frame_started is None:
            self.frame_started = time.monotonic()
        try:
            self.unflushed += n
            for chunk in chunks:
                self.bytes_written += sink.write(chunk)
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
                    self.bad += 1
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

    # ------------------------------------------------------------------ frames, files, failures
    def end_frame(self) -> None:
        """End the current frame and hand it to the OS (its records become `written`)."""
        self.frame_started = None
        if self._sink is None:
            return
        try:
            self.bytes_written += self._sink.end_frame()
        except OSError as e:
            self._fail(f"recorder {self.exchange}: cannot write {self._sink.path}: {e}")
            self._abandon_sink()
            return
        self.written += self.unflushed
        self.unflushed = 0
        if self._failing:  # the episode ends only once data really reached the OS again
            log.warning("recorder %s: writing again to %s", self.exchange, self._sink.path)
            self._failing = False

    def close(self) -> None:
        """End the frame and close the file. The writer may be used again (it reopens on the next write)."""
        self._close_sink()
        self.frame_started = None

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        if sink is None:
            return
        try:
            self.bytes_written += sink.close()
        except OSError as e:
            self.io_dropped += self.unflushed
            self.unflushed = 0
            self._fail(f"recorder {self.exchange}: cannot close {sink.path}: {e}")
            return
        self.written += self.unflushed
        self.unflushed = 0

    def _abandon_sink(self) -> None:
        """Give up the current file after a failure; its unended frame is lost (counted)."""
        self.io_dropped += self.unflushed
        self.unflushed = 0
        self.frame_started = None
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
        self.errors += 1
        self._retry_at = time.monotonic() + self.retry_interval_s
        if self._failing:
            return
        self._failing = True
        log.error("%s (recording paused; retrying every %.3g s)", text, self.retry_interval_s)
        if self.on_error is not None:
            try:
                self.on_error(text)
            except Exception:  # noqa: BLE001 - a broken callback must not stop the writer
                log.exception("recorder on_error callback failed")


# ---------------------------------------------------------------------------------------------- wire
def send_message(sock: socket.socket, obj: Any) -> None:
    """Send one message (blocking; releases the GIL while the socket is full). Raises OSError."""
    payload = marshal.dumps(obj)
    sock.sendall(HEADER.pack(len(payload), 0) + payload)


def encode_batch(batch: list[tuple[str, str, Any, int]], columns: Callable[[list], tuple] | None = None
                 ) -> tuple[bytes, bytes]:
    """The (marshal part, raw part) of a batch message. This runs in the feed process under the GIL, so it
    avoids per-record Python code: when every data is a str (the usual case) it goes column-wise, the texts
    joined into one UTF-8 blob (the raw part), timestamps and text lengths as int64 arrays, kinds and URLs
    marshal-ed (repeated objects become back-references): about half the cost of marshal-ing the tuples.
    `columns`, if given, builds those parts in one pass (`mdengine._speedups.record_columns`, from the feed
    process: this module imports nothing from mdengine). Other batches (bytes or None data) are marshal-ed as
    they are. Raises ValueError when marshal cannot take an entry (the caller converts it, see
    `mdengine.recording.tap`)."""
    try:
        if columns is not None:
            return encode_columns(columns(batch))
        kinds, urls, datas, stamp_col = zip(*batch, strict=True)
        blob = "".join(datas).encode("utf-8", "surrogatepass")
        stamps, lens = array("q", stamp_col).tobytes(), array("q", map(len, datas)).tobytes()
        return encode_columns((kinds, urls, stamps, lens, blob))
    except (TypeError, ValueError, OverflowError):  # bytes/None data, a float timestamp...: the plain way
        return marshal.dumps(batch), b""


def encode_columns(parts: tuple[Any, Any, bytes, bytes, bytes]) -> tuple[bytes, bytes]:
    """The (marshal part, raw part) of a column-wise batch message from its parts ``(kinds, urls, stamps, lens,
    blob)``, as `mdengine._speedups.record_columns` and ``TapQueue.take`` build them. Raises ValueError when
    marshal cannot take a kind or URL (TapQueue.take returns parts only for exact str ones)."""
    kinds, urls, stamps, lens, blob = parts
    return marshal.dumps((_COLUMNS, kinds, urls, stamps, lens)), blob


def _decode_columns(msg: tuple[Any, ...], blob: bytes | memoryview) -> list[tuple[str, str, Any, int]]:
    _, kinds, urls, stamps_raw, lens_raw = msg
    text = str(blob, "utf-8", "surrogatepass")
    stamps, lens = array("q"), array("q")
    stamps.frombytes(stamps_raw)
    lens.frombytes(lens_raw)
    ends = list(accumulate(lens))
    datas = map(text.__getitem__, map(slice, [0, *ends[:-1]], ends))
    return list(zip(kinds, urls, datas, stamps.tolist(), strict=True))


class MessageReader:
    """Splits the bytes of a stream socket into messages (column-wise batches come out as lists of tuples)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        buf = self._buf
        buf += data
        pos = 0
        size = HEADER.size
        while len(buf) - pos >= size:
            n, raw = HEADER.unpack_from(buf, pos)
            start = pos + size
            if len(buf) - start < n + raw:
                break
            with memoryview(buf) as view:
                msg = marshal.loads(view[start:start + n])
                if msg.__class__ is tuple and msg[0] == _COLUMNS:
                    msg = _decode_columns(msg, view[start + n:start + n + raw])
            pos = start + n + raw
            yield msg
        del buf[:pos]


# ---------------------------------------------------------------------------------------------- child
def serve(sock: socket.socket, writer: RecordWriter, flush_interval_s: float) -> None:
    """The child's loop: write what arrives, end frames on time, answer; return at end of stream."""
    reader = MessageReader()
    sent: tuple[Any, ...] | None = None

    def answer(seq: int) -> None:
        nonlocal sent
        st = writer.status()
        key = (st["written"], st["io_dropped"], st["bad"], st["errors"], st["path"])
        if seq or key != sent:
            sent = key
            try:
                send_message(sock, ("status", seq, st))
            except OSError:
                pass  # the feed is gone: we still write what we have, then see end of stream

    def report(text: str) -> None:
        try:
            send_message(sock, ("error", text))
        except OSError:
            pass

    writer.on_error = report
    send_message(sock, ("ready", os.getpid()))
    while True:
        timeout = None
        if writer.frame_started is not None:
            timeout = max(0.0, writer.frame_started + flush_interval_s - time.monotonic())
        readable, _, _ = select.select([sock], [], [], timeout)
        seq = 0
        if readable:
            try:
                data = sock.recv(_RECV_SIZE)
            except OSError:
                data = b""
            if not data:
                break
            for msg in reader.feed(data):
                if msg.__class__ is list:
                    writer.write(msg)
                elif msg[0] == "flush":
                    writer.end_frame()
                    seq = msg[1]
        if writer.frame_due(time.monotonic(), flush_interval_s):
            writer.end_frame()
        answer(seq)
    writer.close()
    answer(-1)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # first: a Ctrl-C during startup must not kill us either
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ap = argparse.ArgumentParser(prog="python -m mdengine.recording.writer",
                                 description="The recorder's writer process (started by mdengine.recording.tap).")
    ap.add_argument("--fd", type=int, required=True, help="the stream socket to the feed process")
    ap.add_argument("--directory", required=True)
    ap.add_argument("--exchange", required=True)
    ap.add_argument("--compression", choices=("zstd", "gzip", "none"), default=default_compression())
    ap.add_argument("--level", type=int, default=1)
    ap.add_argument("--flush-interval-s", type=float, default=1.0)
    ap.add_argument("--retry-interval-s", type=float, default=5.0)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(format=LOG_FORMAT, level=int(args.log_level) if args.log_level.isdigit() else args.log_level)
    sock = socket.socket(fileno=args.fd)
    writer = RecordWriter(args.directory, args.exchange, compression=args.compression, level=args.level,
                          retry_interval_s=args.retry_interval_s)
    try:
        serve(sock, writer, args.flush_interval_s)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
