"""A broadcaster backend for Redis pub/sub that delivers, bounds its buffer and reconnects.

broadcaster's stock Redis backend delivers nothing on Python 3.11 with redis-py 8, never
reconnects and buffers without bound (see docs/architecture.md). This one keeps broadcaster's
API and, after any connection loss or buffer overflow, emits a `resync` event on
`CONTROL_CHANNEL` so the hub catches every channel up from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlparse

import hiredis
from broadcaster import Broadcast, BroadcastBackend, Event

from . import metrics
from .resp import Connection, Pipeline, command

logger = logging.getLogger("taskcast.backend")
# Our own generator: retry jitter must not touch the global `random` state of the host.
_jitter = random.Random()

CONTROL_CHANNEL = "taskcast:control"  # never sent to Redis: local notices to the hub
HEARTBEAT_CHANNEL = "taskcast:heartbeat"  # keeps the pub/sub connection in listening mode
RESYNC = "resync"
QUEUE_BOUND = 20_000
SUBSCRIBE_TIMEOUT = 5.0
PING_INTERVAL = 5.0
BACKOFF_FIRST, BACKOFF_CAP = 0.05, 1.0
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")

# Takes one channel's messages, in order: those read together from Redis, back to back.
Consumer = Callable[[str, list[str]], None]


class RedisBackend(BroadcastBackend):
    """Redis pub/sub for `Broadcast`: supervised listener, bounded buffer, pipelined publish.

    Both directions use raw connections (`realtime/resp.py`), not redis-py: these are the
    per-event paths of every node and worker.
    """

    def __init__(self, url: str, *, queue_bound: int = QUEUE_BOUND) -> None:
        self._url = url
        self._queue_bound = queue_bound
        self._events: deque[Event] = deque()  # one consumer: Broadcast's listener or the hub
        self._waiter: asyncio.Future[None] | None = None
        self._consumer: Consumer | None = None
        self._channels: set[str] = set()
        self._unsubscribing: list[str] = []  # sent at the end of this loop iteration
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._pubsub: Connection | None = None
        self._gap = False
        self._closing = False
        self.connected = asyncio.Event()
        self._attempted = asyncio.Event()  # the listener's first connection attempt is over
        self._supervisor: asyncio.Task[None] | None = None
        self._pending: list[tuple[str, Any, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._pub = Pipeline(url)

    async def connect(self) -> None:
        """Nothing to do yet: a publish-only user (a worker) never opens a pub/sub connection."""
        self._closing = False

    def _ensure_listening(self) -> None:
        if self._supervisor is None and not self._closing:
            self._supervisor = asyncio.create_task(self._supervise(), name="taskcast-pubsub")

    async def disconnect(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self._pub.aclose()

    async def subscribe(self, channel: str) -> None:
        """Subscribe; return once Redis confirmed it (or the link is down: resync covers it)."""
        self._channels.add(channel)
        self._ensure_listening()
        if channel != CONTROL_CHANNEL and not self._attempted.is_set():
            # The lazy listener is only starting: wait for it, so this subscribe is confirmed too.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._attempted.wait(), SUBSCRIBE_TIMEOUT)
        if channel == CONTROL_CHANNEL or not self.connected.is_set():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(future)
        try:
            if self._pubsub is None:
                raise ConnectionError("pub/sub link is down")
            self._pubsub.send("SUBSCRIBE", channel)
            await asyncio.wait_for(future, SUBSCRIBE_TIMEOUT)
        except (ConnectionError, OSError, TimeoutError, AttributeError):
            # The supervisor resubscribes everything on reconnect and then sends `resync`.
            logger.warning("subscribe to %s not confirmed; will resync after reconnect", channel)
        finally:
            waiters = self._confirm.get(channel, [])
            if future in waiters:
                waiters.remove(future)

    async def unsubscribe(self, channel: str) -> None:
        """Unsubscribe; those asked for in one loop iteration go to Redis as one command."""
        self._channels.discard(channel)
        if channel == CONTROL_CHANNEL or not self.connected.is_set():
            return
        if not self._unsubscribing:
            asyncio.get_running_loop().call_soon(self._unsubscribe_now)
        self._unsubscribing.append(channel)

    def _unsubscribe_now(self) -> None:
        # A channel subscribed again meanwhile stays: its SUBSCRIBE has gone out already.
        names = [c for c in self._unsubscribing if c not in self._channels]
        self._unsubscribing = []
        if names and self._pubsub is not None:
            with contextlib.suppress(ConnectionError, OSError):
                self._pubsub.send("UNSUBSCRIBE", *names)

    async def publish(self, channel: str, message: Any) -> None:
        """Publish; concurrent calls share one pipelined round trip."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((channel, message, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                replies = await self._pub.execute(
                    [command("PUBLISH", channel, message) for channel, message, _ in batch]
                )
                refused = next((r for r in replies if isinstance(r, hiredis.ReplyError)), None)
                if refused is not None:
                    raise ConnectionError(f"Redis refused PUBLISH: {refused}")
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def next_published(self) -> Event:
        events = self._events
        while True:
            if self._gap and len(events) <= self._queue_bound // 2:
                self._gap = False
                return Event(CONTROL_CHANNEL, RESYNC)
            if events:
                return events.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def consume(self, consumer: Consumer | None) -> None:
        """Hand messages to `consumer(channel, messages)` where they are read, instead of
        buffering them for `next_published`: the hub, the one reader on a node, saves a task
        switch per event, and gets a channel's messages read together in one call, so it can
        write them to a socket together. `None` goes back to buffering."""
        self._consumer = consumer

    def _deliver(self, channel: str, messages: list[str]) -> None:
        consumer = self._consumer
        if channel == HEARTBEAT_CHANNEL:
            return
        if consumer is not None:
            try:
                consumer(channel, messages)
            except Exception as exc:  # noqa: BLE001 - the read callback must go on
                logger.warning("pub/sub consumer failed: %s", type(exc).__name__)
            return
        for message in messages:
            self._buffer(Event(channel, message))

    def _buffer(self, event: Event) -> None:
        if len(self._events) >= self._queue_bound:
            # Dropping is safe only because the hub refills from history on `resync`.
            if not self._gap:
                logger.warning("pub/sub buffer full (%d); resync from history", self._queue_bound)
                metrics.COUNTS.buffer_overflows += 1
            self._gap = True
            return
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _supervise(self) -> None:
        delay = BACKOFF_FIRST
        first = True
        while not self._closing:
            pubsub = Connection(self._url)
            try:
                await pubsub.open()
                pubsub.send("SUBSCRIBE", HEARTBEAT_CHANNEL, *self._redis_channels())
                self._pubsub = pubsub
                self.connected.set()
                self._attempted.set()
                if not first:
                    metrics.COUNTS.redis_reconnects += 1
                    logger.info(
                        "pub/sub reconnected; resubscribed %d channels", len(self._channels)
                    )
                # Fresh subscriptions and a resync either way: a listener that just connected
                # cannot know what it missed.
                self._deliver(CONTROL_CHANNEL, [RESYNC])
                first = False
                delay = BACKOFF_FIRST
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: reconnect
                self._attempted.set()
                if self.connected.is_set():
                    logger.warning("pub/sub connection lost: %s", type(exc).__name__)
            finally:
                self.connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if self._closing:
                return
            await asyncio.sleep(_jitter.uniform(delay / 2, delay))
            delay = min(delay * 2, BACKOFF_CAP)

    def _redis_channels(self) -> list[str]:
        return [c for c in self._channels if c != CONTROL_CHANNEL]

    async def _listen(self, pubsub: Connection) -> None:
        """Messages are taken as they are read (`_take`); this waits for the link to end."""
        watchdog = asyncio.create_task(self._watchdog(pubsub))
        pubsub.listen(partial(self._take, pubsub))
        try:
            await pubsub.wait_closed()
            raise ConnectionError("the pub/sub connection ended")
        finally:
            watchdog.cancel()

    def _take(self, pubsub: Connection, replies: list[Any]) -> None:
        """One read's replies: each run of messages on one channel goes over in one call."""
        channel = ""
        run: list[str] = []  # messages read back to back on `channel`
        for message in replies:
            if isinstance(message, hiredis.ReplyError):
                logger.warning("Redis error on the pub/sub connection: %s", message)
                pubsub.abort()  # reconnect, resubscribe, resync
                return
            if message[0] == "message":
                if message[1] != channel:
                    if run:
                        self._deliver(channel, run)
                    channel, run = message[1], []
                run.append(message[2])
                continue
            if run:
                self._deliver(channel, run)
                channel, run = "", []
            if message[0] == "subscribe":
                for future in self._confirm.pop(message[1], []):
                    if not future.done():
                        future.set_result(None)
            elif message[0] == "pong":
                self._last_pong = asyncio.get_running_loop().time()
        if run:
            self._deliver(channel, run)

    async def _watchdog(self, pubsub: Connection) -> None:
        """Ping on the pub/sub connection; a silent link (no RST) is treated as lost."""
        loop = asyncio.get_running_loop()
        self._last_pong = loop.time()
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if loop.time() - self._last_pong > 3 * PING_INTERVAL:
                pubsub.abort()  # not close(): a dead link may never flush what is queued
                return
            with contextlib.suppress(ConnectionError, OSError):
                pubsub.send("PING")


