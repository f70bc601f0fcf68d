"""Restart policy and control handling of an in-process Supervisor whose feed target crashes at once.

The crashing target stands for a feed that dies during start-up (bad install, bad config); everything
else is real: spawned processes, segments, the control socket.
"""

import os
import threading
import time

import pytest

from mdengine.engine.config import EngineConfig, ExchangeConfig, RestartPolicy
from mdengine.engine.control import ControlError, SupervisorRunning, request
from mdengine.engine.supervisor import Supervisor
from mdengine.store import SegmentReader, list_names


def crash_at_start(namespace, cfg, control=None, ready=None) -> int:
    return 3


def never_answer(namespace, cfg, control=None, ready=None) -> int:
    """A feed that says it is ready and then answers nothing (stuck, say) until it is terminated."""
    if ready is not None:
        ready.set()
    time.sleep(3600)
    return 0


@pytest.fixture
def running(namespace):
    sups = []

    def start(policy, exchanges=("okx",), target=crash_at_start):
        cfg = EngineConfig(namespace=namespace, restart=policy,
                           exchanges=[ExchangeConfig(name=e, symbols=["BTC/USDT"], max_symbols=2, book_capacity=5,
                                                     trade_capacity=16) for e in exchanges])
        sup = Supervisor(cfg, feed_target=target).start()
        stop = threading.Event()
        thread = threading.Thread(target=sup.run, args=(stop,), daemon=True)
        thread.start()
        sups.append((sup, stop, thread))
        return sup

    yield start
    for sup, stop, thread in sups:
        stop.set()
        thread.join(10)
        sup.stop()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_crash_loop_backs_off_exponentially_then_gives_up(running, namespace):
    policy = RestartPolicy(backoff_initial_s=0.3, backoff_max_s=5, stall_after_s=5, max_restarts=2, window_s=60)
    t0 = time.monotonic()
    sup = running(policy, exchanges=("okx", "bybit"))
    feed = sup.feeds["okx"]
    wait_for(lambda: feed.state == "failed", 60, "the crash loop to be detected")
    elapsed = time.monotonic() - t0
    assert feed.restarts == 2 and feed.last_exit == "exited with code 3"
    assert feed.backoffs == [0.3, 0.6]  # the second backoff doubled the first
    first, second = feed.restart_times
    assert second - first >= 0.3  # the first backoff was waited out before the second failure was seen
    assert elapsed >= 0.3 + 0.6  # and both were waited out before the crash loop was declared
    status = request(namespace, {"op": "status"})
    okx = next(f for f in status["feeds"] if f["exchange"] == "okx")
    assert (okx["state"], okx["pid"], okx["restarts"]) == ("failed", None, 2)
    answer = request(namespace, {"op": "subscribe", "exchange": "okx", "symbol": "ETH/USDT"})
    assert answer == {"ok": False, "error": "the okx feed failed (exited with code 3); restart the supervisor"}


def test_segments_are_created_by_the_supervisor_and_unlinked_on_stop(running, namespace):
    sup = running(RestartPolicy(backoff_initial_s=5, max_restarts=1), exchanges=("okx", "bybit"))
    assert list_names(namespace) == [f"mde-{namespace}-bybit", f"mde-{namespace}-okx"]
    with SegmentReader(namespace, "okx") as reader:
        assert reader.view.owner_pid == os.getpid() and reader.view.max_symbols == 2
    sup.stop()
    assert list_names(namespace) == []


def test_second_supervisor_in_the_same_namespace_is_refused(running, namespace):
    running(RestartPolicy(), exchanges=())
    with pytest.raises(SupervisorRunning):
        Supervisor(EngineConfig(namespace=namespace)).start()


BAD_REQUESTS = [
    ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
    ({"op": "subscribe", "exchange": "okx"}, 'subscribe needs "exchange" and "symbol" strings'),
    ({"op": "subscribe", "exchange": "okx", "symbol": "X", "market": 3}, '"market" must be a string or null'),
    ({"op": "subscribe", "exchange": "kraken", "symbol": "X"}, "unknown exchange 'kraken'"),
    ({"op": "unsubscribe", "exchange": "bybit", "symbol": "X"}, "no feed for exchange 'bybit'"),
]


def test_bad_control_requests_get_clear_errors(running, namespace):
    running(RestartPolicy(), exchanges=())
    for message, error in BAD_REQUESTS:
        answer = request(namespace, message)
        assert answer["ok"] is False and error in answer["error"], (message, answer)
    assert request(namespace, {"op": "ping"})["ok"]


def test_stop_answers_requests_in_flight_and_leaves_no_thread_behind(running, namespace):
    """A subscribe waiting on a feed that never answers gets "shutting down" when the supervisor stops, rather than
    at its deadline; and no control worker or exit-watch thread outlives stop() (one that did would log after its
    test was over, into capture streams pytest has closed: "--- Logging error --- ... closed file")."""
    sup = running(RestartPolicy(stall_after_s=600), target=never_answer)
    wait_for(lambda: sup.feeds["okx"].state == "running", 30, "the feed process to start")
    answers = []

    def call() -> None:
        try:
            answers.append(request(namespace, {"op": "subscribe", "exchange": "okx", "symbol": "ETH/USDT",
                                               "timeout": 30.0}, timeout=40))
        except ControlError as e:
            answers.append(str(e))

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: any(t.name.startswith(f"control-{namespace}-") for t in threading.enumerate()), 10,
             "the request to reach a control worker")
    time.sleep(0.3)  # the worker is waiting on the feed
    start = time.monotonic()
    sup.stop()
    left = [t.name for t in threading.enumerate()
            if t.name.startswith((f"control-{namespace}", "mdengine-exit-")) and t.is_alive()]
    assert left == [], f"threads outlived Supervisor.stop(): {left}"
    caller.join(10)
    assert answers and answers[0] == {"ok": False, "error": "the supervisor is shutting down"}, answers
    assert time.monotonic() - start < 10.0  # not the request's 30 s
