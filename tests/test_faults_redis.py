"""API nodes and workers ride out Redis outages: nothing crashes, nothing is lost or repeated."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import httpx
import pytest

from .processes import RedisServer, Web, Worker, wait_for
from .wsclient import WS, order_in_flight, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def redis_url(durable: RedisServer) -> str:
    return durable.url


def status(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


async def test_api_node_rides_out_redis_restart(
    durable: RedisServer, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """During an outage /readyz is 503 and sockets stay open; once Redis is back, /readyz is 200
    again and events flow on the same socket, with no gap or repeat."""
    web = spawn("web")
    spawn("worker")
    token = make_token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    ws = await WS.open(web.ws_url, token)
    await ws.recv()
    sub = await ws.subscribe("user:alice")
    assert sub["type"] == "subscribed"

    async with httpx.AsyncClient(base_url=web.url, headers=headers) as http:
        first = await http.post(
            "/orders", json={"customer_id": "c1", "items": [{"sku": "A", "qty": 1}]}
        )
        await ws.recv_until(terminal, timeout=20)

        durable.stop()
        wait_for(lambda: status(web.url) == 503, 10, "/readyz to report 503 while Redis is down")
        reply = await http.post(
            "/orders", json={"customer_id": "c1", "items": [{"sku": "A", "qty": 1}]}
        )
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "unavailable"
        durable.start()
        wait_for(lambda: status(web.url) == 200, 10, "/readyz to recover after Redis restarts")

        second = await http.post(
            "/orders", json={"customer_id": "c2", "items": [{"sku": "B", "qty": 1}]}
        )
        assert second.status_code == 202, second.text
        done = await ws.recv_until(
            lambda f: terminal(f) and f["event"]["task_id"] == second.json()["task_id"], timeout=20
        )
    assert ws.close_code is None, "the socket stayed open through the outage"
    seqs = [f["seq"] for f in ws.events("user:alice")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or repeat in {seqs}"
    assert done["event"]["type"] == "task.succeeded"
    assert first.status_code == 202
    await ws.close()


async def test_events_published_before_resubscribe_are_caught_up(
    durable: RedisServer, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """Events stored while the node's pub/sub link was down reach subscribers, once, in order."""
    from taskcast.realtime import Emitter

    web = spawn("web")
    token = make_token("bob")
    ws = await WS.open(web.ws_url, token)
    await ws.recv()
    await ws.subscribe("user:bob")
    emitter = Emitter(durable.url)
    for i in range(5):
        emitter.emit("notification", data={"title": f"before {i}"}, user_id="bob")
    assert emitter.flush(10)
    await ws.recv_until(lambda f: f.get("seq") == 5, timeout=10)

    durable.stop()
    wait_for(lambda: status(web.url) == 503, 10, "/readyz 503 while Redis is down")
    # Emitted during the outage: buffered by the emitter, stored when Redis is back, possibly
    # before the node has resubscribed; the node must catch up from history.
    for i in range(20):
        emitter.emit("notification", data={"title": f"during {i}"}, user_id="bob")
    durable.start()
    assert emitter.flush(15), "the emitter stored its buffer once Redis came back"
    await ws.recv_until(lambda f: f.get("seq") == 25, timeout=15)
    seqs = [f["seq"] for f in ws.events("user:bob")]
    assert seqs == list(range(1, 26))
    titles = [f["event"]["data"]["title"] for f in ws.events("user:bob")]
    assert titles[5:] == [f"during {i}" for i in range(20)]
    await ws.close()


async def test_worker_rides_out_an_outage_mid_task(
    durable: RedisServer, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """Redis down while a task runs: its events wait in order and its terminal event lands."""
    env = {"TASKCAST_STEP_DELAY": "0.4"}
    web = spawn("web", **env)
    assert isinstance(web, Web)
    spawn("worker", **env)
    ws, _ = await order_in_flight(web.url, web.ws_url, make_token("olga"))
    durable.stop()
    # The outage is the injected fault: the task's remaining ~1.5 s of steps run inside it.
    await anyio.to_thread.run_sync(time.sleep, 3)
    durable.start()
    end = await ws.recv_until(terminal, timeout=30)
    assert end["event"]["type"] == "task.succeeded"
    types = [f["event"]["type"] for f in ws.events()]
    assert types.count("task.progress") == 5, types
    assert types.count("order.status_changed") == 4, types
    seqs = [f["seq"] for f in ws.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    await ws.close()
