"""One allowed user cannot hold the supervisor's control workers: at most PER_USER_FORWARDED of its subscribe and
unsubscribe requests wait for a feed at once; more are answered at once with a clear error. The engine's own user
(and root) is not capped: a trader's strategies all run as that user. Against a real `mdengine run`, its real control
socket, a real feed process (stopped with SIGSTOP, so it answers nothing) and a real process of another user."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import threading
import time

import pytest
from test_control_security import NOBODY, PYTHON_FOR_ALL, needs_root
from test_supervisor import Engine, exchange_toml, wait_for

from mdengine.engine.control import PER_USER_FORWARDED, WORKERS, request
from mdengine.sim import Simulator

pytestmark = pytest.mark.slow
MAX_WAIT_S = 8.0  # the held requests are answered after this
AT_ONCE_S = 4.0  # an over-cap answer comes in milliseconds; this is far more, and well before MAX_WAIT_S
GUEST_CALLS = PER_USER_FORWARDED + 2

# nobody's strategy: N connections, one subscribe each with a huge timeout, every answer timed (stdlib only)
GUEST = """
import json, selectors, socket, sys, time
n = int(sys.argv[2])
sel = selectors.DefaultSelector()
start = time.monotonic()
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\\0mdengine-" + sys.argv[1])
    s.sendall(json.dumps({"op": "subscribe", "exchange": "okx", "symbol": "ETH/USDT", "timeout": 1e9}).encode()
              + b"\\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, bytearray())
out = []
while len(out) < n and time.monotonic() - start < 60:
    for key, _ in sel.select(1.0):
        chunk = key.fileobj.recv(65536)
        key.data.extend(chunk)
        if b"\\n" in key.data or not chunk:
            out.append([round(time.monotonic() - start, 3), json.loads(key.data or b"null")])
            sel.unregister(key.fileobj)
print(json.dumps(out))
"""


def _waited(answer: dict) -> bool:
    """The answer of a request that waited for the stopped feed (its own turn or another's) until max_wait_s."""
    return answer["ok"] is False and "within 8 s" in answer["error"] and "cap per user" not in answer["error"]


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=3, exchanges=["okx"], rate_hz=5.0) as s:
        yield s


@needs_root
def test_another_user_holds_at_most_half_the_workers_and_the_owner_is_not_capped(sim, namespace, tmp_path):
    assert 0 < PER_USER_FORWARDED < WORKERS
    toml = (f'namespace = "{namespace}"\n[control]\nmax_wait_s = {MAX_WAIT_S}\nallow_users = ["nobody"]\n'
            "[restart]\nstall_after_s = 600\n"  # the stopped feed is not restarted under the test
            + exchange_toml("okx", sim, ["BTC/USDT"]))
    engine = Engine(namespace, tmp_path, toml)
    pid = None
    try:
        pid = wait_for(lambda: (f := engine.feed("okx"))["state"] == "running" and f["pid"], 30, "a running feed")
        os.kill(pid, signal.SIGSTOP)  # alive, but it answers nothing
        guest = subprocess.Popen([PYTHON_FOR_ALL, "-I", "-c", textwrap.dedent(GUEST), namespace, str(GUEST_CALLS)],
                                 user=NOBODY, group=NOBODY, extra_groups=[], stdout=subprocess.PIPE, text=True,
                                 cwd="/")
        time.sleep(1.0)  # the guest's requests are in
        # the owner's strategies (this test runs as root: the engine's user) are not capped while the guest is
        owner: list[dict] = []
        calls = [threading.Thread(target=lambda: owner.append(request(
            namespace, {"op": "subscribe", "exchange": "okx", "symbol": "SOL/USDT", "timeout": 1e9},
            timeout=MAX_WAIT_S * 3))) for _ in range(WORKERS - PER_USER_FORWARDED - 1)]
        for t in calls:
            t.start()
        start = time.monotonic()
        assert request(namespace, {"op": "status"}, timeout=AT_ONCE_S)["ok"]  # a worker is still free
        status_s = time.monotonic() - start
        out, _ = guest.communicate(timeout=MAX_WAIT_S * 4)
        for t in calls:
            t.join(MAX_WAIT_S * 3)
        answers = json.loads(out)
        assert len(answers) == GUEST_CALLS, answers
        capped = [(took, a) for took, a in answers if "cap per user" in a.get("error", "")]
        held = [(took, a) for took, a in answers if (took, a) not in capped]
        assert len(capped) == GUEST_CALLS - PER_USER_FORWARDED, answers
        for took, a in capped:
            assert a["ok"] is False and took < AT_ONCE_S, (took, a)
            assert f"uid {NOBODY} already has {PER_USER_FORWARDED} subscribe/unsubscribe requests" in a["error"]
        for took, a in held:  # waited for the feed, up to the cap on waiting, like any request
            assert _waited(a) and took >= MAX_WAIT_S - 1, (took, a)
        assert len(owner) == len(calls), owner
        for a in owner:
            assert _waited(a), a  # waited, never capped
        log = engine.log_text()
        assert f"uid {NOBODY} (nobody)" in log and "the cap per user" in log, log
        print(f"capped answers after {[t for t, _ in capped]} s, held after {[t for t, _ in held]} s, "
              f"owner status after {status_s:.3f} s")
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        engine.stop()
