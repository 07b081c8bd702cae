"""The hub on real Redis: fan-out, replay then live with no gap or duplicate, order; sessions."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from taskcast.realtime.backend import RedisBackend, make_backend
from taskcast.realtime.emitter import Emitter
from taskcast.realtime.events import encode_event, make_event
from taskcast.realtime.hub import Hub
from taskcast.realtime.protocol import WS_4008_SLOW_CONSUMER, encode
from taskcast.realtime.publisher import Publisher
from taskcast.realtime.session import Session
from taskcast.realtime.store import Store
from taskcast.realtime.tokens import Principal

ALL = 1 << 30  # history bytes that keep every event a test emits

pytestmark = pytest.mark.anyio

Frame = dict[str, Any]
Parts = tuple[Hub, Publisher, Store, RedisBackend]


def framing(text: str) -> bytes:
    """A frame on the test socket: a line (the hub may write several frames at once)."""
    return text.encode() + b"\n"


@pytest.fixture(params=["direct", "queued"])
def socket_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A hub test twice: with sockets the hub may write to directly, and with queued ones."""
    Client.direct_by_default = request.param == "direct"
    yield
    Client.direct_by_default = True


class Client:
    """A session whose socket is a list: what the hub would have written, decoded.

    Unless `direct` is off, the socket also offers the direct write that uvicorn's sockets
    offer the hub: a frame goes out at once, unless `paused` (a full buffer)."""

    direct_by_default = True

    def __init__(
        self,
        hub: Hub,
        user: str = "alice",
        direct: bool | None = None,
        framed: Callable[[str], bytes] = framing,
    ) -> None:
        self.frames: list[Frame] = []
        self.written_directly = 0
        self.writes = 0  # calls of the socket's write: one per event, or per burst of them
        self.closed_with: int | None = None
        self.paused = False
        self._changed = asyncio.Event()
        self.hub = hub
        if direct is None:
            direct = self.direct_by_default
        self.session = Session(
            self._send,
            self._close,
            Principal(user, frozenset({"admin"})),
            direct=self._direct if direct else None,
            framing=framed if direct else None,
        )
        hub.add(self.session)

    async def _send(self, text: str) -> None:
        self.frames.append(json.loads(text))
        self._changed.set()

    def _direct(self) -> Callable[[bytes], object] | None:
        return None if self.paused else self._write

    def _write(self, data: bytes) -> None:
        lines = data.splitlines()
        self.frames.extend(json.loads(line) for line in lines)
        self.written_directly += len(lines)  # frames that took the direct path
        self.writes += 1
        self._changed.set()

    def pause(self, paused: bool = True) -> None:
        """The socket's buffer fills (or drains), as a transport's pause_writing says."""
        self.paused = paused
        self.session.changed()

    async def _close(self, code: int, reason: str) -> None:
        self.closed_with = code
        self._changed.set()

    async def subscribe(
        self, channel: str, since: int | None = None, epoch: str | None = None
    ) -> Frame:
        frame, replay = await self.hub.subscribe(self.session, channel, since, epoch)
        self.session.push(encode(frame))
        self.hub.finish_subscribe(self.session, channel, replay)
        return frame

    def events(self, channel: str | None = None) -> list[Frame]:
        return [f for f in self.frames if f["type"] == "event" and channel in (None, f["channel"])]

    def seqs(self, channel: str) -> list[int]:
        return [f["seq"] for f in self.events(channel)]

    async def wait(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        try:
            with anyio.fail_after(timeout):
                while not check():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"condition not met; last frames {self.frames[-5:]}") from None

    async def wait_seq(self, channel: str, seq: int, timeout: float = 10.0) -> None:
        await self.wait(lambda: seq in self.seqs(channel), timeout)


@pytest.fixture
async def parts(redis_url: str, socket_kind: None) -> AsyncIterator[Parts]:
    redis = Redis.from_url(redis_url, socket_timeout=5.0)
    store = Store(redis, history_size=5000, history_ttl=600, history_max_bytes=ALL)
    backend = RedisBackend(redis_url)
    await backend.connect()
    async with Hub(backend, store) as hub:
        yield hub, Publisher(store, backend), store, backend
        for session in list(hub.sessions):
            await hub.remove(session)
    await backend.disconnect()
    await redis.aclose()


