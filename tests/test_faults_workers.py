"""Killed workers: tasks are redelivered, channels end with one terminal event, none run forever."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx
import pytest

from .processes import RedisServer, Web, Worker, wait_for
from .wsclient import WS, order_in_flight, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(90)]

FAST_REDELIVERY = {"TASKCAST_VISIBILITY_TIMEOUT": "3", "TASKCAST_STEP_DELAY": "0.4"}


async def _order_in_flight(web: Web, token: str) -> tuple[WS, str]:
    return await order_in_flight(web.url, web.ws_url, token)


def _types(ws: WS) -> list[str]:
    return [f["event"]["type"] for f in ws.events()]


async def test_killed_worker_task_is_redelivered_and_ends_once(
    spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """kill -9 of the worker mid-task: another worker runs it again; exactly one terminal event."""
    web = spawn("web", **FAST_REDELIVERY)
    assert isinstance(web, Web)
    doomed = spawn("worker", "doomed", **FAST_REDELIVERY)
    ws, _ = await _order_in_flight(web, make_token("frank"))
    doomed.signal(signal.SIGKILL)
    spawn("worker", "survivor", **FAST_REDELIVERY)
    end = await ws.recv_until(terminal, timeout=40)
    assert end["event"]["type"] == "task.succeeded"
    types = _types(ws)
    assert types.count("task.started") == 2, f"started again after redelivery: {types}"
    assert sum(t in ("task.succeeded", "task.failed", "task.cancelled") for t in types) == 1
    seqs = [f["seq"] for f in ws.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    await ws.close()


async def test_task_lost_too_often_fails_with_clear_error(
    spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """A task whose worker keeps dying is not run forever: it ends task.failed (WorkerLost)."""
    env = {**FAST_REDELIVERY, "TASKCAST_MAX_DELIVERIES": "1"}
    web = spawn("web", **env)
    assert isinstance(web, Web)
    doomed = spawn("worker", "doomed", **env)
    ws, task_id = await _order_in_flight(web, make_token("gina"))
    doomed.signal(signal.SIGKILL)
    spawn("worker", "survivor", **env)
    end = await ws.recv_until(terminal, timeout=40)
    assert end["event"]["type"] == "task.failed"
    assert end["event"]["data"]["error"]["type"] == "WorkerLost"
    assert "Traceback" not in str(ws.frames)
    async with httpx.AsyncClient(base_url=web.url) as http:
        state = (
            await http.get(
                f"/tasks/{task_id}", headers={"Authorization": f"Bearer {make_token('gina')}"}
            )
        ).json()
    assert state["status"] == "failed"
    await ws.close()


async def test_task_of_a_vanished_worker_does_not_stay_running(
    spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """With no worker left to redeliver to, the reaper fails the stale task (TaskLost)."""
    env = {"TASKCAST_STEP_DELAY": "0.4", "TASKCAST_STALE_AFTER": "2", "TASKCAST_HEARTBEAT": "0.5"}
    web = spawn("web", **env)
    assert isinstance(web, Web)
    doomed = spawn("worker", "doomed", **env)
    ws, _ = await _order_in_flight(web, make_token("hank"))
    doomed.signal(signal.SIGKILL)
    end = await ws.recv_until(terminal, timeout=30)
    assert end["event"]["type"] == "task.failed"
    assert end["event"]["data"]["error"]["type"] == "TaskLost"
    await ws.close()


async def test_heartbeat_keeps_a_quiet_long_task_alive(
    spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """A live worker's heartbeat keeps its task from being reaped even between events."""
    env = {"TASKCAST_STEP_DELAY": "1.5", "TASKCAST_STALE_AFTER": "1", "TASKCAST_HEARTBEAT": "0.2"}
    web = spawn("web", **env)
    assert isinstance(web, Web)
    spawn("worker", **env)
    ws, _ = await _order_in_flight(web, make_token("ivy"))
    end = await ws.recv_until(terminal, timeout=30)
    assert end["event"]["type"] == "task.succeeded"
    await ws.close()


async def test_task_whose_queue_message_was_lost_ends_failed(
    redis_server: RedisServer,
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
) -> None:
    """A queued task the broker lost ends TaskLost; one still waiting in the queue stays queued."""
    env = {"TASKCAST_QUEUED_STALE_AFTER": "1"}
    web = spawn("web", **env)
    assert isinstance(web, Web)
    token = make_token("jane")
    async with httpx.AsyncClient(
        base_url=web.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        body = {"customer_id": "c", "items": [{"sku": "A", "qty": 1}]}
        lost = (await http.post("/orders", json=body)).json()["task_id"]
        broker = redis_server.client()
        assert broker.rpop("celery") is not None  # no worker runs: the broker "loses" it
        kept = (await http.post("/orders", json=body)).json()["task_id"]
        queued_at = broker.zscore("tc:queued", kept)
        assert queued_at is not None
        ws = await WS.open(web.ws_url, token)
        await ws.recv()
        await ws.subscribe(f"task:{lost}", since=0)
        end = await ws.recv_until(terminal, timeout=20)
        assert end["event"]["data"]["error"]["type"] == "TaskLost"
        assert broker.llen("celery") == 1
        # The reaper found the kept task's message in the queue and looks again later.
        wait_for(
            lambda: (broker.zscore("tc:queued", kept) or 0) > queued_at + 1,
            10,
            "the reaper to check the waiting task against the broker",
        )
        state = (await http.get(f"/tasks/{kept}")).json()
        assert state["status"] == "queued"
        broker.close()
        await ws.close()


async def test_worker_stopped_mid_task_finishes_and_flushes(
    spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """SIGTERM mid-task (to the main process, as docker stop and Kubernetes send it): the warm
    shutdown finishes the task and flushes every event before the worker exits."""
    env = {"TASKCAST_STEP_DELAY": "0.3"}
    web = spawn("web", **env)
    assert isinstance(web, Web)
    worker = spawn("worker", **env)
    assert isinstance(worker, Worker)
    ws, _ = await _order_in_flight(web, make_token("nora"))
    worker.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not worker.alive(), 30, "the worker to finish its task and exit")
    end = await ws.recv_until(terminal, timeout=10)
    assert end["event"]["type"] == "task.succeeded"
    types = _types(ws)
    assert types.count("task.progress") == 5, types
    assert types.count("task.started") == 1, types
    await ws.close()
