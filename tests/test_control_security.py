"""The control channel against hostile local users: credentials on both ends, limits, floods, clear errors.

Real sockets and real processes: another user is `nobody` (uid 65534), reached with subprocess(user=65534)
running stdlib-only scripts (this test runs as root; other users' tests skip).
"""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mdengine.engine import control
from mdengine.engine.control import ControlError, ControlServer, NoSupervisor, Squatter, request, socket_address
from mdengine.store import SegmentWriter, list_names
from mdengine.store import layout as L

NOBODY = 65534


def _world_python() -> str | None:
    """A Python interpreter any user may run (the test's own may live under a private home)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        path = os.path.realpath(candidate)
        parts = path.split(os.sep)
        dirs = [os.sep.join(parts[:i]) or os.sep for i in range(1, len(parts))]
        if os.path.isfile(path) and all(os.stat(d).st_mode & 0o001 for d in dirs) and os.stat(path).st_mode & 0o001:
            return path
    return None


PYTHON_FOR_ALL = _world_python()
needs_root = pytest.mark.skipif(os.geteuid() != 0 or PYTHON_FOR_ALL is None,
                                reason="needs root (to run a process as another user) and a world-runnable Python")


def echo_calls():
    calls = []

    def handler(message):
        calls.append(message)
        return {"ok": True, "echo": message}

    return calls, handler


def as_nobody(script: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a stdlib-only Python script as uid/gid 65534 (it cannot even read root's private files)."""
    return subprocess.run([PYTHON_FOR_ALL, "-I", "-c", textwrap.dedent(script), *args], user=NOBODY, group=NOBODY,
                          extra_groups=[], capture_output=True, text=True, timeout=timeout, cwd="/")


CONNECT_AND_ASK = """
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect("\\0mdengine-" + sys.argv[1])
try:
    s.sendall(json.dumps({"op": "unsubscribe", "exchange": "okx", "symbol": "BTC/USDT"}).encode() + b"\\n")
except BrokenPipeError:  # a refused peer may be closed on before it sends: its answer is still there to read
    pass
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(os.getpid(), data.decode().strip() or "EOF")
"""


@needs_root
def test_a_peer_of_another_user_is_refused_logged_once_and_never_reaches_the_handler(namespace, caplog):
    calls, handler = echo_calls()
    with caplog.at_level(logging.WARNING, logger="mdengine.control"), ControlServer(namespace, handler) as server:
        pids = []
        for _ in range(3):
            out = as_nobody(CONNECT_AND_ASK, namespace)
            assert out.returncode == 0, out.stderr
            pid, answer = out.stdout.split(" ", 1)
            pids.append(int(pid))
            answer = json.loads(answer)
            assert answer["ok"] is False and answer["refused"] is True and "permission denied" in answer["error"]
        assert request(namespace, {"op": "ping"})["ok"] is True  # the owner still gets through
        assert server.refused_total == 3
    assert calls == [{"op": "ping"}]  # nobody's unsubscribe never reached the handler
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, refusals  # logged once ...
    assert "uid 65534" in refusals[0] and f"pid {pids[0]}" in refusals[0]


