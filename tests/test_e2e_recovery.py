"""Joining late and resuming: task state on subscribe, full replay, and `since` across a drop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import RedisServer
from .stack import (
    Stack,
    User,
    quiet_after,
    running,
    seqs,
    types,
    until_terminal,
)
from .wsclient import Frame, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# Each order step takes this long, so a client can drop and come back while the order runs.
STEP_DELAY = 0.25


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir: Path = tmp_path_factory.mktemp("e2e-recovery")
    with running(redis_server, log_dir, TASKCAST_STEP_DELAY=str(STEP_DELAY)) as stack:
        yield stack


async def finished_order(user: User) -> tuple[str, list[Frame]]:
    """Run an order to its end, watched from the start; returns its channel and its events."""
    ws = await user.connect()
    posted = await user.order()
    channel = f"task:{posted['task_id']}"
    await ws.subscribe(channel, since=0)
    events = await until_terminal(ws, channel)
    assert types(events)[-1] == "task.succeeded"
    await ws.close()
    return channel, events


async def test_late_join_gets_final_state_and_nothing_else(alice: User) -> None:
    """Subscribing to a finished task answers with its final state and last seq, then silence."""
    channel, events = await finished_order(alice)
    ws = await alice.connect()
    sub = await ws.subscribe(channel)

    assert sub["type"] == "subscribed"
    assert sub["seq"] == events[-1]["seq"]
    assert "recovered" not in sub
    state = sub["state"]
    assert state["status"] == "succeeded"
    assert state["seq"] == events[-1]["seq"]
    assert state["result"] == events[-1]["event"]["data"]["result"]
    assert state == await alice.task(channel.removeprefix("task:"))
    assert await quiet_after(ws) == []


async def test_since_zero_replays_every_event(alice: User) -> None:
    """`since: 0` on a finished task replays events 1..N exactly as they were sent live."""
    channel, events = await finished_order(alice)
    ws = await alice.connect()
    sub = await ws.subscribe(channel, since=0)

    assert sub["type"] == "subscribed"
    assert sub["recovered"] is True
    assert sub["seq"] == events[-1]["seq"]
    replay = await quiet_after(ws)
    assert seqs(replay) == list(range(1, sub["seq"] + 1))
    assert replay == events


async def test_since_with_other_epoch_is_not_recovered(alice: User) -> None:
    """A resume naming an epoch the channel does not have gets recovered: false and the state."""
    channel, events = await finished_order(alice)
    ws = await alice.connect()
    sub = await ws.subscribe(channel, since=3, epoch="not-this-one")

    assert sub["recovered"] is False
    assert sub["state"]["status"] == "succeeded"
    assert sub["seq"] == events[-1]["seq"]
    assert await quiet_after(ws) == []


async def test_resume_after_disconnect_loses_nothing(alice: User) -> None:
    """A client that drops mid-task and resumes with since and epoch sees every seq once."""
    ws = await alice.connect()
    posted = await alice.order()
    channel = f"task:{posted['task_id']}"
    first = await ws.subscribe(channel, since=0)
    epoch = first["epoch"]
    await ws.recv_until(
        lambda f: f.get("channel") == channel and f["event"]["type"] == "task.progress"
    )
    seen = ws.events(channel)
    await ws.close()
    assert not any(terminal(f) for f in seen)

    again = await alice.connect()
    sub = await again.subscribe(channel, since=seen[-1]["seq"], epoch=epoch)
    assert sub["recovered"] is True
    assert sub["epoch"] == epoch
    assert "state" not in sub
    rest = await until_terminal(again, channel)
    # The order was still running: some of the rest came live, after the subscribe.
    assert sub["seq"] < rest[-1]["seq"]

    together = seen + rest
    assert seqs(together) == list(range(1, len(together) + 1))
    assert sum(terminal(f) for f in together) == 1
    assert types(together)[-1] == "task.succeeded"
    assert len({f["event"]["id"] for f in together}) == len(together)
    state = await alice.task(posted["task_id"])
    assert (state["status"], state["seq"]) == ("succeeded", together[-1]["seq"])
