"""Our broadcaster backend on real Redis: it delivers, in order, from confirmed subscriptions."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
import redis
from broadcaster import Broadcast, Event
from redis.asyncio import Redis

from taskcast.realtime import metrics
from taskcast.realtime.backend import (
    CONTROL_CHANNEL,
    RESYNC,
    RedisBackend,
    make_broadcast,
    shares_redis,
)

from .processes import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def broadcast(redis_url: str) -> AsyncIterator[Broadcast]:
    async with Broadcast(backend=RedisBackend(redis_url)) as b:
        yield b


async def next_event(subscriber: object, timeout: float = 5.0) -> Event:
    with anyio.fail_after(timeout):
        return await subscriber.get()  # type: ignore[attr-defined,no-any-return]


# The versions are in the test id, so `pytest -v` output records what this was proven on.
RUNTIME = f"python{sys.version.split()[0]}-redis-py{redis.__version__}"


@pytest.mark.parametrize("runtime", [RUNTIME])
async def test_delivers_on_python_311_with_redis_py_8(broadcast: Broadcast, runtime: str) -> None:
    """On Python 3.11 with redis-py 8, where the stock backend delivers nothing, ours delivers."""
    print(runtime)
    assert sys.version_info[:2] == (3, 11), sys.version
    assert int(redis.__version__.split(".")[0]) >= 8, redis.__version__
    async with broadcast.subscribe("user:alice") as subscriber:
        for i in range(5):
            await broadcast.publish("user:alice", f"hello {i}")
        got = [(await next_event(subscriber)) for _ in range(5)]
    assert [(e.channel, e.message) for e in got] == [("user:alice", f"hello {i}") for i in range(5)]


async def test_publish_immediately_after_subscribe_is_received(redis_url: str) -> None:
    """subscribe returns only once Redis confirmed it: a publish right after it is never lost."""
    other = Redis.from_url(redis_url)
    try:
        for i in range(20):
            async with (
                Broadcast(backend=RedisBackend(redis_url)) as b,
                b.subscribe(f"task:t{i}") as subscriber,
            ):
                # Published by another client, with no pause after subscribe returned.
                assert await other.publish(f"task:t{i}", "first") == 1
                event = await next_event(subscriber)
                assert event.message == "first"
    finally:
        await other.aclose()


async def test_concurrent_publishes_arrive_in_call_order(broadcast: Broadcast) -> None:
    """1000 concurrent publishes (pipelined together) arrive complete and in call order."""
    async with broadcast.subscribe("topic:orders") as subscriber:
        await asyncio.gather(*(broadcast.publish("topic:orders", str(i)) for i in range(1000)))
        got = [int((await next_event(subscriber)).message) for _ in range(1000)]
    assert got == list(range(1000))


async def test_channels_are_separate_and_unsubscribe_stops_delivery(
    broadcast: Broadcast, redis_url: str
) -> None:
    """A subscriber gets only its channel; after unsubscribing, Redis has no subscriber left."""
    async with broadcast.subscribe("user:a") as sub_a, broadcast.subscribe("user:b") as sub_b:
        await broadcast.publish("user:b", "for b")
        await broadcast.publish("user:a", "for a")
        assert (await next_event(sub_a)).message == "for a"
        assert (await next_event(sub_b)).message == "for b"
    other = Redis.from_url(redis_url)
    try:
        with anyio.fail_after(5):
            while (await other.pubsub_numsub("user:a"))[0][1]:  # noqa: ASYNC110 - polling Redis
                await anyio.sleep(0.02)
    finally:
        await other.aclose()


async def test_full_buffer_drops_then_asks_for_resync(redis_url: str) -> None:
    """When nobody reads, the buffer stays bounded and a resync notice follows what was kept."""
    backend = RedisBackend(redis_url, queue_bound=10)
    await backend.connect()
    other = Redis.from_url(redis_url)
    try:
        await backend.subscribe("topic:system")
        with anyio.fail_after(5):
            assert (await backend.next_published()).message == RESYNC  # the first connect
        before = metrics.COUNTS.buffer_overflows
        async with other.pipeline(transaction=False) as pipe:
            for i in range(50):
                pipe.publish("topic:system", str(i))
            await pipe.execute()
        with anyio.fail_after(5):
            while metrics.COUNTS.buffer_overflows == before:  # noqa: ASYNC110 - a plain counter
                await anyio.sleep(0.01)
        kept: list[str] = []
        with anyio.fail_after(5):
            while True:
                event = await backend.next_published()
                if event.channel == CONTROL_CHANNEL:
                    break
                kept.append(event.message)
        assert 0 < len(kept) <= 10
        assert kept == [str(i) for i in range(len(kept))]
    finally:
        await other.aclose()
        await backend.disconnect()


@pytest.mark.timeout(60)
async def test_reconnects_resubscribes_and_asks_for_resync(
    redis_server: RedisServer, redis_url: str
) -> None:
    """After Redis restarts, the backend reconnects, resubscribes and tells the hub to resync."""
    async with (
        make_broadcast(redis_url) as b,
        b.subscribe(CONTROL_CHANNEL) as control,
        b.subscribe("user:alice") as subscriber,
    ):
        assert (await next_event(control)).message == RESYNC  # the first connect
        await b.publish("user:alice", "before")
        assert (await next_event(subscriber)).message == "before"
        await anyio.to_thread.run_sync(redis_server.restart)
        assert (await next_event(control, timeout=20)).message == RESYNC  # reconnected
        other = Redis.from_url(redis_url)
        try:
            with anyio.fail_after(20):
                # The resubscription is sent before the resync notice; wait until Redis has it.
                while await other.publish("user:alice", "after") == 0:  # noqa: ASYNC110 - polling Redis
                    await anyio.sleep(0.05)
        finally:
            await other.aclose()
        assert (await next_event(subscriber)).message == "after"


def test_the_store_publishes_itself_only_on_its_own_redis() -> None:
    """Storing is publishing only when broadcaster's pub/sub is the store's very Redis."""
    assert shares_redis("redis://h:6379/0", "redis://h:6379/0")
    assert not shares_redis("redis://h:6379/1", "redis://h:6379/0")
    assert not shares_redis("memory://", "redis://h:6379/0")


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        with anyio.fail_after(timeout):
            while not check():  # noqa: ASYNC110 - polling plain state the backend owns
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def test_an_error_on_the_pubsub_link_reconnects_and_asks_for_resync(
    redis_url: str,
) -> None:
    """Redis answering the pub/sub link with an error means the link is not what we think:
    the backend drops it, reconnects, resubscribes and tells the hub to catch up."""
    backend = RedisBackend(redis_url)
    await backend.connect()
    try:
        await backend.subscribe(CONTROL_CHANNEL)
        await backend.subscribe("user:alice")
        with anyio.fail_after(5):
            assert (await backend.next_published()).message == RESYNC  # the first connect
        before = metrics.COUNTS.redis_reconnects
        assert backend._pubsub is not None
        backend._pubsub.send("GET", "k")  # not allowed on a subscribed connection: an error
        with anyio.fail_after(5):
            assert (await backend.next_published()).message == RESYNC
        assert metrics.COUNTS.redis_reconnects == before + 1
        other = Redis.from_url(redis_url)
        try:
            await _until(lambda: backend.connected.is_set(), 5, "reconnected")
            assert await other.publish("user:alice", "after") == 1
        finally:
            await other.aclose()
        with anyio.fail_after(5):
            assert (await backend.next_published()).message == "after"
    finally:
        await backend.disconnect()


@pytest.mark.timeout(30)
async def test_a_silent_link_is_dropped_by_the_watchdog_and_recovered(
    durable: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis that stops answering without closing (a frozen host, a dead NAT entry) is
    noticed by the ping watchdog; once Redis answers again the backend is back, with a
    resync."""
    monkeypatch.setattr("taskcast.realtime.backend.PING_INTERVAL", 0.2)
    backend = RedisBackend(durable.url)
    await backend.connect()
    assert durable.proc is not None
    try:
        await backend.subscribe(CONTROL_CHANNEL)
        with anyio.fail_after(5):
            assert (await backend.next_published()).message == RESYNC
        durable.proc.send_signal(signal.SIGSTOP)
        try:
            await _until(lambda: not backend.connected.is_set(), 10, "the watchdog dropped it")
        finally:
            durable.proc.send_signal(signal.SIGCONT)
        with anyio.fail_after(15):
            assert (await backend.next_published()).message == RESYNC
        assert backend.connected.is_set()
    finally:
        await backend.disconnect()


