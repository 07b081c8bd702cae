"""Lifecycle events from Celery's signals: one terminal event, even for an oversized result."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from celery import signals

from taskcast.realtime import emitter as emitter_module
from taskcast.realtime.events import MAX_TEXT_CHARS
from taskcast.realtime.settings import Settings
from taskcast.realtime.store import Message
from taskcast.workers.app import app  # its `install(app)` connects the lifecycle handlers
from taskcast.workers.signatures import ORDERS_PROCESS


@pytest.fixture
def task(settings: Settings) -> Any:
    """A real task of the worker app (its request is what the signal handlers read)."""
    import taskcast.workers.orders  # noqa: F401 - registers the task on the app

    return app.tasks[ORDERS_PROCESS]


@pytest.fixture
def task_id(settings: Settings, task: Any) -> Iterator[str]:
    """A task id pushed as the current request of `task`; the process's emitter is new."""
    emitter_module._forget_default()
    task_id = uuid.uuid4().hex
    task.push_request(id=task_id, retries=0)
    yield task_id
    task.pop_request()
    emitter_module._forget_default()


def events(redis_url: str, task_id: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(f"tc:h:task:{task_id}", 0, -1)
    finally:
        client.close()
    return [
        orjson.loads(Message.parse(m.decode() if isinstance(m, bytes) else m).frame)["event"]
        for m in raw
    ]


def test_a_result_too_large_to_send_still_ends_the_task_once(
    task: Any, task_id: str, redis_url: str
) -> None:
    """A task whose result is over the event limit ends with one task.succeeded whose result
    is null and whose `result_omitted` names the size and the limit."""
    signals.task_prerun.send(sender=task, task_id=task_id, task=task)
    result = {"document": "r" * 200_000}
    signals.task_success.send(sender=task, result=result)
    stored = events(redis_url, task_id)
    assert [e["type"] for e in stored] == ["task.started", "task.succeeded"]
    data = stored[-1]["data"]
    assert data["result"] is None
    assert data["result_omitted"]["reason"] == "too_large"
    assert data["result_omitted"]["bytes"] > 200_000
    assert data["result_omitted"]["limit"] == 65536


def test_a_result_that_fits_is_sent_whole(task: Any, task_id: str, redis_url: str) -> None:
    """A result under the limit is the event's `result`, with no `result_omitted`."""
    signals.task_success.send(sender=task, result={"ok": "y" * 30_000})
    (succeeded,) = events(redis_url, task_id)
    assert succeeded["data"] == {"result": {"ok": "y" * 30_000}}


def test_a_huge_error_message_is_clipped_in_task_failed(
    task: Any, task_id: str, redis_url: str
) -> None:
    """An exception carrying a whole document fails the task with a clipped, marked message."""
    error = RuntimeError("e" * 1_000_000)
    signals.task_failure.send(sender=task, task_id=task_id, exception=error)
    (failed,) = events(redis_url, task_id)
    assert failed["type"] == "task.failed"
    marker = "… [truncated from 1000000 characters]"
    assert failed["data"]["error"] == {
        "type": "RuntimeError",
        "message": "e" * (MAX_TEXT_CHARS - len(marker)) + marker,
    }
