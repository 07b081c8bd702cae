"""An existing Celery app adopting taskcast (`tests/adopter_app.py`), on real processes.

The app has its own broker (a Redis of its own) and queue; taskcast's Redis is the suite's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from celery import Celery, group
from kombu.exceptions import OperationalError

from taskcast import enqueue
from taskcast.realtime import emitter as emitter_module
from taskcast.realtime.errors import Unavailable
from taskcast.realtime.settings import Settings, get_worker_settings
from taskcast.realtime.store import Message
from taskcast.workers.integration import Enqueued

from . import adopter_app
from .processes import RedisServer, Web, Worker, base_env, free_port
from .wsclient import WS, Frame

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    """The adopting app's own broker and result backend, apart from taskcast's Redis."""
    server = RedisServer()
    server.start()
    adopter_app.app.conf.update(broker_url=server.url, result_backend=server.url)
    yield server
    server.close()


@pytest.fixture
def producer(settings: Settings) -> Iterator[None]:
    """This test process enqueues like a script would: its emitter is built from its settings."""
    emitter_module._forget_default()
    yield
    emitter_module._forget_default()


@pytest.fixture
def start_worker(
    broker: RedisServer, redis_url: str, log_dir: Path
) -> Iterator[Callable[..., Worker]]:
    """Start the adopter's worker (queue `adopter`); its environment has no token secret."""
    started: list[Worker] = []

    def start(taskcast_redis: str = redis_url, **extra: str) -> Worker:
        env = base_env(taskcast_redis, **{"ADOPTER_BROKER_URL": broker.url, **extra})
        del env["TASKCAST_JWT_SECRET"]  # a worker needs only taskcast's Redis URL
        worker = Worker(env, log_dir, "adopter", app="tests.adopter_app", queues="adopter")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


def history(redis_url: str) -> list[dict[str, Any]]:
    """Every event stored on any channel of taskcast's Redis."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        raw = [m for key in client.keys("tc:h:*") for m in client.lrange(key, 0, -1)]
    finally:
        client.close()
    return [orjson.loads(Message.parse(m.decode()).frame)["event"] for m in raw]


async def events_until(ws: WS, channel: str, done: Callable[[list[Frame]], bool]) -> list[Frame]:
    """Frames of `channel` received until `done` holds for them (20 s deadline)."""
    await ws.recv_until(lambda _: done(ws.events(channel)), timeout=20)
    return ws.events(channel)


def ended(frames: list[Frame], task_id: str | None = None, *, children: int = 0) -> bool:
    """The root's terminal event is in, and `children` other tasks' terminal events."""
    terminal = [
        f["event"]["task_id"]
        for f in frames
        if f["event"]["type"] in ("task.succeeded", "task.failed", "task.cancelled")
    ]
    return task_id in terminal and len([t for t in terminal if t != task_id]) >= children


async def follow_workflow(web: Web, sent: Enqueued, make_token: Callable[..., str]) -> WS:
    """Check, as alice and bob, the workflow `adopter.fan_out(2)` started for alice; returns
    alice's connection."""
    root = sent.task_id
    alice = await WS.open(web.ws_url, make_token("alice"))
    await alice.recv()
    assert (await alice.subscribe(sent.channel, since=0))["type"] == "subscribed"
    frames = await events_until(alice, sent.channel, lambda fs: ended(fs, root, children=8))

    events = [f["event"] for f in frames]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    own = [e["type"] for e in events if e["task_id"] == root]
    assert own == ["task.queued", "task.started", "task.succeeded"]
    children = {e["task_id"] for e in events} - {root}
    # two chained steps, a group of two, one retried task, a chord's two steps and its body
    assert len(children) == 8
    steps = ["task.queued", "task.started", "task.progress", "task.succeeded"]
    retried = ["task.queued", "task.started", "task.retrying", "task.started", "task.succeeded"]
    for child in children:
        mine = [e for e in events if e["task_id"] == child]
        name = mine[0]["data"]["name"]
        assert [e["type"] for e in mine] == (retried if name == "adopter.flaky" else steps)
        assert all(e["root_id"] == root and e["user_id"] == "alice" for e in mine)
    assert all("root_id" not in e for e in events if e["task_id"] == root)

    child = sorted(children)[0]
    state = await alice.subscribe(f"task:{child}")
    assert state["type"] == "subscribed"
    assert state["state"]["status"] == "succeeded"

    bob = await WS.open(web.ws_url, make_token("bob"))
    await bob.recv()
    for ref, channel in enumerate((sent.channel, f"task:{child}")):
        await bob.send({"op": "subscribe", "channel": channel, "ref": ref})
        refused = await bob.recv_until(lambda f, ref=ref: f.get("ref") == ref)
        assert (refused["type"], refused["code"]) == ("error", "forbidden")

    await bob.close()
    return alice


