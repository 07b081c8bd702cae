"""/ws attacked from outside a live uvicorn: tokens, Origin, the access table and every limit."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import jwt
import jwt.warnings
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from taskcast.realtime.tokens import LEEWAY_SECONDS, issue

from .liveweb import SECRET, fresh_user, running_web
from .processes import RedisServer, Web
from .wsclient import WS, Frame

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CONTRACT_CODES = {
    "bad_request",
    "bad_channel",
    "forbidden",
    "too_many_subscriptions",
    "rate_limited",
    "unauthorized",
    "too_many_connections",
}
ALLOWED_ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One node with contract defaults except a small per-user connection cap."""
    with running_web(
        redis_server, tmp_path_factory.mktemp("ws"), TASKCAST_MAX_CONNECTIONS_PER_USER="3"
    ) as node:
        yield node


async def drain_until_closed(ws: WS, timeout: float = 10.0) -> int | None:
    """Read every remaining frame until the server closes; the close code."""
    with anyio.fail_after(timeout):
        while True:
            try:
                await ws.recv(timeout)
            except ConnectionClosed:
                return ws.close_code


async def welcomed(web: Web, token: str, **kwargs: object) -> WS:
    ws = await WS.open(web.ws_url, token, **kwargs)
    assert (await ws.recv())["type"] == "welcome"
    return ws


def has_ref(ref: object) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("ref") == ref


async def subscribe(ws: WS, channel: str, **extra: object) -> Frame:
    """Subscribe and return the reply to this very frame (errors carry `ref`, not `channel`)."""
    ref = uuid.uuid4().hex[:8]
    await ws.send({"op": "subscribe", "channel": channel, "ref": ref, **extra})
    return await ws.recv_until(lambda f: f.get("ref") == ref and f["type"] != "event")


async def post_order(web: Web, user: str) -> str:
    """Enqueue an order as `user` (no worker needed: ownership is recorded at enqueue)."""
    headers = {"Authorization": f"Bearer {issue(SECRET, user)}"}
    async with httpx.AsyncClient(base_url=web.url, headers=headers) as http:
        reply = await http.post(
            "/orders", json={"customer_id": "c1", "items": [{"sku": "A1", "qty": 1}]}
        )
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


def hs512(claims: dict[str, object]) -> str:
    """The right secret with the wrong algorithm (PyJWT warns the key is short for HS512)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, SECRET, algorithm="HS512")


def bad_tokens() -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": "mallory", "exp": now + 600, "scopes": ["admin"]}
    return {
        "forged": jwt.encode(claims, "not-the-secret-" + "y" * 40, algorithm="HS256"),
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "hs512": hs512(claims),
        "expired": issue(SECRET, "mallory", ["admin"], ttl=-(LEEWAY_SECONDS + 30)),
        "no_sub": jwt.encode({"exp": now + 600}, SECRET, algorithm="HS256"),
        "no_exp": jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256"),
        "garbage": "definitely-not-a-jwt",
    }


@pytest.mark.parametrize("kind", [None, *bad_tokens()])
async def test_bad_or_missing_token_gets_unauthorized_then_4401(web: Web, kind: str | None) -> None:
    """Without a valid token the only frame is `unauthorized`, then close 4401."""
    token = None if kind is None else bad_tokens()[kind]
    ws = await WS.open(web.ws_url, token)
    code = await drain_until_closed(ws)
    assert code == 4401
    assert len(ws.frames) == 1, ws.frames
    assert ws.frames[0]["type"] == "error"
    assert ws.frames[0]["code"] == "unauthorized"


async def test_bearer_header_authenticates_a_non_browser_client(web: Web) -> None:
    """`Authorization: Bearer` works on /ws as well as `?token=`."""
    user = fresh_user()
    headers = {"Authorization": f"Bearer {issue(SECRET, user)}"}
    ws = WS(await websockets.connect(web.ws_url, additional_headers=headers))
    welcome = await ws.recv()
    assert welcome["type"] == "welcome"
    assert welcome["user"] == user
    await ws.close()


async def test_hostile_origin_is_refused_at_the_handshake(web: Web) -> None:
    """A browser page on another origin cannot open /ws, even with a valid token."""
    token = issue(SECRET, fresh_user(), ["admin"])
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{web.port}.evil.example"):
        with pytest.raises(InvalidStatus) as info:
            await WS.open(web.ws_url, token, origin=origin)
        assert info.value.response.status_code == 403, origin


async def test_same_origin_and_originless_clients_are_accepted(web: Web) -> None:
    """The page served by this node, and clients that send no Origin, connect."""
    token = issue(SECRET, fresh_user())
    same = await welcomed(web, token, origin=f"http://127.0.0.1:{web.port}")
    plain = await welcomed(web, token)
    await same.close()
    await plain.close()


async def test_allowed_origins_list_is_enforced(redis_server: RedisServer, tmp_path: Path) -> None:
    """With TASKCAST_ALLOWED_ORIGINS set, a listed origin connects and any other is refused."""
    with running_web(redis_server, tmp_path, TASKCAST_ALLOWED_ORIGINS=ALLOWED_ORIGIN) as node:
        token = issue(SECRET, fresh_user())
        ws = await welcomed(node, token, origin=ALLOWED_ORIGIN)
        await ws.close()
        with pytest.raises(InvalidStatus) as info:
            await WS.open(node.ws_url, token, origin="https://app.example.com.evil.example")
        assert info.value.response.status_code == 403


async def test_access_table_for_a_plain_user(web: Web) -> None:
    """A user reads their own task and user channel and topic:system; nothing of anyone else."""
    alice, bob = fresh_user("alice"), fresh_user("bob")
    own_task, bobs_task = await post_order(web, alice), await post_order(web, bob)
    ws = await welcomed(web, issue(SECRET, alice))
    allowed = [f"task:{own_task}", f"user:{alice}", "topic:system"]
    denied = [f"task:{bobs_task}", f"user:{bob}", "topic:orders", "topic:inventory"]
    for channel in allowed:
        assert (await subscribe(ws, channel))["type"] == "subscribed", channel
    for channel in denied:
        reply = await subscribe(ws, channel)
        assert (reply["type"], reply["code"]) == ("error", "forbidden"), channel
    # Nothing of Bob's ever arrives, though his task has events.
    await ws.send({"op": "ping", "ref": "end"})
    await ws.recv_until(lambda f: f.get("ref") == "end")
    assert all(f["channel"] in allowed for f in ws.events())
    await ws.close()


async def test_unknown_task_channel_is_forbidden_not_revealed(web: Web) -> None:
    """Subscribing to a task id nobody submitted is `forbidden`, like another user's task."""
    ws = await welcomed(web, issue(SECRET, fresh_user()))
    reply = await subscribe(ws, "task:0123456789abcdef0123456789abcdef")
    assert reply["code"] == "forbidden"
    await ws.close()


