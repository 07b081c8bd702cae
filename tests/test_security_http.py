"""The REST API attacked from outside a live uvicorn: tokens, ownership, body limits, logs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import jwt
import pytest

from taskcast.realtime.tokens import LEEWAY_SECONDS, issue

from .liveweb import SECRET, fresh_user, running_web
from .processes import RedisServer, Web, Worker, wait_for
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

MAX_BODY = 4096
MAX_ROWS = 50
ORDER = {"customer_id": "c1", "items": [{"sku": "A1", "qty": 1}]}
LEAKS = ("traceback", 'file "', "redis", "taskcast:", "sqlalchemy", "select ", "exception")


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One node with small body and row limits so the tests stay cheap."""
    with running_web(
        redis_server,
        tmp_path_factory.mktemp("http"),
        TASKCAST_MAX_BODY_BYTES=str(MAX_BODY),
        TASKCAST_MAX_IMPORT_ROWS=str(MAX_ROWS),
    ) as node:
        yield node


@pytest.fixture
async def http(web: Web) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
        yield client


def auth(user: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(SECRET, user, scopes)}"}


def assert_contract_error(reply: httpx.Response, status: int, code: str) -> None:
    """The status and stable code, and nothing internal in the body."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    text = reply.text.lower()
    for leak in LEAKS:
        assert leak not in text, (leak, reply.text)


def hostile_tokens() -> dict[str, str | None]:
    now = int(time.time())
    claims = {"sub": "mallory", "exp": now + 600, "scopes": ["admin"]}
    return {
        "none": None,
        "forged": jwt.encode(claims, "not-the-secret-" + "y" * 40, algorithm="HS256"),
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "expired": issue(SECRET, "mallory", ["admin"], ttl=-(LEEWAY_SECONDS + 30)),
        "garbage": "eyJ.not.a.token",
    }


@pytest.mark.parametrize("kind", list(hostile_tokens()))
async def test_requests_without_a_valid_token_get_401(http: httpx.AsyncClient, kind: str) -> None:
    """No token, a forged, unsigned, expired or garbage one: 401 `unauthorized` everywhere."""
    token = hostile_tokens()[kind]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    task_id = "0123456789abcdef0123456789abcdef"
    for method, path, body in [
        ("POST", "/orders", ORDER),
        ("POST", "/inventory/imports", {"rows": [{"sku": "A1", "qty": 1}]}),
        ("GET", f"/tasks/{task_id}", None),
        ("POST", f"/tasks/{task_id}/cancel", None),
        ("GET", "/ws/stats", None),
    ]:
        reply = await http.request(method, path, json=body, headers=headers)
        assert_contract_error(reply, 401, "unauthorized")
        assert reply.headers["www-authenticate"] == "Bearer"


async def test_token_in_the_query_string_is_not_accepted_on_rest(http: httpx.AsyncClient) -> None:
    """REST reads only the Authorization header: `?token=` there authenticates nothing."""
    reply = await http.post("/orders", params={"token": issue(SECRET, "alice")}, json=ORDER)
    assert_contract_error(reply, 401, "unauthorized")


async def test_another_users_task_is_forbidden(http: httpx.AsyncClient) -> None:
    """Bob can neither read nor cancel Alice's task; an admin can read it; Alice's is intact."""
    alice, bob = fresh_user("alice"), fresh_user("bob")
    reply = await http.post("/orders", json=ORDER, headers=auth(alice))
    assert reply.status_code == 202, reply.text
    task_id = reply.json()["task_id"]
    assert_contract_error(await http.get(f"/tasks/{task_id}", headers=auth(bob)), 403, "forbidden")
    cancel = await http.post(f"/tasks/{task_id}/cancel", headers=auth(bob))
    assert_contract_error(cancel, 403, "forbidden")
    own = await http.get(f"/tasks/{task_id}", headers=auth(alice))
    assert own.status_code == 200
    assert own.json()["status"] == "queued"
    admin = await http.get(f"/tasks/{task_id}", headers=auth(fresh_user("ops"), "admin"))
    assert admin.status_code == 200
    assert admin.json()["task_id"] == task_id


@pytest.mark.parametrize(
    "task_id", ["0123456789abcdef0123456789abcdef", "..%2F..%2Fetc", "a" * 300, "x;y"]
)
async def test_unknown_or_malformed_task_id_is_404(http: httpx.AsyncClient, task_id: str) -> None:
    """A task id nobody submitted, or one that is not an id at all, is 404 `not_found`."""
    reply = await http.get(f"/tasks/{task_id}", headers=auth("alice"))
    assert_contract_error(reply, 404, "not_found")


async def test_stats_need_admin(http: httpx.AsyncClient) -> None:
    """`/ws/stats` is 403 for a plain user, even with every topic scope, and 200 for admin."""
    reply = await http.get("/ws/stats", headers=auth("alice", "topic:*"))
    assert_contract_error(reply, 403, "forbidden")
    stats = await http.get("/ws/stats", headers=auth("ops", "admin"))
    assert stats.status_code == 200
    assert "connections" in stats.json()


async def test_declared_oversized_body_is_413(http: httpx.AsyncClient, web: Web) -> None:
    """A body whose Content-Length is over the limit gets 413 `payload_too_large`, nothing runs."""
    user = fresh_user()
    ws = await WS.open(web.ws_url, issue(SECRET, user))
    await ws.recv()
    await ws.send({"op": "subscribe", "channel": f"user:{user}", "ref": 1})
    await ws.recv()
    big = {"customer_id": "c1", "items": [{"sku": "A" * 60, "qty": 1}] * 100}
    reply = await http.post("/orders", json=big, headers=auth(user))
    assert_contract_error(reply, 413, "payload_too_large")
    # Nothing was enqueued: the user's first event is the next (small) order's.
    small = await http.post("/orders", json=ORDER, headers=auth(user))
    first = await ws.recv_until(lambda f: f["type"] == "event")
    assert first["seq"] == 1
    assert first["event"]["task_id"] == small.json()["task_id"]
    await ws.close()


async def test_streamed_oversized_body_is_413(http: httpx.AsyncClient) -> None:
    """A chunked body with no Content-Length is counted as it arrives and refused at the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"customer_id": "c1", "items": ['
        for _ in range(200):
            yield b'{"sku": "A1", "qty": 1},'
        yield b'{"sku": "A1", "qty": 1}]}'

    reply = await http.post(
        "/orders",
        content=chunks(),
        headers={**auth("alice"), "content-type": "application/json"},
    )
    assert "content-length" not in reply.request.headers
    assert_contract_error(reply, 413, "payload_too_large")


async def test_body_under_the_limit_is_accepted(http: httpx.AsyncClient) -> None:
    """A body just under the limit is processed normally."""
    items = [{"sku": f"S{i}", "qty": 1} for i in range(90)]
    body = {"customer_id": "c1", "items": items}
    assert len(httpx.Request("POST", "/", json=body).content) < MAX_BODY
    reply = await http.post("/orders", json=body, headers=auth("alice"))
    assert reply.status_code == 202, reply.text


async def test_import_row_limit_is_422_naming_rows(http: httpx.AsyncClient) -> None:
    """More rows than TASKCAST_MAX_IMPORT_ROWS is 422 `bad_request` naming `rows`."""
    rows = [{"sku": "A", "qty": 1}] * (MAX_ROWS + 1)
    reply = await http.post("/inventory/imports", json={"rows": rows}, headers=auth("alice"))
    assert_contract_error(reply, 422, "bad_request")
    assert "rows" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"customer_id": "c1", "items": [{"sku": "A1", "qty": 1e400}]}', "application/json"),
        (b'{"customer_id": "c1", "items": [{"sku": "A1", "qty": 99999999999999999999999}]}',
         "application/json"),
        (b"[" * 2000 + b"]" * 2000, "application/json"),
        (b'{"customer_id": "\\ud800", "items": []}', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"customer_id=c1", "application/x-www-form-urlencoded"),
    ],
)  # fmt: skip
async def test_hostile_bodies_get_422_without_internals(
    http: httpx.AsyncClient, content: bytes, content_type: str
) -> None:
    """Malformed, deep, huge-number or wrongly typed bodies get 422 `bad_request`, no internals."""
    reply = await http.post(
        "/orders", content=content, headers={**auth("alice"), "content-type": content_type}
    )
    assert_contract_error(reply, 422, "bad_request")


