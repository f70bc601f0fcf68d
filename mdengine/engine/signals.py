"""Stop a command on SIGINT/SIGTERM without calling `Event.set()` inside a signal handler.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread holds the
event's own lock inside `stop.wait()`: `stop.set()` in the handler then waits for that lock forever (a
`mdengine sim` once ignored SIGTERM this way). Here the C-level handler only writes the signal number to a pipe
(`signal.set_wakeup_fd`), and a thread reading it sets the event like any other thread would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterable, Iterator


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler: nothing (it must exist so the signal does not kill the process)."""


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event,
                    signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, each of `signals` sets `stop` (from a helper thread). Restores the previous handlers
    on exit. Outside the main thread (where handlers cannot be installed) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = {int(s) for s in signals}
    r, w = os.pipe()
    os.set_blocking(w, False)  # the C handler must never block on a full pipe

    def watch() -> None:
        try:
            while data := os.read(r, 64):
                if wanted.intersection(data):
                    stop.set()
        except OSError:
            pass

    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old = {sig: signal.signal(sig, _ignore) for sig in wanted}
    watcher = threading.Thread(target=watch, name="signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(old_fd)
        os.close(w)  # the watcher reads end-of-file and returns
        watcher.join(5)
        os.close(r)