@pytest.mark.parametrize(
    ("scopes", "readable"),
    [
        (("topic:orders",), {"topic:orders", "topic:system"}),
        (("topic:*",), {"topic:orders", "topic:clients", "topic:inventory", "topic:system"}),
        (("admin",), {"topic:orders", "topic:clients", "topic:inventory", "topic:system"}),
    ],
)
async def test_topic_channels_follow_scopes(
    web: Web, scopes: tuple[str, ...], readable: set[str]
) -> None:
    """`topic:<name>` needs that scope, `topic:*` or admin; `topic:system` is open to all."""
    ws = await welcomed(web, issue(SECRET, fresh_user(), scopes))
    for channel in ("topic:orders", "topic:clients", "topic:inventory", "topic:system"):
        reply = await subscribe(ws, channel)
        expected = "subscribed" if channel in readable else "error"
        assert reply["type"] == expected, (channel, reply)
    await ws.close()


async def test_admin_reads_any_task_and_user(web: Web) -> None:
    """An admin token may subscribe to another user's task and user channels."""
    bob = fresh_user("bob")
    task_id = await post_order(web, bob)
    ws = await welcomed(web, issue(SECRET, fresh_user("admin"), ["admin"]))
    reply = await subscribe(ws, f"task:{task_id}")
    assert reply["type"] == "subscribed"
    assert reply["state"]["status"] == "queued"
    assert (await subscribe(ws, f"user:{bob}"))["type"] == "subscribed"
    await ws.close()


async def test_frame_over_64_kib_closes_with_1009(web: Web) -> None:
    """A frame over 64 KiB closes the connection with 1009."""
    ws = await welcomed(web, issue(SECRET, fresh_user()))
    await ws.send('{"op":"ping","pad":"' + "x" * (64 * 1024) + '"}')
    assert await drain_until_closed(ws) == 1009


@pytest.mark.parametrize(
    "frame",
    [
        '{"op":"ping","pad":"' + "x" * (64 * 1024) + '"}',
        '{"op":"ping","pad":"' + "\u20ac" * 30_000 + '"}',  # 30k characters, 90 KB of UTF-8
    ],
    ids=["ascii", "multibyte"],
)
async def test_the_app_enforces_the_frame_limit_without_uvicorns_help(
    redis_server: RedisServer, tmp_path: Path, frame: str
) -> None:
    """Under plain uvicorn (16 MiB frames) the app itself closes a frame over 64 KiB with 1009."""
    with running_web(redis_server, tmp_path, plain=True) as node:
        ws = await welcomed(node, issue(SECRET, fresh_user()))
        await ws.send(frame)
        assert await drain_until_closed(ws) == 1009


async def test_frame_just_under_the_limit_is_answered(web: Web) -> None:
    """A frame under 64 KiB is parsed and answered, the connection stays open."""
    ws = await welcomed(web, issue(SECRET, fresh_user()))
    await ws.send('{"op":"ping","ref":"big","pad":"' + "x" * 60_000 + '"}')
    assert (await ws.recv_until(lambda f: f.get("ref") == "big"))["type"] == "pong"
    await ws.close()


