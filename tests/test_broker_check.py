"""The queued-task check never fails a task that waits in a queue, whatever the broker's layout."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from redis.asyncio import Redis

from taskcast.realtime.backend import make_backend
from taskcast.realtime.publisher import Publisher
from taskcast.realtime.reaper import BrokerQueues, Reaper, RedisBroker
from taskcast.realtime.store import Store
from taskcast.workers.signatures import redis_broker, sender

from .processes import Web, Worker, base_env, wait_for
from .stack import User, until_terminal

pytestmark = pytest.mark.anyio

AMQP = "amqp://guest:guest@127.0.0.1:5672"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def celery(redis_url: str) -> Iterator[Callable[..., Celery]]:
    """The API's sender app, with extra Celery configuration (routes, transport options)."""
    apps: list[Celery] = []

    def make(**conf: Any) -> Celery:
        app = sender(redis_url)
        app.conf.update(conf)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def search(redis: Redis, found: RedisBroker | str) -> BrokerQueues:
    assert isinstance(found, RedisBroker), found
    return BrokerQueues(redis, found)


async def test_default_queue_and_unacked_hash_are_searched(
    celery: Callable[..., Celery], redis: Redis, redis_url: str
) -> None:
    """A message in Celery's default queue is found; a task id nobody sent is not."""
    app = celery()
    app.send_task("orders.process", task_id="t-waiting", kwargs={})
    queues = search(redis, redis_broker(app, redis_url))
    assert await queues.held(["t-waiting", "t-nowhere"]) == {"t-waiting"}


async def test_routed_and_prioritised_messages_are_found(
    celery: Callable[..., Celery], redis: Redis, redis_url: str
) -> None:
    """A task routed to its own queue, sent with a priority (its own list), is still found."""
    app = celery(task_routes={"orders.*": {"queue": "orders"}, "inventory.*": "stock"})
    app.send_task("orders.process", task_id="t-urgent", kwargs={}, priority=5)
    app.send_task("inventory.import", task_id="t-stock", kwargs={})
    assert await redis.llen("celery") == 0  # where a check of the `celery` list alone looks
    queues = search(redis, redis_broker(app, redis_url))
    assert await queues.held(["t-urgent", "t-stock"]) == {"t-urgent", "t-stock"}


async def test_a_global_key_prefix_is_followed(
    celery: Callable[..., Celery], redis: Redis, redis_url: str
) -> None:
    """With kombu's `global_keyprefix` the queue lists carry the prefix, and are found there."""
    options = {**sender(redis_url).conf.broker_transport_options, "global_keyprefix": "app1:"}
    app = celery(broker_transport_options=options)
    app.send_task("orders.process", task_id="t-prefixed", kwargs={})
    queues = search(redis, redis_broker(app, redis_url))
    assert await queues.held(["t-prefixed"]) == {"t-prefixed"}


def route_anywhere(name: str, args: Any, kwargs: Any, options: Any, **rest: Any) -> dict[str, str]:
    return {"queue": f"q-{uuid.uuid4().hex}"}


@pytest.mark.parametrize(
    ("conf", "broker", "why"),
    [
        ({}, AMQP + "/", "not Redis"),
        ({"task_routes": [route_anywhere]}, "", "router function"),
        ({"task_routes": {"orders.*": {"exchange": "x"}}}, "", "names no queue"),
    ],
)
def test_where_the_broker_cannot_be_searched_the_check_is_off(
    celery: Callable[..., Celery], redis_url: str, conf: dict[str, Any], broker: str, why: str
) -> None:
    """RabbitMQ, or queues only known when a task is sent: no keys, and the reason why."""
    found = redis_broker(celery(**conf), broker or redis_url)
    assert isinstance(found, str)
    assert why in found


async def test_with_the_check_off_a_long_queued_task_is_not_failed(
    redis: Redis, redis_url: str
) -> None:
    """No broker to search: a task queued past the limit stays queued through the sweep."""
    store = Store(redis, history_size=100, history_ttl=600)
    backend = make_backend(redis_url)
    await backend.connect()
    try:
        publisher = Publisher(store, backend)
        await store.create_task("t-patient", "alice", "orders.process")
        await publisher.emit("task.queued", data={}, task_id="t-patient", user_id="alice")
        queued_at = await redis.zscore("tc:queued", "t-patient")
        assert queued_at is not None
        reaper = Reaper(publisher, "n1", 3600, queued_stale_after=0.01)
        wait_for(lambda: time.time() > queued_at + 0.01, 5, "the task to be queued too long")
        assert await reaper.sweep() == []
    finally:
        await backend.disconnect()
    _, state = await store.task("t-patient")
    assert state is not None
    assert state["status"] == "queued"


# -- RabbitMQ ----------------------------------------------------------------------------


def sweeps(web: Web) -> int:
    text = httpx.get(f"{web.url}/metrics", timeout=5).text
    match = re.search(r"^taskcast_reaper_sweeps_total (\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_task_waiting_in_rabbitmq_is_not_failed(
    vhost: str, redis_url: str, tmp_path: Path
) -> None:
    """With RabbitMQ as broker, a task queued past the stale limit is kept, then runs."""
    env = base_env(
        redis_url,
        TASKCAST_BROKER_URL=f"{AMQP}/{vhost}",
        TASKCAST_QUEUED_STALE_AFTER="1",
    )
    web = Web(env, tmp_path, "web")
    worker: Worker | None = None
    user = None
    try:
        web.wait_ready()
        assert "not checked against the broker: the broker (amqp) is not Redis" in web.log()
        user = User(web, f"u-{uuid.uuid4().hex[:8]}")
        posted = await user.order()
        channel = f"task:{posted['task_id']}"
        # Two sweeps that began after the task was queued longer than the limit.
        stale_from = time.time() + 1
        wait_for(lambda: time.time() > stale_from, 5, "the task to be queued past the limit")
        first = sweeps(web)
        wait_for(lambda: sweeps(web) >= first + 2, 20, "two reaper sweeps past the limit")
        assert (await user.task(posted["task_id"]))["status"] == "queued"

        worker = Worker(env, tmp_path, "worker")
        worker.wait_ready()
        ws = await user.connect()
        await ws.subscribe(channel, since=0)
        events = await until_terminal(ws, channel, timeout=30)
        assert [e["event"]["type"] for e in events if e["event"]["type"].startswith("task.")][
            :2
        ] == ["task.queued", "task.started"]
        assert events[-1]["event"]["type"] == "task.succeeded"
    except BaseException:
        print_logs(tmp_path)
        raise
    finally:
        if user is not None:
            await user.aclose()
        if worker is not None:
            worker.stop()
        web.stop()


def print_logs(folder: Path) -> None:
    for log in sorted(folder.glob("*.log")):
        print(f"===== {log.name}\n{log.read_text(errors='replace')[-3000:]}")
