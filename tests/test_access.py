"""The app's authorization policy decides who may follow what, on /ws, /sse and task routes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from taskcast.api.deps import Node
from taskcast.api.main import create_app
from taskcast.realtime.access import load_policy
from taskcast.realtime.settings import Settings

from .inprocess import served
from .processes import SECRET
from .wsclient import WS

pytestmark = pytest.mark.anyio


def token(user: str, scopes: tuple[str, ...] = (), **claims: Any) -> str:
    """An HS256 token with extra claims of the app's own (boards, suspended)."""
    body = {"sub": user, "exp": int(time.time()) + 600, "scopes": list(scopes), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def subscribe(ws: WS, channel: str) -> dict[str, Any]:
    """The reply to subscribing `channel`: `subscribed`, or the error frame (by its `ref`)."""
    await ws.send({"op": "subscribe", "channel": channel, "ref": channel})
    return await ws.recv_until(lambda f: f.get("ref") == channel)


@dataclass
class App:
    http: str
    ws: str
    node: Node

    async def connect(self, bearer: str) -> WS:
        ws = await WS.open(self.ws, bearer)
        assert (await ws.recv())["type"] == "welcome"
        return ws


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Callable[[str], Awaitable[App]]]:
    """Start the app in process with `TASKCAST_AUTHORIZE` set to the given policy."""
    async with AsyncExitStack() as stack:

        async def start(policy: str) -> App:
            app = create_app(settings.model_copy(update={"authorize": policy}))
            port = await stack.enter_async_context(served(app))
            base = f"127.0.0.1:{port}"
            return App(f"http://{base}", f"ws://{base}/ws", app.state.node)

        yield start


async def test_app_named_channels_follow_the_policy(
    serve: Callable[[str], Awaitable[App]],
) -> None:
    """With a policy, `board:42` is a channel; the token's own claim says which boards."""
    app = await serve("tests.policy_app:authorize")
    ws = await app.connect(token("alice", boards=["42"]))
    assert (await subscribe(ws, "board:42"))["type"] == "subscribed"
    refused = await subscribe(ws, "board:7")
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert (await subscribe(ws, "board 7!"))["code"] == "bad_channel"
    await ws.close()


async def test_the_policy_governs_ws_sse_and_task_routes(
    serve: Callable[[str], Awaitable[App]],
) -> None:
    """`support` reads another's task on every route; a suspended user loses a topic on each."""
    app = await serve("tests.policy_app:authorize")
    await app.node.store.create_task("t-alice", "alice", "orders.process")
    support = token("sam", ("support",))
    suspended = token("sue", ("topic:orders",), suspended=True)

    ws = await app.connect(support)
    assert (await subscribe(ws, "task:t-alice"))["type"] == "subscribed"
    await ws.close()
    ws = await app.connect(suspended)
    assert (await subscribe(ws, "topic:orders"))["code"] == "forbidden"
    await ws.close()

    async with httpx.AsyncClient(base_url=app.http, timeout=10) as http:
        read = await http.get("/tasks/t-alice", headers={"Authorization": f"Bearer {support}"})
        assert read.status_code == 200
        assert read.json()["status"] == "queued"
        other = token("bob")
        denied = await http.get("/tasks/t-alice", headers={"Authorization": f"Bearer {other}"})
        assert denied.status_code == 403
        sse = {"channel": "task:t-alice", "token": support}
        async with http.stream("GET", "/sse", params=sse) as stream:
            assert stream.status_code == 200
        sse = {"channel": "topic:orders", "token": suspended}
        async with http.stream("GET", "/sse", params=sse) as stream:
            assert stream.status_code == 403


async def test_no_answer_leaves_the_built_in_rules(serve: Callable[[str], Awaitable[App]]) -> None:
    """Where the policy returns None, a user still has their own channel and not another's."""
    app = await serve("tests.policy_app:authorize_async")
    ws = await app.connect(token("alice"))
    assert (await subscribe(ws, "user:alice"))["type"] == "subscribed"
    assert (await subscribe(ws, "user:bob"))["code"] == "forbidden"
    assert (await subscribe(ws, "board:1"))["code"] == "forbidden"
    await ws.close()


async def test_a_policy_that_raises_refuses_and_the_connection_lives(
    serve: Callable[[str], Awaitable[App]],
) -> None:
    """The app's policy failing is `forbidden` for that subscribe, not a dropped connection."""
    app = await serve("tests.policy_app:broken")
    ws = await app.connect(token("alice", ("admin",)))
    assert (await subscribe(ws, "user:alice"))["code"] == "forbidden"
    await ws.send({"op": "ping", "ref": 1})
    assert (await ws.recv_until(lambda f: f["type"] == "pong"))["ref"] == 1
    await ws.close()


@pytest.mark.parametrize("spec", ["tests.no_such_module:authorize", "tests.policy_app:nothing"])
def test_a_policy_that_cannot_be_imported_stops_start_up(spec: str) -> None:
    """A wrong `TASKCAST_AUTHORIZE` is named at start-up, not discovered at the first subscribe."""
    with pytest.raises(ValueError, match="TASKCAST_AUTHORIZE"):
        load_policy(spec)


async def test_without_a_policy_only_the_contracts_channels_exist(
    settings: Settings,
) -> None:
    """No policy: `board:42` and unknown topics stay `bad_channel`, as the contract says."""
    async with served(create_app(settings)) as port:
        ws = await WS.open(f"ws://127.0.0.1:{port}/ws", token("alice", ("admin",)))
        await ws.recv()
        assert (await subscribe(ws, "board:42"))["code"] == "bad_channel"
        assert (await subscribe(ws, "topic:boards"))["code"] == "bad_channel"
        await ws.close()