async def test_a_consumer_gets_each_message_where_it_is_read_in_order(redis_url: str) -> None:
    """With a consumer (the hub) messages skip the buffer and arrive in publish order, a
    channel's messages read together in one call; without one, `next_published` reads them
    again."""
    backend = RedisBackend(redis_url)
    await backend.connect()
    taken: list[tuple[str, list[str]]] = []
    got_all = asyncio.Event()

    def take(channel: str, messages: list[str]) -> None:
        taken.append((channel, messages))
        if sum(len(m) for c, m in taken if c != CONTROL_CHANNEL) == 110:
            got_all.set()

    backend.consume(take)
    other = Redis.from_url(redis_url)
    try:
        await backend.subscribe("user:alice")
        await backend.subscribe("user:bob")
        async with other.pipeline(transaction=False) as pipe:
            for i in range(100):
                pipe.publish("user:alice", str(i))
                if i % 10 == 9:
                    pipe.publish("user:bob", str(i))
            await pipe.execute()
        with anyio.fail_after(5):
            await got_all.wait()
        published = []
        for i in range(100):
            published.append(("user:alice", str(i)))
            if i % 10 == 9:
                published.append(("user:bob", str(i)))
        assert [(c, m) for c, run in taken[1:] for m in run] == published
        # Sent in one pipeline they are read in a few bursts, each channel's run in one call;
        # a run never reaches over another channel's message.
        assert len(taken) < len(published)
        assert all(len(run) == 1 for c, run in taken if c == "user:bob")
        assert taken[0] == (CONTROL_CHANNEL, [RESYNC])  # the first connect, handed over too
        backend.consume(None)
        await other.publish("user:alice", "buffered")
        with anyio.fail_after(5):
            assert (await backend.next_published()).message == "buffered"
    finally:
        await other.aclose()
        await backend.disconnect()
