import os
import signal
import subprocess
import sys

from mdengine.sim.testing import http_get


def test_cli_prints_endpoints_serves_and_stops_on_sigterm():
    p = subprocess.Popen([sys.executable, "-m", "mdengine.sim.cli", "--exchanges", "okx,bybit", "--seed", "3"],
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        lines = [p.stdout.readline().split() for _ in range(2)]
        assert [n for n, _, _ in lines] == ["okx", "bybit"]  # NAME ws://HOST:PORT http://HOST:PORT
        urls = {n: (ws, rest) for n, ws, rest in lines}
        ws, url = urls["okx"]
        assert ws.startswith("ws://127.0.0.1:") and url == ws.replace("ws://", "http://")
        status, _, body = http_get(url + "/api/v5/public/instruments?instType=SWAP")
        assert status == 200 and {d["instId"] for d in body["data"]} >= {"BTC-USDT-SWAP", "BTC-USD-SWAP"}
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0


def test_cli_rejects_unknown_market():
    from mdengine.sim.cli import main

    assert main(["--exchanges", "nope"]) == 2