@pytest.mark.timeout(90)
async def test_more_than_100_subscriptions_are_refused(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The 101st subscription gets `too_many_subscriptions`; the connection keeps working."""
    # A generous rate limit so this test sees the subscription limit, not the flood limit.
    with running_web(redis_server, tmp_path, TASKCAST_RATE_BURST="1000") as node:
        ws = await welcomed(node, issue(SECRET, fresh_user(), ["admin"]))
        for i in range(100):
            await ws.send({"op": "subscribe", "channel": f"user:sub-{i}", "ref": i})
        for i in range(100):
            reply = await ws.recv_until(has_ref(i), timeout=20)
            assert reply["type"] == "subscribed", reply
        reply = await subscribe(ws, "user:one-too-many")
        assert reply["code"] == "too_many_subscriptions"
        # Unsubscribing frees a slot; re-subscribing an existing channel never counts twice.
        await ws.send({"op": "unsubscribe", "channel": "user:sub-0"})
        await ws.recv_until(lambda f: f["type"] == "unsubscribed")
        assert (await subscribe(ws, "user:one-too-many"))["type"] == "subscribed"
        assert (await subscribe(ws, "user:sub-5"))["type"] == "subscribed"
        await ws.close()


async def test_flood_gets_rate_limited_then_4429(web: Web) -> None:
    """A flooding client gets `rate_limited` (with each frame's ref), then close 4429."""
    ws = await welcomed(web, issue(SECRET, fresh_user()))
    sent = 0
    with anyio.move_on_after(20):
        while sent < 5000:
            try:
                await ws.send({"op": "ping", "ref": sent})
            except ConnectionClosed:
                break
            sent += 1
    assert await drain_until_closed(ws) == 4429
    errors = [f for f in ws.frames if f["type"] == "error"]
    assert errors
    assert {f["code"] for f in errors} == {"rate_limited"}
    # Each refusal names the frame it refused, and every frame got at most one answer.
    refs = [f["ref"] for f in ws.frames if f["type"] in ("error", "pong")]
    assert len(refs) == len(set(refs))
    assert all(isinstance(f["ref"], int) for f in errors)


async def test_other_connections_survive_a_flooder(web: Web) -> None:
    """While one connection floods and is closed, another connection of the node answers."""
    bystander = await welcomed(web, issue(SECRET, fresh_user()))
    flooder = await welcomed(web, issue(SECRET, fresh_user()))
    with anyio.move_on_after(20):
        for _ in range(3000):
            try:
                await flooder.send({"op": "ping"})
            except ConnectionClosed:
                break
    assert await drain_until_closed(flooder) == 4429
    await bystander.send({"op": "ping", "ref": "still-here"})
    assert (await bystander.recv())["ref"] == "still-here"
    await bystander.close()


async def test_connections_per_user_are_capped(web: Web) -> None:
    """Past the per-user cap a new connection gets `too_many_connections` and 4429."""
    user = fresh_user()
    token = issue(SECRET, user)
    open_ = [await welcomed(web, token) for _ in range(3)]
    extra = await WS.open(web.ws_url, token)
    assert await drain_until_closed(extra) == 4429
    assert [f["code"] for f in extra.frames] == ["too_many_connections"]
    other = await welcomed(web, issue(SECRET, fresh_user()))  # other users are unaffected
    await open_[0].close()
    await open_[0].conn.wait_closed()

    async def reconnect() -> WS:
        # The server frees the slot as soon as it sees the close: retry within a deadline.
        while True:
            ws = await WS.open(web.ws_url, token)
            first: Frame = await ws.recv()
            if first["type"] == "welcome":
                return ws
            await drain_until_closed(ws)

    with anyio.fail_after(10):
        again = await reconnect()
    for ws in [*open_[1:], other, again]:
        await ws.close()


async def test_errors_keep_the_connection_open_and_use_contract_codes(web: Web) -> None:
    """Bad frames each get one error with a contract code and the sender's ref; no close."""
    ws = await welcomed(web, issue(SECRET, fresh_user()))
    bad = [
        "not json",
        "[1, 2]",
        '{"op": "launch", "ref": 1}',
        '{"op": "subscribe", "ref": 2}',
        '{"op": "subscribe", "channel": "task:../../etc", "ref": 3}',
        '{"op": "subscribe", "channel": "topic:system", "since": -1, "ref": 4}',
        '{"op": "subscribe", "channel": "topic:system", "since": 1e999, "ref": 5}',
        '{"op": "subscribe", "channel": "topic:system", "since": 99999999999999999999999}',
        '{"op": "subscribe", "channel": "redis:KEYS *", "ref": 6}',
    ]
    for frame in bad:
        await ws.send(frame)
    await ws.conn.send(b"\x00\xff binary")
    await ws.send({"op": "ping", "ref": "done"})
    await ws.recv_until(lambda f: f.get("ref") == "done")
    errors = [f for f in ws.frames if f["type"] == "error"]
    assert len(errors) == len(bad) + 1
    assert {e["code"] for e in errors} <= CONTRACT_CODES
    refs = [e.get("ref") for e in errors]
    assert refs[2:6] == [1, 2, 3, 4]
    assert 6 in refs
    for error in errors:
        text = error["message"].lower()
        assert "traceback" not in text
        assert "taskcast:" not in text
        assert "redis" not in text
    await ws.close()
