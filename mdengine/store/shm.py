"""POSIX shared-memory objects without CPython's resource-tracker traps.

`multiprocessing.shared_memory.SharedMemory` registers every segment it creates *or attaches*
with the resource tracker, which unlinks it when that process tree exits (gh-82300): a strategy
that attached and exits, or a SIGKILLed feed, would destroy the book under every other reader.
Python 3.13 added ``track=False``; on 3.11/3.12 we unregister right after construction. Readers
do not use `SharedMemory` at all: they map the same object read-only, so a strategy cannot
corrupt a book, and nothing about them is tracked. Only `unlink()` removes a segment.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import sys
from multiprocessing import shared_memory

from ..errors import SegmentExists, SegmentNotFound

try:  # the C module behind SharedMemory on POSIX
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

_TRACK_KWARG = sys.version_info >= (3, 13)
NAME_PREFIX = "mde-"
_NAME_PART = re.compile(r"[a-z0-9_]{1,12}\Z")  # \Z, not $: "ns\n" must not pass
SHM_DIR = "/dev/shm"


def segment_name(namespace: str, exchange: str) -> str:
    """``mde-<namespace>-<exchange>``: at most 30 bytes, so macOS's 31-byte limit holds too."""
    for what, part in (("namespace", namespace), ("exchange", exchange)):
        if not _NAME_PART.match(part):
            raise ValueError(f"{what} {part!r} must be 1-12 characters of a-z, 0-9 or _")
    return f"{NAME_PREFIX}{namespace}-{exchange}"


def _untracked(name: str, create: bool, size: int) -> shared_memory.SharedMemory:
    if _TRACK_KWARG:
        return shared_memory.SharedMemory(name=name, create=create, size=size, track=False)
    shm = shared_memory.SharedMemory(name=name, create=create, size=size)
    from multiprocessing import resource_tracker

    resource_tracker.unregister(shm._name, "shared_memory")  # noqa: SLF001 - the documented workaround
    return shm


def create(name: str, size: int) -> shared_memory.SharedMemory:
    """Create a zero-filled segment, mode 0600, with its pages reserved.

    Raises SegmentExists if the name is taken, OSError(ENOSPC) if /dev/shm cannot hold it
    (reserving now turns a later SIGBUS on first write into a clear error here).
    """
    try:
        shm = _untracked(name, True, size)
    except FileExistsError as e:
        raise SegmentExists(errno.EEXIST, f"shared-memory segment {name!r} already exists") from e
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(shm._fd, 0, size)  # noqa: SLF001
        except OSError as e:
            shm.close()
            unlink(name)
            raise OSError(e.errno, f"cannot reserve {size} bytes for {name!r} in shared memory "
                                   f"({os.strerror(e.errno)}); enlarge /dev/shm (docker --shm-size)") from e
    return shm


def check_room(sizes: dict[str, int]) -> None:
    """Before anything starts: raise OSError(ENOSPC) naming every segment and its size if /dev/shm has not room for
    all of them together (names that exist already count as room: they are reused)."""
    need = {n: s for n, s in sizes.items() if not os.path.exists(os.path.join(SHM_DIR, n))}
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return  # no /dev/shm to ask: create() still reserves each segment with its own clear error
    free = st.f_bavail * st.f_frsize
    if sum(need.values()) > free:
        listed = ", ".join(f"{n} {s / 2**20:.1f} MiB" for n, s in need.items())
        raise OSError(errno.ENOSPC, f"{SHM_DIR} has {free / 2**20:.1f} MiB free but the segments need "
                                    f"{sum(need.values()) / 2**20:.1f} MiB ({listed}); enlarge {SHM_DIR} (docker "
                                    "--shm-size) or lower max_symbols / trade_capacity / book_capacity")


def attach_writable(name: str) -> shared_memory.SharedMemory:
    try:
        return _untracked(name, False, 0)
    except FileNotFoundError as e:
        raise SegmentNotFound(errno.ENOENT, f"no shared-memory segment {name!r}") from e


class ReadOnlyMapping:
    """A read-only mapping of an existing segment; `buf` is a read-only memoryview."""

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            if _posixshmem is not None:
                fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0)
            else:  # pragma: no cover
                fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
        except FileNotFoundError as e:
            raise SegmentNotFound(errno.ENOENT, f"no shared-memory segment {name!r}: is an engine "
                                                f"running in this namespace?") from e
        try:
            self.size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, self.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        self.buf.release()
        self._mmap.close()


def unlink(name: str) -> bool:
    """Remove a segment by name. Returns False if it did not exist. Never touches the tracker."""
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink("/" + name)
        else:  # pragma: no cover
            os.unlink(os.path.join(SHM_DIR, name))
    except FileNotFoundError:
        return False
    return True


def list_names(namespace: str | None = None) -> list[str]:
    """Names of mdengine segments present on this machine (Linux: from /dev/shm)."""
    prefix = NAME_PREFIX if namespace is None else f"{NAME_PREFIX}{namespace}-"
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:  # pragma: no cover - no /dev/shm (macOS): nothing to list
        return []
