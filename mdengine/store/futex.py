"""Futex wake-ups on a segment's publish counter, so a blocking reader sleeps in the kernel, not in a poll loop.

The writer calls `wake(addr)` after a batch of publishes; a reader calls `wait(addr, seen, timeout_s)` with
the low 32 bits of the counter it last saw, and the kernel puts it to sleep only if the word still holds that
value (no lost wake-up between the reader's check and its sleep). Both use shared futexes (no
FUTEX_PRIVATE_FLAG): the processes map the same /dev/shm file, and the kernel keys the futex by file and
offset. FUTEX_WAIT needs only read access, so the readers' read-only mappings work. On a little-endian
machine the counter's low 32 bits are at its own address.

`futex_waitv` (Linux 5.16) waits on several counters at once (`wait_any`). Where a call is missing (another
OS, an old kernel, a seccomp filter) `AVAILABLE` / `WAITV_AVAILABLE` are False or the call raises OSError,
and callers fall back to polling.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys

import numpy as np

_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_FUTEX2_SIZE_U32 = 0x02
_CLOCK_MONOTONIC = 1
_WAKE_ALL = 0x7FFFFFFF
# syscall numbers: (futex, futex_waitv)
_SYSCALLS = {"x86_64": (202, 449), "aarch64": (98, 449)}

_numbers = _SYSCALLS.get(platform.machine()) if sys.platform == "linux" and sys.byteorder == "little" else None
_syscall = None
if _numbers is not None:
    try:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
        _syscall.restype = ctypes.c_long
    except (OSError, AttributeError):  # pragma: no cover - a libc without syscall()
        _syscall = None

AVAILABLE = _syscall is not None and os.environ.get("MDENGINE_NO_FUTEX", "") != "1"
WAITV_AVAILABLE = AVAILABLE  # set False the first time futex_waitv answers ENOSYS


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Waitv(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("reserved", ctypes.c_uint32)]


def address_of(buf: memoryview, offset: int) -> int:
    """Virtual address of byte `offset` of a mapped buffer (read-only buffers too). It stays valid while the
    mapping behind `buf` is open; nothing here keeps the buffer exported."""
    arr = np.frombuffer(buf, dtype=np.uint8, count=1, offset=offset)
    return int(arr.__array_interface__["data"][0])


def wake(addr: int) -> None:
    """Wake every process sleeping in `wait` on this word (about 0.5 µs when nobody sleeps)."""
    _syscall(_numbers[0], ctypes.c_void_p(addr), _FUTEX_WAKE, _WAKE_ALL, None, None, 0)


def wait(addr: int, seen: int, timeout_s: float) -> None:
    """Sleep until a `wake` on `addr`, the timeout, or a signal; returns at once if the 32-bit word at `addr`
    no longer equals `seen & 0xffffffff`. Spurious returns are allowed: callers re-check their condition.
    Raises OSError when futexes cannot be used on this address (EFAULT, ENOSYS, EPERM)."""
    if timeout_s <= 0:
        return
    sec = int(timeout_s)
    ts = _Timespec(sec, int((timeout_s - sec) * 1e9))
    rc = _syscall(_numbers[0], ctypes.c_void_p(addr), _FUTEX_WAIT, ctypes.c_uint32(seen & 0xFFFFFFFF),
                  ctypes.byref(ts), None, 0)
    if rc < 0:
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise OSError(err, f"futex wait: {os.strerror(err)}")


def wait_any(words: list[tuple[int, int]], deadline_monotonic_ns: int) -> None:
    """`wait` on several (addr, seen) words at once, until CLOCK_MONOTONIC reaches the deadline. Raises
    OSError (and clears WAITV_AVAILABLE on ENOSYS) when futex_waitv is unusable."""
    global WAITV_AVAILABLE
    n = len(words)
    vec = (_Waitv * n)()
    for i, (addr, seen) in enumerate(words):
        vec[i].val = seen & 0xFFFFFFFF
        vec[i].uaddr = addr
        vec[i].flags = _FUTEX2_SIZE_U32
    ts = _Timespec(deadline_monotonic_ns // 1_000_000_000, deadline_monotonic_ns % 1_000_000_000)
    rc = _syscall(_numbers[1], vec, ctypes.c_uint(n), ctypes.c_uint(0), ctypes.byref(ts),
                  ctypes.c_int(_CLOCK_MONOTONIC))
    if rc < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            WAITV_AVAILABLE = False
        if err not in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR):
            raise OSError(err, f"futex_waitv: {os.strerror(err)}")
