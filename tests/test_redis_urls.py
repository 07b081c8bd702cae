"""`REDIS_URL` means on every path what it means to redis-py: database, login, TLS, sockets."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskcast.realtime.resp import address
from taskcast.workers.signatures import sender

from .processes import RedisServer, Web, Worker, base_env
from .stack import User, until_terminal

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tls_server() -> Iterator[RedisServer]:
    """A redis-server that speaks TLS only, with a certificate from a CA made for the test."""
    server = RedisServer(tls=True)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def unix_server() -> Iterator[RedisServer]:
    """A redis-server listening on a unix socket only."""
    server = RedisServer(unix=True)
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["path", "query", "tls", "unix"])
def db3(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    tls_server: RedisServer,
    unix_server: RedisServer,
) -> tuple[str, RedisServer]:
    """A URL naming database 3 in one of its forms, and its server with every database empty."""
    server = {"tls": tls_server, "unix": unix_server}.get(request.param, redis_server)
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    url = server.url_for(3)
    if request.param == "query":
        url = f"redis://127.0.0.1:{server.port}?db=3"
    client = server.client()
    client.flushall()
    client.close()
    return url, server


def test_the_database_is_read_in_either_form() -> None:
    """`/3`, `?db=3` and a socket's `?db=3` select database 3; the query wins, as in redis-py."""
    assert address("redis://127.0.0.1:6379/3").db == 3
    assert address("redis://127.0.0.1:6379?db=3").db == 3
    assert address("redis://127.0.0.1:6379/1?db=3").db == 3
    unix = address("unix:///run/redis.sock?db=4")
    assert (unix.path, unix.db) == ("/run/redis.sock", 4)


def test_login_is_decoded_as_redis_py_does() -> None:
    """A user and a percent-encoded password reach AUTH decoded."""
    where = address("redis://app:p%40ss%2Fword@10.0.0.1:6380/0")
    assert (where.host, where.port) == ("10.0.0.1", 6380)
    assert (where.username, where.password) == ("app", "p@ss/word")


def test_rediss_options_shape_the_tls_context() -> None:
    """`rediss://` verifies the server by default; `ssl_cert_reqs=none` turns that off."""
    strict = address("rediss://127.0.0.1:6379/0").ssl
    assert strict is not None
    assert strict.verify_mode == ssl.CERT_REQUIRED
    assert strict.check_hostname
    relaxed = address("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none").ssl
    assert relaxed is not None
    assert relaxed.verify_mode == ssl.CERT_NONE
    assert address("redis://127.0.0.1:6379/0").ssl is None


def test_celery_broker_and_backend_use_the_urls_database(db3: tuple[str, RedisServer]) -> None:
    """A task message and a result land in database 3, over TLS and sockets too, nothing in 0."""
    url, server = db3
    app = sender(url)
    try:
        app.send_task("orders.process", task_id="t-queued", kwargs={})
        app.backend.client.set("celery-task-meta-t-done", "{}")  # the backend's own client
    finally:
        app.close()
    db3_client, db0_client = server.client(3), server.client(0)
    try:
        assert db3_client.llen("celery") == 1
        assert db3_client.exists("celery-task-meta-t-done")
        assert db0_client.dbsize() == 0
    finally:
        db3_client.close()
        db0_client.close()


def print_logs(folder: Path) -> None:
    for log in sorted(folder.glob("*.log")):
        print(f"===== {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.e2e
async def test_every_path_uses_the_urls_database(
    db3: tuple[str, RedisServer], tmp_path: Path
) -> None:
    """An order runs end to end on database 3 (API, worker, its emitter, the hub), none in 0."""
    url, server = db3
    env = base_env(url)
    web, worker = Web(env, tmp_path, "web"), Worker(env, tmp_path, "worker")
    user = None
    try:
        web.wait_ready()
        worker.wait_ready()
        user = User(web, f"u-{uuid.uuid4().hex[:8]}")
        ws = await user.connect()
        posted = await user.order()
        channel = f"task:{posted['task_id']}"
        await ws.subscribe(channel, since=0)
        events = await until_terminal(ws, channel)
        assert events[-1]["event"]["type"] == "task.succeeded"
        assert (await user.task(posted["task_id"]))["status"] == "succeeded"
    except BaseException:
        print_logs(tmp_path)
        raise
    finally:
        if user is not None:
            await user.aclose()
        web.stop()
        worker.stop()
    db3_client, db0_client = server.client(3), server.client(0)
    try:
        assert db3_client.exists(f"tc:t:{posted['task_id']}", f"tc:h:{channel}") == 2
        assert db3_client.exists(f"celery-task-meta-{posted['task_id']}")
        assert db0_client.dbsize() == 0
    finally:
        db3_client.close()
        db0_client.close()
