"""The feed loop thread's scheduler slice (feed/sched.py): applied where the kernel has custom slices (Linux >= 6.12),
reported where it has not, and never forced on a thread that is not SCHED_OTHER."""

import os
import platform
import threading
import time

import pytest
from test_feed_units import EchoAdapter, NullSink

from mdengine.feed import sched
from mdengine.feed.loop import FeedLoop, LoopOptions

needs_linux = pytest.mark.skipif(platform.system() != "Linux", reason="sched_setattr is Linux's")


def _kernel_has_custom_slices() -> bool:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (6, 12)


def in_thread(fn):
    """Run fn in a fresh thread (a slice or policy set there dies with it) and return what it returned."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(10)
    return out[0]


def proc_slice_ns(tid: int) -> int | None:
    """se.slice of a thread as /proc reports it (kernels with EEVDF)."""
    try:
        with open(f"/proc/{os.getpid()}/task/{tid}/sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    return int(line.split(":")[1])
    except FileNotFoundError:
        return None
    return None


@needs_linux
def test_request_slice_sets_the_threads_slice_or_says_why_not():
    refused, got = in_thread(lambda: (sched.request_slice(250), sched.current_slice_ns()))
    if _kernel_has_custom_slices():
        assert refused is None
        assert got == 250_000
    else:
        assert refused is not None and "6.12" in refused


@needs_linux
def test_request_slice_leaves_a_thread_that_is_not_sched_other_alone():
    def batch_thread():
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        before = sched.current_slice_ns()
        return sched.request_slice(250), before, sched.current_slice_ns()

    refused, before, after = in_thread(batch_thread)
    assert refused is not None and "SCHED_OTHER" in refused
    assert before == after


@needs_linux
def test_request_slice_keeps_the_threads_nice_value():
    def niced():
        os.setpriority(os.PRIO_PROCESS, 0, 5)  # Linux: this thread only
        return sched.request_slice(300), os.getpriority(os.PRIO_PROCESS, 0)

    refused, nice = in_thread(niced)
    assert nice == 5, refused


@needs_linux
@pytest.mark.skipif(not _kernel_has_custom_slices(), reason="custom slices need Linux >= 6.12")
def test_FeedLoop_thread_runs_with_the_configured_slice():
    loop = FeedLoop(EchoAdapter("ws://127.0.0.1:9/x"), NullSink(), options=LoopOptions(sched_slice_us=400))
    t = threading.Thread(target=loop.run)
    t.start()
    try:
        assert loop.submit(lambda: sched.current_slice_ns()).result(5) == 400_000
        deadline = time.monotonic() + 5
        while proc_slice_ns(t.native_id) != 400_000:
            assert time.monotonic() < deadline, proc_slice_ns(t.native_id)
            time.sleep(0.01)
        assert proc_slice_ns(threading.get_native_id()) != 400_000  # the caller's thread is untouched
    finally:
        loop.stop()
        t.join(10)
    assert not t.is_alive()