async def say(publisher: Publisher, n: int = 1, topic: str = "system") -> None:
    for i in range(n):
        await publisher.emit("system.message", data={"message": f"m{i}"}, topic=topic)


async def test_two_sessions_on_one_channel_get_identical_frames(parts: Parts) -> None:
    """Two sessions subscribed to one channel receive the same frames, in the same order."""
    hub, publisher, _, _ = parts
    a, b = Client(hub), Client(hub, "bob")
    await a.subscribe("topic:system")
    await b.subscribe("topic:system")
    await say(publisher, 20)
    await a.wait_seq("topic:system", 20)
    await b.wait_seq("topic:system", 20)
    assert a.events() == b.events()
    assert a.seqs("topic:system") == list(range(1, 21))
    assert len(hub.channels) == 1  # one broadcaster subscription per channel on this node


async def test_only_subscribed_channels_are_delivered(parts: Parts) -> None:
    """A session gets nothing from channels it never subscribed to or has unsubscribed from."""
    hub, publisher, _, _ = parts
    client = Client(hub)
    await client.subscribe("topic:system")
    await client.subscribe("topic:orders")
    await publisher.emit("order.cancelled", data={"order_id": "o1"})
    await client.wait_seq("topic:orders", 1)
    assert hub.unsubscribe(client.session, "topic:orders")
    await publisher.emit("order.cancelled", data={"order_id": "o2"})
    await publisher.emit("client.created", data={"client_id": "c1"})
    await say(publisher)  # a marker on a subscribed channel, published last
    await client.wait_seq("topic:system", 1)
    assert {f["channel"] for f in client.events()} == {"topic:orders", "topic:system"}
    assert client.seqs("topic:orders") == [1]


async def test_since_replays_history_then_goes_live(parts: Parts) -> None:
    """subscribe with since=N gets recovered:true, then N+1..S from history, then live events."""
    hub, publisher, _, _ = parts
    await say(publisher, 5)
    client = Client(hub)
    frame = await client.subscribe("topic:system", since=2)
    assert frame["recovered"] is True
    assert frame["seq"] == 5
    await client.wait_seq("topic:system", 5)
    await say(publisher, 3)
    await client.wait_seq("topic:system", 8)
    assert client.seqs("topic:system") == [3, 4, 5, 6, 7, 8]
    assert client.frames[0]["type"] == "subscribed"


async def test_wrong_epoch_or_lost_history_is_not_recovered(parts: Parts) -> None:
    """A wrong epoch, or a since beyond the stream, answers recovered:false and goes live."""
    hub, publisher, _, _ = parts
    await say(publisher, 3)
    client = Client(hub)
    frame = await client.subscribe("topic:system", since=1, epoch="not-the-epoch")
    assert frame["recovered"] is False
    other = Client(hub)
    ahead = await other.subscribe("topic:system", since=99)
    assert ahead["recovered"] is False
    await say(publisher)
    await client.wait_seq("topic:system", 4)
    await other.wait_seq("topic:system", 4)
    assert client.seqs("topic:system") == [4]
    assert other.seqs("topic:system") == [4]


@pytest.mark.timeout(60)
async def test_subscribe_during_concurrent_publishing_sees_each_seq_once(parts: Parts) -> None:
    """Subscribing while events are published: each seq after the start exactly once, in order."""
    hub, publisher, _, _ = parts
    rng = random.Random(7)
    mid_stream = 0  # subscriptions answered while the producer was part-way through
    for iteration in range(25):
        channel = (
            f"topic:{['orders', 'clients', 'inventory', 'notifications', 'system'][iteration % 5]}"
        )
        topic = channel.split(":")[1]
        total = 40
        before = rng.randint(0, 10)
        for _ in range(before):
            await publisher.emit("system.message", data={"message": "x"}, topic=topic)
        start = (await publisher.store.read(channel)).seq

        async def produce(topic: str = topic, total: int = total) -> None:
            for _ in range(total):
                await publisher.emit("system.message", data={"message": "y"}, topic=topic)
                if rng.random() < 0.3:
                    await asyncio.sleep(0)

        clients = [Client(hub) for _ in range(3)]
        sinces = [None, rng.randint(max(0, start - 3), start), start]
        producer = asyncio.create_task(produce())
        frames = []
        for client, since in zip(clients, sinces, strict=True):
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)
            frames.append(await client.subscribe(channel, since=since))
            mid_stream += start < frames[-1]["seq"] < start + total
        await producer
        final = start + total
        for client, frame, since in zip(clients, frames, sinces, strict=True):
            await client.wait_seq(channel, final)
            first = frame["seq"] + 1 if since is None else since + 1
            assert client.seqs(channel) == list(range(first, final + 1)), (iteration, since, frame)
            await hub.remove(client.session)
    assert mid_stream >= 10, mid_stream  # the race this test is about did happen


