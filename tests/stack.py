"""A running stack for end-to-end tests: real web and worker processes shared by one module.

Starting uvicorn and Celery costs seconds, so each e2e module starts its processes once and every
test isolates itself with fresh user ids (user channels start at seq 1) and fresh tasks instead of
flushing Redis under running processes.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskcast.realtime.tokens import issue

from .processes import SECRET, RedisServer, Web, Worker, base_env
from .wsclient import WS, Frame, terminal


class Stack:
    """Web nodes and workers against the session's private Redis; all stopped on exit."""

    def __init__(self, redis_server: RedisServer, log_dir: Path) -> None:
        if redis_server.proc is None or redis_server.proc.poll() is not None:
            redis_server.start()  # a fault test may have left it down
        self.redis_url = redis_server.url
        self.log_dir = log_dir
        self.webs: list[Web] = []
        self.workers: list[Worker] = []

    def start(self, webs: int = 1, workers: int = 1, concurrency: int = 1, **env: str) -> None:
        """Start all processes first, then wait for each: their start-ups overlap."""
        full_env = base_env(self.redis_url, **env)
        for i in range(webs):
            self.webs.append(Web(full_env, self.log_dir, f"web{i}"))
        for i in range(workers):
            self.workers.append(Worker(full_env, self.log_dir, f"worker{i}", concurrency))
        for web in self.webs:
            web.wait_ready()
        for worker in self.workers:
            worker.wait_ready()

    @property
    def web(self) -> Web:
        return self.webs[0]

    def close(self) -> None:
        """Signal every process first, then wait for each: their shutdowns overlap."""
        procs: list[Web | Worker] = [*self.webs, *self.workers]
        for proc in procs:
            if proc.alive():
                proc.signal(signal.SIGTERM)
        for proc in procs:
            proc.stop()

    def print_logs(self) -> None:
        """The tail of every process's log, for a failing test's report."""
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_text(errors="replace")[-4000:]
            print(f"\n===== {log.name} (last 4000 chars) =====\n{text}")


@contextmanager
def running(redis_server: RedisServer, log_dir: Path, **options: Any) -> Iterator[Stack]:
    """A started stack (options as `Stack.start`), stopped however the module ends."""
    stack = Stack(redis_server, log_dir)
    try:
        stack.start(**options)
        yield stack
    finally:
        stack.close()


def print_logs_on_failure(request: pytest.FixtureRequest, stack: Stack) -> None:
    """Called after a test: a failure prints the processes' logs, so it says what broke."""
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        stack.print_logs()


def new_user(prefix: str = "u") -> str:
    """A user id no other test uses: its `user:` channel starts at seq 1."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class User:
    """A signed-in user of one web node: HTTP with a bearer token, and WebSocket connections."""

    def __init__(self, web: Web, name: str | None = None, scopes: tuple[str, ...] = ()) -> None:
        self.web = web
        self.name = name or new_user()
        self.token = issue(SECRET, self.name, scopes, 3600)
        self.http = httpx.AsyncClient(
            base_url=web.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        self.sockets: list[WS] = []

    def on(self, web: Web) -> User:
        """The same user, signed in on another node."""
        other = User(web, self.name)
        other.token = self.token
        return other

    async def connect(self) -> WS:
        """Open `/ws` and read the welcome frame."""
        ws = await WS.open(self.web.ws_url, self.token)
        self.sockets.append(ws)
        welcome = await ws.recv()
        assert welcome["type"] == "welcome", welcome
        assert welcome["user"] == self.name
        return ws

    async def order(self, customer_id: str = "c1", **body: Any) -> dict[str, Any]:
        items = body.pop("items", [{"sku": "A1", "qty": 2}])
        reply = await self.http.post(
            "/orders", json={"customer_id": customer_id, "items": items, **body}
        )
        assert reply.status_code == 202, reply.text
        data: dict[str, Any] = reply.json()
        return data

    async def import_rows(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        reply = await self.http.post("/inventory/imports", json={"rows": rows})
        assert reply.status_code == 202, reply.text
        data: dict[str, Any] = reply.json()
        return data

    async def task(self, task_id: str) -> dict[str, Any]:
        reply = await self.http.get(f"/tasks/{task_id}")
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()
        return data

    async def aclose(self) -> None:
        for ws in self.sockets:
            await ws.close()
        await self.http.aclose()


async def until(ws: WS, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Read frames until `done()` holds (it may already): a condition over all frames so far."""
    if not done():
        await ws.recv_until(lambda _: done(), timeout=timeout)


async def until_terminal(ws: WS, channel: str, timeout: float = 20.0) -> list[Frame]:
    """Read until `channel`'s terminal event (unless already read); returns its event frames."""
    await until(ws, lambda: any(terminal(f) for f in ws.events(channel)), timeout)
    return ws.events(channel)


async def quiet_after(ws: WS) -> list[Frame]:
    """Frames that arrive before a ping's pong: whatever the server had queued for us by now.

    The server answers frames in order on one outbound queue, so anything it queued before it
    read the ping (a replay, an event) arrives before the pong.
    """
    await ws.send({"op": "ping", "ref": "quiet"})
    start = len(ws.frames)
    await ws.recv_until(lambda f: f["type"] == "pong" and f.get("ref") == "quiet")
    return ws.frames[start:-1]


def types(frames: list[Frame]) -> list[str]:
    return [f["event"]["type"] for f in frames]


def seqs(frames: list[Frame]) -> list[int]:
    return [f["seq"] for f in frames]


def assert_bad_request(reply: httpx.Response, field: str) -> None:
    """The contract's answer to a bad body: 422, code `bad_request`, the field named."""
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "bad_request"
    assert field in error["fields"]
    assert field in error["message"]
