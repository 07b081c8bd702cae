"""The Redis store: gap-free seqs, capped expiring history, epochs, task state, retries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis

from taskcast.realtime.events import encode_event, make_event
from taskcast.realtime.resp import Pipeline
from taskcast.realtime.store import Message, Store, Stored

pytestmark = pytest.mark.anyio


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5.0)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis, history_size=50, history_ttl=600)


def event(
    type_: str = "system.message", data: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    return make_event(type_, data if data is not None else {"message": "hi"}, **kw)


async def append(store: Store, ev: dict[str, Any], topic: str | None = None) -> Stored:
    return await store.append(ev, encode_event(ev), topic)


def seqs(stored: Stored, channel: str) -> list[int]:
    return [Message.parse(m).seq for c, m in stored.messages if c == channel]


async def test_seqs_are_gap_free_under_concurrent_asyncio_appends(store: Store) -> None:
    """40 asyncio tasks appending 5 events each at once get seq 1..200, each exactly once."""

    async def appender() -> list[int]:
        got: list[int] = []
        for _ in range(5):
            got += seqs(await append(store, event(), "system"), "topic:system")
        return got

    results = await asyncio.gather(*(appender() for _ in range(40)))
    assert sorted(s for r in results for s in r) == list(range(1, 201))
    assert (await store.read("topic:system")).seq == 200


async def test_seqs_are_gap_free_across_threads_and_clients(redis_url: str) -> None:
    """Four threads, each with its own client and loop, appending at once share one gap-free seq."""
    per_thread, threads = 60, 4
    found: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    async def run(raw: bool) -> None:
        client = Redis.from_url(redis_url, socket_timeout=5.0)
        # Half the threads store through redis-py, half through the raw pipeline the emitter uses.
        pipeline = Pipeline(redis_url) if raw else None
        own = Store(client, history_size=1000, pipeline=pipeline)
        start.wait(10)
        try:
            for _ in range(per_thread // 10):
                batch: list[tuple[dict[str, Any], bytes, str | None]] = [
                    (e, encode_event(e), "orders") for e in _orders(10)
                ]
                for stored in await own.append_many(batch):
                    with lock:
                        found.extend(seqs(stored, "topic:orders"))
        finally:
            if pipeline is not None:
                await pipeline.aclose()
            await client.aclose()

    def target(raw: bool) -> None:
        try:
            asyncio.run(run(raw))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    workers = [threading.Thread(target=target, args=(i % 2 == 0,)) for i in range(threads)]
    for w in workers:
        w.start()

    def join() -> None:
        for w in workers:
            w.join(30)

    await anyio.to_thread.run_sync(join)
    assert not errors
    assert sorted(found) == list(range(1, per_thread * threads + 1))


def _orders(n: int) -> list[dict[str, Any]]:
    return [event("order.cancelled", {"order_id": f"o{i}"}) for i in range(n)]


async def test_history_is_capped_at_history_size(redis: Redis) -> None:
    """Only the last TASKCAST_HISTORY_SIZE events are kept; reading from before them is lost."""
    store = Store(redis, history_size=5, history_ttl=600)
    for _ in range(12):
        await append(store, event(), "system")
    assert await redis.llen("tc:h:topic:system") == 5
    kept = await store.read("topic:system", since=7)
    assert kept.recoverable
    assert [m.seq for m in kept.entries] == [8, 9, 10, 11, 12]
    lost = await store.read("topic:system", since=6)
    assert not lost.recoverable
    assert lost.seq == 12


async def history_bytes(redis: Redis, channel: str) -> tuple[int, int]:
    """(total length of the channel's stored messages, the byte count the store keeps)."""
    kept = await redis.lrange(f"tc:h:{channel}", 0, -1)
    return sum(len(m) for m in kept), int(await redis.hget(f"tc:c:{channel}", "bytes") or -1)


async def test_history_stays_under_its_byte_bound(redis: Redis) -> None:
    """Large events trim history oldest first to TASKCAST_HISTORY_MAX_BYTES; a resume from
    before what was trimmed is not recoverable, one from inside it replays every seq."""
    store = Store(redis, history_size=1000, history_ttl=600, history_max_bytes=16 * 1024)
    for i in range(60):
        await append(store, event(data={"message": f"{i} " + "z" * 1000}), "system")
    total, counted = await history_bytes(redis, "topic:system")
    assert total == counted
    assert 15 * 1024 < total <= 16 * 1024
    kept = await redis.llen("tc:h:topic:system")
    assert kept < 60
    first = 60 - kept + 1
    snap = await store.read("topic:system", since=first - 1)
    assert snap.recoverable
    assert [m.seq for m in snap.entries] == list(range(first, 61))
    lost = await store.read("topic:system", since=first - 2)
    assert not lost.recoverable
    assert lost.seq == 60


async def test_history_trims_by_count_and_bytes_together(redis: Redis) -> None:
    """Small events are trimmed by count, and the byte count follows what is popped."""
    store = Store(redis, history_size=5, history_ttl=600, history_max_bytes=16 * 1024)
    for _ in range(12):
        await append(store, event(), "system")
    total, counted = await history_bytes(redis, "topic:system")
    assert await redis.llen("tc:h:topic:system") == 5
    assert total == counted


async def test_the_newest_event_stays_even_over_the_byte_bound(redis: Redis) -> None:
    """An event larger than the whole bound replaces the history but is itself kept."""
    store = Store(redis, history_size=1000, history_ttl=600, history_max_bytes=16 * 1024)
    for _ in range(3):
        await append(store, event(), "system")
    await append(store, event(data={"message": "w" * 20_000}), "system")
    assert await redis.llen("tc:h:topic:system") == 1
    snap = await store.read("topic:system", since=3)
    assert snap.recoverable
    assert [m.seq for m in snap.entries] == [4]
    total, counted = await history_bytes(redis, "topic:system")
    assert total == counted > 20_000


async def test_a_history_without_a_byte_count_is_counted_once(redis: Redis) -> None:
    """History stored before byte bounds (no `bytes` field) is measured at its next event."""
    roomy = Store(redis, history_size=1000, history_ttl=600, history_max_bytes=1024 * 1024)
    for _ in range(30):
        await append(roomy, event(data={"message": "v" * 1000}), "system")
    await redis.hdel("tc:c:topic:system", "bytes")
    assert (await history_bytes(redis, "topic:system"))[0] > 30_000
    store = Store(redis, history_size=1000, history_ttl=600, history_max_bytes=16 * 1024)
    await append(store, event(data={"message": "v" * 1000}), "system")
    total, counted = await history_bytes(redis, "topic:system")
    assert total == counted <= 16 * 1024
    assert (await store.read("topic:system")).seq == 31


async def test_history_and_position_expire_with_ttl(redis: Redis) -> None:
    """TASKCAST_HISTORY_TTL seconds after its last event a channel's data is gone, its epoch new."""
    store = Store(redis, history_size=50, history_ttl=1)
    await append(store, event(), "system")
    first = await store.read("topic:system")
    assert first.seq == 1
    assert 0 < await redis.ttl("tc:h:topic:system") <= 1
    with anyio.fail_after(10):
        while await redis.exists("tc:h:topic:system", "tc:c:topic:system"):  # noqa: ASYNC110 - polling Redis: there is no event to wait on
            await anyio.sleep(0.1)
    after = await store.read("topic:system")
    assert after.seq == 0
    assert after.epoch != first.epoch
    stored = await append(store, event(), "system")
    assert seqs(stored, "topic:system") == [1]


async def test_epoch_is_stable_while_data_lives_and_new_after_loss(
    store: Store, redis: Redis
) -> None:
    """A channel keeps its epoch across appends and reads, and gets a new one after data loss."""
    empty = await store.read("topic:system")
    assert empty.seq == 0
    first = await append(store, event(), "system")
    epochs = {Message.parse(m).epoch for _, m in first.messages}
    for _ in range(3):
        stored = await append(store, event(), "system")
        epochs |= {Message.parse(m).epoch for _, m in stored.messages}
    epochs.add((await store.read("topic:system")).epoch)
    assert epochs == {empty.epoch}
    await redis.flushall()
    reborn = await append(store, event(), "system")
    (message,) = [Message.parse(m) for _, m in reborn.messages]
    assert message.seq == 1
    assert message.epoch != empty.epoch
    assert (await store.read("topic:system")).epoch == message.epoch


async def test_task_state_follows_the_last_event(store: Store) -> None:
    """The task hash reflects status, progress, result, seq and updated_at of the last event."""
    await store.create_task("t1", owner="alice", name="orders.process")
    owner, state = await store.task("t1")
    assert owner == "alice"
    assert state is not None
    assert state["status"] == "queued"
    assert state["seq"] == 0
    steps: list[tuple[str, dict[str, Any], str]] = [
        ("task.queued", {"name": "orders.process"}, "queued"),
        ("task.started", {"attempt": 1}, "running"),
        ("task.progress", {"current": 1, "total": 4, "percent": 25.0, "message": "a"}, "running"),
        ("task.retrying", {"attempt": 2}, "retrying"),
        ("task.progress", {"current": 3, "total": 4, "percent": 75.0, "message": "c"}, "running"),
        ("task.succeeded", {"result": {"ok": True}}, "succeeded"),
    ]
    for n, (type_, data, status) in enumerate(steps, start=1):
        ev = event(type_, data, task_id="t1")
        stored = await append(store, ev)
        assert seqs(stored, "task:t1") == [n]
        # The owner's user channel gets the task's events too.
        assert len(seqs(stored, "user:alice")) == 1
        _, state = await store.task("t1")
        assert state is not None
        assert state["status"] == status
        assert state["seq"] == n
        assert state["updated_at"] == ev["ts"]
    assert state["progress"] == steps[4][1]
    assert state["result"] == {"ok": True}
    assert state["error"] is None
    snap = await store.read("task:t1")
    assert snap.state == state


async def test_failed_task_keeps_its_error(store: Store) -> None:
    """A failed task's state holds the error's type and message."""
    await append(store, event("task.started", {}, task_id="t2", user_id="bob"))
    await append(
        store, event("task.failed", {"error": {"type": "E", "message": "m"}}, task_id="t2")
    )
    owner, state = await store.task("t2")
    assert owner == "bob"
    assert state is not None
    assert state["status"] == "failed"
    assert state["error"] == {"type": "E", "message": "m"}


async def test_late_queued_does_not_rewind_status(store: Store) -> None:
    """A task.queued arriving after task.started does not set the status back to queued."""
    await append(store, event("task.started", {}, task_id="t3", user_id="bob"))
    await append(store, event("task.queued", {}, task_id="t3"))
    _, state = await store.task("t3")
    assert state is not None
    assert state["status"] == "running"


async def test_retried_append_is_a_dup_with_the_same_messages(store: Store) -> None:
    """Appending the same event id again returns 'dup' with the first messages and takes no seq."""
    ev = event("task.progress", {"current": 1, "total": 2, "percent": 50.0}, task_id="t1")
    ev = {**ev, "user_id": "alice"}
    first = await append(store, ev)
    again = await append(store, ev)
    assert first.status == "ok"
    assert again.status == "dup"
    assert again.messages == first.messages
    nxt = await append(
        store, event("task.progress", {"current": 2, "total": 2, "percent": 100}, task_id="t1")
    )
    assert seqs(nxt, "task:t1") == [2]
    assert (await store.read("task:t1")).seq == 2


async def test_nothing_follows_a_terminal_event(store: Store) -> None:
    """After a terminal event every event of that task is refused ('closed'): one terminal event."""
    await append(store, event("task.started", {}, task_id="t1", user_id="alice"))
    done = await append(store, event("task.cancelled", {"reason": "user"}, task_id="t1"))
    assert done.status == "ok"
    late: list[tuple[str, dict[str, Any]]] = [
        ("task.succeeded", {"result": 1}),
        ("task.failed", {"error": {"type": "E", "message": "m"}}),
        ("task.progress", {"current": 1, "total": 1, "percent": 100}),
        ("notification", {"title": "late news of a finished task"}),
    ]
    for type_, data in late:
        refused = await append(store, event(type_, data, task_id="t1"))
        assert refused.status == "closed"
        assert refused.messages == []
    snap = await store.read("task:t1", since=0)
    assert [m.seq for m in snap.entries] == [1, 2]
    _, state = await store.task("t1")
    assert state is not None
    assert state["status"] == "cancelled"


async def test_concurrent_terminal_events_leave_exactly_one(store: Store) -> None:
    """Racing succeeded/failed/cancelled for one task: exactly one is stored."""
    await append(store, event("task.started", {}, task_id="t9", user_id="alice"))
    racers = [
        event("task.succeeded", {"result": i}, task_id="t9")
        if i % 3 == 0
        else event("task.failed", {"error": {"type": "E", "message": str(i)}}, task_id="t9")
        if i % 3 == 1
        else event("task.cancelled", {}, task_id="t9")
        for i in range(30)
    ]
    results = await asyncio.gather(*(append(store, e) for e in racers))
    assert [r.status for r in results].count("ok") == 1
    snap = await store.read("task:t9", since=0)
    assert [m.seq for m in snap.entries] == [1, 2]


async def test_read_since_returns_exactly_the_missing_events(store: Store) -> None:
    """read(since=N) returns N+1..S in order; since=S returns nothing and is recoverable."""
    for _ in range(10):
        await append(store, event(), "system")
    for since in (0, 3, 9):
        snap = await store.read("topic:system", since=since)
        assert snap.recoverable
        assert [m.seq for m in snap.entries] == list(range(since + 1, 11))
        assert all('"channel":"topic:system"' in m.frame for m in snap.entries)
    at_end = await store.read("topic:system", since=10)
    assert at_end.recoverable
    assert at_end.entries == []


async def test_since_beyond_seq_is_not_recoverable(store: Store) -> None:
    """A since beyond the channel's seq (another stream's position) is not recoverable."""
    for _ in range(3):
        await append(store, event(), "system")
    snap = await store.read("topic:system", since=7)
    assert not snap.recoverable
    assert snap.entries == []
    assert snap.seq == 3


async def test_stored_frame_is_the_contract_event_frame(store: Store) -> None:
    """A stored message's frame is the contract's event frame, with the seq it was given."""
    import orjson

    ev = event("notification", {"title": "t", "extra": 1}, user_id="bob")
    stored = await append(store, ev)
    ((channel, raw),) = stored.messages
    assert channel == "user:bob"
    message = Message.parse(raw)
    assert orjson.loads(message.frame) == {
        "type": "event",
        "channel": "user:bob",
        "seq": 1,
        "event": ev,
    }
    assert abs(message.emitted_ms / 1000 - time.time()) < 60


@pytest.mark.parametrize("raw", [False, True], ids=["redis-py", "raw pipeline"])
async def test_batch_survives_redis_forgetting_the_script(
    redis: Redis, redis_url: str, raw: bool
) -> None:
    """After SCRIPT FLUSH (as after a restart) a batch still stores: the script is loaded again."""
    pipeline = Pipeline(redis_url) if raw else None
    own = Store(redis, history_size=50, pipeline=pipeline)
    first = [(e, encode_event(e), "orders") for e in _orders(2)]
    await own.append_many(first)
    await redis.script_flush()
    second = [(e, encode_event(e), "orders") for e in _orders(2)]
    stored = await own.append_many(second)
    assert [seqs(s, "topic:orders") for s in stored] == [[3], [4]]
    if pipeline is not None:
        await pipeline.aclose()


async def _published(redis_url: str, channels: list[str], count: int) -> list[tuple[str, str]]:
    """The first `count` messages Redis pub/sub carries on `channels` (a plain subscriber)."""
    sub = Redis.from_url(redis_url, socket_timeout=5.0, decode_responses=True)
    pubsub = sub.pubsub()
    await pubsub.subscribe(*channels)
    seen: list[tuple[str, str]] = []
    try:
        with anyio.fail_after(10):
            while len(seen) < count:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    seen.append((msg["channel"], msg["data"]))
    finally:
        await pubsub.aclose()
        await sub.aclose()
    return seen


async def _subscribed(redis: Redis, channel: str) -> None:
    """Wait (with a deadline) until Redis counts a subscriber on `channel`."""
    with anyio.fail_after(5):
        while await redis.pubsub_numsub(channel) != [(channel.encode(), 1)]:  # noqa: ASYNC110 - polling Redis
            await asyncio.sleep(0.01)


async def test_a_publishing_store_publishes_what_it_stores_once(
    redis: Redis, redis_url: str
) -> None:
    """With publish=True the store script publishes each stored message on its channel; a
    retried append is a dup that publishes nothing again (it was published when stored)."""
    own = Store(redis, history_size=50, publish=True)
    ev = event("task.progress", {"current": 1, "total": 2, "percent": 50.0}, task_id="t1")
    ev = {**ev, "user_id": "alice"}
    listening = asyncio.create_task(_published(redis_url, ["task:t1", "user:alice"], 3))
    await _subscribed(redis, "task:t1")
    first = await append(own, ev)
    again = await append(own, ev)
    later = event("task.progress", {"current": 2, "total": 2, "percent": 100.0}, task_id="t1")
    last = await append(own, later)
    assert (first.status, again.status, again.messages) == ("ok", "dup", [])
    assert await listening == first.messages + [m for m in last.messages if m[0] == "task:t1"]


async def test_a_publishing_store_publishes_in_seq_order_under_concurrency(
    redis: Redis, redis_url: str
) -> None:
    """Publishing inside the store step means pub/sub order is seq order, however many
    clients append at once: a node never has to wait for an earlier seq."""
    stores = [Store(Redis.from_url(redis_url), publish=True) for _ in range(4)]
    listening = asyncio.create_task(_published(redis_url, ["topic:orders"], 200))
    await _subscribed(redis, "topic:orders")

    async def emit(own: Store) -> None:
        for e in _orders(50):
            await append(own, e, "orders")

    await asyncio.gather(*(emit(own) for own in stores))
    seen = [Message.parse(m).seq for _, m in await listening]
    assert seen == list(range(1, 201))
    for own in stores:
        await own.redis.aclose()


async def test_an_emitters_retried_batch_is_stored_once_with_no_key_per_event(
    redis: Redis,
) -> None:
    """An emitter's batch carries (mark, first count): a retry of a batch Redis partly took
    stores only the rest, and no key per event stays behind, only the count per emitter."""
    own = Store(redis, history_size=50, publish=True)
    batch = [(e, encode_event(e), "orders") for e in _orders(4)]
    first_try = await own.append_many(batch[:2], mark=("m1", 1))  # the link broke here
    retried = await own.append_many(batch, mark=("m1", 1))
    assert [s.status for s in first_try] == ["ok", "ok"]
    assert [s.status for s in retried] == ["dup", "dup", "ok", "ok"]
    assert [seqs(s, "topic:orders") for s in retried[2:]] == [[3], [4]]
    snap = await own.read("topic:orders", since=0)
    orders = [orjson.loads(m.frame)["event"]["data"]["order_id"] for m in snap.entries]
    assert orders == ["o0", "o1", "o2", "o3"]
    assert await redis.keys("tc:e:*") == []
    assert await redis.get("tc:m:m1") == b"4"
    assert 0 < await redis.ttl("tc:m:m1") <= 3600


async def test_a_store_that_does_not_publish_dedupes_by_event_id(redis: Redis) -> None:
    """Without publishing itself the store must hand a retry the first messages to publish,
    so it keeps them per event id, mark or not."""
    own = Store(redis, history_size=50)
    batch = [(e, encode_event(e), "orders") for e in _orders(2)]
    first = await own.append_many(batch, mark=("m2", 1))
    again = await own.append_many(batch, mark=("m2", 1))
    assert [s.status for s in again] == ["dup", "dup"]
    assert [s.messages for s in again] == [s.messages for s in first]
    assert len(await redis.keys("tc:e:*")) == 2
    assert await redis.get("tc:m:m2") is None
