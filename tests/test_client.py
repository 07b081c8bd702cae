"""The Python client against real web and worker processes: follow, resume, refuse."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from taskcast.realtime.client import Client, Subscription, ws_url
from taskcast.realtime.errors import Unauthorized

from .processes import Web, Worker
from .wsclient import terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

Frame = dict[str, Any]


async def post_order(web: Web, token: str, customer: str = "c1") -> str:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
        reply = await http.post(
            "/orders",
            json={"customer_id": customer, "items": [{"sku": "A1", "qty": 2}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


async def until_terminal(sub: Subscription, frames: list[Frame], timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        async for frame in sub:
            frames.append(frame)
            if terminal(frame):
                return


def test_ws_url() -> None:
    """An http(s) base URL maps to its /ws endpoint; a ws(s) URL is kept as given."""
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws"
    assert ws_url("https://example.org/") == "wss://example.org/ws"
    assert ws_url("ws://h:1/ws") == "ws://h:1/ws"
    with pytest.raises(ValueError, match="URL"):
        ws_url("ftp://h")


async def test_client_follows_a_task_to_its_end(
    web: Web, worker: Worker, make_token: Callable[..., str]
) -> None:
    """Subscribed from seq 0, the client yields seq 1..N once each, ending in task.succeeded."""
    token = make_token("alice")
    task_id = await post_order(web, token)
    frames: list[Frame] = []
    async with Client(web.url, token) as client:
        async with client.subscribe(f"task:{task_id}", since=0) as sub:
            await until_terminal(sub, frames)
        assert client.welcome is not None
        assert client.welcome["user"] == "alice"
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(1, len(seqs) + 1))
    assert frames[-1]["event"]["type"] == "task.succeeded"


@pytest.mark.timeout(90)
async def test_client_resumes_across_a_web_restart(
    spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """When the web process restarts mid-task, the client reconnects and loses or repeats no seq."""
    web = spawn("web")
    assert isinstance(web, Web)
    spawn("worker", TASKCAST_STEP_DELAY="0.4")
    token = make_token("alice")
    task_id = await post_order(web, token)
    frames: list[Frame] = []
    async with Client(web.url, token, backoff_first=0.05, backoff_cap=0.5) as client:
        sub = client.subscribe(f"task:{task_id}", since=0)
        with anyio.fail_after(20):
            async for frame in sub:
                frames.append(frame)
                if frame["event"]["type"] == "task.progress":
                    break
        seen_before = frames[-1]["seq"]
        await anyio.to_thread.run_sync(web.stop)  # SIGTERM: close 1012, then exit
        replacement = spawn("web", port=web.port, wait=False)
        await anyio.to_thread.run_sync(replacement.wait_ready)
        await until_terminal(sub, frames)
        assert client.connections == 2
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert seqs[-1] > seen_before
    assert sum(terminal(f) for f in frames) == 1
    assert frames[-1]["event"]["type"] == "task.succeeded"


async def test_resume_that_cannot_be_honoured_yields_recovered_false(
    web: Web, worker: Worker, make_token: Callable[..., str]
) -> None:
    """A resume from a stale epoch yields the `subscribed` frame with recovered false and state."""
    token = make_token("alice")
    task_id = await post_order(web, token)
    async with Client(web.url, token) as client:
        async with client.subscribe(f"task:{task_id}", since=0) as sub:
            await until_terminal(sub, [])
            epoch = sub.epoch
            last = sub.seq
        assert epoch
        assert last
        stale = client.subscribe(f"task:{task_id}", since=2, epoch="not-" + epoch)
        with anyio.fail_after(10):
            frame = await stale.__anext__()
        await stale.close()
    assert frame["type"] == "subscribed"
    assert frame["recovered"] is False
    assert frame["seq"] == last
    assert frame["state"]["status"] == "succeeded"
    assert stale.seq == last


async def test_bad_token_raises_unauthorized(web: Web) -> None:
    """A token the server rejects (close 4401) raises Unauthorized instead of reconnecting."""
    async with Client(web.url, "not-a-token", backoff_first=0.05) as client:
        with anyio.fail_after(10), pytest.raises(Unauthorized):
            await client.wait_connected()
        with pytest.raises(Unauthorized):
            client.subscribe("topic:system")
        assert client.connections == 0


async def test_client_resends_since_and_epoch_and_drops_duplicates() -> None:
    """After a 1012 close the client resumes with its last seq and epoch; repeats are dropped."""
    received: list[Frame] = []

    def event(seq: int, kind: str = "task.progress") -> str:
        body = {"type": "event", "channel": "task:t1", "seq": seq, "event": {"type": kind}}
        return json.dumps(body)

    async def handler(conn: ServerConnection) -> None:
        await conn.send(json.dumps({"type": "welcome", "connection_id": "x", "user": "alice"}))
        frame = json.loads(await conn.recv())
        received.append(frame)
        if len(received) == 1:
            await conn.send(json.dumps({"type": "subscribed", "channel": "task:t1", "seq": 0,
                                        "epoch": "e1", "ref": frame["ref"]}))  # fmt: skip
            for seq in (1, 2, 2, 3):
                await conn.send(event(seq))
            await conn.close(1012, "restarting")
        else:
            await conn.send(json.dumps({"type": "subscribed", "channel": "task:t1", "seq": 4,
                                        "epoch": "e1", "recovered": True}))  # fmt: skip
            for seq, kind in ((3, "task.progress"), (4, "task.succeeded")):
                await conn.send(event(seq, kind))
            await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        frames: list[Frame] = []
        async with Client(f"http://127.0.0.1:{port}", "t", backoff_first=0.01) as client:
            sub = client.subscribe("task:t1")
            await until_terminal(sub, frames, timeout=10)
            assert client.connections == 2
            assert sub.duplicates == 2
    assert [f["seq"] for f in frames] == [1, 2, 3, 4]
    assert "since" not in received[0]
    assert (received[1]["since"], received[1]["epoch"]) == (3, "e1")
