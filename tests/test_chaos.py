"""Chaos: tasks, clients, two nodes and two workers while Redis restarts and processes die.

At the end every client holds every seq of its channel once and in order (a missing seq may only
be a progress event coalesced under pressure), and every task has exactly one terminal event.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import redis

from .processes import RedisServer, Web, Worker, wait_for
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(180)]

USERS = [f"user{i}" for i in range(4)]
CLIENTS = 20
TASKS = 100
ENV = {
    "TASKCAST_STEP_DELAY": "0.03",
    "TASKCAST_VISIBILITY_TIMEOUT": "4",
    "TASKCAST_STALE_AFTER": "20",
    "TASKCAST_HEARTBEAT": "1",
    "TASKCAST_QUEUED_STALE_AFTER": "10",
}
TERMINAL = {"task.succeeded", "task.failed", "task.cancelled"}


@pytest.fixture
def redis_url(durable: RedisServer) -> str:
    return durable.url


@dataclass
class Resuming:
    """A client that follows one user channel across any node and resumes on every disconnect."""

    user: str
    token: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    epoch: str | None = None
    start: int | None = None  # seq of the first `subscribed`: the client owes everything after
    reconnects: int = 0
    not_recovered: int = 0

    async def run(self, nodes: Callable[[], list[Web]]) -> None:
        rng = random.Random(self.user + str(id(self)))
        while True:
            live = nodes()
            node = rng.choice(live)
            try:
                ws = await WS.open(node.ws_url, self.token, open_timeout=5)
                try:
                    await ws.recv(10)
                    extra = {"since": self.seq, "epoch": self.epoch} if self.epoch else {}
                    await ws.send({"op": "subscribe", "channel": f"user:{self.user}", **extra})
                    while True:
                        frame = await ws.recv(60)
                        self._take(frame)
                finally:
                    # Also when the test ends and cancels us: never leave a socket behind.
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        await ws.close()
                    ws.conn.transport.abort()
            except (OSError, TimeoutError, Exception):  # noqa: BLE001 - any loss: resume elsewhere
                self.reconnects += 1
                await anyio.sleep(rng.uniform(0.05, 0.3))

    def _take(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "subscribed":
            if frame.get("recovered") is False:
                self.not_recovered += 1
            self.epoch = frame["epoch"]
            if "recovered" not in frame:
                self.seq = frame["seq"]
                self.start = frame["seq"] if self.start is None else self.start
        elif frame["type"] == "event":
            self.frames.append(frame)
            self.seq = frame["seq"]


async def test_chaos(
    durable: RedisServer,
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
) -> None:
    """100 tasks, 2 nodes, 2 workers, 20 resuming clients; Redis restarted twice, deaths."""
    webs: list[Web] = []
    for name in ("web-a", "web-b"):
        web = spawn("web", name, **ENV)
        assert isinstance(web, Web)
        webs.append(web)
    workers = [spawn("worker", name, **ENV) for name in ("worker-a", "worker-b")]
    injected: list[str] = []
    clients = [
        Resuming(USERS[i % len(USERS)], make_token(USERS[i % len(USERS)])) for i in range(CLIENTS)
    ]
    submitted: dict[str, str] = {}  # task id -> user

    def live() -> list[Web]:
        return [w for w in webs if w.alive()]

    async def submit() -> None:
        rng = random.Random(3)
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(TASKS):
                user = USERS[i % len(USERS)]
                customer = "fail-x" if i % 10 == 7 else f"c{i}"
                while True:
                    node = rng.choice(live())
                    try:
                        reply = await http.post(
                            f"{node.url}/orders",
                            json={"customer_id": customer, "items": [{"sku": "A", "qty": 1}]},
                            headers={"Authorization": f"Bearer {make_token(user)}"},
                        )
                    except httpx.HTTPError:
                        reply = None
                    if reply is not None and reply.status_code == 202:
                        submitted[reply.json()["task_id"]] = user
                        break
                    await anyio.sleep(0.1)  # node down or Redis away: try again, like a user would
                await anyio.sleep(0.03)

    async def faults() -> None:
        await anyio.sleep(1.5)
        injected.append("redis restart #1 (0.5 s down)")
        await anyio.to_thread.run_sync(lambda: durable.restart(down_for=0.5, graceful=True))
        await anyio.sleep(1.5)
        injected.append("kill -9 web-a")
        webs[0].signal(signal.SIGKILL)
        await anyio.sleep(1.0)
        busy = await anyio.to_thread.run_sync(lambda: _wait_busy(durable))
        injected.append(f"kill -9 worker-a mid-task ({busy} task(s) running)")
        workers[0].signal(signal.SIGKILL)
        await anyio.sleep(1.0)
        injected.append("redis restart #2 (0.5 s down)")
        await anyio.to_thread.run_sync(lambda: durable.restart(down_for=0.5, graceful=True))
        injected.append("start web-c")
        web_c = await anyio.to_thread.run_sync(lambda: spawn("web", "web-c", **ENV))
        assert isinstance(web_c, Web)
        webs.append(web_c)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.run, live)
        async with anyio.create_task_group() as work:
            work.start_soon(submit)
            work.start_soon(faults)
        store = durable.client()
        finals = await anyio.to_thread.run_sync(lambda: _wait_all_terminal(store, submitted))
        with anyio.fail_after(60):
            while not all(c.seq >= finals[c.user] for c in clients):  # noqa: ASYNC110
                await anyio.sleep(0.1)  # polling the clients' own state with a deadline
        tg.cancel_scope.cancel()

    history = {user: _history(store, f"user:{user}") for user in USERS}
    coalesced = 0
    for client in clients:
        seqs = [f["seq"] for f in client.frames]
        assert seqs == sorted(set(seqs)), f"{client.user}: repeated or out of order: {seqs}"
        assert client.start is not None
        missing = set(range(client.start + 1, finals[client.user] + 1)) - set(seqs)
        kinds = {history[client.user][s]["event"]["type"] for s in missing}
        assert kinds <= {"task.progress"}, f"{client.user} lost non-progress events: {kinds}"
        coalesced += len(missing)
        assert client.not_recovered == 0
    per_task: dict[str, list[str]] = {t: [] for t in submitted}
    errors: dict[str, int] = {}
    for user in USERS:
        for frame in history[user].values():
            event = frame["event"]
            if event["task_id"] in per_task and event["type"] in TERMINAL:
                per_task[event["task_id"]].append(event["type"])
                if event["type"] == "task.failed":
                    kind = event["data"]["error"]["type"]
                    errors[kind] = errors.get(kind, 0) + 1
    wrong = {t: kinds for t, kinds in per_task.items() if len(kinds) != 1}
    print(
        f"\nchaos: injected {injected}; {len(submitted)} tasks, {CLIENTS} clients, "
        f"{sum(c.reconnects for c in clients)} reconnects, "
        f"{sum(len(c.frames) for c in clients)} frames, {coalesced} progress frames coalesced, "
        f"{sum(k == ['task.succeeded'] for k in per_task.values())} succeeded, "
        f"{sum(k == ['task.failed'] for k in per_task.values())} failed {errors}, "
        f"{time.monotonic() - started:.1f}s"
    )
    assert not wrong, f"tasks without exactly one terminal event: {wrong}"
    assert len(submitted) == TASKS
    store.close()


def _wait_busy(server: RedisServer) -> int:
    """Block until some task is running (so the worker dies mid-task); how many are."""
    client = server.client()
    try:
        wait_for(
            lambda: client.zcard("tc:running") > 0, 20, "a running task to kill its worker under"
        )
        return int(client.zcard("tc:running"))
    finally:
        client.close()


def _history(store: redis.Redis, channel: str) -> dict[int, dict[str, Any]]:
    frames = [json.loads(raw.split(b"\n", 1)[1]) for raw in store.lrange(f"tc:h:{channel}", 0, -1)]
    return {f["seq"]: f for f in frames}


def _wait_all_terminal(store: redis.Redis, submitted: dict[str, str]) -> dict[str, int]:
    """Every submitted task reaches a terminal state; returns each user channel's final seq."""

    def done() -> bool:
        statuses = [store.hget(f"tc:t:{t}", "status") for t in submitted]
        return all(s in (b"succeeded", b"failed", b"cancelled") for s in statuses)

    wait_for(done, 90, "every task to reach a terminal event", interval=0.2)
    return {u: int(store.hget(f"tc:c:user:{u}", "seq") or 0) for u in USERS}
