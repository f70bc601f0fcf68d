"""The bus behind the bridge: one small interface, and its NATS JetStream implementation.

A Kafka transport would implement the same five calls: publish (fire and forget, failures counted), a
snapshot store keyed by symbol (here a JetStream KV bucket; a compacted topic there), and a subscription that
delivers from now on.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

from . import wire

Handler = Callable[[str, bytes], Awaitable[None]]
log = logging.getLogger("mdengine.bridge")
RETRY_S = 20.0  # how long messages the stream refused (or left unacknowledged) are sent again with none taken
# (a JetStream cluster takes seconds to elect a new leader after losing one; 5 s lost messages here under load)
RETRY_QUEUE = 100_000  # messages held for sending again at most; beyond, they count as failed
STOP_GRACE_S = 2.0  # on stop, how long what is held or unacknowledged may still take; the rest counts as unsent


class Transport(Protocol):
    failed: int  # publishes (messages and snapshots) that could not be made

    async def connect(self) -> None: ...

    def begin_close(self) -> None:
        """Stopping: what is still held for sending gets a short grace, then counts as failed (`close` too)."""

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        """Send without waiting for the bus's acknowledgement; a failure (now or later) adds to `failed`."""

    async def put_snapshot(self, key: str, payload: bytes) -> None: ...

    async def snapshots(self) -> dict[str, bytes]:
        """Every stored snapshot, by key."""

    async def get_snapshot(self, key: str) -> bytes | None: ...

    async def subscribe(self, subject: str, handler: Handler, since_ns: int | None = None) -> None:
        """Deliver every message published on `subject` (wildcards allowed), in order: those the bus still
        holds from wall time `since_ns` on, else from now on."""

    async def close(self) -> None: ...


