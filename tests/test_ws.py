"""/ws frame by frame, in process: the app under an in-process uvicorn, on the private Redis."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from taskcast.api.deps import Node
from taskcast.api.main import create_app
from taskcast.realtime.emitter import Emitter
from taskcast.realtime.settings import Settings
from taskcast.realtime.tokens import issue
from taskcast.workers.integration import freeze_startup_objects

from .inprocess import served
from .wsclient import WS, Frame

ALL = 1 << 30  # history bytes that keep every event a test emits

pytestmark = pytest.mark.anyio

MakeToken = Callable[..., str]


@dataclass
class App:
    """One running app: its /ws URL and its node (store, publisher) for arranging events."""

    url: str
    node: Node

    async def open(self, token: str | None, **kwargs: Any) -> WS:
        return await WS.open(self.url, token, **kwargs)

    async def connect(self, token: str) -> WS:
        ws = await self.open(token)
        assert (await ws.recv())["type"] == "welcome"
        return ws

    async def say(self, n: int = 1, **target: Any) -> None:
        for i in range(n):
            await self.node.publisher.emit("notification", data={"title": f"n{i}"}, **target)


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """Start the app (with optional setting overrides) under plain uvicorn in this loop."""
    async with contextlib.AsyncExitStack() as servers:

        async def start(**overrides: Any) -> App:
            app = create_app(settings.model_copy(update=overrides))
            # uvicorn's own protocols: the app's fallback path (ASGI `send`) is what runs
            port = await servers.enter_async_context(
                served(app, http="auto", ws="auto", ws_max_size=16 * 1024 * 1024)
            )
            return App(f"ws://127.0.0.1:{port}/ws", app.state.node)

        yield start


@pytest.fixture
async def app(serve: Callable[..., Awaitable[App]]) -> App:
    return await serve()


async def closed_code(ws: WS, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    with anyio.fail_after(timeout):
        try:
            while True:
                await ws.recv(timeout)
        except ConnectionClosed:
            pass
    return ws.close_code


async def reply(ws: WS, frame: Frame | str, timeout: float = 5.0) -> Frame:
    """Send a frame and return the next non-event frame (the reply)."""
    await ws.send(frame)
    return await ws.recv_until(lambda f: f["type"] != "event", timeout)


# -- connecting --------------------------------------------------------------------------


async def test_welcome_is_the_first_frame(app: App, make_token: MakeToken) -> None:
    """A valid token gets a welcome frame naming the connection, the user and the node."""
    ws = await app.open(make_token("alice"))
    welcome = await ws.recv()
    assert welcome["type"] == "welcome"
    assert welcome["user"] == "alice"
    assert welcome["node"] == app.node.node_id
    assert welcome["connection_id"]
    await ws.close()


async def test_token_in_authorization_header_works(app: App, make_token: MakeToken) -> None:
    """The token may come as an Authorization: Bearer header instead of the query."""
    headers = {"Authorization": f"Bearer {make_token('bob')}"}
    ws = await app.open(None, additional_headers=headers)
    assert (await ws.recv())["user"] == "bob"
    await ws.close()


@pytest.mark.parametrize("kind", ["missing", "invalid", "expired", "wrong-secret"])
async def test_bad_token_gets_error_then_4401(app: App, make_token: MakeToken, kind: str) -> None:
    """Missing, invalid or expired token: one error frame (unauthorized), then close 4401."""
    token = {
        "missing": None,
        "invalid": "not-a-token",
        "expired": make_token("alice", ttl=-60),
        "wrong-secret": issue("x" * 40, "alice"),
    }[kind]
    ws = await app.open(token)
    assert await closed_code(ws) == 4401
    assert len(ws.frames) == 1
    assert ws.frames[0]["type"] == "error"
    assert ws.frames[0]["code"] == "unauthorized"


# -- ops and their replies ---------------------------------------------------------------


async def test_ping_subscribe_unsubscribe_echo_ref(app: App, make_token: MakeToken) -> None:
    """ping, subscribe and unsubscribe are answered with the client's ref."""
    ws = await app.connect(make_token("alice"))
    assert await reply(ws, {"op": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    assert await reply(ws, {"op": "ping"}) == {"type": "pong"}
    sub = await reply(ws, {"op": "subscribe", "channel": "user:alice", "ref": "s"})
    assert sub["type"] == "subscribed"
    assert sub["channel"] == "user:alice"
    assert sub["ref"] == "s"
    assert sub["seq"] == 0
    assert isinstance(sub["epoch"], str)
    assert "state" not in sub
    unsub = await reply(ws, {"op": "unsubscribe", "channel": "user:alice", "ref": "u"})
    assert unsub == {"type": "unsubscribed", "channel": "user:alice", "ref": "u"}
    await ws.close()


async def test_events_flow_until_unsubscribe(app: App, make_token: MakeToken) -> None:
    """Events of a subscribed channel arrive as event frames; none after unsubscribing."""
    ws = await app.connect(make_token("alice"))
    await ws.subscribe("user:alice")
    await ws.subscribe("topic:system")
    await app.say(2, user_id="alice")
    await ws.recv_until(lambda f: f.get("seq") == 2)
    events = ws.events("user:alice")
    assert [f["seq"] for f in events] == [1, 2]
    assert events[0]["event"]["type"] == "notification"
    assert events[0]["event"]["user_id"] == "alice"
    await reply(ws, {"op": "unsubscribe", "channel": "user:alice"})
    await app.say(1, user_id="alice")
    await app.node.publisher.emit("system.message", data={"message": "marker"})
    await ws.recv_until(lambda f: f.get("channel") == "topic:system" and f["type"] == "event")
    assert [f["seq"] for f in ws.events("user:alice")] == [1, 2]
    await ws.close()


# -- errors keep the connection open -----------------------------------------------------

BAD_REQUESTS: list[tuple[str | bytes, Any]] = [
    ("not json", None),
    ("[1, 2]", None),
    (json.dumps({"op": "shout", "ref": 1}), 1),
    (json.dumps({"ref": "r"}), "r"),
    (json.dumps({"op": "subscribe", "ref": 2}), 2),
    (json.dumps({"op": "subscribe", "channel": 7, "ref": 3}), 3),
    (json.dumps({"op": "unsubscribe", "ref": 4}), 4),
    (json.dumps({"op": "subscribe", "channel": "user:alice", "since": "1", "ref": 5}), 5),
    (json.dumps({"op": "subscribe", "channel": "user:alice", "epoch": 9, "ref": 6}), 6),
    (b'{"op": "ping"}', None),  # a binary frame
]


async def test_bad_requests_are_named_and_the_connection_stays(
    app: App, make_token: MakeToken
) -> None:
    """Each bad_request case gets an error frame with its ref; the connection keeps working."""
    ws = await app.connect(make_token("alice"))
    for raw, ref in BAD_REQUESTS:
        if isinstance(raw, bytes):
            await ws.conn.send(raw)
            error = await ws.recv()
        else:
            error = await reply(ws, raw)
        assert error["type"] == "error", raw
        assert error["code"] == "bad_request", raw
        assert error["message"]
        assert error.get("ref") == ref, raw
    assert await reply(ws, {"op": "ping", "ref": "still"}) == {"type": "pong", "ref": "still"}
    await ws.close()


@pytest.mark.parametrize(
    ("user", "scopes", "channel", "code"),
    [
        ("alice", (), "queue:x", "bad_channel"),
        ("alice", (), "topic:weather", "bad_channel"),
        ("alice", (), "task:bad id", "bad_channel"),
        ("alice", (), "user:bob", "forbidden"),
        ("alice", (), "topic:orders", "forbidden"),
        ("alice", ("topic:clients",), "topic:orders", "forbidden"),
        ("bob", (), "task:t-alice", "forbidden"),
        ("alice", (), "task:t-unknown", "forbidden"),
    ],
)
async def test_refused_subscriptions_are_named(
    app: App, make_token: MakeToken, user: str, scopes: tuple[str, ...], channel: str, code: str
) -> None:
    """Malformed channels are bad_channel and others' channels forbidden, with ref echoed."""
    await app.node.store.create_task("t-alice", "alice", "orders.process")
    ws = await app.connect(make_token(user, scopes))
    error = await reply(ws, {"op": "subscribe", "channel": channel, "ref": 9})
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["ref"] == 9
    assert await reply(ws, {"op": "ping"}) == {"type": "pong"}
    await ws.close()


@pytest.mark.parametrize(
    ("user", "scopes", "channel"),
    [
        ("alice", (), "user:alice"),
        ("alice", (), "task:t-alice"),
        ("alice", (), "topic:system"),
        ("alice", ("topic:orders",), "topic:orders"),
        ("alice", ("topic:*",), "topic:inventory"),
        ("root", ("admin",), "user:alice"),
        ("root", ("admin",), "task:t-alice"),
        ("root", ("admin",), "topic:clients"),
    ],
)
async def test_allowed_subscriptions(
    app: App, make_token: MakeToken, user: str, scopes: tuple[str, ...], channel: str
) -> None:
    """Owners, scope holders and admin may subscribe, as the contract's table says."""
    await app.node.store.create_task("t-alice", "alice", "orders.process")
    ws = await app.connect(make_token(user, scopes))
    assert (await ws.subscribe(channel))["type"] == "subscribed"
    await ws.close()


async def test_more_than_100_subscriptions_are_refused(app: App, make_token: MakeToken) -> None:
    """The 101st subscription on one connection is too_many_subscriptions; the rest still work."""
    ws = await app.connect(make_token("root", ("admin",)))
    for i in range(100):
        assert (await ws.subscribe(f"user:u{i}"))["type"] == "subscribed"
    error = await reply(ws, {"op": "subscribe", "channel": "user:u100", "ref": "x"})
    assert error["code"] == "too_many_subscriptions"
    assert error["ref"] == "x"
    # Re-subscribing to a channel already held is not a new subscription.
    assert (await ws.subscribe("user:u5"))["type"] == "subscribed"
    await app.say(1, user_id="u99")
    assert (await ws.recv_until(lambda f: f["type"] == "event"))["channel"] == "user:u99"
    await ws.close()


async def test_frame_over_64_kib_closes_1009(app: App, make_token: MakeToken) -> None:
    """A client frame over 64 KiB closes the connection with 1009."""
    ws = await app.connect(make_token("alice"))
    await ws.send(json.dumps({"op": "ping", "pad": "x" * 70_000}))
    assert await closed_code(ws) == 1009


# -- task state and recovery -------------------------------------------------------------


async def test_task_subscription_carries_state(app: App, make_token: MakeToken) -> None:
    """subscribed on a task channel carries the task's state, as GET /tasks/{id} shows it."""
    store, publisher = app.node.store, app.node.publisher
    await store.create_task("t1", "alice", "orders.process")
    ws = await app.connect(make_token("alice"))
    fresh = await ws.subscribe("task:t1")
    assert fresh["state"]["status"] == "queued"
    assert fresh["seq"] == 0
    await publisher.emit("task.started", data={"attempt": 1}, task_id="t1")
    data = {"current": 2, "total": 4, "percent": 50.0, "message": "half"}
    await publisher.emit("task.progress", data=data, task_id="t1")
    await ws.recv_until(lambda f: f.get("seq") == 2)
    other = await app.connect(make_token("alice"))
    sub = await other.subscribe("task:t1")
    assert sub["seq"] == 2
    state = sub["state"]
    assert state["task_id"] == "t1"
    assert state["status"] == "running"
    assert state["progress"] == data
    assert state["seq"] == 2
    assert state["result"] is None
    assert state["error"] is None
    assert state["updated_at"]
    await ws.close()
    await other.close()


async def test_since_recovers_missed_events_then_goes_live(app: App, make_token: MakeToken) -> None:
    """Reconnecting with since=N and the epoch replays N+1..S, then live, each seq once."""
    ws = await app.connect(make_token("alice"))
    first = await ws.subscribe("user:alice")
    await app.say(2, user_id="alice")
    await ws.recv_until(lambda f: f.get("seq") == 2)
    await ws.close()
    await app.say(3, user_id="alice")  # missed while away: seq 3, 4, 5
    again = await app.connect(make_token("alice"))
    sub = await again.subscribe("user:alice", since=2, epoch=first["epoch"])
    assert sub["recovered"] is True
    assert sub["seq"] == 5
    assert sub["epoch"] == first["epoch"]
    await app.say(1, user_id="alice")
    await again.recv_until(lambda f: f.get("seq") == 6)
    assert [f["seq"] for f in again.events()] == [3, 4, 5, 6]
    await again.close()


async def test_task_recovery_without_epoch_replays_whole_history(
    app: App, make_token: MakeToken
) -> None:
    """since=0 on a task channel replays every event so far, in order, without a state."""
    await app.node.store.create_task("t2", "alice", "orders.process")
    for n in range(1, 4):
        progress = {"current": n, "total": 3, "percent": round(n * 100 / 3, 2)}
        await app.node.publisher.emit("task.progress", data=progress, task_id="t2")
    ws = await app.connect(make_token("alice"))
    sub = await ws.subscribe("task:t2", since=0)
    assert sub["recovered"] is True
    assert "state" not in sub
    await ws.recv_until(lambda f: f.get("seq") == 3)
    assert [f["seq"] for f in ws.events()] == [1, 2, 3]
    await ws.close()


async def test_wrong_epoch_is_not_recovered(app: App, make_token: MakeToken) -> None:
    """A since with another stream's epoch gets recovered:false, the state, then live events."""
    await app.node.store.create_task("t3", "alice", "orders.process")
    await app.node.publisher.emit("task.started", data={}, task_id="t3")
    ws = await app.connect(make_token("alice"))
    sub = await ws.subscribe("task:t3", since=0, epoch="another-stream")
    assert sub["recovered"] is False
    assert sub["seq"] == 1
    assert sub["state"]["status"] == "running"
    await app.node.publisher.emit("task.succeeded", data={"result": 1}, task_id="t3")
    await ws.recv_until(lambda f: f.get("seq") == 2)
    assert [f["seq"] for f in ws.events()] == [2]
    await ws.close()


async def test_since_beyond_history_is_not_recovered(
    serve: Callable[..., Awaitable[App]], make_token: MakeToken
) -> None:
    """When history no longer holds N+1 (or N is beyond the stream), recovered is false."""
    app = await serve(history_size=3)
    await app.say(6, user_id="alice")  # history keeps 4, 5, 6
    ws = await app.connect(make_token("alice"))
    trimmed = await ws.subscribe("user:alice", since=1)
    assert trimmed["recovered"] is False
    assert trimmed["seq"] == 6
    kept = await ws.subscribe("user:alice", since=3)  # a re-subscribe restarts the stream
    assert kept["recovered"] is True
    await ws.recv_until(lambda f: f.get("seq") == 6)
    ahead = await ws.subscribe("user:alice", since=50)
    assert ahead["recovered"] is False
    await app.say(1, user_id="alice")
    await ws.recv_until(lambda f: f.get("seq") == 7)
    assert [f["seq"] for f in ws.events()] == [4, 5, 6, 7]
    await ws.close()


@pytest.mark.timeout(60)
async def test_resume_while_a_worker_emits_sees_each_seq_once(
    app: App, make_token: MakeToken, redis_url: str
) -> None:
    """Clients that join or resume while a worker-style emitter publishes get every seq once."""
    emitter = Emitter(redis_url, history_size=5000, history_ttl=600, history_max_bytes=ALL)
    total = 400

    # Client k joins once the producer has emitted 50k + 25 events; the producer goes on
    # emitting meanwhile, but waits at 50k + 50 for it to have joined: every join is mid-stream.
    reached = [threading.Event() for _ in range(6)]
    joined = [threading.Event() for _ in range(6)]

    def produce() -> None:
        for i in range(total):
            emitter.progress("job1", i + 1, total)
            emitter.emit("notification", data={"title": str(i)}, user_id="alice")
            k, step = divmod(i, 50)
            if k < len(joined) and step == 24:
                reached[k].set()
            elif k < len(joined) and step == 49:
                assert joined[k].wait(30), f"client {k} never joined"
            if i % 20 == 19:
                time.sleep(0.005)  # pacing, like a task doing work between emits
        assert emitter.flush(timeout=30)

    producer = asyncio.create_task(anyio.to_thread.run_sync(produce))
    clients: list[tuple[WS, Frame, int | None]] = []
    token = make_token("alice")
    for k in range(len(joined)):
        assert await anyio.to_thread.run_sync(reached[k].wait, 30)
        ws = await app.connect(token)
        seq = (await app.node.store.read("user:alice")).seq
        since = [None, seq, max(0, seq - 30)][k % 3]
        clients.append((ws, await ws.subscribe("user:alice", since=since), since))
        joined[k].set()
    await producer
    mid_stream = sum(0 < frame["seq"] < total for _, frame, _ in clients)
    assert mid_stream >= len(clients) - 1  # the first may join before the first store
    for ws, frame, since in clients:
        first = frame["seq"] + 1 if since is None else since + 1
        if first <= total:
            await ws.recv_until(lambda f: f.get("seq") == total)
        assert [f["seq"] for f in ws.events()] == list(range(first, total + 1)), (since, frame)
        await ws.close()


async def test_start_up_objects_are_frozen_out_of_the_collector(
    serve: Callable[..., Awaitable[App]],
) -> None:
    """Once the node is up, its start-up objects sit in the permanent generation: a full
    collection (tens of ms, a stall for every socket) does not walk them."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    await serve()
    assert gc.get_freeze_count() > 10_000


def test_worker_pool_processes_freeze_what_they_inherit() -> None:
    """Each Celery pool process freezes what it inherited (worker_process_init)."""
    gc.unfreeze()
    alive = [object() for _ in range(1000)]
    freeze_startup_objects()
    assert gc.get_freeze_count() >= len(alive)
    gc.unfreeze()
