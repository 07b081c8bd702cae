"""A connection lives no longer than its token: expiry, refresh in place, revocation.

In process (the app under uvicorn with taskcast's protocols, on the private Redis), except the
revocation across two real nodes at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from taskcast.api.main import create_app
from taskcast.realtime.client import Client
from taskcast.realtime.errors import Forbidden, TokenRevoked
from taskcast.realtime.expiry import Expiry
from taskcast.realtime.session import Session
from taskcast.realtime.settings import Settings
from taskcast.realtime.tokens import LEEWAY_SECONDS, Principal

from .inprocess import served
from .liveweb import running_web
from .processes import BIN, SECRET, RedisServer, Web
from .test_ws import App, closed_code, reply
from .wsclient import WS, Frame

pytestmark = pytest.mark.anyio


def token(
    user: str = "alice",
    scopes: tuple[str, ...] = (),
    *,
    expires_in: float = 3600,
    iat: int | None = None,
) -> str:
    """A token whose deadline (exp plus the leeway) is `expires_in` seconds away."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "iat": now if iat is None else iat,
        "exp": int(now + expires_in - LEEWAY_SECONDS),
        "scopes": list(scopes),
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def exp_of(value: str) -> int:
    exp: int = jwt.decode(value, options={"verify_signature": False})["exp"]
    return exp


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[App]]]:
    """Start apps (nodes of one Redis) as the Procfile runs them, in this loop."""
    async with contextlib.AsyncExitStack() as servers:

        async def start() -> App:
            app = create_app(settings)
            port = await servers.enter_async_context(served(app))
            return App(f"ws://127.0.0.1:{port}/ws", app.state.node)

        yield start


@pytest.fixture
async def app(serve: Callable[[], Awaitable[App]]) -> App:
    return await serve()


async def received(ws: WS, predicate: Callable[[Frame], bool]) -> None:
    """Wait until a frame matching `predicate` has come, now or before."""
    if not any(predicate(f) for f in ws.frames):
        await ws.recv_until(predicate)


def http_url(app: App) -> str:
    return app.url.replace("ws://", "http://").removesuffix("/ws")


async def revoke(app: App, user: str, admin: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=http_url(app)) as http:
        return await http.post(
            f"/users/{user}/revoke", headers={"Authorization": f"Bearer {admin}"}
        )


# -- expiry ------------------------------------------------------------------------------


async def test_a_socket_is_closed_when_its_token_expires(app: App) -> None:
    """Once its token's exp (plus the leeway) passes, a socket gets token_expired, then 4401."""
    short = token(expires_in=2)
    ws = await app.open(short)
    welcome = await ws.recv()
    assert welcome["expires_at"] == exp_of(short)
    await ws.subscribe("user:alice")
    assert await closed_code(ws, timeout=15) == 4401
    assert time.time() >= exp_of(short) + LEEWAY_SECONDS  # not while the token was valid
    assert ws.frames[-1]["type"] == "error"
    assert ws.frames[-1]["code"] == "token_expired"


async def test_an_sse_stream_ends_when_its_token_expires(app: App) -> None:
    """An /sse stream whose token expires sends an error event (token_expired) and ends."""
    frames: list[Frame] = []
    params = {"channel": "user:alice", "token": token(expires_in=2)}
    with anyio.fail_after(15):
        async with (
            httpx.AsyncClient(base_url=http_url(app), timeout=15) as http,
            http.stream("GET", "/sse", params=params) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line.removeprefix("data: ")))
    assert frames[0]["type"] == "subscribed"
    assert frames[-2]["type"] == "error"
    assert frames[-2]["code"] == "token_expired"
    assert frames[-1] == {"type": "close", "code": 4401, "reason": "token_expired"}


