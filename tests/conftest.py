"""Fixtures: one private Redis per session (flushed per test), real app and worker processes."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import taskcast.workers.demo_events  # noqa: F401 - the demo's types and topics, as its processes have them
from taskcast.realtime import Settings, get_settings
from taskcast.realtime.settings import get_worker_settings
from taskcast.realtime.tokens import issue

from .processes import SECRET, RedisServer, Web, Worker, base_env
from .stack import Stack, User, print_logs_on_failure


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def durable() -> Iterator[RedisServer]:
    """A Redis of the test's own with an append-only file: a graceful restart keeps the data.

    Fault tests that restart Redis use it by overriding `redis_url` to `durable.url`.
    """
    server = RedisServer(appendonly=True)
    server.start()
    yield server
    server.close()


@pytest.fixture
def snapshots() -> Iterator[RedisServer]:
    """A Redis of the test's own that persists only when told to (`SAVE`), like RDB-only setups:
    a kill and restart brings back the last snapshot, older than what clients saw."""
    server = RedisServer(appendonly=False)
    server.start()
    yield server
    server.close()


@pytest.fixture
def vhost() -> Iterator[str]:
    """A RabbitMQ vhost of the test's own on the machine's broker, deleted afterwards (the
    service itself is never restarted or reconfigured)."""
    name = f"taskcast-test-{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run(["rabbitmqctl", "add_vhost", name], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"RabbitMQ (127.0.0.1:5672) and its rabbitmqctl are needed here: {exc}")
    try:
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        yield name
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", name], check=False, capture_output=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the private server (restarted if a fault test left it down)."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def settings(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for in-process apps and emitters, also exported to the environment."""
    for key, value in base_env(redis_url).items():
        if key.startswith(("TASKCAST_", "REDIS_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_worker_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    get_worker_settings.cache_clear()


@pytest.fixture
def make_token() -> Callable[..., str]:
    def make(user: str = "alice", scopes: tuple[str, ...] = (), ttl: int = 3600) -> str:
        return issue(SECRET, user, scopes, ttl)

    return make


@pytest.fixture
def log_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Process logs; printed when a test fails so the failure says what broke."""
    yield tmp_path
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for log in sorted(tmp_path.glob("*.log")):
            text = log.read_text(errors="replace")[-4000:]
            print(f"\n===== {log.name} (last 4000 chars) =====\n{text}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def spawn(redis_url: str, log_dir: Path) -> Iterator[Callable[..., Web | Worker]]:
    """Start real `web` (uvicorn) or `worker` (celery) processes; all stopped at teardown."""
    started: list[Web | Worker] = []

    def start(
        kind: str, name: str | None = None, wait: bool = True, port: int | None = None, **env: str
    ) -> Web | Worker:
        full_env = base_env(redis_url, **env)
        proc: Web | Worker
        if kind == "web":
            proc = Web(full_env, log_dir, name or f"web{len(started)}", port)
        else:
            proc = Worker(full_env, log_dir, name or f"worker{len(started)}")
        started.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def web(spawn: Callable[..., Web | Worker]) -> Web:
    proc = spawn("web")
    assert isinstance(proc, Web)
    return proc


@pytest.fixture
def worker(spawn: Callable[..., Web | Worker]) -> Worker:
    proc = spawn("worker")
    assert isinstance(proc, Worker)
    return proc


@pytest.fixture
async def alice(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[User]:
    """A fresh user signed in on the module's first node (`stack` comes from the module)."""
    user = User(stack.webs[0])
    yield user
    await user.aclose()
    print_logs_on_failure(request, stack)
