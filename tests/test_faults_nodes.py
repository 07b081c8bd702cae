"""Lost API nodes: SIGTERM closes sockets with 1012 and exits; after kill -9 clients resume."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from taskcast.realtime import Emitter

from .processes import Web, Worker, wait_for
from .wsclient import WS

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(90)]


async def _drain_until_closed(ws: WS, timeout: float) -> None:
    with anyio.fail_after(timeout):
        while True:
            try:
                await ws.recv(timeout)
            except ConnectionClosed:
                return


async def _resume_elsewhere(other: Web, token: str, channel: str, last: int, epoch: str) -> WS:
    ws = await WS.open(other.ws_url, token)
    await ws.recv()
    reply = await ws.subscribe(channel, since=last, epoch=epoch)
    assert reply["recovered"] is True, reply
    return ws


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_client_loses_nothing_when_its_node_goes(
    sig: signal.Signals,
    redis_url: str,
    spawn: Callable[..., Web | Worker],
    make_token: Callable[..., str],
) -> None:
    """A node that goes away (gracefully: close 1012) costs its clients nothing after resume."""
    first, second = spawn("web", "node-a"), spawn("web", "node-b")
    assert isinstance(first, Web)
    assert isinstance(second, Web)
    token = make_token("carol")
    ws = await WS.open(first.ws_url, token)
    await ws.recv()
    sub = await ws.subscribe("user:carol")
    emitter = Emitter(redis_url)
    for i in range(10):
        emitter.emit("notification", data={"title": f"n{i}"}, user_id="carol")
    assert emitter.flush(10)
    await ws.recv_until(lambda f: f.get("seq") == 10)

    first.signal(sig)
    for i in range(10, 20):  # keeps coming while the node goes away
        emitter.emit("notification", data={"title": f"n{i}"}, user_id="carol")
    await _drain_until_closed(ws, timeout=10)
    for i in range(20, 30):  # and after the client lost its socket
        emitter.emit("notification", data={"title": f"n{i}"}, user_id="carol")
    if sig == signal.SIGTERM:
        assert ws.close_code == 1012, f"graceful shutdown closes with 1012, got {ws.close_code}"
        wait_for(lambda: not first.alive(), 8, "the SIGTERMed node to exit")
    last = max(f["seq"] for f in ws.events("user:carol"))

    resumed = await _resume_elsewhere(second, token, "user:carol", last, sub["epoch"])
    assert emitter.flush(10)
    await resumed.recv_until(lambda f: f.get("seq") == 30)
    seqs = [f["seq"] for f in ws.events("user:carol") + resumed.events("user:carol")]
    assert seqs == list(range(1, 31)), f"every seq once, in order, across the move: {seqs}"
    await resumed.close()