async def test_every_expired_connection_is_ended_and_no_other() -> None:
    """Hundreds of tokens expiring in one second all end; untracked or later ones do not."""
    ended: list[Session] = []
    all_ended = asyncio.Event()

    def expired(session: Session) -> None:
        ended.append(session)
        if len(ended) == len(due):
            all_ended.set()

    expiry = Expiry(expired)
    now = int(time.time())

    def session(expires_at: int) -> Session:
        async def ignore(*args: object) -> None:
            pass

        return Session(ignore, ignore, Principal("alice", frozenset(), {"exp": expires_at}))

    due = [session(now - LEEWAY_SECONDS) for _ in range(600)]
    gone, later = session(now - LEEWAY_SECONDS), session(now + 3600)
    for one in [*due, gone, later]:
        expiry.track(one)
    expiry.untrack(gone)
    with anyio.fail_after(10):
        await all_ended.wait()
    assert sorted(map(id, ended)) == sorted(map(id, due))
    assert len(expiry) == 1  # `later` alone is still watched
    expiry.close()


# -- refresh -----------------------------------------------------------------------------


async def test_a_refresh_keeps_every_seq_flowing_past_the_old_deadline(app: App) -> None:
    """After a refresh the socket outlives the old token and receives every seq, no gap."""
    short = token(expires_in=3)
    old_deadline = exp_of(short) + LEEWAY_SECONDS
    ws = await app.open(short)
    assert (await ws.recv())["type"] == "welcome"
    await ws.subscribe("user:alice")
    sent = 0
    stop = asyncio.Event()

    async def emit() -> None:
        nonlocal sent
        while not stop.is_set():
            await app.node.publisher.emit("notification", data={"title": "t"}, user_id="alice")
            sent += 1
            await asyncio.sleep(0.02)  # pacing, like a task doing work between emits

    emitter = asyncio.create_task(emit())
    try:
        await ws.recv_until(lambda f: f.get("seq") == 3)
        longer = token()
        await ws.send({"op": "refresh", "token": longer, "ref": "r1"})
        refreshed = await ws.recv_until(lambda f: f["type"] != "event")
        assert refreshed == {"type": "refreshed", "expires_at": exp_of(longer), "ref": "r1"}
        # Events keep coming after the old token's deadline has passed.
        await ws.recv_until(
            lambda f: f["type"] == "event" and time.time() > old_deadline + 1.5, timeout=15
        )
    finally:
        stop.set()
        await emitter
    await received(ws, lambda f: f.get("seq") == sent)
    assert [f["seq"] for f in ws.events("user:alice")] == list(range(1, sent + 1))
    assert await reply(ws, {"op": "ping", "ref": 2}) == {"type": "pong", "ref": 2}
    await ws.close()


@pytest.mark.parametrize("kind", ["another-user", "expired", "garbage"])
async def test_a_refused_refresh_keeps_the_connection_and_its_token(app: App, kind: str) -> None:
    """A refresh with another sub, an expired or a bad token is refused; nothing else changes."""
    new = {
        "another-user": token("bob"),
        "expired": token(expires_in=-60),
        "garbage": "not-a-token",
    }[kind]
    original = token()
    ws = await app.open(original)
    assert (await ws.recv())["type"] == "welcome"
    await ws.subscribe("user:alice")
    answer = await reply(ws, {"op": "refresh", "token": new, "ref": "r"})
    assert answer["type"] == "error"
    assert answer["code"] == "unauthorized"
    assert answer["ref"] == "r"
    await app.node.publisher.emit("notification", data={"title": "t"}, user_id="alice")
    event = await ws.recv_until(lambda f: f["type"] == "event")
    assert event["channel"] == "user:alice"
    # The connection still holds alice's token: bob's channel stays closed to it.
    refused = await reply(ws, {"op": "subscribe", "channel": "user:bob", "ref": "b"})
    assert refused["code"] == "forbidden"
    await ws.close()