@pytest.mark.timeout(60)
async def test_subscribe_while_another_thread_emits_sees_each_seq_once(
    parts: Parts, redis_url: str
) -> None:
    """With a worker-style emitter thread publishing, late joiners see every later seq once."""
    hub, _, store, _ = parts
    emitter = Emitter(redis_url, history_size=5000, history_ttl=600, history_max_bytes=ALL)
    rng = random.Random(11)
    total = 600
    clients: list[tuple[Client, Frame, int | None]] = []
    # Client k joins once the producer has emitted 40k + 20 events; the producer goes on
    # emitting meanwhile, but waits at 40k + 40 for it to have joined: every join is mid-stream.
    reached = [threading.Event() for _ in range(12)]
    joined = [threading.Event() for _ in range(12)]

    def produce() -> None:
        for i in range(total):
            emitter.emit("client.updated", data={"client_id": f"c{i}", "changes": {}})
            k, step = divmod(i, 40)
            if k < len(joined) and step == 19:
                reached[k].set()
            elif k < len(joined) and step == 39:
                assert joined[k].wait(30), f"client {k} never joined"
            if i % 20 == 19:
                time.sleep(0.005)  # pacing, like a task doing work between emits
        assert emitter.flush(timeout=30)

    producer = asyncio.create_task(anyio.to_thread.run_sync(produce))
    for k in range(len(joined)):
        assert await anyio.to_thread.run_sync(reached[k].wait, 30)
        seq = (await store.read("topic:clients")).seq
        since = rng.choice([None, seq, max(0, seq - rng.randint(0, 50))])
        client = Client(hub)
        clients.append((client, await client.subscribe("topic:clients", since=since), since))
        joined[k].set()
        await asyncio.sleep(rng.uniform(0, 0.01))
    await producer
    mid_stream = 0
    for client, frame, since in clients:
        first = frame["seq"] + 1 if since is None else since + 1
        if first <= total:
            await client.wait_seq("topic:clients", total)
        assert client.seqs("topic:clients") == list(range(first, total + 1)), (since, frame)
        mid_stream += 0 < frame["seq"] < total
    assert mid_stream >= len(clients) - 1, mid_stream  # the first may join before a store


@pytest.mark.timeout(60)
async def test_long_replay_then_live_while_publishing(parts: Parts) -> None:
    """Catching up on 3000 events of history while more are published: every seq once, in order."""
    hub, publisher, store, _ = parts
    batch: list[tuple[dict[str, Any], str | None]] = [
        (make_event("system.message", {"message": str(i)}), "system") for i in range(3000)
    ]
    await publisher.publish_many(batch)

    async def produce() -> None:
        for _ in range(200):
            await say(publisher)

    producer = asyncio.create_task(produce())
    client = Client(hub)
    frame = await client.subscribe("topic:system", since=0)
    assert frame["recovered"] is True
    await producer
    await client.wait_seq("topic:system", 3200, timeout=30)
    assert client.seqs("topic:system") == list(range(1, 3201))
    assert (await store.read("topic:system")).seq == 3200


