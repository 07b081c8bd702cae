"""taskcast's web side mounted in a host app at a prefix: the host's routes and lifespan stay
its own, and `/ws` under the prefix streams and resumes as it does standalone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from taskcast.realtime import Emitter

from .processes import Web, base_env
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture(params=[True, False], ids=["taskcast-protocols", "plain-uvicorn"])
def host(request: pytest.FixtureRequest, redis_url: str, log_dir: Path) -> Iterator[Web]:
    web = Web(
        base_env(redis_url),
        log_dir,
        name="host",
        factory="tests.host_app:create",
        prefix="/realtime",
        protocols=request.param,
    )
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


async def test_a_mounted_app_streams_and_resumes_under_its_prefix(
    host: Web, redis_url: str, make_token: Callable[..., str]
) -> None:
    """Events reach `/realtime/ws`, and a client that reconnects with `since` and `epoch` gets
    exactly what it missed; the host's own route answers beside it."""
    async with httpx.AsyncClient(base_url=host.url.removesuffix("/realtime")) as http:
        assert (await http.get("/hello")).json() == {"hello": "from the host"}
    token = make_token("hanna")
    emitter = Emitter(redis_url)

    def notify(title: str) -> None:
        emitter.emit("notification", data={"title": title}, user_id="hanna")

    ws = await WS.open(host.ws_url, token)
    assert (await ws.recv())["type"] == "welcome"
    first = await ws.subscribe("user:hanna", since=0)
    for i in range(3):
        notify(f"live {i}")
    assert emitter.flush(10)
    await ws.recv_until(lambda f: f.get("event", {}).get("data", {}).get("title") == "live 2")
    last = ws.events("user:hanna")[-1]["seq"]
    await ws.close()

    for i in range(2):
        notify(f"missed {i}")
    assert emitter.flush(10)
    again = await WS.open(host.ws_url, token)
    await again.recv()
    resumed = await again.subscribe("user:hanna", since=last, epoch=first["epoch"])
    assert resumed["recovered"] is True
    await again.recv_until(lambda f: f.get("event", {}).get("data", {}).get("title") == "missed 1")
    titles = [f["event"]["data"]["title"] for f in again.events("user:hanna")]
    assert titles == ["missed 0", "missed 1"]
    await again.close()


def test_nothing_is_served_outside_the_prefix(host: Web, make_token: Callable[..., str]) -> None:
    """The host decides its own paths: taskcast answers only under the prefix it was given."""
    root = host.url.removesuffix("/realtime")
    assert httpx.get(f"{root}/readyz", timeout=5).status_code == 404
    assert httpx.get(f"{host.url}/readyz", timeout=5).status_code == 200
    elements = httpx.get(f"{host.url}/static/taskcast-elements.js", timeout=5)
    assert elements.status_code == 200
    assert "taskcast-progress" in elements.text
    token = make_token("hanna")
    reply = httpx.get(
        f"{host.url}/tasks/nope", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["code"]
