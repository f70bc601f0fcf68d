"""The bridge's commands on a real engine: `mdengine run --sim` -> `mdengine bridge publish` -> nats-server ->
`mdengine bridge mirror` -> an unchanged Client on the mirror's namespace, compared with the engine's books."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

pytest.importorskip("nats", reason="the bridge extra is not installed (pip install -e '.[bridge]')")

from mdengine import Client  # noqa: E402
from mdengine.store import shm  # noqa: E402
from tests.test_bridge import nats_server  # noqa: E402,F401 (fixture)
from tests.test_supervisor import RESTART, attach, live_book, start_engine, wait_for  # noqa: E402,F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def bridge_procs():
    procs = []

    def start(*args: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=ROOT)
        p = subprocess.Popen([sys.executable, "-m", "mdengine", "bridge", *args, "--log-level", "WARNING"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _stop(p: subprocess.Popen) -> dict:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def test_a_sim_engine_mirrored_through_nats_reads_the_same(start_engine, namespace, nats_server, bridge_procs):  # noqa: F811
    mirror_ns = "m" + uuid.uuid4().hex[:8]
    try:
        engine = start_engine(RESTART + '[[exchanges]]\nname = "okx"\nsymbols = ["BTC/USDT", "ETH/USDT"]\n',
                              "--sim", "--sim-rate", "20")
        with attach(namespace, "okx") as reader:
            live_book(reader, "BTC/USDT")
            live_book(reader, "ETH/USDT")
            pub = bridge_procs("publish", "--nats", nats_server.url, "--namespace", namespace)
            mir = bridge_procs("mirror", "--nats", nats_server.url, "--namespace", mirror_ns, "--source", namespace)

            def client():
                try:
                    return Client(mirror_ns)
                except Exception:  # noqa: BLE001 - the mirror has not created its segment yet
                    return None

            c = wait_for(client, 60, "the mirror's segment")
            compared = 0
            deadline = time.monotonic() + 60
            while compared < 20 and time.monotonic() < deadline:  # books move at 20/s: compare at equal update ids
                for symbol in ("BTC/USDT", "ETH/USDT"):
                    try:
                        mirrored = c.book("okx", symbol)
                        h = mirrored.header()
                        d = mirrored.snapshot()
                    except Exception:  # noqa: BLE001 - not mirrored yet
                        continue
                    s = reader.book(symbol).snapshot()
                    if s.header.update_id != h.update_id:
                        continue
                    assert s.header.update_id == d.update_id and d.state == "live" and not d.stale, d
                    np.testing.assert_array_equal(s.bids, d.bids)
                    np.testing.assert_array_equal(s.asks, d.asks)
                    compared += 1
                time.sleep(0.01)
            assert compared >= 20, f"only {compared} books caught at equal update ids"
            trades = wait_for(lambda: (t := c.recent_trades("okx", "BTC/USDT", 50)).records.size and t, 60,
                              "mirrored trades")
            src_recs, _ = reader.trades("BTC/USDT", start="earliest").poll()
            ids = src_recs["trade_id"].tolist()  # every mirrored trade is one of the engine's, in the same order
            got = trades.records["trade_id"].tolist()
            start = ids.index(got[0])
            assert ids[start:start + len(got)] == got
            c.close()
        mirror_summary = _stop(mir)
        pub_summary = _stop(pub)
        assert engine.stop(signal.SIGTERM) == 0
    finally:
        for name in shm.list_names(mirror_ns):
            shm.unlink(name)
    assert pub_summary["books"] > 0 and pub_summary["failed"] == 0
    assert mirror_summary["books"] > 0 and mirror_summary["gaps"] == 0 and mirror_summary["malformed"] == 0


def test_no_nats_server_is_a_clear_error_not_a_hang(bridge_procs):
    from mdengine.bridge.server import free_port

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    p = bridge_procs("mirror", "--nats", url, "--namespace", "m" + uuid.uuid4().hex[:8], "--connect-timeout", "1")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert f"cannot reach NATS at {url}" in err.decode()


def test_mirror_repair_wait_option(bridge_procs):
    """`--repair-wait S` reaches the mirror (here it gets as far as connecting); a negative or NaN one is refused."""
    from mdengine.bridge.server import free_port

    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    ns = "m" + uuid.uuid4().hex[:8]
    p = bridge_procs("mirror", "--nats", url, "--namespace", ns, "--connect-timeout", "1", "--repair-wait", "0.5")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and f"cannot reach NATS at {url}" in err.decode(), err.decode()
    for bad in ("-1", "nan"):
        p = bridge_procs("mirror", "--nats", url, "--namespace", ns, "--repair-wait", bad)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2 and "--repair-wait must be 0 or more seconds" in err.decode(), err.decode()
