"""The demo sign-in: a token for any demo user in embedded mode, and no such route otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from taskcast.realtime.tokens import verify

from .processes import SECRET, Web

pytestmark = pytest.mark.e2e


def client(spawn: Callable[..., Web], **env: str) -> Iterator[httpx.Client]:
    web = spawn("web", **env)
    with httpx.Client(base_url=web.url, timeout=10) as http:
        yield http


@pytest.fixture
def embedded(spawn: Callable[..., Web]) -> Iterator[httpx.Client]:
    yield from client(spawn, TASKCAST_EMBEDDED="1")


@pytest.fixture
def deployed(spawn: Callable[..., Web]) -> Iterator[httpx.Client]:
    yield from client(spawn)


def test_demo_sign_in_issues_a_topic_reader_token(embedded: httpx.Client) -> None:
    """Embedded, POST /auth/demo returns a token for that user with the orders/inventory scopes."""
    assert embedded.get("/auth/demo").status_code == 200
    reply = embedded.post("/auth/demo", json={"user": "alice"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    principal = verify(body["token"], SECRET)
    assert principal.user == "alice"
    assert principal.scopes == frozenset({"topic:orders", "topic:inventory"})
    assert body["scopes"] == ["topic:orders", "topic:inventory"]
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert embedded.get("/tasks/unknown", headers=headers).status_code == 404  # signed in


@pytest.mark.parametrize("user", ["", "has space", "x" * 65, "topic:orders"])
def test_demo_sign_in_rejects_bad_user_names(embedded: httpx.Client, user: str) -> None:
    """A user name that could not be a channel id is a 422 naming the field."""
    reply = embedded.post("/auth/demo", json={"user": user})
    assert reply.status_code == 422
    assert reply.json()["error"]["fields"] == ["user"]


def test_demo_sign_in_does_not_exist_outside_embedded(deployed: httpx.Client) -> None:
    """Outside embedded mode /auth/demo answers 404 to GET and POST: nobody mints tokens."""
    assert deployed.get("/auth/demo").status_code == 404
    reply = deployed.post("/auth/demo", json={"user": "alice"})
    assert reply.status_code == 404
    assert "token" not in reply.text


def test_page_says_whether_demo_sign_in_exists(
    embedded: httpx.Client, deployed: httpx.Client
) -> None:
    """The dashboard page carries the demo sign-in flag, so it never has to probe /auth/demo."""
    flag = '<meta name="taskcast-demo" content="{}">'
    assert flag.format("on") in embedded.get("/").text
    assert flag.format("off") in deployed.get("/").text
