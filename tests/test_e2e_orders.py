"""`orders.process` end to end: POST /orders, the task's stream over /ws, and GET /tasks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import RedisServer
from .stack import (
    Stack,
    User,
    assert_bad_request,
    running,
    seqs,
    types,
    until_terminal,
)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ORDER_EVENTS = [
    "task.queued",
    "task.started",
    "order.created",
    *["task.progress", "order.status_changed"] * 4,
    "task.progress",
    "task.succeeded",
]


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir: Path = tmp_path_factory.mktemp("e2e-orders")
    with running(redis_server, log_dir, webs=1, workers=1) as stack:
        yield stack


async def test_order_streams_in_contract_order(alice: User) -> None:
    """An order's channel carries queued, started, created, progress and status per step, done."""
    ws = await alice.connect()
    posted = await alice.order(items=[{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}])
    channel = f"task:{posted['task_id']}"
    assert posted["channel"] == channel
    assert (await ws.subscribe(channel, since=0))["type"] == "subscribed"
    events = await until_terminal(ws, channel)

    assert types(events) == ORDER_EVENTS
    assert seqs(events) == list(range(1, len(events) + 1))
    bodies = [f["event"] for f in events]
    assert all(e["task_id"] == posted["task_id"] for e in bodies)
    statuses = [e["data"]["status"] for e in bodies if e["type"] == "order.status_changed"]
    assert statuses == ["validated", "reserved", "charged", "shipped"]
    progress = [e["data"] for e in bodies if e["type"] == "task.progress"]
    assert [(p["current"], p["total"]) for p in progress] == [(i, 4) for i in range(5)]
    assert progress[-1]["percent"] == 100.0
    result = bodies[-1]["data"]["result"]
    assert result == {"order_id": posted["order_id"], "status": "shipped", "total_cents": 3750}

    state = await alice.task(posted["task_id"])
    assert state["status"] == "succeeded"
    assert state["seq"] == events[-1]["seq"]
    assert state["progress"] == progress[-1]
    assert state["result"] == result
    assert state["error"] is None
    assert state["updated_at"] == bodies[-1]["ts"]


async def test_declined_order_fails_without_traceback(alice: User) -> None:
    """A declined card ends the order with task.failed naming the error, and no traceback."""
    ws = await alice.connect()
    posted = await alice.order(customer_id="fail-bob")
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)
    events = await until_terminal(ws, channel)

    assert seqs(events) == list(range(1, len(events) + 1))
    assert [t for t in types(events) if t.startswith("task.") and t != "task.progress"] == [
        "task.queued",
        "task.started",
        "task.failed",
    ]
    last = events[-1]["event"]
    assert last["type"] == "task.failed"
    error = last["data"]["error"]
    assert error == {"type": "PaymentDeclined", "message": "card declined for customer fail-bob"}
    changes = [f["event"]["data"] for f in events if f["event"]["type"] == "order.status_changed"]
    assert [c["status"] for c in changes] == ["validated", "reserved", "failed"]
    assert changes[-1]["previous"] == "reserved"
    raw = json.dumps(ws.frames)
    assert "Traceback" not in raw
    assert 'File "' not in raw

    state = await alice.task(posted["task_id"])
    assert state["status"] == "failed"
    assert state["error"] == error
    assert state["result"] is None
    assert state["seq"] == events[-1]["seq"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"sku": "A1", "qty": 1}]}, "customer_id"),
        ({"customer_id": "c1", "items": []}, "items"),
        ({"customer_id": "c1", "items": [{"sku": "A1", "qty": 0}]}, "items.0.qty"),
        ({"customer_id": "c1", "items": [{"qty": 1}]}, "items.0.sku"),
        ({"customer_id": "c 1!", "items": [{"sku": "A1", "qty": 1}]}, "customer_id"),
        ({"customer_id": "c1", "items": [{"sku": "A1", "qty": 1}], "x": 1}, "x"),
    ],
)
async def test_bad_order_is_422_naming_field_and_enqueues_nothing(
    alice: User, body: dict[str, object], field: str
) -> None:
    """A bad order body gets 422 naming the field, and no task appears on the user's channel."""
    ws = await alice.connect()
    channel = f"user:{alice.name}"
    assert (await ws.subscribe(channel))["seq"] == 0

    reply = await alice.http.post("/orders", json=body)
    assert_bad_request(reply, field)

    # Had the bad body been enqueued, its task.queued would be this channel's seq 1.
    posted = await alice.order()
    first = await ws.recv_until(lambda f: f["type"] == "event" and f["channel"] == channel)
    assert first["seq"] == 1
    assert first["event"]["type"] == "task.queued"
    assert first["event"]["task_id"] == posted["task_id"]