async def test_a_narrowed_token_loses_exactly_what_it_no_longer_allows(app: App) -> None:
    """Refreshing to fewer scopes ends only the subscriptions the new token does not allow."""
    await app.node.store.create_task("tb", "bob", "orders.process")
    ws = await app.open(token(scopes=("admin",)))
    assert (await ws.recv())["type"] == "welcome"
    kept = ["user:alice", "topic:system", "topic:orders"]
    lost = ["user:bob", "task:tb", "topic:inventory"]
    for channel in kept + lost:
        assert (await ws.subscribe(channel))["type"] == "subscribed"
    await ws.send({"op": "refresh", "token": token(scopes=("topic:orders",)), "ref": "n"})
    refreshed = await ws.recv_until(lambda f: f["type"] == "refreshed")
    assert refreshed["ref"] == "n"
    ended = [f for f in ws.frames if f["type"] == "unsubscribed"]
    assert sorted(f["channel"] for f in ended) == sorted(lost)
    assert all(f["reason"] == "forbidden" for f in ended)
    assert ws.frames[-1] is refreshed  # every unsubscribed came before refreshed
    publisher = app.node.publisher
    await publisher.emit("notification", data={"title": "b"}, user_id="bob")
    await publisher.emit("task.started", data={"attempt": 1}, task_id="tb")
    await publisher.emit("inventory.low_stock", data={"sku": "A1", "qty": 1}, topic="inventory")
    await publisher.emit("system.message", data={"message": "s"}, topic="system")
    await publisher.emit("order.updated", data={"order_id": "o", "changes": {}}, topic="orders")
    await publisher.emit("notification", data={"title": "a"}, user_id="alice")
    for channel in kept:
        await received(ws, lambda f, c=channel: f["type"] == "event" and f["channel"] == c)  # type: ignore[misc]
    assert not [f for f in ws.events() if f["channel"] in lost]
    again = await reply(ws, {"op": "subscribe", "channel": "topic:inventory", "ref": "i"})
    assert again["code"] == "forbidden"
    await ws.close()


# -- revocation --------------------------------------------------------------------------


async def test_revocation_ends_the_users_sockets_and_refuses_older_tokens(app: App) -> None:
    """An admin revokes a user: their sockets end (token_revoked, 4401), only theirs, and
    tokens issued up to then or undated are refused on /ws and HTTP, newer ones accepted."""
    old = token()
    alice, bob = await app.open(old), await app.open(token("bob"))
    for ws in (alice, bob):
        assert (await ws.recv())["type"] == "welcome"
    assert (await revoke(app, "alice", token("carol"))).status_code == 403
    answer = await revoke(app, "alice", token("root", ("admin",)))
    assert answer.status_code == 202
    revoked_at = answer.json()["revoked_at"]
    assert answer.json() == {"user_id": "alice", "revoked_at": revoked_at}
    assert await closed_code(alice) == 4401
    assert alice.frames[-1]["code"] == "token_revoked"
    assert await reply(bob, {"op": "ping"}) == {"type": "pong"}
    again = await app.open(old)
    assert await closed_code(again) == 4401
    assert again.frames == [{"type": "error", "code": "unauthorized", "message": "token revoked"}]
    async with httpx.AsyncClient(base_url=http_url(app)) as http:
        refused = await http.get("/tasks/x", headers={"Authorization": f"Bearer {old}"})
    assert refused.status_code == 401
    no_iat = {"sub": "alice", "exp": int(time.time()) + 3600}
    undated = await app.open(jwt.encode(no_iat, SECRET, algorithm="HS256"))
    assert await closed_code(undated) == 4401  # no `iat`: refused while the revocation stands
    newer = await app.open(token(iat=revoked_at + 1))
    assert (await newer.recv())["type"] == "welcome"
    for ws in (bob, newer):
        await ws.close()


async def test_a_node_started_after_a_revocation_refuses_older_tokens(
    serve: Callable[[], Awaitable[App]],
) -> None:
    """A node that starts after a revocation reads it from Redis and refuses older tokens."""
    first = await serve()
    old = token()
    assert (await revoke(first, "alice", token("root", ("admin",)))).status_code == 202
    second = await serve()
    ws = await second.open(old)
    assert await closed_code(ws) == 4401
    assert ws.frames[0]["code"] == "unauthorized"


# -- the Python client -------------------------------------------------------------------


