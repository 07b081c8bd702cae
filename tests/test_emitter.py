"""emit() for synchronous code: fast, validated at once, ordered, coalescing, and fork-safe."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import orjson
import pytest
import redis
from broadcaster import Broadcast

from taskcast import realtime
from taskcast.realtime import emitter as emitter_module
from taskcast.realtime import metrics
from taskcast.realtime.backend import RedisBackend
from taskcast.realtime.emitter import Emitter
from taskcast.realtime.errors import EventTooLarge
from taskcast.realtime.events import MAX_TEXT_CHARS
from taskcast.realtime.settings import Settings, get_settings
from taskcast.realtime.store import Message

from .processes import RedisServer

ALL = 1 << 30  # history bytes that keep every event a test emits

pytestmark = pytest.mark.anyio


@pytest.fixture
def emitter(redis_url: str) -> Emitter:
    return Emitter(redis_url, history_size=5000, history_ttl=600, history_max_bytes=ALL)


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


def history(client: redis.Redis, channel: str) -> list[tuple[Message, dict[str, Any]]]:
    """The stored messages of a channel, with their event frames decoded."""
    out = []
    for raw in client.lrange(f"tc:h:{channel}", 0, -1):
        message = Message.parse(raw.decode() if isinstance(raw, bytes) else raw)
        out.append((message, orjson.loads(message.frame)))
    return out


def test_flush_confirms_storage_in_order(emitter: Emitter, sync_redis: redis.Redis) -> None:
    """flush() is True once every emitted event is stored, in the order emitted."""
    for i in range(500):
        emitter.emit("system.message", data={"message": str(i)})
    assert emitter.flush(timeout=20)
    stored = history(sync_redis, "topic:system")
    assert [m.seq for m, _ in stored] == list(range(1, 501))
    assert [f["event"]["data"]["message"] for _, f in stored] == [str(i) for i in range(500)]


def test_emitted_events_leave_no_key_per_event_in_redis(
    emitter: Emitter, sync_redis: redis.Redis
) -> None:
    """What makes a worker's retries idempotent costs Redis one key per emitter process,
    not one per event (at thousands of events a second that was gigabytes an hour)."""
    for i in range(300):
        emitter.emit("notification", data={"title": "t", "message": str(i)}, user_id="alice")
    assert emitter.flush(timeout=20)
    assert len(history(sync_redis, "user:alice")) == 300
    assert sync_redis.keys("tc:e:*") == []
    assert [k.decode() for k in sync_redis.keys("tc:m:*")] == [f"tc:m:{emitter._mark}"]
    assert sync_redis.get(f"tc:m:{emitter._mark}") == b"300"


@pytest.mark.parametrize("redis_is", ["refusing", "silent"])
def test_unreachable_redis_never_reaches_the_caller(redis_is: str) -> None:
    """With Redis refusing connections, or accepting them and never answering, emit returns
    without raising and without waiting on it; flush says False."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        if redis_is == "silent":
            silent.listen()  # connections complete in the kernel; nothing ever answers
        emitter = Emitter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        returned: list[int] = []

        def emit_all() -> None:
            for i in range(100):
                emitter.emit("system.message", data={"message": str(i)})
                returned.append(i)

        caller = threading.Thread(target=emit_all)
        caller.start()
        caller.join(timeout=30)
        assert not caller.is_alive(), "emit() waited on a Redis that cannot answer"
        assert returned == list(range(100))
        assert emitter.flush(timeout=0.5) is False