class NatsTransport:
    """JetStream: a stream `MD_<ns>` over `md.<ns>.>` (duplicates dropped by `Nats-Msg-Id` within
    `duplicate_window_s`), and a KV bucket `md_<ns>` holding one snapshot per symbol.

    A publish answered "no response from stream" (`NoStreamResponseError`: the stream has no leader for a moment,
    as while a cluster elects one after a node died), or not acknowledged within `ack_timeout_s` (a node stalled
    or died holding it), is sent again, in the order it was first sent, until the stream takes it; new publishes
    wait meanwhile. After RETRY_S without one taken, what is held counts as failed. Sending a message again is
    harmless: its `Nats-Msg-Id` makes the stream drop a copy it already holds, within the stream's duplicate window
    (`duplicate_window_s`, read back from the stream once connected). So a message is sent again only until its
    first send is that old less `ack_timeout_s` (the longest one try takes): after that a copy already stored
    would be stored twice, and it counts as failed ('past the duplicate window'). Publishes already in flight
    when one is held are not held back: if the first copy was lost, one of them can reach the stream before the
    second copy (the mirror then sees a trade gap and repairs it from the KV snapshot). Once stopping
    (`begin_close`), what is held or unacknowledged gets `stop_grace_s` more; what is left then counts as failed,
    and in `unsent_at_stop`."""

    def __init__(self, servers: list[str], namespace: str, *, max_age_s: float = 300.0,
                 duplicate_window_s: float = 30.0, replicas: int = 1, name: str = "mdengine-bridge") -> None:
        self.servers = servers
        self.namespace = namespace
        self.max_age_s = max_age_s
        self.duplicate_window_s = duplicate_window_s
        self.replicas = replicas
        self.name = name
        self.failed = 0
        self.ack_timeout_s = 5.0
        self.connect_timeout_s = 10.0
        self.stop_grace_s = STOP_GRACE_S
        self.unsent_at_stop = 0  # held for sending again, or unacknowledged, when the stop's grace ended
        self._close_by: float | None = None  # monotonic time the stop's grace ends
        self.connected = False
        self.nc = None
        self.js = None
        self.kv = None
        self.retried = 0  # publishes sent again after the stream had no leader
        self.why_failed: Counter[str] = Counter()  # what made publishes fail, by exception name
        self._pending: set[asyncio.Future] = set()
        self._seq = 0
        self._retry: list[tuple[int, float, str, bytes, str]] = []  # a heap by first-send order (with its time)
        self._retrier: asyncio.Task | None = None

    async def connect(self) -> None:
        import nats
        from nats.js.api import KeyValueConfig, StorageType, StreamConfig

        async def disconnected() -> None:
            self.connected = False
            log.warning("bridge: disconnected from NATS %s", ",".join(self.servers))

        async def reconnected() -> None:
            self.connected = True
            log.info("bridge: reconnected to NATS")

        async def error(e: Exception) -> None:
            log.debug("bridge: NATS error %s", e)

        # once connected it reconnects for ever; the first connection gets connect_timeout_s (nats-py would retry it
        # for ever too, and a wrong URL must be an error, not a hang)
        try:
            self.nc = await asyncio.wait_for(
                nats.connect(self.servers, name=self.name, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                             connect_timeout=2, disconnected_cb=disconnected, reconnected_cb=reconnected,
                             error_cb=error), self.connect_timeout_s)
        except TimeoutError:
            raise ConnectionError(f"no NATS server answered at {','.join(self.servers)} within "
                                  f"{self.connect_timeout_s:g} s") from None
        self.connected = True
        self.js = self.nc.jetstream()
        stream = wire.stream_name(self.namespace)
        cfg = StreamConfig(name=stream, subjects=[f"{wire.subject_root(self.namespace)}.>"],
                           max_age=self.max_age_s, duplicate_window=self.duplicate_window_s,
                           storage=StorageType.FILE, num_replicas=self.replicas)
        try:
            info = await self.js.add_stream(cfg)  # the same config again is accepted
        except Exception as e:  # noqa: BLE001 - made by another node with other settings: use it as it is
            log.info("bridge: stream %s exists (%s); using it", stream, e)
            info = await self.js.stream_info(stream)
        # the stream's own window bounds how long a message may be sent again (`_past_window`)
        self.duplicate_window_s = info.config.duplicate_window or self.duplicate_window_s
        bucket = wire.bucket_name(self.namespace)
        try:
            self.kv = await self.js.key_value(bucket)
        except Exception:  # noqa: BLE001
            self.kv = await self.js.create_key_value(KeyValueConfig(bucket=bucket, history=1,
                                                                    replicas=self.replicas))

    def begin_close(self) -> None:
        if self._close_by is not None:
            return
        self._close_by = time.monotonic() + self.stop_grace_s
        if self._retrier is not None and not self._retrier.done():
            asyncio.get_running_loop().call_later(self.stop_grace_s, self._retrier.cancel)

    def _past_grace(self) -> bool:
        return self._close_by is not None and time.monotonic() >= self._close_by

    def _give_up_at(self, end: float) -> float:
        return end if self._close_by is None else min(end, self._close_by)

    def _attempt_s(self) -> float:
        """How long one try may wait for the stream's answer: shorter once stopping."""
        if self._close_by is None:
            return self.ack_timeout_s
        return min(self.ack_timeout_s, max(0.01, self._close_by - time.monotonic()))

    def _past_window(self, first_sent: float) -> bool:
        """Sent first so long ago that a copy sent now could reach the stream after its duplicate window: a copy
        already stored would no longer be dropped."""
        return time.monotonic() - first_sent > self.duplicate_window_s - self.ack_timeout_s

    def _drop_past_window(self) -> None:
        self._fail("past the duplicate window")
        n = self.why_failed["past the duplicate window"]
        if n in (1, 10, 100, 1000) or n % 10_000 == 0:
            log.warning("bridge: a message held for sending again was first sent more than the stream's duplicate "
                        "window (%g s) less %g s ago: not sent again, counted failed (%d so far)",
                        self.duplicate_window_s, self.ack_timeout_s, n)

    def _unsent(self, n: int) -> None:
        self.unsent_at_stop += n
        self._fail("stopped before sent", n)

    def _done(self, fut: asyncio.Future, item: tuple[int, float, str, bytes, str]) -> None:
        from nats.js.errors import NoStreamResponseError

        if fut not in self._pending:  # counted already (unacknowledged when the stop's grace ended)
            return
        self._pending.discard(fut)
        # no acknowledgement within ack_timeout_s (a node stalled or died holding the message, a leader lost
        # mid-proposal): the message may or may not be stored. Sent again like a refused one: a stored copy is
        # dropped by its Nats-Msg-Id (within duplicate_window_s), a lost one is stored
        if fut.cancelled() or isinstance(fut.exception(), NoStreamResponseError):
            self._hold(item)
        elif fut.exception() is not None:
            self._fail(type(fut.exception()).__name__)

    def _fail(self, why: str, n: int = 1) -> None:
        self.failed += n
        self.why_failed[why] += n

    def _hold(self, item: tuple[int, float, str, bytes, str]) -> None:
        if self._past_grace():
            self._unsent(1)
            return
        if self._past_window(item[1]):
            self._drop_past_window()
            return
        if len(self._retry) >= RETRY_QUEUE:
            self._fail("retry queue full")
            return
        heapq.heappush(self._retry, item)
        if self._retrier is None or self._retrier.done():
            loop = asyncio.get_running_loop()
            self._retrier = loop.create_task(self._resend())
            if self._close_by is not None:
                loop.call_at(loop.time() + self._close_by - time.monotonic(), self._retrier.cancel)

    async def _resend(self) -> None:
        """Send the held messages again, oldest first, each until the stream takes it; after RETRY_S with none
        taken, the rest count as failed (the publisher refreshes its KV snapshots then, for the receivers). A stop
        cancels this when its grace ends: what is still held counts as failed and unsent."""
        from nats.js.errors import NoStreamResponseError

        log.info("bridge: the stream refused or did not acknowledge %d message(s); sending them again",
                 len(self._retry))
        end = time.monotonic() + RETRY_S
        try:
            while self._retry:
                _, first_sent, subject, payload, msg_id = self._retry[0]  # leaves the heap once taken: a stop counts it
                if self._past_window(first_sent):
                    heapq.heappop(self._retry)
                    self._drop_past_window()
                    continue
                try:
                    await self.js.publish(subject, payload, timeout=self._attempt_s(),
                                          headers={"Nats-Msg-Id": msg_id})
                    heapq.heappop(self._retry)
                    self.retried += 1
                    end = time.monotonic() + RETRY_S
                except (NoStreamResponseError, TimeoutError, ConnectionError) as e:
                    if time.monotonic() < self._give_up_at(end):
                        await asyncio.sleep(0.05)
                        continue
                    n = len(self._retry)
                    if self._close_by is not None:
                        self._unsent(n)
                    else:
                        self._fail(type(e).__name__, n)
                    log.warning("bridge: %d message(s) not published after %.1f s of retries: %s", n,
                                time.monotonic() - end + RETRY_S, e)
                    self._retry.clear()
                except Exception as e:  # noqa: BLE001 - refused for another reason: counted like any failed publish
                    heapq.heappop(self._retry)
                    self._fail(type(e).__name__)
        except asyncio.CancelledError:
            if self._close_by is None:
                raise
            log.warning("bridge: stopping: %d message(s) held for sending again are not sent", len(self._retry))
            self._unsent(len(self._retry))
            self._retry.clear()

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> None:
        self._seq += 1
        seq = self._seq
        if self._retrier is not None and not self._retrier.done():
            await asyncio.shield(self._retrier)  # the messages sent again go first: the stream gets them in order
        item = (seq, time.monotonic(), subject, payload, msg_id)  # its first send is now
        try:
            fut = await self.js.publish_async(subject, payload, wait_stall=0.05, headers={"Nats-Msg-Id": msg_id})
        except Exception as e:  # noqa: BLE001 - disconnected, stalled: counted, the next message carries on
            self._fail(type(e).__name__)
            return
        self._pending.add(fut)
        fut.add_done_callback(lambda f: self._done(f, item))
        # an acknowledgement that never comes (the server died holding the message) fails the publish too
        asyncio.get_running_loop().call_later(self.ack_timeout_s, fut.cancel)

    async def put_snapshot(self, key: str, payload: bytes) -> None:
        from nats.js.errors import NoStreamResponseError

        end = time.monotonic() + RETRY_S
        while True:
            if self._past_grace():
                self._unsent(1)
                return
            try:
                await asyncio.wait_for(self.kv.put(key, payload), self._attempt_s())
                return
            except NoStreamResponseError:  # the bucket's stream is electing a leader: again, for a while
                if time.monotonic() < self._give_up_at(end):
                    await asyncio.sleep(0.05)
                    continue
                self._fail("NoStreamResponseError (KV)")
                return
            except Exception as e:  # noqa: BLE001
                self._fail(type(e).__name__)
                return

    async def snapshots(self) -> dict[str, bytes]:
        from nats.js.errors import NoKeysError

        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return {}
        out = {}
        for key in keys:
            raw = await self.get_snapshot(key)
            if raw is not None:
                out[key] = raw
        return out

    async def get_snapshot(self, key: str) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return entry.value

    async def subscribe(self, subject: str, handler: Handler, since_ns: int | None = None) -> None:
        import datetime

        from nats.js.api import ConsumerConfig, DeliverPolicy

        async def on_msg(msg) -> None:
            await handler(msg.subject, msg.data)

        config = None
        policy = DeliverPolicy.NEW
        if since_ns is not None:
            policy = DeliverPolicy.BY_START_TIME
            start = datetime.datetime.fromtimestamp(since_ns / 1e9, datetime.UTC)
            config = ConsumerConfig(opt_start_time=start.isoformat().replace("+00:00", "Z"))
        # An ordered consumer recreates itself after a gap, a reconnect, a lost server or two missed heartbeats (a
        # busy machine), from where it was: by start sequence, from the config it was made with. A start time left
        # in that config makes the server refuse every new consumer (400, "start time also set"), so the mirror
        # would hear nothing again: once the consumer exists, its start time has done its job.
        await self.js.subscribe(subject, cb=on_msg, stream=wire.stream_name(self.namespace), ordered_consumer=True,
                                deliver_policy=policy, config=config, idle_heartbeat=1.0, flow_control=True)
        if config is not None:  # nats-py 2.x keeps this object to recreate the consumer with (tested)
            config.opt_start_time = None

    async def close(self) -> None:
        """What is held for sending again, or awaits its acknowledgement, gets the rest of the stop's grace; what is
        left then counts as failed, in `unsent_at_stop` too."""
        self.begin_close()
        while ((self._retrier is not None and not self._retrier.done()) or self._pending) and not self._past_grace():
            await asyncio.sleep(0.02)
        if self._retrier is not None and not self._retrier.done():
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
        if self._retry:
            self._unsent(len(self._retry))
            self._retry.clear()
        if self._pending:
            log.warning("bridge: stopping: %d publish(es) not acknowledged", len(self._pending))
            self._unsent(len(self._pending))
            self._pending.clear()
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.drain(), 2.0)
            except Exception:  # noqa: BLE001 - closing after a cut: nothing left to drain
                pass
            if not self.nc.is_closed:
                try:
                    await self.nc.close()
                except OSError as e:  # the socket a cut left behind: closed all the same
                    log.debug("bridge: closing the NATS connection: %s", e)
            self.nc = None
