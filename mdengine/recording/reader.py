"""Reading recordings: JSON Lines, plain or compressed (.gz, .zst), possibly cut short by a crash.

A record is one line ``{"kind", "ts", "url", "data"}`` (the ``shared/recordings`` format), optionally with
``ts_ns`` (local receive time, ns), ``exchange`` and ``encoding`` ("base64" for a binary frame), as
`mdengine.recording.tap` writes. Damage is expected, never fatal:
- a truncated tail (a crash mid-frame, a partly written line) ends the iteration and sets ``truncated``;
- a damaged stretch inside the file (a crash mid-frame, then the restarted recorder's frames appended) is
  skipped up to the next frame and counted in ``corrupt_regions``;
- a line that is not a valid record is skipped and counted in ``bad_lines`` (first error in ``first_error``).
"""

from __future__ import annotations

import base64
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import orjson

try:
    import zstandard
except ImportError:  # pragma: no cover
    zstandard = None

from ..errors import MdengineError
from ..exchanges import EXCHANGES

_CHUNK = 1 << 16
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_NAME_RE = re.compile(r"^(?P<exchange>[a-z]+)(?:-[a-z]+)?-\d{4}-\d{2}-\d{2}")


class RecordingError(MdengineError, ValueError):
    """The file is not a recording we can read (unknown compression, missing module, not JSON Lines)."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # connect | disconnect | recv | send | http
    ts_ns: int  # local receive time (``ts_ns``, else ``ts`` * 1e9)
    url: str
    data: str | bytes | None  # bytes only for binary frames recorded base64-encoded
    exchange: str | None = None

    @property
    def ts(self) -> float:
        return self.ts_ns / 1e9


def _chunks_plain(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(_CHUNK):
        yield chunk


def _frames(fh: IO[bytes], state: dict, new: Callable[[], Any], magic: bytes,
            error: type[Exception] | tuple[type[Exception], ...]) -> Iterator[bytes | None]:
    """Decode concatenated frames (zstd frames / gzip members). A cut last frame yields what it decoded so
    far and sets ``state["truncated"]``; a corrupt region (a frame cut by a crash, then the restarted
    recorder's frames appended) yields None (a discontinuity) and decoding resumes at the next frame magic."""
    d = new()
    fed = bytearray()  # input given to the current frame, to rescan after an error
    in_frame = False
    data = b""
    while True:
        if not data:
            data = fh.read(_CHUNK)
            if not data:
                break
        try:
            out = d.decompress(data)
        except error as e:
            state["corrupt"] = state.get("corrupt", 0) + 1
            state.setdefault("error", f"{type(e).__name__}: {e}")
            yield None
            blob = bytes(fed[1:]) + data if fed else data[1:]
            while (i := blob.find(magic)) < 0:
                more = fh.read(_CHUNK)
                if not more:
                    state["truncated"] = True
                    return
                blob = blob[-(len(magic) - 1):] + more
            data = blob[i:]
            d, fed, in_frame = new(), bytearray(), False
            continue
        in_frame = True
        fed += data
        if out:
            yield out
        if d.eof:  # frame finished: what is left belongs to the next one
            data = d.unused_data
            d, fed, in_frame = new(), bytearray(), False
        else:
            data = b""
    if in_frame:
        state["truncated"] = True


def _zstd_frames(fh: IO[bytes], state: dict) -> Iterator[bytes | None]:
    if zstandard is None:
        raise RecordingError("reading .zst recordings needs the zstandard package: pip install zstandard "
                             '(the extra "mdengine-shm[record]")')
    dctx = zstandard.ZstdDecompressor()
    return _frames(fh, state, dctx.decompressobj, _ZSTD_MAGIC, zstandard.ZstdError)


def _gzip_frames(fh: IO[bytes], state: dict) -> Iterator[bytes | None]:
    return _frames(fh, state, lambda: zlib.decompressobj(31), _GZIP_MAGIC + b"\x08", zlib.error)


class RecordingReader:
    """Iterate the records of one recording file. One pass per iteration; `stats` fill in as it goes.

    Args:
        path: a .jsonl, .jsonl.gz or .jsonl.zst file (compression is sniffed from the magic bytes).
        exchange: exchange for records that do not name one; default: from the file name or URL host.
    """

    def __init__(self, path: str | os.PathLike[str], exchange: str | None = None) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"recording {self.path!r} does not exist")
        self.exchange = exchange or exchange_from_name(self.path)
        self.truncated = False
        self.corrupt_regions = 0  # damaged stretches skipped (e.g. a crash mid-frame, then more frames)
        self.bad_lines = 0
        self.first_error: str | None = None
        self.records = 0

    def compression(self) -> str:
        with open(self.path, "rb") as fh:
            head = fh.read(4)
        if head.startswith(_ZSTD_MAGIC):
            return "zstd"
        if head.startswith(_GZIP_MAGIC):
            return "gzip"
        return "none"

    def _chunks(self, fh: IO[bytes], state: dict) -> Iterator[bytes | None]:
        comp = self.compression()
        if comp == "zstd":
            return _zstd_frames(fh, state)
        if comp == "gzip":
            return _gzip_frames(fh, state)
        return _chunks_plain(fh)

    def lines(self) -> Iterator[bytes]:
        """Complete lines (without the newline). A last line with no newline is kept only if it parses."""
        state: dict = {}
        rest = b""
        with open(self.path, "rb") as fh:
            for chunk in self._chunks(fh, state):
                if chunk is None:  # corrupt region: the partial line before it is garbage
                    rest = b""
                    continue
                buf = rest + chunk
                parts = buf.split(b"\n")
                rest = parts.pop()
                yield from (p for p in parts if p.strip())
        if rest.strip():
            try:
                orjson.loads(rest)
            except orjson.JSONDecodeError:
                state["truncated"] = True  # a line cut in the middle: the crash case, not bad data
            else:
                yield rest
        self.truncated = bool(state.get("truncated"))
        self.corrupt_regions = state.get("corrupt", 0)
        if state.get("error") and self.first_error is None:
            self.first_error = state["error"]

    def __iter__(self) -> Iterator[Record]:
        self.bad_lines = 0
        self.records = 0
        for n, line in enumerate(self.lines(), 1):
            try:
                rec = parse_record(line, self.exchange)
            except (ValueError, KeyError, TypeError) as e:
                self.bad_lines += 1
                if self.first_error is None:
                    self.first_error = f"{self.path}: line {n}: {e}"
                continue
            self.records += 1
            yield rec