def test_flush_with_nothing_emitted_is_true(emitter: Emitter) -> None:
    """flush() before any emit is immediately True."""
    assert emitter.flush(timeout=0.1)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (dict(type_="task.exploded", data={}), "unknown event type"),
        (dict(type_="notification", data={"message": "no title"}, user_id="a"), "title"),
        (dict(type_="inventory.low_stock", data={"sku": "A1", "qty": "x"}), "qty"),
        (dict(type_="system.message", data="hello"), "dict"),
        (dict(type_="task.started", data={}, task_id="bad id!"), "task_id"),
        (dict(type_="notification", data={"title": "t"}, user_id="a b"), "user_id"),
        (dict(type_="task.started", data={}, task_id="t1", topic="orders"), "topics"),
        (dict(type_="order.cancelled", data={"order_id": "o"}, topic="weather"), "topic"),
    ],
)
def test_bad_arguments_raise_value_error_at_once(
    emitter: Emitter, sync_redis: redis.Redis, call: dict[str, Any], match: str
) -> None:
    """A bad type, data, id or topic raises ValueError in the caller and enqueues nothing."""
    type_ = call.pop("type_")
    with pytest.raises(ValueError, match=match):
        emitter.emit(type_, **call)
    assert emitter.flush(timeout=1)
    assert sync_redis.keys("tc:*") == []


async def test_events_reach_a_subscriber_in_order(emitter: Emitter, redis_url: str) -> None:
    """A live subscriber receives emitted events with seq 1..N in emit order."""
    received: list[Message] = []
    async with (
        Broadcast(backend=RedisBackend(redis_url)) as broadcast,
        broadcast.subscribe("user:alice") as subscriber,
    ):
        for i in range(300):
            emitter.emit("notification", data={"title": str(i)}, user_id="alice")
        with anyio.fail_after(20):
            while len(received) < 300:
                received.append(Message.parse((await subscriber.get()).message))
    assert [m.seq for m in received] == list(range(1, 301))
    titles = [orjson.loads(m.frame)["event"]["data"]["title"] for m in received]
    assert titles == [str(i) for i in range(300)]
    assert await anyio.to_thread.run_sync(emitter.flush, 5.0)


def test_progress_coalesces_while_waiting(emitter: Emitter, sync_redis: redis.Redis) -> None:
    """Progress emitted faster than it is stored coalesces; the newest lands, seqs stay gap-free."""
    emitter.emit("task.started", data={}, task_id="t1", user_id="alice")
    for i in range(1, 3001):
        emitter.progress("t1", i, 3000, message=f"step {i}")
    assert emitter.flush(timeout=20)
    stored = history(sync_redis, "task:t1")
    assert [m.seq for m, _ in stored] == list(range(1, len(stored) + 1))
    progress = [f["event"]["data"]["current"] for _, f in stored[1:]]
    assert progress == sorted(progress)
    assert progress[-1] == 3000
    assert len(progress) < 3000
    state = sync_redis.hgetall("tc:t:t1")
    assert orjson.loads(state[b"progress"])["current"] == 3000
    assert state[b"status"] == b"running"


def test_progress_after_other_events_keeps_their_order(
    emitter: Emitter, sync_redis: redis.Redis
) -> None:
    """Coalescing never reorders: a terminal event emitted after progress is stored after it."""
    emitter.emit("task.started", data={}, task_id="t2", user_id="alice")
    for i in range(50):
        emitter.progress("t2", i, 50)
    emitter.emit("task.succeeded", data={"result": 7}, task_id="t2")
    assert emitter.flush(timeout=20)
    types = [f["event"]["type"] for _, f in history(sync_redis, "task:t2")]
    assert types[0] == "task.started"
    assert types[-1] == "task.succeeded"
    assert set(types[1:-1]) == {"task.progress"}


