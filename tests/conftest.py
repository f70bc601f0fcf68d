import json
import os
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
