"""`inventory.import` end to end, and task control: cancel, 409, 404 and 403 over HTTP."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .processes import RedisServer
from .stack import (
    Stack,
    User,
    assert_bad_request,
    quiet_after,
    running,
    seqs,
    types,
    until_terminal,
)
from .wsclient import terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

STEP_DELAY = 0.05  # seconds per batch of 50 rows: an import of 6000 rows runs ~6 s
BATCH = 50
LOW_STOCK = 5


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir: Path = tmp_path_factory.mktemp("e2e-inventory")
    with running(redis_server, log_dir, TASKCAST_STEP_DELAY=str(STEP_DELAY)) as stack:
        yield stack


@pytest.fixture
async def bob(stack: Stack) -> AsyncIterator[User]:
    user = User(stack.web)
    yield user
    await user.aclose()


def rows(count: int, low_every: int = 0) -> list[dict[str, Any]]:
    """`count` stock rows; every `low_every`-th one is under the low-stock threshold."""
    return [
        {
            "sku": f"SKU-{i}",
            "qty": i % LOW_STOCK if low_every and i % low_every == 0 else 100 + i,
            "location": "main",
        }
        for i in range(count)
    ]


def ts(frame: dict[str, Any]) -> float:
    return datetime.fromisoformat(frame["event"]["ts"]).timestamp()


async def test_import_streams_batches_low_stock_progress_and_notification(alice: User) -> None:
    """An import reports each batch, each low row, throttled progress ending at 100%, a notice."""
    data = rows(1000, low_every=37)
    low_skus = [r["sku"] for r in data if r["qty"] < LOW_STOCK]
    assert low_skus
    ws = await alice.connect()
    user_channel = f"user:{alice.name}"
    await ws.subscribe(user_channel)
    posted = await alice.import_rows(data)
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)
    events = await until_terminal(ws, channel)

    assert seqs(events) == list(range(1, len(events) + 1))
    kinds = types(events)
    assert kinds[:2] == ["task.queued", "task.started"]
    assert kinds[-2:] == ["notification", "task.succeeded"]
    assert sum(terminal(f) for f in events) == 1
    bodies = [f["event"] for f in events]
    updates = [e["data"] for e in bodies if e["type"] == "inventory.updated"]
    assert [u["batch"] for u in updates] == list(range(1, len(data) // BATCH + 1))
    assert [i["sku"] for u in updates for i in u["items"]] == [r["sku"] for r in data]
    lows = [e["data"] for e in bodies if e["type"] == "inventory.low_stock"]
    assert [low["sku"] for low in lows] == low_skus
    assert all(low["qty"] < low["threshold"] == LOW_STOCK for low in lows)

    progress = [f for f in events if f["event"]["type"] == "task.progress"]
    last = progress[-1]["event"]["data"]
    assert (last["current"], last["total"], last["percent"]) == (1000, 1000, 100.0)
    assert kinds.index("task.progress") > kinds.index("inventory.updated")
    # At most ~10 per second: every progress but the final one is >= 0.1 s after the previous.
    gaps = [ts(b) - ts(a) for a, b in itertools.pairwise(progress[:-1])]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert len(progress) < len(updates)

    result = bodies[-1]["data"]["result"]
    assert result == {"rows": 1000, "batches": 20, "low_stock": len(low_skus)}
    mine = await until_terminal(ws, user_channel)
    assert [f["event"]["id"] for f in mine] == [e["id"] for e in bodies]
    note = mine[-2]["event"]
    assert (note["type"], note["user_id"]) == ("notification", alice.name)
    assert note["data"]["task_id"] == posted["task_id"]
    assert note["data"]["title"] == "Inventory import finished"
    assert f"{len(low_skus)} low on stock" in note["data"]["message"]

    state = await alice.task(posted["task_id"])
    assert state["status"] == "succeeded"
    assert state["seq"] == events[-1]["seq"]
    assert state["progress"] == last
    assert state["result"] == result
    assert state["updated_at"] == bodies[-1]["ts"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "rows"),
        ({"rows": []}, "rows"),
        ({"rows": [{"qty": 1}]}, "rows.0.sku"),
        ({"rows": [{"sku": "A1", "qty": -1}]}, "rows.0.qty"),
        ({"rows": [{"sku": "A1", "qty": 1}, {"sku": "A2", "qty": "many"}]}, "rows.1.qty"),
        ({"rows": [{"sku": "A1", "qty": 1, "colour": "red"}]}, "rows.0.colour"),
    ],
)
async def test_bad_import_is_422_naming_field_and_enqueues_nothing(
    alice: User, body: dict[str, object], field: str
) -> None:
    """A bad import body gets 422 naming the field, and no task appears on the user's channel."""
    ws = await alice.connect()
    channel = f"user:{alice.name}"
    assert (await ws.subscribe(channel))["seq"] == 0

    reply = await alice.http.post("/inventory/imports", json=body)
    assert_bad_request(reply, field)

    # Had the bad body been enqueued, its task.queued would be this channel's seq 1.
    posted = await alice.import_rows(rows(1))
    first = await ws.recv_until(lambda f: f["type"] == "event" and f["channel"] == channel)
    assert (first["seq"], first["event"]["type"]) == (1, "task.queued")
    assert first["event"]["task_id"] == posted["task_id"]