async def test_a_socket_written_to_directly_that_fills_up_misses_nothing(parts: Parts) -> None:
    """Events go straight to a caught-up socket; while its buffer is full they queue instead,
    and once it drains they go straight again: every seq once, in order. Once it leaves the
    channel, nothing more is written to it."""
    hub, publisher, _, _ = parts
    client, witness = Client(hub, direct=True), Client(hub, direct=False)
    await client.subscribe("topic:system")
    await witness.subscribe("topic:system")
    await client.wait(lambda: bool(client.frames) and client.session.queued == 0)
    await say(publisher, 5)
    await client.wait_seq("topic:system", 5)
    assert client.written_directly == 5
    client.pause()
    await say(publisher, 3)
    await client.wait_seq("topic:system", 8)
    assert client.written_directly == 5  # queued, sent by the writer
    client.pause(False)
    await say(publisher, 3)
    await client.wait_seq("topic:system", 11)
    assert client.written_directly == 8
    assert client.seqs("topic:system") == list(range(1, 12))
    assert hub.unsubscribe(client.session, "topic:system")
    await say(publisher)
    await witness.wait_seq("topic:system", 12)
    assert client.seqs("topic:system") == list(range(1, 12))
    assert witness.seqs("topic:system") == list(range(1, 13))
    assert witness.written_directly == 0


async def test_events_read_together_reach_a_direct_socket_in_one_write(parts: Parts) -> None:
    """A channel's events read from Redis together go to a direct socket in one write, in
    order. A socket whose history ran ahead of them moves to the direct path in the middle
    of such a burst: it gets each seq once, and none of what was meant for the others."""
    hub, _, store, backend = parts

    async def stored(first: int, count: int) -> list[tuple[str, str]]:
        batch = [
            (make_event("system.message", {"message": str(i)}), "system")
            for i in range(first, first + count)
        ]
        results = await store.append_many([(e, encode_event(e), t) for e, t in batch])
        return [m for result in results for m in result.messages]

    ahead = Client(hub, "ahead", direct=True)
    live = Client(hub, "live", direct=True)
    await live.subscribe("topic:system")
    messages = await stored(1, 5)  # in history, not yet published
    await ahead.subscribe("topic:system", since=0)
    await ahead.wait(lambda: ahead.seqs("topic:system") == [1, 2, 3, 4, 5])
    await ahead.wait(lambda: ahead.session.queued == 0)
    messages += await stored(6, 25)
    # Concurrent publishes leave in one pipeline, so the hub reads them in one or a few reads.
    await asyncio.gather(*(backend.publish(channel, raw) for channel, raw in messages))
    await live.wait_seq("topic:system", 30)
    await ahead.wait_seq("topic:system", 30)
    assert live.seqs("topic:system") == list(range(1, 31))
    assert live.written_directly == 30
    assert live.writes < 30
    assert ahead.seqs("topic:system") == list(range(1, 31))
    assert ahead.written_directly == 25  # direct from the first seq its history had not sent


async def test_sockets_framed_two_ways_on_one_channel_each_get_their_own_bytes(
    parts: Parts,
) -> None:
    """Plain and compressed sockets on one channel (two framings) are all written to
    directly, each event framed once per framing, and each socket gets every seq in order,
    also while one of a kind is paused and resumed."""
    hub, publisher, _, _ = parts
    framed: list[str] = []

    def counted(text: str) -> bytes:
        framed.append(text)
        return framing(text)

    plain = [Client(hub, "p1", direct=True), Client(hub, "p2", direct=True)]
    other = [Client(hub, name, direct=True, framed=counted) for name in ("c1", "c2")]
    for client in plain + other:
        await client.subscribe("topic:inventory")
        await client.wait(lambda c=client: bool(c.frames) and c.session.queued == 0)
    await say(publisher, 4, "inventory")
    for client in plain + other:
        await client.wait_seq("topic:inventory", 4)
        assert client.written_directly == 4
    assert len(framed) == 4  # once per event for both sockets of its kind
    other[0].pause()
    await say(publisher, 4, "inventory")
    for client in plain + other[1:]:
        await client.wait_seq("topic:inventory", 8)
    other[0].pause(False)
    await say(publisher, 4, "inventory")
    for client in plain + other:
        await client.wait_seq("topic:inventory", 12)
        assert client.seqs("topic:inventory") == list(range(1, 13))
    assert other[1].written_directly == 12
    assert len(framed) == 12


