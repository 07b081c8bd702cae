"""`POST /publish`: server-to-server emitting with an API key, the same events `emit` takes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import redis

from .processes import Web, Worker
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(60)]

KEY = "k" * 40
OLD_KEY = "o" * 40


@pytest.fixture
def node(spawn: Callable[..., Web | Worker]) -> Web:
    web = spawn("web", TASKCAST_API_KEYS=f"{KEY},{OLD_KEY}")
    assert isinstance(web, Web)
    return web


def history_length(redis_url: str, channel: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(f"tc:h:{channel}"))
    finally:
        client.close()


async def test_a_published_event_reaches_subscribers_with_the_seq_it_was_given(
    node: Web, make_token: Callable[..., str]
) -> None:
    """One event and a batch are stored and relayed like `emit`'s; the answer names each seq."""
    token = make_token("pia")
    ws = await WS.open(node.ws_url, token)
    await ws.recv()
    await ws.subscribe("user:pia")
    async with httpx.AsyncClient(base_url=node.url, headers={"X-API-Key": KEY}) as http:
        one = await http.post(
            "/publish", json={"type": "notification", "user_id": "pia", "data": {"title": "hi"}}
        )
        assert one.status_code == 200, one.text
        assert one.json()["status"] == "ok"
        assert one.json()["seqs"] == {"user:pia": 1}
        frame = await ws.recv_until(lambda f: f["type"] == "event")
        assert frame["seq"] == 1
        assert frame["event"]["data"]["title"] == "hi"
        assert frame["event"]["id"] == one.json()["id"]

        events = [
            {"type": "notification", "user_id": "pia", "data": {"title": f"b{i}"}} for i in range(3)
        ]
        batch = await http.post("/publish/batch", json={"events": events})
        assert batch.status_code == 200, batch.text
        assert [r["seqs"]["user:pia"] for r in batch.json()["results"]] == [2, 3, 4]
    await ws.recv_until(lambda f: f.get("seq") == 4)
    assert [f["event"]["data"]["title"] for f in ws.events()] == ["hi", "b0", "b1", "b2"]
    await ws.close()


async def test_only_an_api_key_may_publish(node: Web, make_token: Callable[..., str]) -> None:
    """No key, an unknown key, or a user's token (even an admin's) is refused with 401; the
    old key of a rotation still works."""
    event = {"type": "notification", "user_id": "pia", "data": {"title": "x"}}
    admin = make_token("root", ("admin",))
    async with httpx.AsyncClient(base_url=node.url) as http:
        for headers in ({}, {"X-API-Key": "z" * 40}, {"Authorization": f"Bearer {admin}"}):
            reply = await http.post("/publish", json=event, headers=headers)
            assert reply.status_code == 401
            assert reply.json()["error"]["code"] == "unauthorized"
        rotated = await http.post("/publish", json=event, headers={"X-API-Key": OLD_KEY})
        assert rotated.status_code == 200


async def test_bad_events_are_refused_whole_and_nothing_is_stored(
    node: Web, redis_url: str
) -> None:
    """A batch with one bad event stores none of it; a too-large event is refused (413)."""
    good = {"type": "notification", "user_id": "quinn", "data": {"title": "ok"}}
    async with httpx.AsyncClient(base_url=node.url, headers={"X-API-Key": KEY}) as http:
        bad = {"type": "no.such.type", "user_id": "quinn", "data": {}}
        reply = await http.post("/publish/batch", json={"events": [good, bad]})
        assert reply.status_code == 422
        assert reply.json()["error"]["code"] == "bad_request"
        assert "events.1" in reply.json()["error"]["message"]
        assert "no.such.type" in reply.json()["error"]["message"]

        huge = {"type": "notification", "user_id": "quinn", "data": {"title": "a" * 100_000}}
        reply = await http.post("/publish", json=huge)
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "event_too_large"

        malformed = {"type": "notification", "user_id": "bad user!", "data": {"title": "x"}}
        assert (await http.post("/publish", json=malformed)).status_code == 422
    assert history_length(redis_url, "user:quinn") == 0


async def test_a_retry_with_the_same_id_stores_once(node: Web, redis_url: str) -> None:
    """A caller that retries after a timeout sends the same `id`: the retry answers `dup`."""
    event = {
        "type": "notification",
        "user_id": "rey",
        "data": {"title": "once"},
        "id": "0123456789abcdef0123456789abcdef",
    }
    async with httpx.AsyncClient(base_url=node.url, headers={"X-API-Key": KEY}) as http:
        first = await http.post("/publish", json=event)
        again = await http.post("/publish", json=event)
    assert first.json()["status"] == "ok"
    assert again.json()["status"] == "dup"
    assert history_length(redis_url, "user:rey") == 1


async def test_the_api_is_off_without_keys(web: Web) -> None:
    """With no TASKCAST_API_KEYS nothing can publish over HTTP, and the answer says why."""
    async with httpx.AsyncClient(base_url=web.url, headers={"X-API-Key": KEY}) as http:
        reply = await http.post(
            "/publish", json={"type": "notification", "user_id": "x", "data": {"title": "t"}}
        )
    assert reply.status_code == 404
    assert "TASKCAST_API_KEYS" in reply.json()["error"]["message"]
