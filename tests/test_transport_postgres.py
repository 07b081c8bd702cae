"""`BROADCAST_URL=postgres://`: events travel over PostgreSQL LISTEN/NOTIFY end to end.

Each test module gets a database of its own on the machine's PostgreSQL (127.0.0.1:5432, trust
auth), dropped at the end; the service itself is never reconfigured.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from taskcast.realtime.backend import CONTROL_CHANNEL, RESYNC, make_backend
from taskcast.realtime.emitter import Emitter
from taskcast.realtime.errors import EventTooLarge
from taskcast.realtime.postgres import NOTIFY_MAX_BYTES, MessageTooLarge, PostgresBackend
from taskcast.realtime.settings import Settings

from .processes import SECRET, RedisServer
from .stack import Stack, User, running, seqs, types, until_terminal

pytestmark = [pytest.mark.anyio]

PG = ["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1"]


def _psql(sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", *PG, "-d", database, "-qc", sql], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A database of this module's own, dropped afterwards."""
    name = f"taskcast_test_{uuid.uuid4().hex[:12]}"
    try:
        created = _psql(f"CREATE DATABASE {name}")
    except FileNotFoundError:
        pytest.fail("psql is not installed: PostgreSQL (127.0.0.1:5432) is needed here")
    if created.returncode != 0:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not usable: {created.stderr.strip()}")
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _next(backend: PostgresBackend) -> tuple[str, str]:
    async with asyncio.timeout(10):
        while True:
            event = await backend.next_published()
            if event.channel != CONTROL_CHANNEL:
                return event.channel, event.message


async def test_concurrent_publishes_all_arrive_in_order(pg_url: str) -> None:
    """Many publishes at once (one batch of events) all arrive, in order, long names too."""
    backend = make_backend(pg_url)
    assert isinstance(backend, PostgresBackend)
    await backend.connect()
    long_name = "user:" + "x" * 80  # past PostgreSQL's 63-byte names
    try:
        await backend.subscribe("task:abc")
        await backend.subscribe(long_name)
        sent = [(("task:abc", long_name)[i % 2], f"m{i}") for i in range(60)]
        await asyncio.gather(*(backend.publish(channel, message) for channel, message in sent))
        got = [await _next(backend) for _ in sent]
    finally:
        await backend.disconnect()
    for channel in ("task:abc", long_name):
        assert [m for c, m in got if c == channel] == [m for c, m in sent if c == channel]


async def test_lost_listening_link_is_reopened_with_a_resync(pg_url: str) -> None:
    """When PostgreSQL drops the listening connection, the reader gets `resync` and the
    channels listened to before get their messages again."""
    backend = make_backend(pg_url)
    assert isinstance(backend, PostgresBackend)
    await backend.connect()
    try:
        await backend.subscribe("task:kept")
        dropped = _psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            pg_url.rsplit("/", 1)[1],
        )
        assert dropped.returncode == 0, dropped.stderr
        async with asyncio.timeout(10):
            event = await backend.next_published()
        assert (event.channel, event.message) == (CONTROL_CHANNEL, RESYNC)
        await backend.publish("task:kept", "after")
        assert await _next(backend) == ("task:kept", "after")
    finally:
        await backend.disconnect()


async def test_message_over_notify_limit_is_refused_with_its_reason(pg_url: str) -> None:
    """A payload NOTIFY cannot carry raises an error naming the limit; nothing is sent."""
    backend = make_backend(pg_url)
    await backend.connect()
    try:
        with pytest.raises(MessageTooLarge, match="NOTIFY's payload limit"):
            await backend.publish("task:abc", "x" * (NOTIFY_MAX_BYTES + 1))
    finally:
        await backend.disconnect()


def test_emit_refuses_an_event_notify_cannot_carry(redis_url: str, pg_url: str) -> None:
    """`emit` of an event under TASKCAST_MAX_EVENT_BYTES but over NOTIFY's limit is refused."""
    emitter = Emitter(redis_url, pg_url, max_event_bytes=64 * 1024)
    with pytest.raises(EventTooLarge, match="PostgreSQL NOTIFY's payload limit") as refused:
        emitter.emit("notification", data={"title": "t", "body": "x" * 9000}, user_id="u1")
    assert refused.value.limit < NOTIFY_MAX_BYTES


def test_redis_stream_is_refused_at_start_up() -> None:
    """`BROADCAST_URL=redis-stream://` fails start-up with the reason and the alternative."""
    with pytest.raises(ValidationError, match="redis-stream:// is not supported"):
        Settings(
            REDIS_URL="redis://127.0.0.1:1/0",
            BROADCAST_URL="redis-stream://127.0.0.1:1/0",
            TASKCAST_JWT_SECRET=SECRET,
        )


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir: Path = tmp_path_factory.mktemp("pg-transport")
    with running(redis_server, log_dir, webs=1, workers=1, BROADCAST_URL=pg_url) as stack:
        yield stack


@pytest.mark.e2e
async def test_order_streams_over_postgres(alice: User) -> None:
    """With BROADCAST_URL=postgres://, POST /orders is accepted and its events stream live."""
    ws = await alice.connect()
    posted = await alice.order()
    channel = f"task:{posted['task_id']}"
    assert (await ws.subscribe(channel, since=0))["type"] == "subscribed"
    events = await until_terminal(ws, channel)
    assert types(events)[0] == "task.queued"
    assert types(events)[-1] == "task.succeeded"
    assert seqs(events) == list(range(1, len(events) + 1))