async def test_unknown_route_and_method_have_stable_codes(http: httpx.AsyncClient) -> None:
    """An unknown path is 404 `not_found`; a wrong method is 405 `method_not_allowed`."""
    assert_contract_error(await http.get("/admin/../etc/passwd"), 404, "not_found")
    assert_contract_error(
        await http.delete("/orders", headers=auth("a")), 405, "method_not_allowed"
    )


async def test_tokens_never_reach_the_log(web: Web, http: httpx.AsyncClient) -> None:
    """A token in `?token=` (WS and HTTP) or a header is redacted from uvicorn's log lines."""
    token = issue(SECRET, fresh_user())
    ws = await WS.open(web.ws_url, token)
    assert (await ws.recv())["type"] == "welcome"
    await ws.close()
    await http.get("/healthz", params={"token": token, "probe": "redaction"})
    await http.get("/tasks/nope", headers={"Authorization": f"Bearer {token}"})
    wait_for(lambda: "probe=redaction" in web.log(), 10, "the access log line")
    log = web.log()
    signature = token.rsplit(".", 1)[1]
    assert token not in log
    assert signature not in log
    assert '"WebSocket /ws?token=[redacted]"' in log
    assert "/healthz?token=[redacted]&probe=redaction" in log


@pytest.mark.parametrize("secret", ["", "short-secret-do-not-print"])
async def test_startup_refuses_a_missing_or_short_secret(
    spawn: Callable[..., Web | Worker], secret: str
) -> None:
    """Without TASKCAST_JWT_SECRET, or with a short one, the web process exits naming it."""
    proc = spawn("web", wait=False, TASKCAST_JWT_SECRET=secret)
    wait_for(lambda: not proc.alive(), 20, "the web process to exit")
    assert proc.proc.returncode != 0
    log = proc.log()
    assert "TASKCAST_JWT_SECRET" in log
    assert "at least 32 characters" in log
    if secret:
        assert secret not in log