@pytest.mark.timeout(90)
async def test_cancel_long_import_ends_with_one_cancelled(alice: User) -> None:
    """Cancelling a running import ends its channel with task.cancelled; the worker goes on."""
    ws = await alice.connect()
    posted = await alice.import_rows(rows(6000))
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)
    await ws.recv_until(
        lambda f: f.get("channel") == channel and f["event"]["type"] == "task.progress"
    )

    reply = await alice.http.post(f"/tasks/{posted['task_id']}/cancel")
    assert reply.status_code == 202, reply.text
    assert reply.json()["status"] == "cancelled"
    await until_terminal(ws, channel)

    # The worker is free again only once the import stopped: then its channel must be over.
    order = await alice.order()
    order_channel = f"task:{order['task_id']}"
    await ws.subscribe(order_channel, since=0)
    done = await until_terminal(ws, order_channel)
    assert done[-1]["event"]["type"] == "task.succeeded"
    await quiet_after(ws)

    events = ws.events(channel)
    assert seqs(events) == list(range(1, len(events) + 1))
    kinds = types(events)
    assert kinds[-1] == "task.cancelled", kinds[-5:]
    assert sum(terminal(f) for f in events) == 1
    assert "task.succeeded" not in kinds
    assert kinds.count("inventory.updated") < 6000 // BATCH
    state = await alice.task(posted["task_id"])
    assert (state["status"], state["seq"], state["result"]) == (
        "cancelled",
        events[-1]["seq"],
        None,
    )

    # History agrees: a late reader's replay also ends with the single task.cancelled.
    late = await alice.connect()
    await late.subscribe(channel, since=0)
    replay = await quiet_after(late)
    assert [f["event"]["id"] for f in replay] == [f["event"]["id"] for f in events]


async def test_cancel_finished_task_is_409(alice: User) -> None:
    """Cancelling a task that already succeeded is refused with 409 and changes nothing."""
    ws = await alice.connect()
    posted = await alice.order()
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)
    events = await until_terminal(ws, channel)

    reply = await alice.http.post(f"/tasks/{posted['task_id']}/cancel")
    assert reply.status_code == 409, reply.text
    assert reply.json()["error"]["code"] == "already_finished"
    assert await quiet_after(ws) == []
    state = await alice.task(posted["task_id"])
    assert (state["status"], state["seq"]) == ("succeeded", events[-1]["seq"])


@pytest.mark.parametrize("task_id", [uuid.uuid4().hex, "no such task", "x" * 300])
async def test_unknown_task_is_404(alice: User, task_id: str) -> None:
    """GET and cancel of a task id nobody submitted answer 404."""
    got = await alice.http.get(f"/tasks/{task_id}")
    assert got.status_code == 404, got.text
    assert got.json()["error"]["code"] == "not_found"
    cancel = await alice.http.post(f"/tasks/{task_id}/cancel")
    assert cancel.status_code == 404, cancel.text
    assert cancel.json()["error"]["code"] == "not_found"


async def test_other_users_task_is_403(alice: User, bob: User) -> None:
    """Bob can neither read, cancel nor watch Alice's task; it runs on untouched."""
    ws = await alice.connect()
    posted = await alice.import_rows(rows(600))
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)

    got = await bob.http.get(f"/tasks/{posted['task_id']}")
    assert got.status_code == 403, got.text
    assert got.json()["error"]["code"] == "forbidden"
    cancel = await bob.http.post(f"/tasks/{posted['task_id']}/cancel")
    assert cancel.status_code == 403, cancel.text
    assert cancel.json()["error"]["code"] == "forbidden"
    bob_ws = await bob.connect()
    await bob_ws.send({"op": "subscribe", "channel": channel, "ref": 7})
    refused = await bob_ws.recv()
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "forbidden", 7)

    events = await until_terminal(ws, channel)
    assert types(events)[-1] == "task.succeeded"
    assert "task.cancelled" not in types(events)
