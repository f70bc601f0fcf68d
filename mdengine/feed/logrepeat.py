"""RepeatLog: a repeated log line is written once per interval, with a count of the ones held back.

One bad frame that comes back every millisecond must not write a thousand lines a second: the log would bury
everything else and cost the feed its time. Counting and the segment's last error still happen for each
occurrence (the Publisher does both); only the text is held back.

Each line belongs to a key the caller chooses: what happened and where (a format string plus the connection and
the symbol, say), never the varying details. The first line of a key is written at once. Later ones within
`interval_s` are counted and the newest is kept. The first one after the interval is written with the count
("... [and 4004 more like it in the last 10.0 s]"), and `flush()` (the feed calls it on every heartbeat) writes the
newest held-back line of a key that went quiet, so no count is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable

_MAX_KEYS = 4096  # a flood of distinct keys (every symbol failing) is flushed early rather than held


class RepeatLog:
    def __init__(self, log: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval_s = interval_s
        self._clock = clock
        # key -> [window start, held back, level, msg, args] of the newest held-back line
        self._keys: dict[Hashable, list] = {}

    def __call__(self, level: int, key: Hashable, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log `msg % args` at `level` unless a line of `key` was written less than `interval_s` ago; returns
        whether it was written. `exc_info`: with the exception being handled (a held-back line loses it)."""
        now = self._clock()
        st = self._keys.get(key)
        if st is not None and now - st[0] < self.interval_s:
            st[1] += 1
            st[2:] = level, msg, args
            return False
        if st is not None and st[1]:
            msg += " [and %d more like it in the last %.1f s]"
            args = (*args, st[1], now - st[0])
        if st is None and len(self._keys) >= _MAX_KEYS:
            self.flush(force=True)
        self._keys[key] = [now, 0, level, msg, args]
        self.log.log(level, msg, *args, exc_info=exc_info)
        return True

    def flush(self, force: bool = False) -> None:
        """Write the held-back count of every key whose interval is over (every key with `force`), and forget
        those keys."""
        now = self._clock()
        for key, (start, held, level, msg, args) in list(self._keys.items()):
            if force or now - start >= self.interval_s:
                del self._keys[key]
                if held:
                    self.log.log(level, msg + " [%d like it in the last %.1f s; this is the newest]", *args, held,
                                 now - start)