def parse_record(line: bytes | str, exchange: str | None = None) -> Record:
    """One JSON line -> Record. Raises ValueError (bad JSON or fields) or KeyError (missing field)."""
    obj = orjson.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("record is not a JSON object")
    kind = obj["kind"]
    if not isinstance(kind, str):
        raise ValueError(f"bad kind {kind!r}")
    ts_ns = obj.get("ts_ns")
    if ts_ns is None:
        ts_ns = round(float(obj["ts"]) * 1e9)
    elif not isinstance(ts_ns, int):
        raise ValueError(f"bad ts_ns {ts_ns!r}")
    data = obj.get("data")
    if data is not None and obj.get("encoding") == "base64":
        data = base64.b64decode(data)
    elif data is not None and not isinstance(data, str):
        data = orjson.dumps(data).decode()  # tolerate a recording that stored the JSON object itself
    url = obj.get("url", "")
    if not isinstance(url, str):
        raise ValueError(f"bad url {url!r}")
    return Record(kind, ts_ns, url, data, obj.get("exchange") or exchange or exchange_from_url(url))


def exchange_from_name(path: str) -> str | None:
    """``binance-spot-2021-10-12.jsonl`` / ``okx-2024-01-01.jsonl.zst`` -> exchange name, else None."""
    m = _NAME_RE.match(os.path.basename(path))
    if m and m.group("exchange") in EXCHANGES:
        return m.group("exchange")
    return None


def exchange_from_url(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    return next((name for name in EXCHANGES if name in host), None)  # every exchange's hosts carry its name


def read_records(path: str | os.PathLike[str], exchange: str | None = None) -> Iterator[Record]:
    """Shorthand: iterate the records of `path`."""
    return iter(RecordingReader(path, exchange))


def write_plain(path: str | os.PathLike[str], src: str | os.PathLike[str]) -> int:
    """Decompress recording `src` into plain JSON Lines at `path` (complete valid lines only, in the
    shared/recordings format plus our extra keys). Returns the number of lines written."""
    n = 0
    with open(path, "wb") as out:
        for line in RecordingReader(src).lines():
            out.write(line)
            out.write(b"\n")
            n += 1
    return n


__all__ = ["Record", "RecordingError", "RecordingReader", "exchange_from_name", "exchange_from_url", "parse_record",
           "read_records", "write_plain"]

