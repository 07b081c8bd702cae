"""`GET /sse` over a raw HTTP client against a real uvicorn: live events, resume, auth."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from taskcast.realtime.emitter import Emitter
from taskcast.realtime.tokens import issue

from .processes import SECRET, RedisServer, Web, base_env, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture(scope="module")
def sse_web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One web node for the module; tests isolate themselves with fresh user ids."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    log_dir = tmp_path_factory.mktemp("sse-logs")
    web = Web(base_env(redis_server.url, TASKCAST_SSE_KEEPALIVE="0.3"), log_dir, "sse-web")
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


@pytest.fixture(scope="module")
def emitter(redis_server: RedisServer) -> Emitter:
    return Emitter(redis_server.url)


class Stream:
    """One open SSE response, parsed into messages (`id`, `data` as JSON) and comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.messages: list[dict[str, Any]] = []
        self.comments: list[str] = []

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message with data (retry-only blocks and comments are recorded, skipped)."""
        with anyio.fail_after(timeout):
            fields: dict[str, Any] = {}
            async for line in self.lines:
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                elif "data" in fields:
                    message = {"id": fields.get("id"), "data": json.loads(fields["data"])}
                    self.messages.append(message)
                    return message
                else:
                    fields = {}
        raise AssertionError("the stream ended")

    async def events(self, count: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(count)]


@asynccontextmanager
async def stream(
    web: Web, channel: str, token: str | None, headers: dict[str, str] | None = None, **query: Any
) -> AsyncIterator[Stream]:
    params: dict[str, Any] = {"channel": channel, **query}
    if token is not None:
        params["token"] = token
    async with (
        httpx.AsyncClient(base_url=web.url, timeout=10) as http,
        http.stream("GET", "/sse", params=params, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def fresh_user() -> tuple[str, str]:
    user = f"sse-{uuid.uuid4().hex[:10]}"
    return user, issue(SECRET, user, (), 3600)


async def notify(emitter: Emitter, user: str, *titles: str) -> None:
    for title in titles:
        emitter.emit("notification", user_id=user, data={"title": title, "message": "m"})
    assert await anyio.to_thread.run_sync(emitter.flush, 10.0)


def titles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["data"]["event"]["data"]["title"] for m in messages]


async def test_live_events_follow_subscribed(sse_web: Web, emitter: Emitter) -> None:
    """A new stream opens with `subscribed` (seq, epoch), then each live event with `id` = seq."""
    user, token = fresh_user()
    async with stream(sse_web, f"user:{user}", token) as sse:
        first = await sse.next()
        assert first["data"]["type"] == "subscribed"
        assert first["data"]["channel"] == f"user:{user}"
        assert first["data"]["seq"] == 0
        assert first["data"]["epoch"]
        await notify(emitter, user, "a", "b", "c")
        events = await sse.events(3)
    assert [m["id"] for m in events] == ["1", "2", "3"]
    assert [m["data"]["seq"] for m in events] == [1, 2, 3]
    assert {m["data"]["type"] for m in events} == {"event"}
    assert titles(events) == ["a", "b", "c"]


async def test_last_event_id_resumes_without_gap_or_duplicate(
    sse_web: Web, emitter: Emitter
) -> None:
    """Reconnecting with `Last-Event-ID: 2` replays 3..5 from history, then goes on live at 6."""
    user, token = fresh_user()
    async with stream(sse_web, f"user:{user}", token) as sse:
        assert (await sse.next())["data"]["seq"] == 0
        await notify(emitter, user, "e1", "e2")
        assert [m["id"] for m in await sse.events(2)] == ["1", "2"]
    await notify(emitter, user, "e3", "e4", "e5")  # missed while disconnected
    async with stream(sse_web, f"user:{user}", token, {"Last-Event-ID": "2"}) as sse:
        sub = (await sse.next())["data"]
        assert sub["type"] == "subscribed"
        assert sub["recovered"] is True
        assert sub["seq"] == 5
        replayed = await sse.events(3)
        await notify(emitter, user, "e6")
        live = await sse.next()
    assert [m["data"]["seq"] for m in [*replayed, live]] == [3, 4, 5, 6]
    assert titles([*replayed, live]) == ["e3", "e4", "e5", "e6"]


async def test_since_with_a_stale_epoch_is_not_recovered(sse_web: Web, emitter: Emitter) -> None:
    """`since` with an epoch that is not the channel's answers `recovered: false`, then live."""
    user, token = fresh_user()
    await notify(emitter, user, "old")
    async with stream(sse_web, f"user:{user}", token, since=0, epoch="not-the-epoch") as sse:
        sub = (await sse.next())["data"]
        assert sub["recovered"] is False
        assert sub["seq"] == 1
        await notify(emitter, user, "new")
        live = await sse.next()
    assert live["data"]["seq"] == 2
    assert titles([live]) == ["new"]


