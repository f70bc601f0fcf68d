import json
import os
import uuid

import pytest

from mdengine.store import shm


@pytest.fixture
def namespace():
    """A fresh namespace per test; every segment left in it is unlinked afterwards."""
    ns = "t" + uuid.uuid4().hex[:8]
    yield ns
    for name in shm.list_names(ns):
        shm.unlink(name)


@pytest.fixture(scope="session")
def recordings_dir():
    here = os.path.dirname(__file__)
    path = os.path.abspath(os.path.join(here, "..", "..", "shared", "recordings"))
    if not os.path.isdir(path):
        path = os.path.join(here, "data")
    return path


@pytest.fixture(scope="session")
def binance_recording(recordings_dir):
    """The events of shared/recordings/binance-spot-2021-10-12.jsonl, in order (the test is skipped without it)."""
    path = os.path.join(recordings_dir, "binance-spot-2021-10-12.jsonl")
    if not os.path.exists(path):
        pytest.skip(f"recording not found: {path}")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
