"""The last good instrument lists on disk: a feed whose instrument GET fails starts from them.

One JSON file per exchange, `<dir>/<exchange>.json`, in the user's cache directory by default
($XDG_CACHE_HOME/mdengine/instruments, else ~/.cache/mdengine/instruments; ExchangeConfig.instrument_cache_dir
overrides it). It holds each instrument request's last good list, keyed by the request's URL (so a simulator's or
a testnet's list is never taken for the exchange's), with the time it was saved; the newest MAX_LISTS are kept:

    {"version": 1, "lists": {"https://www.okx.com/api/v5/public/instruments?instType=SPOT":
                             {"saved_at": 1765000000.0, "instruments": [{...}, ...]}}}

A file is written whole to a temporary name and renamed over the old one, so a crash never leaves half a list. A
missing, unreadable or foreign file is no cache (None); errors writing one are the caller's to log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from ..symbols import Instrument

VERSION = 1
MAX_LISTS = 64  # lists kept per exchange (each simulator run on a new port adds one)
_FIELDS = {f.name for f in dataclasses.fields(Instrument)}


def default_dir() -> Path:
    """$XDG_CACHE_HOME/mdengine/instruments, or ~/.cache/mdengine/instruments."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mdengine" / "instruments"


class InstrumentCache:
    def __init__(self, exchange: str, directory: str | os.PathLike | None = None) -> None:
        self.exchange = exchange
        self.path = Path(directory) / f"{exchange}.json" if directory else default_dir() / f"{exchange}.json"

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("lists"), dict):
            return {}
        return doc["lists"]

    def load(self, url: str) -> tuple[list[Instrument], float] | None:
        """The instruments last saved for the list at `url` and when (epoch seconds), or None."""
        entry = self._read().get(url)
        try:
            insts = [Instrument(**{k: v for k, v in row.items() if k in _FIELDS}) for row in entry["instruments"]]
            if any(i.exchange != self.exchange for i in insts):
                return None
            return insts, float(entry["saved_at"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def save(self, url: str, instruments: list[Instrument]) -> None:
        """Keep `instruments` as the last good list at `url`. Raises OSError (disk full, no permission)."""
        lists = self._read()
        lists.pop(url, None)
        lists[url] = {"saved_at": time.time(), "instruments": [dataclasses.asdict(i) for i in instruments]}
        for old in list(lists)[:-MAX_LISTS]:  # oldest first: dicts keep the order they were written in
            del lists[old]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.exchange}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": VERSION, "lists": lists}, f)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
