"""Modules that moved into packages (issue #23) keep their old import paths for one release: each old path
imports, warns DeprecationWarning once naming the new path, and gives the very same objects. Import checks
only, in a fresh interpreter each (so nothing this test process imported earlier hides a warning)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MOVED = {
    "mdengine.recorder": "mdengine.recording.tap",
    "mdengine.record_writer": "mdengine.recording.writer",
    "mdengine.recorder_cli": "mdengine.recording.replay",
    "mdengine.export": "mdengine.recording.export",
    "mdengine.supervisor": "mdengine.engine.supervisor",
    "mdengine.control": "mdengine.engine.control",
    "mdengine.config": "mdengine.engine.config",
    "mdengine.configfile": "mdengine.engine.configfile",
    "mdengine.status": "mdengine.engine.status",
    "mdengine.cli": "mdengine.engine.cli",
    "mdengine.signals": "mdengine.engine.signals",
}

# Imports the old path twice (and once more by `from mdengine import <leaf>`), then compares every name.
_PROBE = """
import importlib, json, sys, warnings
old, new = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = importlib.import_module(old)
    again = importlib.import_module(old)
    leaf = getattr(importlib.import_module("mdengine"), old.rpartition(".")[2])
moved = importlib.import_module(new)
names = [n for n in vars(moved) if not n.startswith("__")]
print(json.dumps({
    "warnings": [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)],
    "same_module": first is again is leaf is moved,
    "names": len(names),
    "different": [n for n in names if getattr(first, n) is not getattr(moved, n)],
}))
"""


def _probe(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_imports_warns_once_and_gives_the_same_objects(old: str) -> None:
    new = MOVED[old]
    seen = _probe(_PROBE, old, new)
    assert seen["warnings"] == [f"{old} moved to {new}; the old path goes in the next release"]
    assert seen["same_module"]
    assert seen["names"] > 0 and seen["different"] == []


def test_new_paths_do_not_warn() -> None:
    code = ("import importlib, sys, warnings\nwarnings.simplefilter('error', DeprecationWarning)\n"
            "for name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('{}')")
    _probe(code, *MOVED.values(), "mdengine.engine", "mdengine.recording", "mdengine.client", "mdengine.feed.process")


def test_the_readers_old_names_resolve_on_the_recording_package_with_one_warning() -> None:
    code = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from mdengine.recording import RecordingReader, parse_record
    from mdengine.recording import parse_record as again
from mdengine.recording import reader
print(json.dumps({"warnings": [str(w.message) for w in caught],
                  "same": RecordingReader is reader.RecordingReader and parse_record is again is reader.parse_record}))
"""
    seen = _probe(code)
    assert seen["same"]
    assert seen["warnings"] == ["mdengine.recording.parse_record moved to mdengine.recording.reader.parse_record; "
                                "the old path goes in the next release"]


@pytest.mark.parametrize("old, new", [("mdengine.record_writer", "mdengine.recording.writer"),
                                      ("mdengine.cli", "mdengine.engine.cli")])
def test_old_paths_still_run_with_python_m(old: str, new: str) -> None:
    out = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")


def test_the_package_faces_resolve() -> None:
    from mdengine import engine, recording
    from mdengine.engine import config, supervisor
    from mdengine.recording import reader, tap

    assert engine.Supervisor is supervisor.Supervisor and engine.EngineConfig is config.EngineConfig
    assert recording.Recorder is tap.Recorder and recording.Record is reader.Record
    with pytest.raises(AttributeError):
        engine.nothing_here  # noqa: B018
