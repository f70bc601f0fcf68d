"""The conftest's thread-leak guard, run on a small test file in a pytest of its own: a leaked thread fails the
test that leaked it (naming it, with its stack); a module fixture's thread may live until the fixture is
finalized, and not past it."""

import os
import shutil
import subprocess
import sys

LEAKY_TESTS = '''
import threading

import pytest

stop_it = threading.Event()
keep_it = threading.Event()


def test_starts_a_thread_and_leaves_it():
    threading.Thread(target=stop_it.wait, name="left-behind", daemon=True).start()


def test_starts_a_thread_and_joins_it():
    t = threading.Thread(target=lambda: None, name="joined")
    t.start()
    t.join()


@pytest.fixture(scope="module")
def module_server():
    t = threading.Thread(target=keep_it.wait, name="module-server", daemon=True)
    t.start()
    yield t
    # never stopped: its finalizer returns with the thread still running


def test_uses_the_module_server(module_server):
    assert module_server.is_alive()


def test_uses_it_again_and_ends_the_module(module_server):
    assert module_server.is_alive()
    stop_it.set()
'''


def test_guard_fails_the_leaking_test_and_a_fixture_that_never_stops_its_thread(tmp_path):
    shutil.copy(os.path.join(os.path.dirname(__file__), "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rE", "test_leaky.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "4 passed, 2 errors" in out, out
    assert "ERROR test_leaky.py::test_starts_a_thread_and_leaves_it" in out, out
    assert "ERROR test_leaky.py::test_uses_it_again_and_ends_the_module" in out, out  # the module's last test
    assert "'left-behind' (daemon" in out and "'module-server' (daemon" in out, out
    assert "in wait" in out, out  # the stack of the leaked thread
    assert "test_uses_the_module_server FAILED" not in out and "ERROR test_leaky.py::test_uses_the_module_server" \
        not in out, out
