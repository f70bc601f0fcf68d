"""Recordings: the feed's tap, the writer process, reading, replay and export.

- `tap`: `Recorder`, the feed thread's tap that queues each frame off the hot path;
- `writer`: `RecordWriter`, batches -> daily compressed JSON Lines (run as a child process of the feed);
- `reader`: `RecordingReader` and `Record`, reading a recording that may be cut short or damaged;
- `export`: `Rebuild` the books from a recording and write hftbacktest, tardis-style CSV or Parquet;
- `replay`: ``mdengine replay`` and ``mdengine export`` (the CLI glue; the library never imports it).

The names below load on first use (PEP 562). ``mdengine.recording`` was the reader's module before it
became this package: its other names still resolve here, with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_EXPORTS = {"Recorder": "tap", "RecordWriter": "writer", "Record": "reader", "RecordingReader": "reader",
            "RecordingError": "reader", "read_records": "reader", "Rebuild": "export", "ExportError": "export"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        return getattr(importlib.import_module(f".{module}", __name__), name)
    reader = importlib.import_module(".reader", __name__)
    if name.startswith("__") or not hasattr(reader, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"mdengine.recording.{name} moved to mdengine.recording.reader.{name}; the old path goes in "
                  "the next release", DeprecationWarning, stacklevel=2)
    value = getattr(reader, name)
    globals()[name] = value  # warn once
    return value
