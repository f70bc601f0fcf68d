"""Faults outside a feed never take the books down: a real supervisor and feed on the simulator, with a recording
directory that cannot be created or written, and another local user poking at the control socket."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from mdengine.engine.control import ControlError, is_running, request
from mdengine.exchanges import get_adapter
from mdengine.sim import Simulator
from mdengine.store import LayoutError, SegmentNotFound, SegmentReader
from mdengine.store import layout as L

pytestmark = pytest.mark.slow
LIVE_TIMEOUT_S = 60.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=5, exchanges=["okx"], rate_hz=10.0) as s:
        yield s


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def config(namespace, sim, record_dir):
    eps = get_adapter("okx").sim_endpoints(sim.endpoints())
    return "\n".join([
        f'namespace = "{namespace}"', "[restart]", "max_restarts = 3", "window_s = 60", "backoff_initial_s = 0.1",
        "[[exchanges]]", 'name = "okx"', 'symbols = ["BTC/USDT"]',
        "endpoints = {" + ", ".join(f'{k} = "{v}"' for k, v in eps.items()) + "}",
        "max_symbols = 4", "book_capacity = 20", "book_depth = 20", "trade_capacity = 256",
        f"record_dir = {json.dumps(str(record_dir))}", ""])


@pytest.fixture
def engine(namespace, tmp_path):
    """Start `mdengine run` on a config; `drop_dac`: as root, without the power to ignore file permissions."""
    procs = []

    def start(toml, drop_dac=False):
        path = tmp_path / "engine.toml"
        path.write_text(toml)
        cmd = [sys.executable, "-m", "mdengine", "run", "--config", str(path)]
        if drop_dac and os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("setpriv is needed to make a directory read-only for root")
            cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]
        log = open(tmp_path / "supervisor.log", "w")  # noqa: SIM115 - closed by the fixture
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append((proc, log))
        wait_for(lambda: is_running(namespace) or proc.poll() is not None, 30, "the supervisor")
        assert proc.poll() is None, (tmp_path / "supervisor.log").read_text()
        return proc

    yield start
    for proc, log in procs:
        pids = []
        try:
            pids = [f["pid"] for f in request(namespace, {"op": "status"})["feeds"] if f["pid"]]
        except ControlError:
            pass
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        print((tmp_path / "supervisor.log").read_text())


def live_reader(namespace):
    def attach():
        try:
            reader = SegmentReader(namespace, "okx")
        except (SegmentNotFound, LayoutError):
            return None
        try:
            if reader.book("BTC/USDT").header().state == L.BookState.LIVE:
                return reader
        except KeyError:
            pass
        reader.close()
        return None

    return wait_for(attach, LIVE_TIMEOUT_S, "a live okx BTC/USDT book")


def assert_books_live_and_recorder_error_visible(namespace, what):
    reader = live_reader(namespace)
    try:
        pid = reader.view.writer_pid
        wait_for(lambda: reader.view.counters()["record_errors"] > 0, 30, "the recorder's error in the header")
        first = reader.book("BTC/USDT").header().version
        wait_for(lambda: reader.book("BTC/USDT").header().version > first, 30, "the book to keep moving")
        assert reader.book("BTC/USDT").header().state == L.BookState.LIVE
        assert reader.view.writer_pid == pid  # the same feed process: it never died for the disk
    finally:
        reader.close()
    feed = request(namespace, {"op": "status"})["feeds"][0]
    assert feed["restarts"] == 0 and feed["state"] == "running"
    out = subprocess.run([sys.executable, "-m", "mdengine", "status", "--namespace", namespace, "--interval", "0"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "recorder okx:" in out.stdout, out.stdout
    assert what in out.stdout or what in json.dumps(feed), out.stdout


def test_a_record_dir_under_a_plain_file_costs_the_recording_not_the_books(sim, engine, namespace, tmp_path):
    plain = tmp_path / "not-a-dir"
    plain.write_text("x")
    engine(config(namespace, sim, plain / "rec"))
    assert_books_live_and_recorder_error_visible(namespace, "recorder")


@pytest.mark.parametrize("below", ["", "rec"], ids=["the-dir-itself", "a-dir-to-create-in-it"])
def test_a_read_only_record_dir_costs_the_recording_not_the_books(sim, engine, namespace, tmp_path, below):
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    engine(config(namespace, sim, ro / below if below else ro), drop_dac=True)
    assert_books_live_and_recorder_error_visible(namespace, "recorder")
    assert os.listdir(ro) == []


NOBODY_UNSUBSCRIBES = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect("\\0mdengine-" + sys.argv[1])
try:
    s.sendall(json.dumps({"op": "unsubscribe", "exchange": "okx", "symbol": "BTC/USDT"}).encode() + b"\\n")
except BrokenPipeError:
    pass
print(s.recv(4096).decode().strip())
"""


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK), reason="needs root")
def test_another_user_cannot_unsubscribe_a_live_book(sim, engine, namespace, tmp_path):
    engine(config(namespace, sim, tmp_path / "rec"))
    reader = live_reader(namespace)
    try:
        out = subprocess.run(["/usr/bin/python3", "-I", "-c", NOBODY_UNSUBSCRIBES, namespace], user=65534,
                             group=65534, extra_groups=[], capture_output=True, text=True, timeout=30, cwd="/")
        answer = json.loads(out.stdout)
        assert answer["ok"] is False and "permission denied" in answer["error"]
        first = reader.book("BTC/USDT").header().version
        wait_for(lambda: reader.book("BTC/USDT").header().version > first, 30, "the book to keep moving")
        assert "BTC/USDT" in request(namespace, {"op": "status"})["feeds"][0]["symbols"]
    finally:
        reader.close()
    log = (tmp_path / "supervisor.log").read_text()
    assert "refused uid 65534 (nobody)" in log
