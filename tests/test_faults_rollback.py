"""Redis that comes back with older data: subscribers are told, and no seq is reused."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import httpx
import pytest

from taskcast.realtime import Emitter

from .processes import RedisServer, Web, Worker, wait_for
from .wsclient import WS, Frame, terminal

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(150)]

ORDER = {"customer_id": "c", "items": [{"sku": "A", "qty": 1}]}


@pytest.fixture
def redis_url(snapshots: RedisServer) -> str:
    return snapshots.url


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def check_stream(frames: list[Frame], channel: str) -> list[Frame]:
    """One client's view of `channel`: each (epoch, seq) names one event, seqs follow on.

    Returns the `subscribed` frames. An event frame carries no epoch: it is the epoch of the
    last `subscribed` frame of its channel.
    """
    named: dict[tuple[str, int], str] = {}
    notices: list[Frame] = []
    epoch, last = "", 0
    for frame in frames:
        if frame.get("channel") != channel:
            continue
        if frame["type"] == "subscribed":
            notices.append(frame)
            epoch = frame["epoch"]
            if not frame.get("recovered"):
                last = frame["seq"]
        elif frame["type"] == "event":
            key = (epoch, frame["seq"])
            assert named.setdefault(key, frame["event"]["id"]) == frame["event"]["id"], (
                f"{channel}: seq {frame['seq']} of epoch {epoch} named two different events"
            )
            assert frame["seq"] == last + 1, f"{channel}: seq {last} then {frame['seq']}"
            last = frame["seq"]
    return notices


async def order(http: httpx.AsyncClient) -> str:
    reply = await http.post("/orders", json=ORDER)
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


def ended(task_id: str) -> Callable[[Frame], bool]:
    return lambda f: terminal(f) and f["event"]["task_id"] == task_id


async def test_live_and_resuming_subscribers_are_told_when_redis_comes_back_older(
    snapshots: RedisServer, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """After a restart from an older snapshot, a live client gets `recovered: false` and a new
    epoch, a client resuming where it was is not resumed into reused seqs, and the next order's
    events reach both, once each."""
    web = spawn("web")
    assert isinstance(web, Web)
    spawn("worker")
    token = make_token("ursula")
    async with httpx.AsyncClient(
        base_url=web.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        live = await WS.open(web.ws_url, token)
        await live.recv()
        first = await live.subscribe("user:ursula", since=0)
        await live.recv_until(ended(await order(http)), timeout=30)
        snapshots.client().save()  # what the Redis that comes back will hold
        await live.recv_until(ended(await order(http)), timeout=30)
        seen = live.events("user:ursula")[-1]["seq"]

        snapshots.restart()  # kill -9; it loads the snapshot: older seq, same epoch
        wait_for(lambda: ready(web.url), 20, "the node to reconnect to the restarted Redis")
        notice = await live.recv_until(
            lambda f: f["type"] == "subscribed" and f["channel"] == "user:ursula", timeout=20
        )
        assert notice["recovered"] is False
        assert notice["epoch"] != first["epoch"]

        late = await WS.open(web.ws_url, token)
        await late.recv()
        resumed = await late.subscribe("user:ursula", since=seen, epoch=first["epoch"])
        assert resumed["recovered"] is False
        assert resumed["epoch"] == notice["epoch"]

        third = await order(http)
        for ws in (live, late):
            await ws.recv_until(ended(third), timeout=30)
            check_stream(ws.frames, "user:ursula")
            ids = [f["event"]["id"] for f in ws.events("user:ursula")]
            thirds = [f for f in ws.events("user:ursula") if f["event"]["task_id"] == third]
            assert len({f["event"]["id"] for f in thirds}) == len(thirds), "each event once"
            assert len(ids) >= len(thirds) > 0
        await live.close()
        await late.close()


async def test_subscribers_on_two_nodes_are_both_told(
    snapshots: RedisServer, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """Both nodes that relayed the lost seqs move to the one new epoch, and both relay on."""
    webs: list[Web] = []
    for name in ("web-a", "web-b"):
        web = spawn("web", name=name)
        assert isinstance(web, Web)
        webs.append(web)
    spawn("worker")
    token = make_token("ulrich")
    clients = []
    for web in webs:
        ws = await WS.open(web.ws_url, token)
        await ws.recv()
        await ws.subscribe("user:ulrich", since=0)
        clients.append(ws)
    base = webs[0].url
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        first = await order(http)
        for ws in clients:
            await ws.recv_until(ended(first), timeout=30)
        snapshots.client().save()
        second = await order(http)
        for ws in clients:
            await ws.recv_until(ended(second), timeout=30)

        snapshots.restart()
        for web in webs:
            wait_for(lambda w=web: ready(w.url), 20, f"{web.url} to reconnect")  # type: ignore[misc]
        third = await order(http)
        epochs = set()
        for ws in clients:
            await ws.recv_until(ended(third), timeout=30)
            notices = check_stream(ws.frames, "user:ulrich")
            assert notices[-1]["recovered"] is False
            epochs.add(notices[-1]["epoch"])
        assert len(epochs) == 1, "every node and client agrees on the new epoch"
        assert epochs != {notices[0]["epoch"]}
        for ws in clients:
            await ws.close()


async def test_an_emitter_mid_stream_across_the_rollback_loses_nothing_silently(
    snapshots: RedisServer, spawn: Callable[..., Web | Worker], make_token: Callable[..., str]
) -> None:
    """An emitter keeps emitting while Redis dies and comes back older: the client is told, and
    every event emitted once Redis is back arrives once, in order."""
    web = spawn("web")
    assert isinstance(web, Web)
    token = make_token("umberto")
    ws = await WS.open(web.ws_url, token)
    await ws.recv()
    first = await ws.subscribe("user:umberto", since=0)
    emitter = Emitter(snapshots.url)
    counter = {"n": 0}
    stop = threading.Event()

    def emit_until_stopped() -> None:
        while not stop.is_set() and counter["n"] < 20_000:
            counter["n"] += 1
            emitter.emit("notification", data={"title": str(counter["n"])}, user_id="umberto")
            stop.wait(0.005)  # a steady stream, not a flood

    def got(n: int) -> Callable[[Frame], bool]:
        return lambda f: f["type"] == "event" and int(f["event"]["data"]["title"]) >= n

    thread = threading.Thread(target=emit_until_stopped, daemon=True)
    thread.start()
    try:
        await ws.recv_until(got(50), timeout=20)
        snapshots.client().save()
        await ws.recv_until(got(counter["n"] + 50), timeout=20)
        snapshots.restart()  # mid-stream: the emitter's buffer fills while Redis is away
        wait_for(lambda: ready(web.url), 20, "the node to reconnect")
        after = counter["n"] + 1
        await ws.recv_until(got(after + 50), timeout=30)
    finally:
        stop.set()
        await anyio.to_thread.run_sync(thread.join, 10)
    assert emitter.flush(15)
    last = counter["n"]
    if not any(got(last)(f) for f in ws.frames):
        await ws.recv_until(got(last), timeout=30)

    notices = check_stream(ws.frames, "user:umberto")
    assert any(n["recovered"] is False and n["epoch"] != first["epoch"] for n in notices)
    titles = [int(f["event"]["data"]["title"]) for f in ws.events("user:umberto")]
    tail = titles[len(titles) - titles[::-1].index(after) - 1 :] if after in titles else []
    assert tail == list(range(after, last + 1)), "every event emitted after the restart, once"
    await ws.close()