POSTGRES_SCHEMES = ("postgres", "postgresql")
# broadcaster's `redis-stream://` reads each stream from where it is when a node subscribes
# and keeps no position across its reconnects; taskcast's resume needs the store's history and
# a resync after any gap, which its Redis pub/sub backend (`redis://`) gives on the same Redis.
REFUSED_SCHEMES = {
    "redis-stream": "BROADCAST_URL=redis-stream:// is not supported: broadcaster's stream "
    "backend keeps no position across reconnects, so events can be missed without a resync. "
    "Use the same Redis with redis:// (the default when BROADCAST_URL is unset)."
}


def check_broadcast_url(url: str) -> None:
    """Refuse, with the reason, a broadcaster URL taskcast cannot deliver over reliably."""
    reason = REFUSED_SCHEMES.get(urlparse(url).scheme)
    if reason is not None:
        raise ValueError(reason)


def event_limit(url: str) -> int | None:
    """The largest event the transport at `url` carries, when it is below taskcast's own."""
    if urlparse(url).scheme in POSTGRES_SCHEMES:
        from .postgres import EVENT_MAX_BYTES

        return EVENT_MAX_BYTES
    return None


def make_backend(url: str) -> BroadcastBackend:
    """broadcaster's backend for `url`: ours for Redis and PostgreSQL, broadcaster's own for
    others (Kafka, memory)."""
    check_broadcast_url(url)
    scheme = urlparse(url).scheme
    if scheme in REDIS_SCHEMES:
        return RedisBackend(url)
    if scheme in POSTGRES_SCHEMES:
        from .postgres import PostgresBackend  # it builds on this module's control channel

        return PostgresBackend(url)
    return Broadcast(url)._backend  # broadcaster builds its stock backends only in Broadcast


def make_broadcast(url: str) -> Broadcast:
    """`Broadcast` over `make_backend(url)`: what a publish-only process (a worker) holds."""
    return Broadcast(backend=make_backend(url))


def shares_redis(broadcast_url: str, redis_url: str) -> bool:
    """True when broadcaster's pub/sub is the store's own Redis: the store can publish itself."""
    return broadcast_url == redis_url and urlparse(redis_url).scheme in REDIS_SCHEMES


def backend_connected(backend: BroadcastBackend) -> bool:
    """True when the backend's listener is connected (stock backends: assumed)."""
    return backend.connected.is_set() if isinstance(backend, RedisBackend) else True
