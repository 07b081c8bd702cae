"""Redis that comes back empty: nothing pretends; epochs change and the system keeps working."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from taskcast.realtime import Emitter

from .processes import RedisServer, Web, Worker, wait_for
from .wsclient import WS, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(90)]


def ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200


async def test_redis_losing_its_data_starts_new_epochs(
    redis_server: RedisServer,
    redis_url: str,
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
) -> None:
    """Live subscribers are told (recovered: false), old epochs do not resume, tasks read 404."""
    web = spawn("web")
    assert isinstance(web, Web)
    spawn("worker")
    token = make_token("dave")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=web.url, headers=headers) as http:
        posted = await http.post(
            "/orders", json={"customer_id": "c", "items": [{"sku": "A", "qty": 1}]}
        )
        task_id = posted.json()["task_id"]
        ws = await WS.open(web.ws_url, token)
        await ws.recv()
        before = await ws.subscribe("user:dave")
        await ws.subscribe(f"task:{task_id}", since=0)
        await ws.recv_until(terminal, timeout=20)
        old_epoch = before["epoch"]

        redis_server.restart(flush=True)  # a crash without persistence
        wait_for(lambda: ready(web.url), 15, "the node to reconnect to the emptied Redis")

        assert (await http.get(f"/tasks/{task_id}")).status_code == 404
        emitter = Emitter(redis_url)
        emitter.emit("notification", data={"title": "after the loss"}, user_id="dave")
        assert emitter.flush(10)
        notice = await ws.recv_until(
            lambda f: f["type"] == "subscribed" and f["channel"] == "user:dave", timeout=10
        )
        assert notice["recovered"] is False
        assert notice["epoch"] != old_epoch
        fresh = await ws.recv_until(lambda f: f["type"] == "event" and f["channel"] == "user:dave")
        assert fresh["event"]["data"]["title"] == "after the loss"
        assert fresh["seq"] == 1

        other = await WS.open(web.ws_url, token)
        await other.recv()
        resumed = await other.subscribe("user:dave", since=3, epoch=old_epoch)
        assert resumed["recovered"] is False, "an old epoch never resumes into a new stream"
        assert resumed["epoch"] == notice["epoch"]

        again = await http.post(
            "/orders", json={"customer_id": "c", "items": [{"sku": "A", "qty": 1}]}
        )
        assert again.status_code == 202
        second = again.json()["task_id"]
        await other.subscribe(f"task:{second}", since=0)
        done = await other.recv_until(terminal, timeout=20)
        assert done["event"]["type"] == "task.succeeded"
        await ws.close()
        await other.close()