async def test_one_socket_filling_up_moves_only_itself_on_each_of_its_channels(
    parts: Parts,
) -> None:
    """A socket on two channels whose buffer fills gets neither channel's events directly
    until it drains, while the other sockets on them still do; one joins and one leaves
    meanwhile. Everyone gets every seq of their channels once, in order."""
    hub, publisher, _, _ = parts
    both = Client(hub, "both", direct=True)
    a_only, b_only = Client(hub, "a", direct=True), Client(hub, "b", direct=True)
    for client, channels in (
        (both, ("system", "clients")),
        (a_only, ("system",)),
        (b_only, ("clients",)),
    ):
        for name in channels:
            await client.subscribe(f"topic:{name}")
        await client.wait(lambda c=client: bool(c.frames) and c.session.queued == 0)
    await say(publisher, 3, "system")
    await say(publisher, 3, "clients")
    await both.wait(lambda: len(both.events()) == 6)
    assert both.written_directly == 6
    both.pause()
    await say(publisher, 3, "system")
    await say(publisher, 3, "clients")
    await a_only.wait_seq("topic:system", 6)
    await b_only.wait_seq("topic:clients", 6)
    await both.wait(lambda: len(both.events()) == 12)
    assert both.written_directly == 6  # queued on both channels, sent by the writer
    assert a_only.written_directly == 6
    assert b_only.written_directly == 6
    late = Client(hub, "late", direct=True)
    await late.subscribe("topic:system")
    assert hub.unsubscribe(b_only.session, "topic:clients")
    both.pause(False)
    await say(publisher, 3, "system")
    await say(publisher, 3, "clients")
    await late.wait_seq("topic:system", 9)
    await both.wait(lambda: len(both.events()) == 18)
    assert both.written_directly == 12
    assert both.seqs("topic:system") == both.seqs("topic:clients") == list(range(1, 10))
    assert a_only.seqs("topic:system") == list(range(1, 10))
    assert b_only.seqs("topic:clients") == list(range(1, 7))
    assert late.seqs("topic:system") == [7, 8, 9]


async def test_idle_channel_is_released_and_rejoining_still_delivers(parts: Parts) -> None:
    """A channel nobody watches is dropped after the grace period; joining again still delivers."""
    hub, publisher, _, _ = parts
    hub.idle_grace = 0.01
    for round_ in range(1, 21):
        client = Client(hub)
        await client.subscribe("topic:system")
        await say(publisher)
        await client.wait_seq("topic:system", round_)
        await hub.remove(client.session)
        with anyio.fail_after(5):
            while "topic:system" in hub.channels:  # noqa: ASYNC110 - the reaper is a timer
                await asyncio.sleep(0)  # rejoin the moment the channel is dropped


async def test_a_mass_disconnect_releases_its_channels_in_a_few_commands(
    parts: Parts, redis_url: str
) -> None:
    """1,000 channels left at once are all unsubscribed from Redis, in a few batched commands
    rather than a task and a write each (the node would stall); one joined again while they
    are released still delivers."""
    hub, publisher, _, _ = parts
    redis = Redis.from_url(redis_url)
    names = ["topic:system"] + [f"topic:m{i}" for i in range(1, 1000)]  # any name will do
    clients = [Client(hub, f"u{i}") for i in range(1000)]
    for name, client in zip(names, clients, strict=True):
        await client.subscribe(name)
    subscribed = len(await redis.pubsub_channels())

    async def unsubscribes() -> int:
        stats = await redis.info("commandstats")
        return int(stats.get("cmdstat_unsubscribe", {}).get("calls", 0))

    before = await unsubscribes()
    hub.idle_grace = 0.01
    for client in clients:
        await hub.remove(client.session)
    with anyio.fail_after(5):
        while any(name in hub.channels for name in names):  # noqa: ASYNC110
            await asyncio.sleep(0)  # rejoin the moment the release starts
    back = Client(hub)
    await back.subscribe("topic:system")
    await say(publisher)
    await back.wait_seq("topic:system", 1)
    with anyio.fail_after(10):
        while len(await redis.pubsub_channels()) != subscribed - 999:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # Redis sends no notice of this: poll it
    sent = await unsubscribes() - before
    assert sent <= 100, f"{sent} UNSUBSCRIBE commands for 999 idle channels"
    await redis.aclose()