async def test_the_client_refreshes_in_place_before_its_token_expires(app: App) -> None:
    """Given a token function, the client refreshes ahead of expiry on the same connection."""
    calls = 0

    async def fetch() -> str:
        nonlocal calls
        calls += 1
        return token(expires_in=3 if calls == 1 else 3600)

    first_deadline = time.time() + 3
    async with Client(http_url(app), fetch) as client:
        async with client.subscribe("user:alice") as sub:
            await sub.ready(timeout=10)
            with anyio.fail_after(20):
                while time.time() < first_deadline + 1.5:
                    await app.node.publisher.emit(
                        "notification", data={"title": "t"}, user_id="alice"
                    )
                    frame = await anext(sub)
                    assert frame["type"] == "event"
        assert calls == 2
        assert client.connections == 1


async def test_the_client_reconnects_with_a_new_token_after_a_revocation(app: App) -> None:
    """A revoked client with a token function reconnects with a newer token and resumes;
    with a plain token it stops with TokenRevoked."""
    revoked_at: int | None = None

    def fetch() -> str:
        return token() if revoked_at is None else token(iat=revoked_at + 1)

    async with (
        Client(http_url(app), fetch) as renewing,
        Client(http_url(app), token()) as plain,
        renewing.subscribe("user:alice") as sub,
        plain.subscribe("user:alice") as other,
    ):
        await sub.ready(timeout=10)
        await other.ready(timeout=10)
        answer = await revoke(app, "alice", token("root", ("admin",)))
        revoked_at = answer.json()["revoked_at"]
        with anyio.fail_after(10), pytest.raises(TokenRevoked):
            await anext(other)
        await app.node.publisher.emit("notification", data={"title": "t"}, user_id="alice")
        with anyio.fail_after(15):
            frame = await anext(sub)  # on the next connection: resumed from history
        assert frame["type"] == "event"
        assert frame["seq"] == 1
        assert renewing.connections == 2


async def test_the_client_ends_a_subscription_a_refresh_forbids(app: App) -> None:
    """A subscription the refreshed token no longer allows ends with Forbidden."""
    calls = 0

    def narrowing() -> str:
        nonlocal calls
        calls += 1
        scopes = ("topic:orders",) if calls == 1 else ()
        return token(scopes=scopes, expires_in=3 if calls == 1 else 3600)

    async with Client(http_url(app), narrowing) as client, client.subscribe("topic:orders") as sub:
        await sub.ready(timeout=10)
        with anyio.fail_after(15), pytest.raises(Forbidden):
            await anext(sub)
    assert calls == 2


# -- across real nodes -------------------------------------------------------------------


@pytest.fixture
def two_nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Web, Web]]:
    for name in "ab":
        (tmp_path / name).mkdir()
    with (
        running_web(redis_server, tmp_path / "a", TASKCAST_NODE_ID="a") as a,
        running_web(redis_server, tmp_path / "b", TASKCAST_NODE_ID="b") as b,
    ):
        yield a, b


@pytest.mark.e2e
async def test_revocation_reaches_every_node(two_nodes: tuple[Web, Web]) -> None:
    """`taskcast revoke` on one node ends the user's sockets on both; both then refuse
    the user's older tokens and accept a newer one."""
    a, b = two_nodes
    user = f"u-{time.time_ns()}"
    old = token(user)
    sockets = [await WS.open(node.ws_url, old) for node in (a, b)]
    for ws in sockets:
        assert (await ws.recv())["type"] == "welcome"
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [str(BIN / "taskcast"), "revoke", user, "--url", a.url],
            env={"TASKCAST_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    )
    assert done.returncode == 0, done.stderr
    revoked_at = int(done.stdout.split()[-1])
    for ws in sockets:
        assert await closed_code(ws, timeout=10) == 4401
        assert ws.frames[-1]["code"] == "token_revoked"
    for node in (a, b):
        again = await WS.open(node.ws_url, old)
        assert await closed_code(again) == 4401
        newer = await WS.open(node.ws_url, token(user, iat=revoked_at + 1))
        assert (await newer.recv())["type"] == "welcome"
        await newer.close()
