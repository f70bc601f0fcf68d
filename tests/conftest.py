import json
import os
import sys
import threading
import time
import traceback
import uuid

import pytest
from hypothesis import HealthCheck, settings

from mdengine.store import shm

# Property tests assert behaviour, never speed: no per-example deadline and no "generation too slow" health
# check, both of which trip on a busy 2-core machine (a test's own @settings still sets what it names).
settings.register_profile("mdengine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mdengine")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Feeds keep their instrument lists in the user's cache directory: the tests' feeds (child processes
    included, which inherit the environment) keep theirs in a directory of this run instead."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(autouse=True)
def _private_rest_budgets(monkeypatch):
    """The shared REST budgets (mdengine.restbudget) are box-wide: each test's processes (children inherit the
    environment) get a scope of their own, so one test's 429s never pace another's feeds; removed afterwards."""
    from mdengine import restbudget

    scope = "t" + uuid.uuid4().hex[:10]
    monkeypatch.setenv(restbudget.SCOPE_ENV, scope)
    yield scope
    for budget in restbudget.existing(scope):
        budget.unlink()
        budget.close()


@pytest.fixture
def namespace():
    """A fresh namespace per test; every segment left in it is unlinked afterwards."""
    ns = "t" + uuid.uuid4().hex[:8]
    yield ns
    for name in shm.list_names(ns):
        shm.unlink(name)


@pytest.fixture(scope="session")
def recordings_dir():
    """tests/data: the real exchange recordings the tests replay (provenance in tests/data/RECORDINGS.md)."""
    return os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="session")
def binance_recording(recordings_dir):
    """The events of tests/data/binance-spot-2021-10-12.jsonl, in order."""
    path = os.path.join(recordings_dir, "binance-spot-2021-10-12.jsonl")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- Thread-leak guard ------------------------------------------------------------------------------------
# A thread that outlives its test keeps running after pytest has closed that test's capture streams; when it
# logs, CI shows "--- Logging error --- ... I/O operation on closed file", and it may go on touching sockets
# or shared memory the next test owns. Every test's threads (started by the test, its function fixtures or the
# objects they made) must be gone when its teardown ends; a thread started while a module- or session-scoped
# fixture was set up belongs to that fixture and must be gone when that fixture is finalized. A leaked thread
# fails the test whose teardown it outlived, with its stack. The check costs two threading.enumerate() calls
# per test; the join grace is only spent while something is still alive.

LEAK_GRACE_S = 2.0  # per test, in total: a stopped thread usually ends in well under 50 ms

# No thread is exempt by name: a session-scoped fixture's threads (the only ones meant to outlive a test) are
# told apart by when they start, and are held to the same rule when that fixture is finalized.

_fixture_threads: dict[object, set[threading.Thread]] = {}  # higher-scoped fixturedef -> threads it started
_released: set[threading.Thread] = set()  # threads of fixtures finalized since the last check
_before_test: set[threading.Thread] = set()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.scope == "function":
        return (yield)
    before = set(threading.enumerate())
    try:
        return (yield)
    finally:
        started = set(threading.enumerate()) - before
        if started:
            _fixture_threads.setdefault(fixturedef, set()).update(started)


def pytest_fixture_post_finalizer(fixturedef, request):
    _released.update(_fixture_threads.pop(fixturedef, ()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    global _before_test
    _before_test = set(threading.enumerate())
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        result = yield
    except BaseException as e:  # the teardown failed already: the leak goes into its report
        leaked = _leaked_threads()
        if leaked:
            e.add_note(_leak_report(leaked))
        raise
    leaked = _leaked_threads()
    if leaked:
        pytest.fail(_leak_report(leaked), pytrace=False)
    return result


def _leaked_threads() -> list[threading.Thread]:
    """Threads of this test, and of fixtures finalized during it, still alive after the join grace."""
    owned = set().union(*_fixture_threads.values())
    suspects = {t for t in threading.enumerate() if t not in _before_test and t not in owned} | _released
    _released.clear()
    return _still_alive(suspects)


def _still_alive(threads) -> list[threading.Thread]:
    deadline = time.monotonic() + LEAK_GRACE_S
    alive = []
    for thread in threads:
        if thread is threading.current_thread() or not thread.is_alive():
            continue
        if not isinstance(thread, threading._DummyThread):  # a thread threading did not start cannot be joined
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            alive.append(thread)
    return alive


def _leak_report(leaked: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    lines = [f"{len(leaked)} thread(s) started by this test (or by a fixture finalized with it) still alive "
             f"{LEAK_GRACE_S:g} s after its teardown:"]
    for thread in leaked:
        kind = "daemon" if thread.daemon else "non-daemon"
        lines.append(f"\n--- {thread.name!r} ({kind}, target {getattr(thread, '_target', None)!r}):")
        frame = frames.get(thread.ident)
        lines.append("".join(traceback.format_stack(frame)) if frame is not None else "(no frame)")
    return "\n".join(lines)
