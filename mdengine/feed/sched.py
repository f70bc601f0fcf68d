"""Ask Linux to run the feed's loop thread as soon as a frame wakes it: a short EEVDF slice.

Since Linux 6.12 a normal (SCHED_OTHER) thread may ask for its own time slice with `sched_setattr`
(`sched_runtime`, 0.1-100 ms; the default is about 3 ms). A woken thread whose slice is shorter than the
running one's preempts it at once instead of waiting for it to block or use up its slice. That is the
feed's case: when the frame arrives, the only CPU not taken by a spinning strategy is often busy with
something else (on a test box, the simulator that just sent it). No privilege or real-time priority is
needed, and the thread keeps its fair share: a short slice buys earlier dispatch, not more CPU.

Older kernels ignore the field; `request_slice` reads it back and says so.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

# struct sched_attr (include/uapi/linux/sched/types.h), the 48-byte version 1
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")  # size, policy, flags, nice, priority, runtime, deadline, period
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}  # sched_setattr, sched_getattr
SCHED_OTHER = 0


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _getattr(libc: ctypes.CDLL, nr_get: int) -> tuple[int, ...]:
    buf = ctypes.create_string_buffer(_SCHED_ATTR.size)
    if libc.syscall(nr_get, 0, buf, _SCHED_ATTR.size, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return _SCHED_ATTR.unpack(buf.raw)


def current_slice_ns() -> int | None:
    """The calling thread's slice in ns as the kernel reports it (None where it cannot be read)."""
    nrs = _SYSCALLS.get(platform.machine())
    if nrs is None:
        return None
    try:
        return _getattr(_libc(), nrs[1])[5]
    except OSError:
        return None


def request_slice(slice_us: float) -> str | None:
    """Give the calling thread a `slice_us` scheduler slice, keeping its policy SCHED_OTHER and its nice value.

    Returns None when the kernel took it, else why not (the thread then runs with the default slice)."""
    nrs = _SYSCALLS.get(platform.machine())
    if nrs is None:
        return f"no sched_setattr number known for {platform.machine()}"
    want = int(slice_us * 1000)
    libc = _libc()
    try:
        policy, nice = _getattr(libc, nrs[1])[1], os.getpriority(os.PRIO_PROCESS, 0)
    except OSError as e:
        return f"sched_getattr: {e}"
    if policy != SCHED_OTHER:
        return f"the thread's policy is {policy}, not SCHED_OTHER: left alone"
    attr = ctypes.create_string_buffer(_SCHED_ATTR.pack(_SCHED_ATTR.size, SCHED_OTHER, 0, nice, 0, want, 0, 0),
                                       _SCHED_ATTR.size)
    if libc.syscall(nrs[0], 0, attr, 0) != 0:
        err = ctypes.get_errno()
        return f"sched_setattr: {os.strerror(err)}"
    got = current_slice_ns()
    if got != want:
        return f"the kernel set {got} ns instead (custom slices need Linux >= 6.12 and 100-100000 us)"
    return None