@needs_root
def test_repeated_refusals_are_logged_with_a_count(namespace, caplog, monkeypatch):
    monkeypatch.setattr(control, "REFUSAL_REPORT_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="mdengine.control"), ControlServer(namespace, echo_calls()[1]):
        for _ in range(2):
            assert as_nobody(CONNECT_AND_ASK, namespace).returncode == 0
        deadline = time.monotonic() + 10
        while not any("1 more" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert any("refused 1 more connections from uid 65534" in r.getMessage() for r in caplog.records)


@needs_root
@pytest.mark.parametrize("allow", [{"allow_uids": [NOBODY]}, {"allow_gids": [NOBODY]}])
def test_users_and_groups_named_in_the_config_are_let_in(namespace, allow):
    calls, handler = echo_calls()
    with ControlServer(namespace, handler, **allow):
        out = as_nobody(CONNECT_AND_ASK, namespace)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.split(" ", 1)[1])["ok"] is True
    assert calls and calls[0]["op"] == "unsubscribe"


SQUAT = """
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0mdengine-" + sys.argv[1])
s.listen(8)
print(os.getpid(), flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(4096)
        c.sendall(json.dumps({"ok": True, "namespace": sys.argv[1], "pid": 1, "started_ns": 0, "sim": False,
                              "feeds": []}).encode() + b"\\n")
    except OSError:  # the client hung up: it did not believe us
        pass
    c.close()
"""


@pytest.fixture
def squatter(namespace):
    """`nobody` holds the namespace's control name first and answers like a supervisor."""
    proc = subprocess.Popen([PYTHON_FOR_ALL, "-I", "-c", textwrap.dedent(SQUAT), namespace], user=NOBODY,
                            group=NOBODY, extra_groups=[], stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        pid = int(proc.stdout.readline())
        yield pid
    finally:
        proc.kill()
        proc.wait()


@needs_root
def test_a_squatter_is_reported_as_one_by_request_status_and_run(namespace, squatter):
    with pytest.raises(Squatter, match=rf"uid 65534 \(nobody\), pid {squatter}") as err:
        request(namespace, {"op": "status"})
    assert err.value.peer.pid == squatter
    assert not control.is_running(namespace)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    status = subprocess.run([sys.executable, "-m", "mdengine", "status", "--namespace", namespace, "--interval", "0"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert "Traceback" not in status.stderr
    assert f"held by uid 65534 (nobody), pid {squatter}" in status.stderr
    assert "supervisor pid 1" not in status.stdout  # the squatter's answer is not believed
    # unless the client is told to trust that user (a client of another account allowed in [control])
    assert request(namespace, {"op": "status"}, trusted_uids=[NOBODY])["pid"] == 1
    env_trusting = {**env, control.SUPERVISOR_USER_ENV: "nobody"}
    trusting = subprocess.run([sys.executable, "-m", "mdengine", "status", "--namespace", namespace, "--interval",
                               "0"], capture_output=True, text=True, timeout=60, env=env_trusting)
    assert "supervisor pid 1" in trusting.stdout and not trusting.stderr, trusting.stderr
    run = subprocess.run([sys.executable, "-m", "mdengine", "run", "--sim", "--namespace", namespace,
                          "--seconds", "5"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1
    assert f"held by uid 65534 (nobody), pid {squatter}" in run.stderr and "Traceback" not in run.stderr


SQUAT_SILENTLY = """
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\\0mdengine-" + sys.argv[1])  # bound, never listening: connecting to it is refused
print(os.getpid(), flush=True)
time.sleep(120)
"""


@needs_root
def test_a_squatter_that_does_not_listen_is_named_by_run(namespace):
    proc = subprocess.Popen([PYTHON_FOR_ALL, "-I", "-c", textwrap.dedent(SQUAT_SILENTLY), namespace], user=NOBODY,
                            group=NOBODY, extra_groups=[], stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        pid = int(proc.stdout.readline())
        with pytest.raises(NoSupervisor):
            request(namespace, {"op": "ping"}, timeout=1.0)
        run = subprocess.run([sys.executable, "-m", "mdengine", "run", "--sim", "--namespace", namespace,
                              "--seconds", "5"], capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    finally:
        proc.kill()
        proc.wait()
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"held by uid 65534 (nobody), pid {pid}" in run.stderr, run.stderr


def test_one_control_thread_however_many_connections(namespace):
    with ControlServer(namespace, echo_calls()[1], max_connections=200):
        before = threading.active_count()
        socks = []
        try:
            for _ in range(100):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(socket_address(namespace))
                socks.append(s)
            assert request(namespace, {"op": "ping"})["ok"] is True
            time.sleep(0.2)
            assert threading.active_count() - before <= 2  # not one per connection (the pool may start one)
        finally:
            for s in socks:
                s.close()


def test_idle_connections_are_closed_and_the_cap_answers_busy(namespace):
    with ControlServer(namespace, echo_calls()[1], max_connections=3, idle_timeout_s=0.5):
        idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                for _ in range(4)]
        try:
            for s in idle:
                s.settimeout(10)
                s.connect(socket_address(namespace))
            busy = json.loads(idle[3].recv(4096))
            assert busy["ok"] is False and "connections open already" in busy["error"]
            t0 = time.monotonic()
            assert idle[0].recv(4096) == b""  # closed by the server for idling
            assert time.monotonic() - t0 < 5.0
            assert request(namespace, {"op": "ping"})["ok"] is True
        finally:
            for s in idle:
                s.close()


def test_a_full_listen_queue_is_a_ControlError_sentence_not_a_traceback(namespace, tmp_path):
    """A socket that never accepts (a hung or flooded supervisor): request(), status and clean say so."""
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(socket_address(namespace))
    hung.listen(0)
    queued = []
    try:
        while True:  # fill the queue until the kernel says EAGAIN
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            queued.append(s)
            try:
                s.connect(socket_address(namespace))
            except BlockingIOError:
                break
            assert len(queued) < 100
        with pytest.raises(ControlError, match="not accepting connections"):
            request(namespace, {"op": "status"}, timeout=0.5)
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        out = subprocess.run([sys.executable, "-m", "mdengine", "status", "--namespace", namespace, "--interval",
                              "0"], capture_output=True, text=True, timeout=60, env=env)
        assert "Traceback" not in out.stderr and "not accepting connections" in out.stderr
        # clean: a segment whose owner is dead, in a namespace whose socket does not answer, is kept, and says why
        SegmentWriter(namespace, "okx", create=True, max_symbols=1, book_capacity=4, trade_capacity=8).close()
        with SegmentWriter(namespace, "okx") as w:
            w.q[L.OWNER_PID_OFFSET >> 3] = 0x3FFFFFFF  # no such process
        out = subprocess.run([sys.executable, "-m", "mdengine", "clean", "--namespace", namespace],
                             capture_output=True, text=True, timeout=60, env=env)
        assert "Traceback" not in out.stderr, out.stderr
        assert f"mde-{namespace}-okx: kept: the supervisor of {namespace!r} is not accepting connections" in out.stdout
        assert list_names(namespace) == [f"mde-{namespace}-okx"]
    finally:
        for s in queued:
            s.close()
        hung.close()


def test_no_supervisor_is_its_own_ControlError(namespace):
    with pytest.raises(NoSupervisor, match="no supervisor"):
        request(namespace, {"op": "ping"}, timeout=1.0)


@pytest.mark.slow
def test_a_supervisor_out_of_descriptors_survives_a_flood_and_answers_again(namespace, tmp_path):
    """`mdengine run` limited to 48 descriptors, flooded with 150 connections that stay open: accept hits EMFILE,
    backs off, closes the flood connections that sit idle, and requests are answered again within seconds.
    (The old accept loop returned on the first EMFILE: the socket never accepted again.)"""
    config = tmp_path / "engine.toml"
    config.write_text(f'namespace = "{namespace}"\n[[exchanges]]\nname = "okx"\n')  # no symbols: no feed yet
    log = tmp_path / "supervisor.log"
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is needed to start the supervisor with few descriptors")
    with open(log, "w") as out:
        proc = subprocess.Popen([prlimit, "--nofile=48", sys.executable, "-m", "mdengine", "run", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT, cwd=os.getcwd())
    flood = []
    try:
        deadline = time.monotonic() + 30
        while not control.is_running(namespace):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        flood_until = time.monotonic() + 3.0
        while len(flood) < 150 and time.monotonic() < flood_until:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(socket_address(namespace))
            except BlockingIOError:
                s.close()  # the listen queue is full: try again once the server has taken some
                time.sleep(0.005)
                continue
            flood.append(s)
        assert len(flood) > 48  # more than the supervisor can hold
        deadline = time.monotonic() + 60
        while True:
            try:
                assert request(namespace, {"op": "ping"}, timeout=5.0)["ok"] is True
                break
            except ControlError:
                assert time.monotonic() < deadline, "the control socket never answered again after EMFILE"
        assert proc.poll() is None
    finally:
        for s in flood:
            s.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "accept failed (EMFILE)" in text, text  # it did hit the limit, and said so once
    assert text.count("accept failed") == 1, text


def test_a_slow_request_does_not_hold_up_the_others(namespace):
    """Handlers run on the worker threads: a subscribe waiting for a starting feed leaves status answering."""
    release = threading.Event()

    def handler(message):
        if message["op"] == "subscribe":
            release.wait(10)
        return {"ok": True}

    with ControlServer(namespace, handler):
        slow = threading.Thread(target=request, args=(namespace, {"op": "subscribe", "exchange": "okx",
                                                                   "symbol": "BTC/USDT"}, 15.0))
        slow.start()
        try:
            time.sleep(0.2)
            t0 = time.monotonic()
            assert request(namespace, {"op": "status"}, timeout=5.0)["ok"] is True
            assert time.monotonic() - t0 < 2.0
            assert slow.is_alive()  # still waiting
        finally:
            release.set()
            slow.join(10)
