"""The control channel: abstract-socket lock, NDJSON request/answer, errors to the caller."""

import socket
import subprocess
import sys
import threading
import time

import pytest

from mdengine.engine.control import ControlError, ControlServer, SupervisorRunning, is_running, request, socket_address


def echo(message: dict) -> dict:
    if message["op"] == "boom":
        raise ValueError("kaboom")
    if message["op"] == "slow":
        time.sleep(1.0)
    return {"ok": True, "echo": message}


def test_request_round_trip(namespace):
    with ControlServer(namespace, echo):
        assert request(namespace, {"op": "ping", "x": [1, 2]}) == {"ok": True, "echo": {"op": "ping", "x": [1, 2]}}
        assert is_running(namespace)


def test_request_without_server_raises_ControlError(namespace):
    with pytest.raises(ControlError, match="no supervisor"):
        request(namespace, {"op": "ping"}, timeout=1.0)
    assert not is_running(namespace)


def test_second_server_on_same_namespace_refuses_and_name_is_released_on_close(namespace):
    first = ControlServer(namespace, echo).start()
    with pytest.raises(SupervisorRunning, match=namespace):
        ControlServer(namespace, echo)
    first.close()
    ControlServer(namespace, echo).start().close()  # the name is free again


def test_handler_exception_becomes_error_answer_and_server_survives(namespace):
    with ControlServer(namespace, echo):
        answer = request(namespace, {"op": "boom"})
        assert answer["ok"] is False and "kaboom" in answer["error"]
        assert request(namespace, {"op": "ping"})["ok"] is True


def test_garbage_requests_get_clear_errors(namespace):
    with ControlServer(namespace, echo):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_address(namespace))
        sock.sendall(b'not json\n[1]\n{"op": "ping"}\n')
        answers = b""
        while answers.count(b"\n") < 3:
            answers += sock.recv(4096)
        sock.close()
        lines = answers.splitlines()
        assert b"not JSON" in lines[0]
        assert b'string \\"op\\"' in lines[1] and b"false" in lines[1]
        assert b'"ok": true' in lines[2]


def test_timeout_raises_ControlError(namespace):
    with ControlServer(namespace, echo), pytest.raises(ControlError, match="did not answer"):
        request(namespace, {"op": "slow"}, timeout=0.2)


def test_concurrent_clients(namespace):
    with ControlServer(namespace, echo):
        results = []

        def worker(i):
            results.append(request(namespace, {"op": "ping", "i": i})["echo"]["i"])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(8))


def test_request_from_another_process(namespace):
    with ControlServer(namespace, echo):
        code = f"from mdengine.engine.control import request; print(request({namespace!r}, {{'op': 'ping'}})['ok'])"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "True", out.stderr


def test_forwarded_ops_carry_the_callers_deadline(namespace):
    with ControlServer(namespace, echo):
        sent = {"op": "subscribe", "exchange": "okx", "symbol": "BTC/USDT"}
        assert 4.0 <= request(namespace, sent, timeout=5.0)["echo"]["timeout"] < 5.0
        assert "timeout" not in sent  # the caller's dict is not modified
        assert "timeout" not in request(namespace, {"op": "status"})["echo"]
        assert request(namespace, {**sent, "timeout": 1})["echo"]["timeout"] == 1
