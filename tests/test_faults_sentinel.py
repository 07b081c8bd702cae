"""Redis behind Sentinel: every connection follows a failover, and clients lose nothing silently.

Each test starts its own master, replica and three Sentinels (`SentinelSet`), and kills the
master with SIGKILL: whatever its replica had not received is gone, as in a real failover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis

from taskcast.realtime.connections import redis_client
from taskcast.realtime.resp import Pipeline, command
from taskcast.realtime.store import PREFIX

from .processes import SentinelSet, Web, Worker, wait_for
from .test_faults_rollback import check_stream
from .wsclient import WS, Frame, terminal

pytestmark = [pytest.mark.anyio]

CLIENTS = 20
ORDER = {"customer_id": "c", "items": [{"sku": "A", "qty": 1}]}
ENV = {
    "TASKCAST_STEP_DELAY": "0.15",
    # A task whose ending the failover lost is failed by the reaper, once, a few seconds on.
    "TASKCAST_QUEUED_STALE_AFTER": "5",
    "TASKCAST_STALE_AFTER": "3",
    "TASKCAST_HEARTBEAT": "0.5",
}


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    replicated = SentinelSet()
    yield replicated
    replicated.close()


@pytest.fixture
def redis_url(sentinels: SentinelSet) -> str:
    return sentinels.url


async def test_every_connection_kind_reaches_the_new_master(sentinels: SentinelSet) -> None:
    """After the master dies, redis-py clients and raw connections write to the promoted one."""
    client = redis_client(sentinels.url)
    pipeline = Pipeline(sentinels.url)
    try:
        await client.set("k", "before")
        assert await pipeline.execute([command("SET", "raw", "before")]) == ["OK"]
        old = sentinels.kill_master().port
        sentinels.wait_failover(away_from=old)
        with anyio.fail_after(20):
            while True:  # the first tries may still meet the dead master's address
                try:
                    await client.set("k", "after")
                    replies = await pipeline.execute([command("SET", "raw", "after")])
                    break
                except (redis.ConnectionError, ConnectionError, OSError, TimeoutError):
                    await anyio.sleep(0.1)
        assert replies == ["OK"]
        role = await client.execute_command("ROLE")
        assert role[0] in ("master", b"master")
        assert sentinels.master_port() != old
        assert await client.get("raw") == b"after"
    finally:
        await pipeline.aclose()
        await client.aclose()


def _done(channel: str) -> Callable[[Frame], bool]:
    """A terminal event, or a `subscribed` whose state says the task already ended."""

    def check(frame: Frame) -> bool:
        if frame.get("channel") != channel:
            return False
        if terminal(frame):
            return True
        state = frame.get("state") or {}
        return frame["type"] == "subscribed" and state.get("status") in (
            "succeeded",
            "failed",
            "cancelled",
        )

    return check


def _position(frames: list[Frame], channel: str) -> tuple[int, str]:
    """Where a client is in `channel`: the last seq it holds and the epoch it belongs to."""
    seq, epoch = 0, ""
    for frame in frames:
        if frame.get("channel") != channel:
            continue
        if frame["type"] == "subscribed":
            epoch = frame["epoch"]
            if not frame.get("recovered"):
                seq = frame["seq"]
        elif frame["type"] == "event":
            seq = frame["seq"]
    return seq, epoch


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_master_killed_mid_stream_loses_nothing_silently(
    sentinels: SentinelSet, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """20 clients follow their orders while the master is killed and a replica promoted; each
    then resumes with `since`: every seq it holds under one epoch names one event, with no gap,
    and every task ends with exactly one terminal event."""
    web = spawn("web", **ENV)
    assert isinstance(web, Web)
    spawn("worker", name="worker-a", **ENV)
    spawn("worker", name="worker-b", **ENV)
    users = [f"s{i}" for i in range(CLIENTS)]
    tokens = {u: make_token(u) for u in users}
    clients: dict[str, WS] = {}
    channels: dict[str, str] = {}
    frames: dict[str, list[Frame]] = {}
    for user in users:
        ws = await WS.open(web.ws_url, tokens[user])
        await ws.recv()
        async with httpx.AsyncClient(
            base_url=web.url, headers={"Authorization": f"Bearer {tokens[user]}"}, timeout=10
        ) as http:
            reply = await http.post("/orders", json=ORDER)
        assert reply.status_code == 202, reply.text
        channel = f"task:{reply.json()['task_id']}"
        assert (await ws.subscribe(channel, since=0))["type"] == "subscribed"
        clients[user], channels[user] = ws, channel
    # Mid-stream: a task is running; the replica stops receiving while events go on, then
    # the master dies with them: the promoted replica holds older channels, same epochs.
    running = users[-1]
    await clients[running].recv_until(
        lambda f: f.get("type") == "event" and f["event"]["type"] == "task.started", timeout=60
    )
    master, replica = sentinels.current()
    sentinels.cut_replication()
    key = f"{PREFIX}c:{channels[running]}"
    with master.client() as on_master, replica.client() as on_replica:
        cut = int(on_master.hget(key, "seq") or 0)
        wait_for(
            lambda: int(on_master.hget(key, "seq") or 0) >= cut + 2, 20, "events after the cut"
        )
        assert int(on_replica.hget(key, "seq") or 0) <= cut, "the replica got nothing since"
    await clients[running].recv_until(
        lambda f: f.get("channel") == channels[running] and f.get("seq", 0) >= cut + 2,
        timeout=20,
    )
    old = sentinels.kill_master_of_lagging_replica()
    sentinels.wait_failover(away_from=old)

    # Every client drops its socket and resumes where it was, as a reconnecting client does.
    for user in users:
        ws = clients[user]
        await ws.close()
        frames[user] = list(ws.frames)
    for user in users:
        seq, epoch = _position(frames[user], channels[user])
        with anyio.fail_after(30):
            while True:  # the node may still be reconnecting to the new master
                try:
                    ws = await WS.open(web.ws_url, tokens[user])
                    await ws.recv()
                    reply = await ws.subscribe(channels[user], since=seq, epoch=epoch)
                    if reply["type"] == "subscribed":
                        break
                    await ws.close()
                except OSError:
                    pass
                await anyio.sleep(0.2)
        clients[user] = ws
    for user in users:
        ws = clients[user]
        if not any(_done(channels[user])(f) for f in ws.frames):
            await ws.recv_until(_done(channels[user]), timeout=60)
        frames[user] += ws.frames
        await ws.close()

    told = [u for u in users if any(_told(f, channels[u]) for f in frames[u])]
    assert running in told, "the client whose events were lost is told: recovered false"
    history = redis.Redis(port=sentinels.master_port(), decode_responses=True)
    try:
        for user in users:
            channel = channels[user]
            check_stream(frames[user], channel)  # no seq twice under an epoch, no gap
            seen = [f for f in frames[user] if terminal(f) and f["channel"] == channel]
            assert len({f["event"]["id"] for f in seen}) <= 1, f"{channel}: two endings seen"
            stored: list[Any] = history.lrange(f"{PREFIX}h:{channel}", 0, -1)
            endings = [m for m in stored if _is_terminal(m)]
            assert len(endings) == 1, f"{channel}: {len(endings)} terminal events stored"
    finally:
        history.close()


def _told(frame: Frame, channel: str) -> bool:
    return (
        frame.get("channel") == channel
        and frame["type"] == "subscribed"
        and frame.get("recovered") is False
    )


def _is_terminal(message: str) -> bool:
    return any(
        f'"type":"{kind}"' in message
        for kind in ("task.succeeded", "task.failed", "task.cancelled")
    )


def test_sentinel_url_reaches_celery_in_its_own_form(sentinels: SentinelSet) -> None:
    """kombu and Celery's result backend get `sentinel://` URLs and the master's name."""
    from taskcast.workers.signatures import celery_config

    conf = celery_config(sentinels.url)
    assert conf["broker_url"].count("sentinel://") == 3
    assert conf["broker_transport_options"]["master_name"] == "tc"
    assert conf["result_backend_transport_options"] == {"master_name": "tc"}
    assert conf["result_backend"] == conf["broker_url"]
