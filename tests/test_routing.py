"""Routing in the store: a task's events reach its owner's channel and name the owner."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from taskcast.realtime.connections import redis_client
from taskcast.realtime.events import encode_event, make_event
from taskcast.realtime.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    redis = redis_client(redis_url)
    yield Store(redis)
    await redis.aclose()


async def test_worker_events_name_the_recorded_owner(store: Store) -> None:
    """An event emitted without user_id (as workers do) goes to user:<owner> and names the owner."""
    await store.create_task("t1", "alice", "orders.process")
    event = make_event("task.started", {"name": "orders.process"}, task_id="t1")
    stored = await store.append(event, encode_event(event), None)
    assert [channel for channel, _ in stored.messages] == ["task:t1", "user:alice"]
    for _, message in stored.messages:
        frame = json.loads(message.split("\n", 1)[1])
        assert frame["event"]["user_id"] == "alice"
        assert frame["event"]["data"] == {"name": "orders.process", "attempt": 1}


async def test_data_fields_named_user_id_are_left_alone(store: Store) -> None:
    """Only the envelope's user_id is filled in, never a field inside data."""
    await store.create_task("t2", "bob", "x")
    event = make_event("notification", {"title": "t", "user_id": None}, task_id="t2")
    stored = await store.append(event, encode_event(event), None)
    frame = json.loads(stored.messages[0][1].split("\n", 1)[1])
    assert frame["event"]["user_id"] == "bob"
    assert frame["event"]["data"]["user_id"] is None
