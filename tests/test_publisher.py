"""The publisher every in-process emit goes through (API routes, the reaper): the size limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from taskcast.realtime.backend import make_backend
from taskcast.realtime.errors import EventTooLarge
from taskcast.realtime.events import make_event
from taskcast.realtime.publisher import Publisher
from taskcast.realtime.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=5.0)
    yield client
    await client.aclose()


@pytest.fixture
def publisher(redis: Redis, redis_url: str) -> Publisher:
    store = Store(redis, history_ttl=600, publish=True)  # the store publishes: no backend use
    return Publisher(store, make_backend(redis_url), max_event_bytes=20_000)


async def test_an_event_over_the_limit_is_refused_and_counted(
    publisher: Publisher, redis: Redis
) -> None:
    """emit() of an event over max_event_bytes raises EventTooLarge naming type, size and
    limit; nothing is stored, and the refusal is counted where /metrics reads it."""
    with pytest.raises(EventTooLarge, match=r"^notification event of \d+ bytes .*\(20000 bytes\)"):
        await publisher.emit(
            "notification", data={"title": "t", "body": "b" * 20_000}, user_id="alice"
        )
    assert await redis.keys("tc:h:*") == []
    assert await publisher.store.counts() == {"events_too_large": 1}
    stored = await publisher.emit("notification", data={"title": "fits"}, user_id="alice")
    assert [channel for channel, _ in stored.messages] == ["user:alice"]


async def test_a_batch_with_one_event_over_the_limit_stores_nothing(
    publisher: Publisher, redis: Redis
) -> None:
    """publish_many refuses the whole batch before storing any of it."""
    batch: list[tuple[dict[str, Any], str | None]] = [
        (make_event("system.message", {"message": "ok"}), "system"),
        (make_event("system.message", {"message": "m" * 30_000}), "system"),
    ]
    with pytest.raises(EventTooLarge, match=r"system\.message"):
        await publisher.publish_many(batch)
    assert await redis.keys("tc:h:*") == []