async def test_bearer_header_and_keepalive(sse_web: Web) -> None:
    """A Bearer header authenticates like `token`, and an idle stream carries keepalive comments."""
    user, token = fresh_user()
    headers = {"Authorization": f"Bearer {token}"}
    async with stream(sse_web, f"user:{user}", None, headers) as sse:
        assert (await sse.next())["data"]["type"] == "subscribed"
        with anyio.fail_after(10):
            async for line in sse.lines:
                if line == ": keepalive":
                    break


@pytest.mark.parametrize(
    ("token", "channel", "status", "code"),
    [
        (None, "user:someone", 401, "unauthorized"),
        ("not-a-jwt", "user:someone", 401, "unauthorized"),
        ("valid", "user:someone-else", 403, "forbidden"),
        ("valid", "task:not-mine", 403, "forbidden"),
        ("valid", "topic:orders", 403, "forbidden"),
        ("valid", "bogus:x", 422, "bad_channel"),
    ],
)
async def test_refusals_are_plain_http_errors(
    sse_web: Web, token: str | None, channel: str, status: int, code: str
) -> None:
    """Without a valid token 401; a channel `/ws` would refuse is 403 (or 422), not a stream."""
    _, valid = fresh_user()
    params = {"channel": channel}
    if token is not None:
        params["token"] = valid if token == "valid" else token
    async with httpx.AsyncClient(base_url=sse_web.url, timeout=10) as http:
        reply = await http.get("/sse", params=params)
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code


async def test_topic_scope_opens_topic_stream(sse_web: Web, emitter: Emitter) -> None:
    """A `topic:inventory` scope may stream that topic and sees its events."""
    token = issue(SECRET, "sse-inv", ("topic:inventory",), 3600)
    async with stream(sse_web, "topic:inventory", token) as sse:
        start = (await sse.next())["data"]["seq"]
        emitter.emit("inventory.low_stock", topic="inventory", data={"sku": "Z9", "qty": 1})
        assert await anyio.to_thread.run_sync(emitter.flush, 10.0)
        message = await sse.next()
    assert message["data"]["seq"] == start + 1
    assert message["data"]["event"]["type"] == "inventory.low_stock"


async def test_closed_stream_leaves_the_hub(sse_web: Web) -> None:
    """When the client goes away its session leaves the hub: no connection or subscription leaks."""
    user, token = fresh_user()
    admin = {"Authorization": f"Bearer {issue(SECRET, 'ops', ('admin',), 3600)}"}
    async with httpx.AsyncClient(base_url=sse_web.url, timeout=10, headers=admin) as http:
        async with stream(sse_web, f"user:{user}", token) as sse:
            assert (await sse.next())["data"]["type"] == "subscribed"
            during = (await http.get("/ws/stats")).json()
            assert during["connections"] >= 1
        with anyio.fail_after(10):
            # Polling another process's state: there is no event to wait on.
            while True:
                if (await http.get("/ws/stats")).json()["connections"] < during["connections"]:
                    break
                await anyio.sleep(0.05)


async def test_server_shutdown_ends_streams_at_once(spawn) -> None:  # type: ignore[no-untyped-def]
    """On SIGTERM a stream gets `close` 1012 and ends, so uvicorn's graceful shutdown never has
    to cancel it at its timeout."""
    web: Web = spawn("web", name="sse-shutdown")
    user, token = fresh_user()
    async with stream(web, f"user:{user}", token) as sse:
        assert (await sse.next())["data"]["type"] == "subscribed"
        web.signal(signal.SIGTERM)
        close = await sse.next(timeout=10)
    assert close["data"] == {"type": "close", "code": 1012, "reason": "server restarting"}
    wait_for(lambda: not web.alive(), 10, "the SIGTERMed node to exit")
    assert "timeout graceful shutdown exceeded" not in web.log()
