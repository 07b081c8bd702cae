"""A store that went back in time: every witness of a channel moves it to a new epoch, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from taskcast.realtime.emitter import Emitter
from taskcast.realtime.events import encode_event, make_event
from taskcast.realtime.store import Message, Store, event_id

from .processes import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5.0)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis_client: Redis) -> Store:
    return Store(redis_client, history_size=50, history_ttl=600)


async def append(store: Store, n: int, user: str = "wendy") -> list[Message]:
    """`n` notifications to `user:<user>`; the stored messages, in seq order."""
    out = []
    for i in range(n):
        ev = make_event("notification", {"title": f"n{i}"}, user_id=user)
        stored = await store.append(ev, encode_event(ev), None)
        out += [Message.parse(m) for _, m in stored.messages]
    return out


async def roll_back(client: Redis, channel: str, to: int) -> None:
    """What a restart from an older snapshot leaves: the channel's seq and history cut at `to`."""
    seq = int(await client.hget(f"tc:c:{channel}", "seq") or 0)
    await client.hset(f"tc:c:{channel}", "seq", to)
    await client.ltrim(f"tc:h:{channel}", 0, -(seq - to) - 1)


async def test_a_store_behind_the_witness_gets_a_new_epoch(
    store: Store, redis_client: Redis
) -> None:
    """A node that fanned out seq 10 finds the store at 6: the channel moves to a new epoch."""
    sent = await append(store, 10)
    await roll_back(redis_client, "user:wendy", 6)
    snap = await store.read("user:wendy", witness=(sent[-1].epoch, 10, event_id(sent[-1].frame)))
    assert snap.rewound
    assert snap.epoch != sent[-1].epoch
    assert (await store.read("user:wendy")).epoch == snap.epoch, "stored for everyone"
    again = await store.read("user:wendy", witness=(sent[-1].epoch, 10, event_id(sent[-1].frame)))
    assert not again.rewound, "moved once, not once per witness"
    assert again.epoch == snap.epoch


async def test_the_same_seq_naming_another_event_is_found(
    store: Store, redis_client: Redis
) -> None:
    """Writers that already refilled the lost seqs are caught by the event at the witness's seq."""
    sent = await append(store, 10)
    await roll_back(redis_client, "user:wendy", 6)
    await redis_client.hset("tc:c:user:wendy", "epoch", sent[-1].epoch)
    refilled = await append(store, 6)  # seqs 7..12 again, under the old epoch
    assert refilled[3].seq == 10
    assert refilled[3].epoch == sent[-1].epoch
    witness = (sent[-1].epoch, 10, event_id(sent[-1].frame))  # the event it saw at 10
    snap = await store.read("user:wendy", witness=witness)
    assert snap.rewound
    assert snap.epoch != sent[-1].epoch


async def test_a_store_that_kept_everything_keeps_its_epoch(store: Store) -> None:
    """A witness the store agrees with (same event at its seq, or another epoch) changes nothing."""
    sent = await append(store, 10)
    last = sent[-1]
    seen = (last.epoch, 10, event_id(last.frame))
    assert not (await store.read("user:wendy", witness=seen)).rewound
    assert not (await store.read("user:wendy", witness=(last.epoch, 4, ""))).rewound
    assert not (await store.read("user:wendy", witness=("another", 99, ""))).rewound
    assert (await store.read("user:wendy")).epoch == last.epoch


def user_channel(client: redis.Redis, user: str) -> dict[str, Any]:
    raw = client.hgetall(f"tc:c:user:{user}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_an_emitter_moves_its_channels_on_when_redis_comes_back_older(
    snapshots: RedisServer,
) -> None:
    """With no node watching, the emitter itself finds the rollback before it stores again."""
    emitter = Emitter(snapshots.url, history_ttl=600)
    client = snapshots.client()
    try:
        for i in range(5):
            emitter.emit("notification", data={"title": f"a{i}"}, user_id="xavier")
        assert emitter.flush(10)
        client.save()
        for i in range(5):
            emitter.emit("notification", data={"title": f"b{i}"}, user_id="xavier")
        assert emitter.flush(10)
        before = user_channel(client, "xavier")
        assert before["seq"] == "10"

        snapshots.restart()  # kill -9: it comes back with the snapshot, seq 5, same epoch
        restored = user_channel(client, "xavier")
        assert (restored["epoch"], restored["seq"]) == (before["epoch"], "5")

        emitter.emit("notification", data={"title": "after"}, user_id="xavier")
        assert emitter.flush(15)
        after = user_channel(client, "xavier")
        assert after["epoch"] != before["epoch"], "seq 6 under the old epoch would be a reuse"
        assert after["seq"] == "6"
    finally:
        client.close()