async def test_an_owned_workflow_is_its_owners_alone_and_plain_tasks_emit_nothing(
    producer: None,
    start_worker: Callable[..., Worker],
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
    redis_url: str,
) -> None:
    """A task enqueued for alice, and the chain, group, chord and retried task it starts,
    stream on its channel to alice only; each child is hers too; a task that did not opt in
    leaves no trace."""
    web = spawn("web", TASKCAST_IMPORTS="tests.adopter_events")
    assert isinstance(web, Web)
    start_worker()
    sent = await anyio.to_thread.run_sync(
        lambda: enqueue(adopter_app.fan_out, 2, owner="alice", queue="adopter", priority=3)
    )
    root = sent.task_id
    assert sent.channel == f"task:{root}"

    alice = await follow_workflow(web, sent, make_token)

    result = adopter_app.plain.apply_async((21,))
    assert await anyio.to_thread.run_sync(lambda: result.get(timeout=20)) == 42
    after = await anyio.to_thread.run_sync(lambda: enqueue(adopter_app.step, 1, owner="alice"))
    assert (await alice.subscribe(after.channel, since=0))["type"] == "subscribed"
    await events_until(alice, after.channel, lambda fs: ended(fs, after.task_id))
    stored = history(redis_url)
    assert any(e["task_id"] == after.task_id for e in stored)
    assert not [e for e in stored if result.id in orjson.dumps(e).decode()]
    await alice.close()


async def test_a_workflow_over_rabbitmq_from_a_producer_that_knows_only_names(
    producer: None,
    vhost: str,
    broker: RedisServer,
    start_worker: Callable[..., Worker],
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
) -> None:
    """With RabbitMQ as the app's broker, a task sent by name for alice, from a process
    without its code, and everything it starts are hers alone, on her one channel."""
    amqp = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    web = spawn("web", TASKCAST_IMPORTS="tests.adopter_events")
    assert isinstance(web, Web)
    start_worker(ADOPTER_BROKER_URL=amqp, ADOPTER_BACKEND_URL=broker.url)
    sender = Celery("adopter-sender", broker=amqp, backend=broker.url, set_as_current=False)
    try:
        sent = await anyio.to_thread.run_sync(
            lambda: enqueue(
                sender.signature("adopter.fan_out", args=(2,)), owner="alice", queue="adopter"
            )
        )
        alice = await follow_workflow(web, sent, make_token)
        await alice.close()
    finally:
        sender.close()


async def test_an_apps_own_event_type_reaches_its_topic(
    producer: None,
    start_worker: Callable[..., Worker],
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
) -> None:
    """`invoice.generated`, registered by the app, is emitted by its task and received on the
    app's topic `invoices` like a built-in event, by a holder of `topic:invoices`."""
    web = spawn("web", TASKCAST_IMPORTS="tests.adopter_events")
    assert isinstance(web, Web)
    start_worker()
    reader = await WS.open(web.ws_url, make_token("carol", scopes=("topic:invoices",)))
    await reader.recv()
    assert (await reader.subscribe("topic:invoices"))["type"] == "subscribed"
    sent = await anyio.to_thread.run_sync(
        lambda: enqueue(adopter_app.invoice.s("inv-7", 1250), owner="alice")
    )
    frame = await reader.recv_until(lambda f: f.get("channel") == "topic:invoices")
    event = frame["event"]
    assert (event["type"], event["task_id"]) == ("invoice.generated", sent.task_id)
    assert event["data"] == {"invoice_id": "inv-7", "amount_cents": 1250}
    await reader.close()


async def test_a_task_that_did_not_opt_in_runs_without_taskcasts_redis(
    start_worker: Callable[..., Worker],
) -> None:
    """With taskcast's Redis unreachable, a task that did not opt in still completes at once:
    nothing of taskcast runs for it, and nothing waits for Redis."""
    start_worker(taskcast_redis=f"redis://127.0.0.1:{free_port()}/0")
    # One pool process: the second task starts only once the first one is entirely done.
    results = [adopter_app.plain.apply_async((i,)) for i in (4, 5)]
    for result, doubled in zip(results, (8, 10), strict=True):
        assert await anyio.to_thread.run_sync(lambda r=result: r.get(timeout=10)) == doubled


def test_enqueue_refuses_what_it_cannot_own(producer: None) -> None:
    """A malformed owner, or a group (which has no first task to own it), raise before
    anything is recorded or sent."""
    with pytest.raises(ValueError, match="malformed owner"):
        enqueue(adopter_app.step, 1, owner="no spaces allowed")
    with pytest.raises(TypeError, match="group"):
        enqueue(group(adopter_app.step.s(1), adopter_app.step.s(2)), owner="alice")
    with pytest.raises(TypeError, match="signature"):
        enqueue(adopter_app.step.s(1), 2, owner="alice")


def test_nothing_is_sent_when_the_owner_cannot_be_recorded(
    broker: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With taskcast's Redis unreachable, `enqueue` raises and the app's broker receives no
    message: no task runs that its owner could not watch."""
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_worker_settings.cache_clear()
    emitter_module._forget_default()
    try:
        with pytest.raises(Unavailable, match="nothing was enqueued"):
            enqueue(adopter_app.step, 1, owner="alice", queue="adopter")
    finally:
        emitter_module._forget_default()
        get_worker_settings.cache_clear()
    client = broker.client()
    try:
        assert client.llen("adopter") == 0
    finally:
        client.close()


def test_a_task_the_broker_refuses_ends_failed(producer: None, redis_url: str) -> None:
    """When the app's broker is unreachable, `enqueue` raises Celery's error and the task its
    owner may already see queued ends `task.failed` (`NotSent`) instead of waiting forever."""
    dead = Celery("dead", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    try:
        with pytest.raises(OperationalError):
            enqueue(dead.signature("adopter.step", args=(1,)), owner="alice", retry=False)
    finally:
        dead.close()
    assert emitter_module.flush(timeout=10)
    # one event, on the task's channel and its owner's
    (failed,) = {e["id"]: e for e in history(redis_url) if e["type"] == "task.failed"}.values()
    assert failed["user_id"] == "alice"
    assert failed["data"]["error"]["type"] == "NotSent"
