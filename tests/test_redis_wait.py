"""`TASKCAST_REDIS_WAIT`: an event counts as stored only once a replica has it too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskcast.realtime.connections import redis_client
from taskcast.realtime.emitter import Emitter
from taskcast.realtime.errors import NotReplicated
from taskcast.realtime.events import encode_event, make_event
from taskcast.realtime.resp import Pipeline
from taskcast.realtime.store import PREFIX, Store

from .processes import RedisServer, wait_for

pytestmark = [pytest.mark.anyio]


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica, in sync."""
    master = RedisServer()
    master.start()
    replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(master.port)))
    replica.start()
    in_sync(replica)
    yield master, replica
    replica.close()
    master.close()


def cut(master: RedisServer, replica: RedisServer) -> None:
    """The replica stops receiving: its link is cut and its logins refused."""
    with replica.client() as client:
        client.config_set("masteruser", "nobody-here")
        client.config_set("masterauth", "wrong")
    with master.client() as client:
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")


def in_sync(replica: RedisServer) -> None:
    with replica.client() as client:
        up = lambda: client.info("replication")["master_link_status"] == "up"  # noqa: E731
        wait_for(up, 10, "the replica's link to be up")


def heal(replica: RedisServer) -> None:
    with replica.client() as client:
        client.config_set("masterauth", "")
        client.config_set("masteruser", "")


@pytest.mark.parametrize("raw", [False, True], ids=["redis-py", "raw-pipeline"])
async def test_unconfirmed_event_raises_and_its_retry_is_stored_once(
    pair: tuple[RedisServer, RedisServer], raw: bool
) -> None:
    """With no replica confirming, storing raises `NotReplicated`; once the replica is back, the
    same event stored again is confirmed and history holds it once."""
    master, replica = pair
    redis = redis_client(master.url)
    pipeline = Pipeline(master.url) if raw else None
    store = Store(redis, pipeline=pipeline, wait_replicas=1, wait_timeout_ms=200)
    try:
        first = make_event("notification", {"title": "a"}, user_id="w1")
        await store.append_many([(first, encode_event(first), None)])
        cut(master, replica)
        event = make_event("notification", {"title": "b"}, user_id="w1")
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            await store.append_many([(event, encode_event(event), None)])
        heal(replica)
        in_sync(replica)
        await store.append_many([(event, encode_event(event), None)])
        history = await redis.lrange(f"{PREFIX}h:user:w1", 0, -1)
        assert [m.count(event["id"].encode()) for m in history] == [0, 1]
    finally:
        if pipeline is not None:
            await pipeline.aclose()
        await redis.aclose()


def test_emitter_keeps_an_unconfirmed_event_until_a_replica_has_it(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    """`flush` is not done while no replica confirms; after the replica is back it is, and the
    event is stored once, on the replica too."""
    master, replica = pair
    cut(master, replica)
    emitter = Emitter(master.url, wait_replicas=1, wait_timeout_ms=100)
    emitter.emit("notification", data={"title": "kept"}, user_id="w2")
    assert not emitter.flush(1.0)
    heal(replica)
    assert emitter.flush(15)
    with replica.client() as client:
        assert client.llen(f"{PREFIX}h:user:w2") == 1