async def test_a_too_large_event_is_refused_at_the_call_site(
    emitter: Emitter, sync_redis: redis.Redis, redis_url: str
) -> None:
    """An event over TASKCAST_MAX_EVENT_BYTES raises at once naming its type, size and the
    limit; nothing of it is stored or published, and it is counted for /metrics."""
    async with (
        Broadcast(backend=RedisBackend(redis_url)) as broadcast,
        broadcast.subscribe("user:big") as subscriber,
    ):
        with pytest.raises(EventTooLarge) as refused:
            emitter.emit("notification", user_id="big", data={"title": "t", "blob": "a" * 100_000})
        assert isinstance(refused.value, ValueError)
        assert refused.value.size > 100_000
        assert refused.value.limit == 65536
        assert str(refused.value) == (
            f"notification event of {refused.value.size} bytes is over "
            "TASKCAST_MAX_EVENT_BYTES (65536 bytes); nothing was emitted"
        )
        emitter.emit("notification", user_id="big", data={"title": "small"})
        with anyio.fail_after(10):
            first = Message.parse((await subscriber.get()).message)
    assert orjson.loads(first.frame)["event"]["data"]["title"] == "small"
    assert await anyio.to_thread.run_sync(emitter.flush, 10.0)
    assert [f["event"]["data"]["title"] for _, f in history(sync_redis, "user:big")] == ["small"]
    assert sync_redis.hget("tc:stats", "events_too_large") == b"1"