async def test_out_of_order_arrival_is_delivered_in_order(parts: Parts) -> None:
    """Messages published in reverse seq order (5 after 6) still reach the session as 5, 6."""
    hub, publisher, store, broadcast = parts
    await say(publisher, 4)
    client = Client(hub)
    await client.subscribe("topic:system")
    stored = []
    for i in (5, 6):
        event = make_event("system.message", {"message": f"m{i}"})
        stored.append(await store.append(event, encode_event(event), "system"))
    ((channel6, message6),) = stored[1].messages
    ((channel5, message5),) = stored[0].messages
    await broadcast.publish(channel6, message6)
    await broadcast.publish(channel5, message5)
    await client.wait_seq("topic:system", 6)
    assert client.seqs("topic:system") == [5, 6]


async def test_a_never_published_seq_is_filled_from_history(parts: Parts) -> None:
    """If seq 5 is stored but never published, seq 6 arriving makes the hub fetch 5 from history."""
    hub, publisher, store, _ = parts
    await say(publisher, 4)
    client = Client(hub)
    await client.subscribe("topic:system")
    event = make_event("system.message", {"message": "lost"})
    await store.append(event, encode_event(event), "system")  # stored, never published
    await say(publisher)
    await client.wait_seq("topic:system", 6)
    assert client.seqs("topic:system") == [5, 6]
    assert client.events()[0]["event"]["data"]["message"] == "lost"


async def test_lost_stream_restarts_with_recovered_false(parts: Parts, redis_url: str) -> None:
    """When the channel's Redis data is lost, subscribers are told (recovered:false, new epoch)."""
    hub, publisher, _, _ = parts
    client = Client(hub)
    first = await client.subscribe("topic:system")
    await say(publisher, 3)
    await client.wait_seq("topic:system", 3)
    flusher = Redis.from_url(redis_url)
    await flusher.flushall()
    await flusher.aclose()
    await say(publisher, 2)
    await client.wait(lambda: len([f for f in client.frames if f["type"] == "subscribed"]) == 2)
    restart = [f for f in client.frames if f["type"] == "subscribed"][1]
    assert restart["recovered"] is False
    assert restart["epoch"] != first["epoch"]
    await client.wait(
        lambda: client.frames[-1].get("seq") == 2 and client.frames[-1]["type"] == "event"
    )
    tail = client.frames[client.frames.index(restart) + 1 :]
    assert [f["seq"] for f in tail if f["type"] == "event"] == list(range(restart["seq"] + 1, 3))


async def test_a_replay_that_finds_redis_behind_the_node_is_told_once(
    parts: Parts, redis_url: str
) -> None:
    """Redis came back older than what the node relayed: a subscriber catching up meanwhile
    gets one `recovered: false` under a new epoch, as do the live ones, then the stream."""
    hub, publisher, _, _ = parts
    live = Client(hub)
    first = await live.subscribe("topic:system")
    await say(publisher, 10)
    await live.wait_seq("topic:system", 10)
    rollback = Redis.from_url(redis_url)
    await rollback.hset("tc:c:topic:system", "seq", 4)
    await rollback.ltrim("tc:h:topic:system", 0, 3)
    await rollback.aclose()

    late = Client(hub)
    await late.subscribe("topic:system", since=0)

    def notices(client: Client) -> list[Frame]:
        frames = client.frames
        return [f for f in frames if f["type"] == "subscribed" and f.get("recovered") is False]

    await late.wait(lambda: len(notices(late)) == 1)
    await live.wait(lambda: len(notices(live)) == 1)
    await say(publisher, 1)
    for client in (live, late):
        await client.wait(lambda c=client: c.frames[-1].get("seq") == 5)  # type: ignore[misc]
        assert len(notices(client)) == 1
        assert notices(client)[0]["epoch"] != first["epoch"]


# -- Session: the per-connection queue, with a socket we can stall --------------------------


