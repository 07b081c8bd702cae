"""Raw RESP connections: pipelined replies in order, errors as values, a dropped link reopened."""

from __future__ import annotations

from collections.abc import AsyncIterator

import hiredis
import pytest
from redis.asyncio import Redis

from taskcast.realtime.resp import Pipeline, command

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pipeline(redis_url: str) -> AsyncIterator[Pipeline]:
    pipe = Pipeline(redis_url)
    yield pipe
    await pipe.aclose()


async def test_replies_come_back_in_order_with_errors_as_values(pipeline: Pipeline) -> None:
    """A batch gets one reply per command, in order; a refused command does not hide the rest."""
    replies = await pipeline.execute(
        [command("SET", "k", "v"), command("INCR", "k"), command("GET", "k"), command("PING")]
    )
    assert replies[0] == "OK"
    assert isinstance(replies[1], hiredis.ReplyError)
    assert replies[2:] == ["v", "PONG"]


async def test_a_dropped_connection_is_reopened_for_the_next_batch(
    pipeline: Pipeline, redis_url: str
) -> None:
    """Redis closing the link (a restart, a proxy) costs nothing: the batch goes on a new one."""
    (first,) = await pipeline.execute([command("CLIENT", "ID")])
    admin = Redis.from_url(redis_url)
    assert await admin.client_kill_filter(_id=first) == 1
    await admin.aclose()
    (second,) = await pipeline.execute([command("CLIENT", "ID")])
    assert second != first


async def test_the_database_in_the_url_is_selected(redis_url: str) -> None:
    """`redis://host:port/3` writes to database 3, as redis-py would."""
    pipe = Pipeline(redis_url.rsplit("/", 1)[0] + "/3")
    assert await pipe.execute([command("SET", "in3", "yes")]) == ["OK"]
    await pipe.aclose()
    admin = Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    assert await admin.get("in3") == b"yes"
    await admin.flushdb()
    await admin.aclose()


async def test_a_server_that_is_gone_raises(redis_url: str) -> None:
    """Nothing listening: the caller hears ConnectionError (and retries on its own terms)."""
    pipe = Pipeline("redis://127.0.0.1:1/0")
    with pytest.raises(ConnectionError):
        await pipe.execute([command("PING")])
