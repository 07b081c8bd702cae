"""The WebSocket protocol's direct send: right frames, deflate or not, order under backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import math
import weakref
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from taskcast.api.wsprotocol import (
    EXTENSION,
    KEEPALIVE_GAP,
    KEEPALIVE_STEPS,
    KEEPALIVE_TICK,
    Deflater,
    HttpProtocol,
    SharedDeflate,
    _Flag,
    _Framer,
    _Inbox,
    _Keepalive,
    frame,
)
from taskcast.realtime.backend import make_broadcast
from taskcast.realtime.connections import redis_client
from taskcast.realtime.publisher import Publisher
from taskcast.realtime.settings import MAX_EVENT_BYTES_CEILING
from taskcast.realtime.store import Store

from .inprocess import served
from .processes import Web, Worker
from .wsclient import WS

ALL = 1 << 30  # history bytes that keep every event a test emits

pytestmark = pytest.mark.anyio


def parse(wire: bytes, extensions: list[PerMessageDeflate] | None = None) -> Frame:
    """Parse one server frame with websockets' own parser (unmasked, no size limit),
    decoded by `extensions` (a client's permessage-deflate)."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    parser: Generator[None, None, Frame] = Frame.parse(
        reader.read_exact, mask=False, max_size=None, extensions=extensions
    )
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("frame incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_framer_writes_what_websockets_parses(size: int) -> None:
    """Every length encoding (7-bit, 16-bit, 64-bit) parses back to the same final text frame."""
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte: the length is in bytes
    frame = parse(_Framer().frame(text))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data.decode() == text


def test_framer_frames_one_event_once() -> None:
    """The same text object gets the same bytes object; a new text is framed anew."""
    framer = _Framer()
    text = json.dumps({"type": "event", "seq": 1})
    first = framer.frame(text)
    assert framer.frame(text) is first
    other = json.dumps({"type": "event", "seq": 2})
    assert parse(framer.frame(other)).data.decode() == other


def event_text(n: int, size: int) -> str:
    """An event frame as the hub sends it, its message `size` characters of prose."""
    message = ("the order ships tomorrow " * (size // 25 + 1))[:size]
    event = {"type": "notification", "data": {"title": f"n{n}", "message": message}}
    return json.dumps({"type": "event", "channel": "user:u", "seq": n, "event": event})


def test_deflater_messages_decode_alone_at_any_client() -> None:
    """Each message compressed once decodes at a client that keeps its inflater across
    messages and at one that starts afresh, in any order; one that would not shrink goes
    uncompressed (RSV1 clear); the same text object is compressed once."""
    deflater = Deflater(12)
    texts = [event_text(n, size) for n, size in enumerate([0, 40, 300, 2000, 70_000, 100])]
    wires = [deflater.frame(text) for text in texts]
    assert deflater.frame(texts[-1]) is wires[-1]
    assert all(wire[0] & 0x40 for wire in wires)  # RSV1: compressed
    assert not deflater.frame('{"seq": 1}')[0] & 0x40  # no smaller compressed: as it is
    assert len(wires[4]) < len(texts[4]) // 10
    for order in (list(range(len(texts))), list(range(len(texts)))[::-1]):
        keeping = PerMessageDeflate(False, True, 12, 12)  # its inflater lives on
        for i in order:
            assert parse(wires[i], [keeping]).data.decode() == texts[i]
            fresh = PerMessageDeflate(True, True, 12, 12)
            assert parse(wires[i], [fresh]).data.decode() == texts[i]


@pytest.fixture
async def publisher(redis_url: str) -> AsyncIterator[Publisher]:
    redis = redis_client(redis_url)
    broadcast = make_broadcast(redis_url)
    await broadcast.connect()
    # Frames as large as a deployment may allow events to be (TASKCAST_MAX_EVENT_BYTES).
    yield Publisher(
        Store(redis, history_max_bytes=ALL), broadcast, max_event_bytes=MAX_EVENT_BYTES_CEILING
    )
    await broadcast.disconnect()
    await redis.aclose()


async def notify(publisher: Publisher, user: str, n: int, size: int) -> None:
    await publisher.emit(
        "notification",
        data={"title": f"n{n}", "message": "m" * size},
        user_id=user,
    )


@pytest.mark.e2e
@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_subscriber_gets_every_size_in_order(
    spawn: Callable[..., Web | Worker],
    publisher: Publisher,
    make_token: Callable[..., str],
    compression: Any,
) -> None:
    """Plain and permessage-deflate clients get each event, small to large, whole and in order."""
    web = spawn("web")
    assert isinstance(web, Web)
    user = f"wsp-{compression}"
    ws = await WS.open(web.ws_url, make_token(user), compression=compression)
    assert (await ws.recv())["type"] == "welcome"
    assert (await ws.subscribe(f"user:{user}"))["type"] == "subscribed"
    sizes = [0, 100, 126, 5000, 65536, 200_000, 3]
    for n, size in enumerate(sizes):
        await notify(publisher, user, n, size)
    got = [await ws.recv_until(lambda f: f["type"] == "event") for _ in sizes]
    assert [f["seq"] for f in got] == list(range(1, len(sizes) + 1))
    assert [len(f["event"]["data"]["message"]) for f in got] == sizes
    await ws.close()


@pytest.mark.e2e
async def test_one_channel_reaches_plain_and_compressed_clients_alike(
    spawn: Callable[..., Web | Worker], publisher: Publisher, make_token: Callable[..., str]
) -> None:
    """On one channel, a plain client, two that offer deflate as browsers do, and one that
    asks for a smaller window each get every event whole and in order (each kind of socket
    is sent its own bytes, every socket of a kind the same)."""
    web = spawn("web")
    assert isinstance(web, Web)
    user = "wsp-mixed"
    offers: list[dict[str, Any]] = [
        {"compression": None},
        {"compression": "deflate"},
        {"compression": "deflate"},
        {
            "compression": None,
            "extensions": [ClientPerMessageDeflateFactory(server_max_window_bits=9)],
        },
    ]
    clients = [await WS.open(web.ws_url, make_token(user), **offer) for offer in offers]
    for ws in clients:
        assert (await ws.recv())["type"] == "welcome"
        assert (await ws.subscribe(f"user:{user}"))["type"] == "subscribed"
    sizes = [10, 300, 3, 5000, 70_000, 40] * 4
    for n, size in enumerate(sizes):
        await notify(publisher, user, n, size)
    for ws in clients:
        got = [await ws.recv_until(lambda f: f["type"] == "event") for _ in sizes]
        assert [f["seq"] for f in got] == list(range(1, len(sizes) + 1))
        assert [len(f["event"]["data"]["message"]) for f in got] == sizes
        await ws.close()


@pytest.mark.e2e
@pytest.mark.timeout(60)
async def test_order_holds_when_the_socket_backs_up_and_drains(
    spawn: Callable[..., Web | Worker], publisher: Publisher, make_token: Callable[..., str]
) -> None:
    """A client that stops reading fills its socket (frames queue on the server); reading
    again while events keep coming, it gets every one in order, none twice: direct and
    queued sends never overtake each other."""
    web = spawn("web", TASKCAST_OUTBOUND_MAX_BYTES=str(64 * 1024 * 1024))
    assert isinstance(web, Web)
    ws = await WS.open(web.ws_url, make_token("stall"), compression=None, max_queue=1)
    assert (await ws.recv())["type"] == "welcome"
    assert (await ws.subscribe("user:stall"))["type"] == "subscribed"
    count, backed_up = 600, 150  # 150 x 40 KB: more than loopback socket buffers hold
    halfway = anyio.Event()

    async def produce() -> None:
        for n in range(count):
            await notify(publisher, "stall", n, 40_000)
            if n == backed_up:
                halfway.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await halfway.wait()  # the socket is full: events queue while more keep coming
        got = [await ws.recv_until(lambda f: f["type"] == "event", 20) for _ in range(count)]
    assert [f["seq"] for f in got] == list(range(1, count + 1))
    assert [f["event"]["data"]["title"] for f in got] == [f"n{n}" for n in range(count)]
    await ws.close()


async def test_inbox_hands_over_in_order_and_survives_a_cancelled_get() -> None:
    """The light receive queue: FIFO, a waiting get wakes on put, a cancelled get loses nothing."""
    inbox = _Inbox()
    assert inbox.empty()
    with anyio.move_on_after(0.05):
        await inbox.get()  # nothing there: cancelled while waiting
    inbox.put_nowait({"n": 1})
    inbox.put_nowait({"n": 2})
    assert [await inbox.get(), await inbox.get()] == [{"n": 1}, {"n": 2}]
    async with anyio.create_task_group() as tg:
        got: list[Any] = []

        async def consume() -> None:
            got.append(await inbox.get())

        tg.start_soon(consume)
        await anyio.wait_all_tasks_blocked()
        inbox.put_nowait({"n": 3})
    assert got == [{"n": 3}]


async def test_flag_releases_every_waiter_when_writable_again() -> None:
    """The light writable flag: waits only while cleared, and set() wakes all waiters."""
    flag = _Flag()
    assert await flag.wait()
    flag.clear()
    woken: list[int] = []
    async with anyio.create_task_group() as tg:

        async def waiter(n: int) -> None:
            await flag.wait()
            woken.append(n)

        for n in range(3):
            tg.start_soon(waiter, n)
        await anyio.wait_all_tasks_blocked()
        assert woken == []
        flag.set()
    assert sorted(woken) == [0, 1, 2]


@pytest.mark.timeout(30)
async def test_a_closed_connection_is_freed_without_the_cyclic_collector() -> None:
    """Once a client is gone, its server-side protocols (the HTTP one it upgraded from and
    the WebSocket one) are freed by reference counting alone: a storm of connections leaves
    nothing for a full collection to walk (which would stall every stream on the node)."""
    protocols: dict[str, weakref.ref[Any]] = {}
    finished = anyio.Event()

    class Tracked(HttpProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            protocols["http"] = weakref.ref(self)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocols["websocket"] = weakref.ref(scope["extensions"][EXTENSION]["send"].__self__)
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        finished.set()

    async with served(app, http=Tracked, lifespan="off", log_level="error") as port:
        gc.disable()
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws"):
                pass
            with anyio.fail_after(5):
                await finished.wait()
            assert sorted(protocols) == ["http", "websocket"]
            try:
                with anyio.fail_after(5):
                    while any(ref() is not None for ref in protocols.values()):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)  # a weakref has no event to wait on
            except TimeoutError:
                alive = [name for name, ref in protocols.items() if ref() is not None]
                raise AssertionError(
                    f"closed connection's protocols still alive: {alive}"
                ) from None
        finally:
            gc.enable()


@pytest.mark.timeout(30)
async def test_direct_write_is_offered_only_while_a_frame_could_go_now() -> None:
    """The hub's direct write is the transport's own while the socket is open and writable,
    with or without permessage-deflate; none while it is paused or once a close came in; and
    every change of that answer is counted, so the hub sorts its fan-outs again."""
    accepted: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    gone = anyio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await accepted.put(scope["extensions"][EXTENSION])
        while (await receive())["type"] != "websocket.disconnect":
            pass
        gone.set()

    async with served(app, lifespan="off", log_level="error") as port:
        async with connect(f"ws://127.0.0.1:{port}/ws", compression=None) as ws:
            with anyio.fail_after(5):
                ext = await accepted.get()
            protocol = ext["send"].__self__
            told: list[None] = []
            ext["watch"](lambda: told.append(None))
            write = ext["direct"]()
            assert write is not None
            write(ext["frame"]("straight to the socket"))
            with anyio.fail_after(5):
                assert await ws.recv() == "straight to the socket"
            protocol.pause_writing()  # what the transport calls when its buffer is full
            assert len(told) == 1
            assert ext["direct"]() is None
            protocol.resume_writing()
            assert len(told) == 2
            assert ext["direct"]() is not None
        with anyio.fail_after(5):
            await gone.wait()
        assert len(told) > 2  # the close, sent and received
        assert ext["direct"]() is None
        assert protocol.watcher is None  # let go with the connection
        async with connect(f"ws://127.0.0.1:{port}/ws", compression="deflate") as ws:
            with anyio.fail_after(5):
                ext = await accepted.get()
            write = ext["direct"]()  # compressed once for every connection of its kind
            assert write is not None
            write(ext["frame"]("compressed " * 20))
            assert ext["send"]("compressed")
            with anyio.fail_after(5):
                assert await ws.recv() == "compressed " * 20
                assert await ws.recv() == "compressed"


@pytest.mark.timeout(30)
async def test_deflate_clients_share_compressed_frames_and_hold_no_zlib_state_idle() -> None:
    """Clients offering permessage-deflate as browsers do get both `no_context_takeover`
    parameters and one compressed frame between them; a client asking for a smaller window
    gets its own; every one decodes what is written directly, sent through the app, or
    echoed back; no connection holds a compressor or an inflater, before or after its
    client's compressed messages."""
    accepted: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await accepted.put(scope["extensions"][EXTENSION])
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": message["text"]})  # echoed

    url = ""
    offers: dict[str, dict[str, Any]] = {
        "browser": {"compression": "deflate"},  # permessage-deflate; client_max_window_bits
        "browser2": {"compression": "deflate"},
        "window10": {
            "compression": None,
            "extensions": [ClientPerMessageDeflateFactory(server_max_window_bits=10)],
        },
        "forgetful": {
            "compression": None,
            "extensions": [ClientPerMessageDeflateFactory(client_no_context_takeover=True)],
        },
        "plain": {"compression": None},
    }
    async with served(app, lifespan="off", log_level="error") as port:
        url = f"ws://127.0.0.1:{port}/ws"
        async with contextlib.AsyncExitStack() as stack:
            clients, exts = {}, {}
            for name, offer in offers.items():
                clients[name] = await stack.enter_async_context(connect(url, **offer))
                with anyio.fail_after(5):
                    exts[name] = await accepted.get()
            for name, ws in clients.items():
                answer = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                for parameter in ("server_no_context_takeover", "client_no_context_takeover"):
                    assert (parameter in answer) is (name != "plain")
            assert exts["browser"]["frame"] is exts["browser2"]["frame"]
            assert exts["window10"]["frame"] is not exts["browser"]["frame"]
            assert exts["plain"]["frame"] is frame
            deflates = {
                name: ext["send"].__self__.conn.extensions[0]
                for name, ext in exts.items()
                if name != "plain"
            }
            assert all(isinstance(d, SharedDeflate) for d in deflates.values())
            for deflate in deflates.values():
                assert not hasattr(deflate, "encoder")
                assert not hasattr(deflate, "decoder")

            texts = [event_text(n, size) for n, size in enumerate([10, 500, 5000])]
            for text in texts:
                for ext in exts.values():
                    write = ext["direct"]()
                    assert write is not None
                    write(ext["frame"](text))
            for name, ws in clients.items():
                with anyio.fail_after(5):
                    assert [await ws.recv() for _ in texts] == texts, name
                await ws.send(texts[1])  # compressed by every deflate client
                with anyio.fail_after(5):
                    assert await ws.recv() == texts[1], name
            for deflate in deflates.values():
                assert not hasattr(deflate, "encoder")
                assert not hasattr(deflate, "decoder")


# -- keep-alive -------------------------------------------------------------------------------


class RawClient:
    """A WebSocket client at the frame level: it answers pings only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); server frames are unmasked."""
        first, size = await self.reader.readexactly(2)
        assert size < 126
        return first & 0x0F, await self.reader.readexactly(size)

    def pong(self, payload: bytes) -> None:
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes((0x8A, 0x80 | len(payload))) + mask + masked)


def pinging_server(interval: float, timeout: float | None) -> AbstractAsyncContextManager[int]:
    """A bare app under uvicorn with our protocols and the given keep-alive; its port."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    return served(
        app,
        ws_ping_interval=interval,
        ws_ping_timeout=timeout,
        lifespan="off",
        log_level="error",
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timeout", [0.3, 0.9])
async def test_keepalive_pings_a_live_client_and_closes_a_silent_one(timeout: float) -> None:
    """A client that answers each ping stays connected, each ping carrying a fresh payload;
    one that stops answering is closed with 1011 once the pong deadline passes, not before
    (also when the deadline is longer than the interval)."""
    loop = asyncio.get_running_loop()
    async with pinging_server(interval=0.3, timeout=timeout) as port:
        live, silent = await RawClient.connect(port), await RawClient.connect(port)

        async def unanswered() -> list[tuple[float, int, bytes]]:
            frames: list[tuple[float, int, bytes]] = []
            while not frames or frames[-1][1] != 0x8:
                opcode, payload = await silent.frame()
                frames.append((loop.time(), opcode, payload))
            return frames

        with anyio.fail_after(10):
            silent_frames = asyncio.create_task(unanswered())
            payloads = []
            while len(payloads) < 4:
                opcode, payload = await live.frame()
                assert opcode == 0x9, f"expected a ping, got opcode {opcode}"
                payloads.append(payload)
                live.pong(payload)
            assert len(set(payloads)) == len(payloads)
            (pinged, ping, _), (closed, close, reason) = await silent_frames
        assert (ping, close) == (0x9, 0x8), "expected one ping, then a close frame"
        assert int.from_bytes(reason[:2], "big") == 1011
        assert closed - pinged > timeout - 0.1, "closed before the pong deadline"
        with anyio.fail_after(5):
            opcode, payload = await live.frame()  # still pinged: never closed
        assert opcode == 0x9
        for client in (live, silent):
            client.writer.close()


@pytest.mark.timeout(30)
async def test_a_connection_storm_is_not_pinged_in_step() -> None:
    """Connections opened together get their first pings spread over about an interval,
    not all at once (nor every interval after, for as long as they stay)."""
    interval = 1.0
    async with pinging_server(interval=interval, timeout=None) as port:
        clients = await asyncio.gather(*(RawClient.connect(port) for _ in range(20)))
        loop = asyncio.get_running_loop()

        async def first_ping(client: RawClient) -> float:
            opcode, _ = await client.frame()
            assert opcode == 0x9
            return loop.time()

        with anyio.fail_after(10):
            arrivals = await asyncio.gather(*(first_ping(c) for c in clients))
        spread = max(arrivals) - min(arrivals)
        assert spread > interval / 4, f"20 first pings within {spread * 1000:.0f} ms"
        for client in clients:
            client.writer.close()


@pytest.mark.timeout(30)
async def test_keepalive_work_due_in_one_tick_shares_one_timer() -> None:
    """1,000 connections due at random points of half a second are served by one loop timer
    per tick, not one each; none before its time, and a closed connection not at all."""
    loop = asyncio.get_running_loop()
    timers = 0

    class Loop:  # the real loop, counting the timers set on it
        def call_at(self, when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return loop.call_at(when, callback, *args)

        def time(self) -> float:
            return loop.time()

    fired: dict[int, float] = {}
    everyone = asyncio.Event()

    class Conn:  # what `_Keepalive` calls back: a connection's keep-alive round
        loop = Loop()

        def __init__(self, n: int, when: float) -> None:
            self.n, self.when = n, when

        def keepalive_due(self) -> None:
            fired[self.n] = loop.time()
            if len(fired) == kept:
                everyone.set()

    wheel = _Keepalive()
    start = loop.time() + 0.1
    conns = [Conn(n, start + n * 0.0005) for n in range(1000)]
    ticks = [wheel.add(c, c.when) for c in conns]  # type: ignore[arg-type]
    closed = range(0, 990, 10)  # spread through the half second, before the last one kept
    for n in closed:
        wheel.discard(conns[n], ticks[n])  # type: ignore[arg-type]
    kept = len(conns) - len(closed)
    with anyio.fail_after(10):
        await everyone.wait()
    assert timers <= 0.5 / KEEPALIVE_TICK + 2, f"{timers} timers for 1,000 connections"
    assert not set(closed) & set(fired), "a closed connection's keep-alive still ran"
    early = [n for n, at in fired.items() if at < conns[n].when - 0.002]  # timers: ms grain
    assert not early, f"{len(early)} connections served before they were due"


@pytest.mark.timeout(30)
async def test_keepalive_of_a_crowded_tick_lets_the_loop_run_between_batches() -> None:
    """1,000 connections due in one tick are served in batches, `KEEPALIVE_GAP` apart: whatever
    else the loop has to do (an event read from Redis) waits for one batch, not for all of
    them, and the node sleeps between batches. The tick still ends within its steps. A
    connection closed while its tick is being served is not served."""
    loop = asyncio.get_running_loop()
    served: list[int] = []
    at: list[float] = []  # loop time of each connection served
    seen: list[int] = []  # how many were served each time another callback got the loop
    done = asyncio.Event()

    class Conn:
        def __init__(self, n: int) -> None:
            self.n, self.loop = n, loop

        def keepalive_due(self) -> None:
            served.append(self.n)
            at.append(loop.time())
            if self.n == 0:  # as the tick starts, something else arrives, and one closes
                loop.call_soon(other)
                wheel.discard(conns[-1], tick)  # type: ignore[arg-type]
            if len(served) == kept:
                done.set()

    def other() -> None:
        seen.append(len(served))
        if not done.is_set():
            loop.call_soon(other)

    wheel = _Keepalive()
    when = loop.time() + 0.05
    conns = [Conn(n) for n in range(1000)]
    ticks = {wheel.add(c, when) for c in conns}  # type: ignore[arg-type]
    assert len(ticks) == 1
    tick, kept = ticks.pop(), len(conns) - 1
    with anyio.fail_after(10):
        await done.wait()
    batch = math.ceil(len(conns) / KEEPALIVE_STEPS)
    steps = [b - a for a, b in itertools.pairwise(seen) if b > a]
    assert steps, "nothing else ran while 1,000 connections were served"
    assert max(steps) <= batch, f"{max(steps)} connections served in one loop step"
    assert len(steps) < KEEPALIVE_STEPS, f"the tick took {len(steps) + 1} steps"
    # Each batch after the first was started by a timer `KEEPALIVE_GAP` after the one before:
    # a lower bound, which a busy machine can only lengthen.
    ends = sorted({k for k in seen if 0 < k < kept})
    slept = [at[k] - at[k - 1] >= KEEPALIVE_GAP * 0.9 for k in ends]
    assert len(slept) == len(steps)
    assert all(slept), "batches not a gap apart: the node never slept"
    assert sorted(served) == list(range(kept)), "a connection served twice, never, or closed"


@pytest.mark.timeout(30)
async def test_keepalive_of_a_quiet_tick_is_served_one_connection_a_step() -> None:
    """A tick with no more connections due than it has steps (10,000 connections at a 20 s
    interval put ~25 in a tick) pings them one or two at a time, a gap apart: an event read
    from Redis waits for one ping and its pong, not for a batch of them."""
    loop = asyncio.get_running_loop()
    at: list[float] = []
    done = asyncio.Event()

    class Conn:
        loop = asyncio.get_running_loop()

        def keepalive_due(self) -> None:
            at.append(loop.time())
            if len(at) == KEEPALIVE_STEPS:
                done.set()

    wheel = _Keepalive()
    when = loop.time() + 0.05
    assert len({wheel.add(Conn(), when) for _ in range(KEEPALIVE_STEPS)}) == 1  # type: ignore[arg-type]
    with anyio.fail_after(10):
        await done.wait()
    gaps = [b - a for a, b in itertools.pairwise(at)]
    together = [g for g in gaps if g < KEEPALIVE_GAP / 2]
    assert not together, f"{len(together)} of {len(at)} pinged in the step of the one before"
