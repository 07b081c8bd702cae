"""Fan-out across nodes and workers: two API nodes, four worker processes, many subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from taskcast.realtime.events import TERMINAL_TYPES

from .processes import RedisServer
from .stack import (
    Stack,
    User,
    new_user,
    quiet_after,
    running,
    seqs,
    types,
    until,
    until_terminal,
)
from .wsclient import WS, Frame, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

STEP_DELAY = 0.1  # an order runs ~0.5 s: long enough to overlap on four worker processes
ORDERS = 12


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two web nodes; two celery workers of two processes each (four publishers)."""
    log_dir: Path = tmp_path_factory.mktemp("e2e-scale")
    with running(
        redis_server, log_dir, webs=2, workers=2, concurrency=2, TASKCAST_STEP_DELAY=str(STEP_DELAY)
    ) as stack:
        yield stack


@pytest.fixture
async def alice_b(stack: Stack, alice: User) -> AsyncIterator[User]:
    """The same Alice, signed in on the second node."""
    user = alice.on(stack.webs[1])
    yield user
    await user.aclose()


async def test_event_reaches_subscribers_on_both_nodes(alice: User, alice_b: User) -> None:
    """Subscribers of one task on two API nodes receive identical frames with the same seqs."""
    ws_a, ws_b = await alice.connect(), await alice_b.connect()
    assert ws_a.frames[0]["node"] != ws_b.frames[0]["node"]
    posted = await alice.order()
    channel = f"task:{posted['task_id']}"
    await ws_a.subscribe(channel, since=0)
    await ws_b.subscribe(channel, since=0)
    on_a = await until_terminal(ws_a, channel)
    on_b = await until_terminal(ws_b, channel)

    assert on_a == on_b
    assert seqs(on_a) == list(range(1, len(on_a) + 1))
    assert types(on_a)[-1] == "task.succeeded"


@pytest.mark.timeout(90)
async def test_concurrent_workers_keep_user_channel_gap_free(
    alice: User, alice_b: User, stack: Stack
) -> None:
    """Orders run at once on four processes; each node's subscriber sees seq 1..N, each once."""
    channel = f"user:{alice.name}"
    watchers = [await alice.connect(), await alice.connect(), await alice_b.connect()]
    for ws in watchers:
        assert (await ws.subscribe(channel))["seq"] == 0

    posted = await asyncio.gather(
        *((alice if i % 2 else alice_b).order(customer_id=f"c{i}") for i in range(ORDERS))
    )
    task_ids = {p["task_id"] for p in posted}
    assert len(task_ids) == ORDERS

    async def until_all_done(ws: WS) -> list[Frame]:
        def all_done() -> bool:
            ended = {f["event"]["task_id"] for f in ws.events(channel) if terminal(f)}
            return ended >= task_ids

        await until(ws, all_done, timeout=60)
        return ws.events(channel)

    seen = await asyncio.gather(*(until_all_done(ws) for ws in watchers))
    first = seen[0]
    assert seqs(first) == list(range(1, len(first) + 1))
    assert len(first) == ORDERS * 13  # every event of every order: queued .. succeeded
    for other in seen[1:]:
        assert other == first
    for task_id in task_ids:
        kinds = [f["event"]["type"] for f in first if f["event"]["task_id"] == task_id]
        assert kinds[0] == "task.queued"
        assert kinds[-1] == "task.succeeded"
        assert sum(k in TERMINAL_TYPES for k in kinds) == 1
    publishers = {f["event"]["source"] for f in first if f["event"]["type"] == "task.started"}
    assert len(publishers) >= 2, publishers


async def test_user_channel_carries_every_event_of_both_tasks(alice: User, stack: Stack) -> None:
    """A user's channel has its own seq 1..N and every event of their order and their import."""
    ws = await alice.connect()
    channel = f"user:{alice.name}"
    await ws.subscribe(channel)
    order = await alice.order()
    rows = [{"sku": f"S{i}", "qty": i % 8, "location": "main"} for i in range(120)]
    imported = await alice.import_rows(rows)
    tasks = [f"task:{order['task_id']}", f"task:{imported['task_id']}"]
    for task in tasks:
        await ws.subscribe(task, since=0)
    per_task = [await until_terminal(ws, task) for task in tasks]

    await until(ws, lambda: sum(terminal(f) for f in ws.events(channel)) == 2)
    mine = ws.events(channel)
    assert seqs(mine) == list(range(1, len(mine) + 1))
    for task, events in zip(tasks, per_task, strict=True):
        task_id = task.removeprefix("task:")
        via_user = [f["event"]["id"] for f in mine if f["event"]["task_id"] == task_id]
        assert via_user == [f["event"]["id"] for f in events]
    assert {"order.created", "inventory.low_stock", "notification"} <= set(types(mine))
    assert len(mine) == sum(len(events) for events in per_task)

    mallory = User(stack.webs[0], new_user("mallory"))
    try:
        spy = await mallory.connect()
        await spy.send({"op": "subscribe", "channel": channel, "ref": "peek"})
        refused = await spy.recv()
        assert (refused["type"], refused["code"], refused["ref"]) == ("error", "forbidden", "peek")
        assert await quiet_after(spy) == []
    finally:
        await mallory.aclose()


async def test_two_clients_on_one_channel_get_identical_frames(alice: User) -> None:
    """Two connections subscribed to the same task channel receive exactly the same frames."""
    one, two = await alice.connect(), await alice.connect()
    posted = await alice.order()
    channel = f"task:{posted['task_id']}"
    await one.subscribe(channel, since=0)
    await two.subscribe(channel, since=0)
    first, second = await until_terminal(one, channel), await until_terminal(two, channel)

    assert first == second
    assert seqs(first) == list(range(1, len(first) + 1))


async def test_unsubscribed_channel_goes_quiet_while_others_deliver(alice: User) -> None:
    """After `unsubscribed`, the task channel sends nothing more; the user channel goes on."""
    ws = await alice.connect()
    user_channel = f"user:{alice.name}"
    await ws.subscribe(user_channel)
    rows = [{"sku": f"S{i}", "qty": 100, "location": "main"} for i in range(600)]
    posted = await alice.import_rows(rows)  # 12 batches: runs over a second
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)
    await ws.recv_until(
        lambda f: f.get("channel") == channel and f["event"]["type"] == "inventory.updated"
    )
    await ws.send({"op": "unsubscribe", "channel": channel, "ref": 1})
    reply = await ws.recv_until(lambda f: f.get("ref") == 1)
    assert reply == {"type": "unsubscribed", "channel": channel, "ref": 1}
    cut = len(ws.frames)

    await until_terminal(ws, user_channel)
    await quiet_after(ws)
    after = ws.frames[cut:]
    assert [f for f in after if f.get("channel") == channel] == []
    later = [f for f in after if f.get("channel") == user_channel]
    assert later, "the import ended before the unsubscribe: nothing was tested"
    assert later[-1]["event"]["type"] == "task.succeeded"
    assert later[-1]["event"]["task_id"] == posted["task_id"]