class StalledSocket:
    """A send that blocks until released, so frames pile up in the session's queue."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.release = asyncio.Event()
        self.done = asyncio.Event()

    async def send(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = code
        self.done.set()


def progress(seq: int, task: str = "t1") -> str:
    return json.dumps(
        {"type": "event", "seq": seq, "event": {"type": "task.progress", "task_id": task}}
    )


def other(seq: int) -> str:
    return json.dumps({"type": "event", "seq": seq, "event": {"type": "system.message"}})


async def drain(session: Session, sock: StalledSocket) -> None:
    sock.release.set()
    with anyio.fail_after(5):
        while session.queued:  # noqa: ASYNC110 - the writer empties a plain deque
            await anyio.sleep(0.01)


async def test_slow_consumer_is_closed_with_4008() -> None:
    """A session whose queue exceeds its bound with non-progress frames closes with 4008."""
    sock = StalledSocket()
    session = Session(sock.send, sock.close, Principal("a", frozenset()), max_frames=32)
    for seq in range(1, 40):
        session.push(other(seq))
    assert session.closed
    sock.release.set()
    with anyio.fail_after(5):
        await sock.done.wait()
    assert sock.closed_with == WS_4008_SLOW_CONSUMER
    await session.stop()


async def test_byte_bound_closes_too() -> None:
    """The queue is bounded in bytes as well: big frames that do not fit close with 4008."""
    sock = StalledSocket()
    session = Session(
        sock.send, sock.close, Principal("a", frozenset()), max_frames=1000, max_bytes=10_000
    )
    for seq in range(1, 20):
        session.push(json.dumps({"type": "event", "seq": seq, "pad": "x" * 1000}))
    sock.release.set()
    with anyio.fail_after(5):
        await sock.done.wait()
    assert sock.closed_with == WS_4008_SLOW_CONSUMER
    await session.stop()


async def test_progress_coalesces_under_pressure_and_nothing_else_is_dropped() -> None:
    """Under pressure queued progress of a task gives way to newer; other frames all arrive."""
    sock = StalledSocket()
    session = Session(sock.send, sock.close, Principal("a", frozenset()), max_frames=64)
    seq = 0
    pushed_other: list[int] = []
    for _ in range(30):
        seq += 1
        session.push(other(seq))
        pushed_other.append(seq)
        for _ in range(5):
            seq += 1
            session.push(progress(seq), "t1")
    assert not session.closed
    await drain(session, sock)
    sent = [json.loads(t) for t in sock.sent]
    seqs = [f["seq"] for f in sent]
    assert seqs == sorted(seqs)
    assert [f["seq"] for f in sent if f["event"]["type"] == "system.message"] == pushed_other
    progress_seqs = [f["seq"] for f in sent if f["event"]["type"] == "task.progress"]
    assert progress_seqs[-1] == seq  # the newest progress always survives
    assert len(progress_seqs) < 150  # coalesced
    assert sock.closed_with is None
    await session.stop()


async def test_idle_session_sees_every_progress_frame() -> None:
    """A session that keeps up is not coalesced: every progress frame is sent."""
    sock = StalledSocket()
    sock.release.set()
    session = Session(sock.send, sock.close, Principal("a", frozenset()))
    for seq in range(1, 11):
        session.push(progress(seq), "t1")
    await drain(session, sock)
    assert [json.loads(t)["seq"] for t in sock.sent] == list(range(1, 11))
    await session.stop()


async def test_frame_fitting_after_coalescing_is_not_dropped() -> None:
    """A frame that fits once coalesced progress is compacted away is queued, not dropped."""
    sock = StalledSocket()
    session = Session(sock.send, sock.close, Principal("a", frozenset()), max_frames=20)
    for seq in range(1, 17):
        session.push(other(seq))
    for seq in range(17, 21):
        session.push(progress(seq), "t1")  # three of these become tombstones
    session.push(other(21))
    assert not session.closed
    await drain(session, sock)
    sent = [json.loads(t)["seq"] for t in sock.sent]
    assert sent == [*range(1, 17), 20, 21]
    await session.stop()


class DirectSocket(StalledSocket):
    """A socket with a synchronous send too, which refuses while `paused` (a full buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.direct: list[str] = []

    def send_nowait(self, text: str) -> bool:
        if self.paused:
            return False
        self.sent.append(text)
        self.direct.append(text)
        return True


async def test_direct_send_is_used_when_nothing_waits() -> None:
    """With an idle socket every frame goes out at once, without the writer task."""
    sock = DirectSocket()
    session = Session(
        sock.send, sock.close, Principal("a", frozenset()), send_nowait=sock.send_nowait
    )
    for seq in range(1, 4):
        session.push(other(seq))
    assert [json.loads(t)["seq"] for t in sock.direct] == [1, 2, 3]
    assert session.queued == 0
    await session.stop()


async def test_direct_send_never_overtakes_a_queued_or_sending_frame() -> None:
    """A frame refused while the socket was full is queued; later frames wait behind it (and
    behind a send in progress) even once the socket could take them directly."""
    sock = DirectSocket()
    session = Session(
        sock.send, sock.close, Principal("a", frozenset()), send_nowait=sock.send_nowait
    )
    sock.paused = True
    session.push(other(1))  # refused: queued; the writer task has not run yet
    sock.paused = False
    session.push(other(2))  # the socket would take it, but frame 1 is queued before it
    assert sock.direct == []
    await drain(session, sock)
    sock.release.clear()
    sock.paused = True
    session.push(other(3))  # refused: queued; the writer takes it and blocks in send
    sock.paused = False
    with anyio.fail_after(5):
        while session.queued:  # noqa: ASYNC110 - the writer takes frame 3 into its send
            await anyio.sleep(0.001)
    session.push(other(4))  # nothing queued, but frame 3 is still being sent
    assert sock.direct == []
    await drain(session, sock)
    with anyio.fail_after(5):
        while len(sock.sent) < 4:  # noqa: ASYNC110 - the writer sends frame 4 after 3
            await anyio.sleep(0.001)
    assert [json.loads(t)["seq"] for t in sock.sent] == [1, 2, 3, 4]
    session.push(other(5))  # all sent: direct again
    assert [json.loads(t)["seq"] for t in sock.direct] == [5]
    await session.stop()


class SlowToLeave(RedisBackend):
    """A backend whose unsubscribe takes a while, as any backend's round trip can."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.left = asyncio.Event()

    async def unsubscribe(self, channel: str) -> None:
        await asyncio.sleep(0.05)
        await super().unsubscribe(channel)
        self.left.set()


async def test_rejoining_while_the_unsubscribe_is_in_flight_still_delivers(
    redis_url: str, socket_kind: None
) -> None:
    """A channel dropped and joined again at once: the old UNSUBSCRIBE lands before the new
    SUBSCRIBE, so the new subscriber is not left deaf."""
    redis = Redis.from_url(redis_url, socket_timeout=5.0)
    store = Store(redis, history_size=50, publish=True)
    backend = SlowToLeave(redis_url)
    await backend.connect()
    async with Hub(backend, store, idle_grace=0.0) as hub:
        first = Client(hub)
        await first.subscribe("topic:system")
        await hub.remove(first.session)
        with anyio.fail_after(5):
            while "topic:system" in hub.channels:  # noqa: ASYNC110 - the reaper is a timer
                await asyncio.sleep(0)  # rejoin the moment the channel is dropped
        second = Client(hub)
        await second.subscribe("topic:system")
        with anyio.fail_after(5):
            await backend.left.wait()
        await say(Publisher(store, backend), 3)
        await second.wait_seq("topic:system", 3, timeout=5)
        await hub.remove(second.session)
    await backend.disconnect()
    await redis.aclose()


async def test_a_stock_broadcaster_backend_relays_too(redis_url: str, socket_kind: None) -> None:
    """With a non-Redis BROADCAST_URL (broadcaster's memory backend here) the hub still
    relays every event in order: the publisher publishes through that backend."""
    redis = Redis.from_url(redis_url, socket_timeout=5.0)
    store = Store(redis, history_size=50)
    backend = make_backend("memory://")
    await backend.connect()
    async with Hub(backend, store) as hub:
        client = Client(hub)
        await client.subscribe("topic:system")
        await say(Publisher(store, backend), 5)
        await client.wait_seq("topic:system", 5)
        assert client.seqs("topic:system") == [1, 2, 3, 4, 5]
        await hub.remove(client.session)
    await backend.disconnect()
    await redis.aclose()


async def test_a_foreign_message_on_a_channel_is_ignored(parts: Parts) -> None:
    """Something else PUBLISHing junk on a channel's name does not stop the node's relay."""
    hub, publisher, _, backend = parts
    client = Client(hub)
    await client.subscribe("topic:system")
    await backend.publish("topic:system", "not a taskcast message")
    await say(publisher, 2)
    await client.wait_seq("topic:system", 2)
    assert client.seqs("topic:system") == [1, 2]