def test_refusals_are_logged_once_per_task_and_the_task_still_ends(
    emitter: Emitter, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A task refused again and again logs once (each refusal is still counted), and it can
    still emit its terminal event afterwards."""
    emitter.emit("task.started", data={}, task_id="t5", user_id="alice")
    big = {"order_id": "o1", "changes": {"doc": "d" * 70_000}}
    with caplog.at_level(logging.WARNING, logger="taskcast.emit"):
        for _ in range(3):
            with pytest.raises(EventTooLarge, match=r"order\.updated event of"):
                emitter.emit("order.updated", data=big, task_id="t5")
        with pytest.raises(EventTooLarge):
            emitter.emit("order.updated", data=big, task_id="t6")
    logged = [r.getMessage() for r in caplog.records if r.name == "taskcast.emit"]
    assert len(logged) == 2
    assert "task t5" in logged[0]
    assert "task t6" in logged[1]
    emitter.emit("task.succeeded", data={"result": "done"}, task_id="t5")
    assert emitter.flush(timeout=10)
    types = [f["event"]["type"] for _, f in history(sync_redis, "task:t5")]
    assert types == ["task.started", "task.succeeded"]
    assert sync_redis.hget("tc:t:t5", "status") == b"succeeded"
    assert sync_redis.hget("tc:stats", "events_too_large") == b"4"


def test_a_long_progress_message_is_clipped_not_refused(
    emitter: Emitter, sync_redis: redis.Redis
) -> None:
    """self.progress() with a whole document as its message stores a clipped, marked message."""
    emitter.emit("task.started", data={}, task_id="t7", user_id="alice")
    emitter.progress("t7", 1, 2, message="p" * 5_000_000)
    assert emitter.flush(timeout=10)
    (_, frame) = history(sync_redis, "task:t7")[-1]
    message = frame["event"]["data"]["message"]
    marker = "… [truncated from 5000000 characters]"
    assert message == "p" * (MAX_TEXT_CHARS - len(marker)) + marker
    assert sync_redis.hget("tc:stats", "events_too_large") is None


def test_the_limit_comes_from_the_settings(
    default_emitter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TASKCAST_MAX_EVENT_BYTES sets the limit of realtime.emit."""
    monkeypatch.setenv("TASKCAST_MAX_EVENT_BYTES", str(20_000))
    get_settings.cache_clear()
    realtime.emit("notification", user_id="alice", data={"title": "x" * 19_000})
    with pytest.raises(EventTooLarge, match=r"\(20000 bytes\)"):
        realtime.emit("notification", user_id="alice", data={"title": "x" * 20_000})
    assert realtime.flush(timeout=10)


def run_in_child(body: Callable[[], bool], timeout: float = 15.0) -> int:
    """Fork; the child runs `body` and exits 0 if it returned True. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return pid
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)  # a hung child must not outlive the test
            os.waitpid(pid, 0)
            raise AssertionError(f"forked child did not finish within {timeout}s (deadlocked?)")
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_emit_works_in_a_forked_child(emitter: Emitter, sync_redis: redis.Redis) -> None:
    """A child forked after the parent emitted can emit and flush; nothing is duplicated."""
    emitter.emit("system.message", data={"message": "parent-before"})
    assert emitter.flush(timeout=10)

    def child() -> bool:
        emitter.emit("system.message", data={"message": "child"})
        return emitter.flush(timeout=20)

    pid = run_in_child(child)
    emitter.emit("system.message", data={"message": "parent-after"})
    assert emitter.flush(timeout=10)
    stored = history(sync_redis, "topic:system")
    assert [f["event"]["data"]["message"] for _, f in stored] == [
        "parent-before",
        "child",
        "parent-after",
    ]
    assert [m.seq for m, _ in stored] == [1, 2, 3]
    assert stored[1][1]["event"]["source"].endswith(f"/{pid}")


@pytest.mark.timeout(120)
def test_fork_while_the_parent_emits_never_hangs_or_duplicates(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """Forking at any moment of the parent's publishing, the child emits and never republishes."""
    emitter = Emitter(redis_url, history_size=50_000, history_ttl=600, history_max_bytes=ALL)
    total, forks = 20_000, 16  # the parent stops emitting once the forks are done
    stop = threading.Event()

    def parent_emits() -> None:
        for i in range(total):
            emitter.emit("system.message", data={"message": f"p{i}"})
            if stop.is_set():
                return

    producer = threading.Thread(target=parent_emits)
    producer.start()
    try:
        for k in range(forks):

            def child(k: int = k) -> bool:
                emitter.emit("system.message", data={"message": f"child{k}"})
                return emitter.flush(timeout=10)

            run_in_child(child)
    finally:
        stop.set()
        producer.join(30)
    assert emitter.flush(timeout=30)
    stored = [f["event"]["data"]["message"] for _, f in history(sync_redis, "topic:system")]
    from_parent = [m for m in stored if m.startswith("p")]
    assert from_parent == [f"p{i}" for i in range(len(from_parent))]
    children = [m for m in stored if m.startswith("child")]
    assert sorted(children) == sorted(f"child{k}" for k in range(forks))


@pytest.fixture
def default_emitter(settings: Settings) -> Iterator[None]:
    emitter_module._forget_default()
    yield
    emitter_module._forget_default()


def test_module_level_emit_and_flush(default_emitter: None, sync_redis: redis.Redis) -> None:
    """realtime.emit/flush publish through the process's emitter, built from the settings."""
    realtime.emit("inventory.low_stock", topic="inventory", data={"sku": "A1", "qty": 2})
    realtime.emit("notification", user_id="alice", data={"title": "Export ready", "url": "/x"})
    assert realtime.flush(timeout=10.0)
    (low,) = history(sync_redis, "topic:inventory")
    assert low[1]["event"]["data"]["sku"] == "A1"
    (note,) = history(sync_redis, "user:alice")
    assert note[1]["event"]["data"]["url"] == "/x"  # extra fields are kept


@pytest.mark.timeout(60)
def test_full_buffer_during_an_outage_drops_only_progress(
    redis_server: RedisServer, redis_url: str
) -> None:
    """While Redis is down a full buffer sheds waiting progress (counted); all else lands."""
    emitter = Emitter(redis_url, buffer=10)
    redis_server.stop()
    try:
        dropped_before = metrics.COUNTS.emit_dropped
        for i in range(10):
            emitter.emit("system.message", data={"message": f"m{i}"})
        for i in range(30):
            emitter.progress(f"task{i}", 1, 2)  # one task each: nothing to coalesce
        emitter.emit("system.message", data={"message": "last"})
        assert metrics.COUNTS.emit_dropped > dropped_before
    finally:
        redis_server.start()
    assert emitter.flush(timeout=30)
    client = redis_server.client()
    try:
        stored = [f["event"]["data"]["message"] for _, f in history(client, "topic:system")]
        progress_kept = sum(bool(client.exists(f"tc:h:task:task{i}")) for i in range(30))
    finally:
        client.close()
    assert stored == [f"m{i}" for i in range(10)] + ["last"]
    assert progress_kept + (metrics.COUNTS.emit_dropped - dropped_before) == 30
