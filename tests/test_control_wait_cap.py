"""A control caller cannot hold the supervisor's workers for as long as it likes: a forwarded request's "timeout" is
cut to engine.toml [control] max_wait_s, the wait for a busy feed included. Against a real `mdengine run`, its real
control socket and a real feed process (stopped with SIGSTOP, so it answers nothing)."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest
from test_supervisor import Engine, exchange_toml, wait_for

from mdengine.engine.control import WORKERS, request
from mdengine.sim import Simulator

pytestmark = pytest.mark.slow
MAX_WAIT_S = 1.0
ANSWERED_WITHIN_S = 20.0  # each answer is due after about MAX_WAIT_S; 10x headroom and more on a busy machine


@pytest.fixture(scope="module")
def sim():
    with Simulator(seed=3, exchanges=["okx"], rate_hz=5.0) as s:
        yield s


def test_a_huge_timeout_is_cut_to_max_wait_and_never_ties_up_the_workers(sim, namespace, tmp_path):
    toml = (f'namespace = "{namespace}"\n[control]\nmax_wait_s = {MAX_WAIT_S}\n'
            "[restart]\nstall_after_s = 600\n"  # the stopped feed is not restarted under the test
            + exchange_toml("okx", sim, ["BTC/USDT"]))
    engine = Engine(namespace, tmp_path, toml)
    pid = None
    try:
        pid = wait_for(lambda: (f := engine.feed("okx"))["state"] == "running" and f["pid"], 30, "a running feed")
        os.kill(pid, signal.SIGSTOP)  # alive, but it answers nothing
        answers: list[tuple[float, dict]] = []
        timeouts = [1e9, math.inf, math.nan] + [3600.0] * WORKERS  # more callers than workers

        def call(timeout: float) -> None:
            start = time.monotonic()
            msg = {"op": "subscribe", "exchange": "okx", "symbol": "ETH/USDT", "timeout": timeout}
            answer = request(namespace, msg, timeout=ANSWERED_WITHIN_S + 5)
            answers.append((time.monotonic() - start, answer))

        threads = [threading.Thread(target=call, args=(t,)) for t in timeouts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(ANSWERED_WITHIN_S + 10)
        assert len(answers) == len(timeouts), f"only {len(answers)} of {len(timeouts)} callers were answered"
        for took, answer in answers:
            assert answer["ok"] is False and took < ANSWERED_WITHIN_S, (took, answer)
            assert "within 1 s" in answer["error"], answer  # the cap, not the caller's timeout
        start = time.monotonic()
        assert request(namespace, {"op": "status"}, timeout=ANSWERED_WITHIN_S)["ok"]  # the workers are free again
        print(f"answers after {sorted(round(t, 2) for t, _ in answers)} s; status after "
              f"{time.monotonic() - start:.2f} s")
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        engine.stop()
        print(engine.log_text())
