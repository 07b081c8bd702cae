"""The web node's collector policy: full collections walk only what is new, closed
connections never wait for a collection, and a cycle among old objects is still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from taskcast.api.collector import Collector
from taskcast.api.main import create_app
from taskcast.api.wsprotocol import WebSocketProtocol
from taskcast.realtime.metrics import COUNTS
from taskcast.realtime.session import Session
from taskcast.realtime.settings import Settings

from .inprocess import served
from .wsclient import WS

MakeToken = Callable[..., str]


class Pair:
    """Two objects that reference each other: freed only by the cyclic collector."""

    def __init__(self) -> None:
        self.other: Any = None


@pytest.fixture
def collector() -> Iterator[Collector]:
    """An installed collector; only the test's own `gc.collect()` calls run collections."""
    collector = Collector()
    collector.install()
    gc.disable()
    try:
        yield collector
    finally:
        gc.enable()
        collector.uninstall()
    assert collector._after not in gc.callbacks


@pytest.mark.timeout(60)
def test_a_full_collection_freezes_its_survivors(collector: Collector) -> None:
    """What survives a full collection is out of the next one's walk; what dies is freed."""
    kept = [[i] for i in range(50_000)]
    ids = {id(d) for d in kept}
    frozen = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert not any(id(o) in ids for o in gc.get_objects())  # nothing left for a walk
    dropped = weakref.ref(Pair())
    assert dropped() is None  # reference counting still frees what dies, frozen or not
    del kept


@pytest.mark.timeout(60)
def test_a_cycle_among_frozen_objects_is_freed_once_the_heap_has_doubled(
    collector: Collector,
) -> None:
    """A cycle that forms among frozen objects waits for the next whole-heap collection,
    which runs once the frozen heap has doubled: such garbage is bounded, never kept."""
    a, b = Pair(), Pair()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    gc.collect()  # a and b survive: frozen
    del a, b
    gc.collect()
    assert ref() is not None, "a frozen cycle is out of the collector's sight"
    walks = COUNTS.gc_whole_heap_collections
    grown = [[] for _ in range(int(collector.baseline * collector.growth))]  # type: ignore[var-annotated]
    gc.collect()  # the frozen heap has more than doubled: everything is unfrozen
    assert collector.sweeping
    gc.collect()  # this one walks the whole heap
    assert ref() is None, "the whole-heap collection did not free the cycle"
    assert COUNTS.gc_whole_heap_collections == walks + 1
    assert not collector.sweeping
    assert collector.baseline >= len(grown)


async def closed(ws: WS) -> int | None:
    """Read until the server closes the connection; the code it closed with."""
    with anyio.fail_after(5):
        try:
            while True:
                await ws.conn.recv()
        except ConnectionClosed:
            return ws.close_code


def sessions() -> int:
    return sum(type(o) is Session for o in gc.get_objects())  # no isinstance: weak proxies


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_closed_connections_leave_nothing_for_the_collector(
    settings: Settings, make_token: MakeToken
) -> None:
    """However a connection ends (the client closes it, its TCP connection drops, the server
    closes it for an oversized frame), its session and protocols are freed by reference
    counting alone: with full collections walking only what is new, nothing a connection
    leaves may need one."""
    app = create_app(settings)
    async with served(app) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        node = app.state.node
        gc.disable()
        try:
            before = sessions()
            clients: list[WS] = []
            for i in range(6):
                ws = await WS.open(url, make_token(f"gone{i}"))
                assert (await ws.recv())["type"] == "welcome"
                assert (await ws.subscribe(f"user:gone{i}"))["type"] == "subscribed"
                await node.publisher.emit("notification", data={"title": "hi"}, user_id=f"gone{i}")
                await ws.recv_until(lambda f: f["type"] == "event")
                clients.append(ws)
            protocols = [weakref.ref(p) for p in gc.get_objects() if type(p) is WebSocketProtocol]
            assert len(protocols) == len(clients)
            assert sessions() == before + len(clients)
            refused = await WS.open(url, "not-a-token")  # 4401 before any session exists
            for i, ws in enumerate(clients):
                if i % 3 == 0:
                    await ws.close()
                elif i % 3 == 1:
                    ws.conn.transport.abort()  # the network drops: no closing handshake
                else:
                    await ws.send("x" * 70_000)  # over 64 KiB: the server closes with 1009
                    assert await closed(ws) == 1009
            assert await closed(refused) == 4401
            del refused
            try:
                with anyio.fail_after(10):
                    while sessions() > before or any(p() is not None for p in protocols):  # noqa: ASYNC110
                        await anyio.sleep(0.05)  # nothing to wait on: freeing has no event
            except TimeoutError:
                alive = sum(p() is not None for p in protocols)
                raise AssertionError(
                    f"{sessions() - before} sessions and {alive} protocols still alive"
                ) from None
        finally:
            gc.enable()
