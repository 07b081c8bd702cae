"""uvicorn's WebSocket protocol plus a direct, synchronous send of text frames.

An ASGI `send` per frame costs a coroutine, uvicorn's framing and one write per socket; with a
fan-out every subscriber's frame is the same bytes. This protocol offers the app, as the ASGI
extension `taskcast.send_nowait`, a `send_nowait(text) -> bool` that writes the frame to the
transport at once, framing the text once for every socket it goes to. It refuses (False)
whenever the frame cannot be written now (the transport is paused or closing); the app then
falls back to `send`, so flow control and ordering stay uvicorn's. For the hub's fan-out it
also offers `direct()`, the transport's own `write` while a frame could go now, `frame`,
which frames a text once for all the sockets of its kind, and `watch(callback)`: the callback
is called on any change that could make `direct()` answer otherwise. With permessage-deflate
the server takes no context over, so one compression of a text serves every socket with the
same window bits (`Deflater`, `SharedDeflate`). Run it with `uvicorn --http
taskcast.api.wsprotocol:HttpProtocol --ws taskcast.api.wsprotocol:WebSocketProtocol`; under
any other server the app uses `send`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import struct
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.typing import BytesLike, ExtensionParameter

from taskcast.realtime.session import Framing, Write

if TYPE_CHECKING:
    from uvicorn._types import ASGISendEvent

EXTENSION = "taskcast.send_nowait"
_TEXT = 0x81  # FIN + text opcode; frames from a server are never masked (RFC 6455 5.1)
_DEFLATED_TEXT = 0xC1  # the same with RSV1: a compressed message (RFC 7692 6)
_FLUSH_TAIL = b"\x00\x00\xff\xff"  # ends every flushed deflate block; off the wire (7.2.1)
# uvicorn's permessage-deflate settings (`--ws-per-message-deflate`, on by default)
MAX_WINDOW_BITS = 12
COMPRESS_SETTINGS: dict[str, Any] = {"memLevel": 5}
_PING = bytes((0x89, 4))  # FIN + ping opcode, a 4-byte payload
_jitter = random.Random()
KEEPALIVE_TICK = 0.05  # seconds: keep-alive work due within one tick shares one wake-up
KEEPALIVE_GAP = 0.001  # seconds between steps: the node sleeps, a client on its core runs
KEEPALIVE_STEPS = 20  # a tick's connections are spread over this many steps, fewest a step

logger = logging.getLogger("taskcast.ws")


class _Framer:
    """The wire bytes of the last text framed: one event fanned out is framed once."""

    __slots__ = ("text", "wire")

    def __init__(self) -> None:
        self.text: str | None = None
        self.wire = b""

    def frame(self, text: str) -> bytes:
        if text is self.text:  # the same object: every subscriber of one event
            return self.wire
        data = text.encode()
        size = len(data)
        if size < 126:
            head = bytes((_TEXT, size))
        elif size < 65536:
            head = struct.pack("!BBH", _TEXT, 126, size)
        else:
            head = struct.pack("!BBQ", _TEXT, 127, size)
        self.text, self.wire = text, head + data
        return self.wire


frame = _Framer().frame  # one framer per process: the event loop is single-threaded


class Deflater:
    """Compresses each message on its own, once for every connection with these parameters.

    With `server_no_context_takeover` a compressed message refers to no earlier one, so its
    bytes depend only on the window bits and zlib's settings: one stream, flushed with
    `Z_FULL_FLUSH` (which forgets the history) after each message, serves every connection
    of its kind, and an event fanned out is compressed and framed once. A message that would
    not shrink goes uncompressed (RSV1 clear), which RFC 7692 allows per message.
    """

    __slots__ = ("_stream", "frame", "text", "wbits", "wire")

    def __init__(self, wbits: int) -> None:
        self.wbits = wbits
        self._stream = zlib.compressobj(wbits=-wbits, **COMPRESS_SETTINGS)
        self.text: str | None = None
        self.wire = b""
        self.frame: Framing = self._frame  # one bound method: the hub groups sockets by it

    def compress(self, data: BytesLike) -> bytes | None:
        """`data` as a message's compressed payload; None if that is no smaller."""
        out = self._stream.compress(data) + self._stream.flush(zlib.Z_FULL_FLUSH)
        if out.endswith(_FLUSH_TAIL):
            out = out[:-4]
        return out if len(out) < len(data) else None

    def _frame(self, text: str) -> bytes:
        if text is self.text:  # the same object: every subscriber of one event
            return self.wire
        data = text.encode()
        payload = self.compress(data)
        first = _DEFLATED_TEXT
        if payload is None:
            first, payload = _TEXT, data
        size = len(payload)
        if size < 126:
            head = bytes((first, size))
        elif size < 65536:
            head = struct.pack("!BBH", first, 126, size)
        else:
            head = struct.pack("!BBQ", first, 127, size)
        self.text, self.wire = text, head + payload
        return self.wire


_deflaters: dict[int, Deflater] = {}  # window bits -> the process's one deflater for them


def deflater(wbits: int) -> Deflater:
    found = _deflaters.get(wbits)
    if found is None:
        found = _deflaters[wbits] = Deflater(wbits)
    return found


class SharedDeflate(PerMessageDeflate):
    """permessage-deflate holding no zlib state between messages.

    Neither side takes context over: it compresses through its kind's `Deflater`, and
    inflates each compressed message the client sends with an inflater made for it alone.
    websockets' own makes a compressor and an inflater at the handshake and keeps them, ~40
    KiB a connection that most connections never use.
    """

    def __init__(self, remote_max_window_bits: int, wbits: int) -> None:
        super().__init__(True, True, remote_max_window_bits, wbits, COMPRESS_SETTINGS)
        self.deflater = deflater(wbits)

    def encode(self, frame: Frame) -> Frame:
        """A whole text or binary message compressed by the shared deflater; a control frame
        or a fragmented message (RSV1 would have to hold across frames) as it is."""
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY) or not frame.fin:
            return frame
        payload = self.deflater.compress(frame.data)
        if payload is None:
            return frame
        return Frame(frame.opcode, payload, True, True, frame.rsv2, frame.rsv3)


class SharedDeflateFactory(ServerPerMessageDeflateFactory):
    """uvicorn's permessage-deflate offer plus both `no_context_takeover` parameters, which a
    server may add to any response (RFC 7692 7.1.1): every connection gets a `SharedDeflate`.

    Without context takeover a client's message costs a little more to send (it cannot refer
    to its earlier ones), but clients send few (subscribe, ping), and the server keeps no
    inflater per connection.
    """

    def __init__(self) -> None:
        super().__init__(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=MAX_WINDOW_BITS,
            client_max_window_bits=MAX_WINDOW_BITS,
            compress_settings=COMPRESS_SETTINGS,
        )

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, negotiated = super().process_request_params(params, accepted_extensions)
        shared = SharedDeflate(negotiated.remote_max_window_bits, negotiated.local_max_window_bits)
        return response, shared


class _Inbox:
    """uvicorn's receive queue without `asyncio.Queue`'s four deques (~2.4 KiB a socket).

    One consumer (the app's `receive`), a handful of items at most: uvicorn pauses reading
    while a message waits.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class _Flag:
    """uvicorn's `writable` event without `asyncio.Event`'s deque: waiters only when paused."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[bool]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter


class _Keepalive:
    """The keep-alive timers of every connection on one loop: one timer per tick with work due.

    A timer per connection wakes the loop for each ping on its own: at 10,000 idle connections
    and uvicorn's 20 s interval, ~500 wake-ups a second, each dearer than the ping it sends.
    Connections due within one tick (`KEEPALIVE_TICK`) share its timer, at most a tick late,
    and are served over up to `KEEPALIVE_STEPS` steps `KEEPALIVE_GAP` apart, as few a step as
    that allows: an event read from Redis waits for one step's pings (and their pongs), not
    the tick's, and the node sleeps between steps, so a process woken on its core (a client it
    just wrote to) runs then instead of waiting for the whole tick. A step grows with the
    connections due, so a tick's work ends within the tick, in `KEEPALIVE_STEPS` wake-ups.
    """

    __slots__ = ("_batch", "_draining", "_due", "_firing")

    def __init__(self) -> None:
        self._due: dict[int, dict[WebSocketProtocol, None]] = {}  # tick -> its connections
        self._firing: dict[WebSocketProtocol, None] = {}  # due now, served a batch a step
        self._draining: asyncio.TimerHandle | None = None
        self._batch = 1

    def add(self, protocol: WebSocketProtocol, when: float) -> int:
        """Call `protocol.keepalive_due()` at loop time `when`, or up to a tick later."""
        tick = math.ceil(when / KEEPALIVE_TICK)
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = {}
            protocol.loop.call_at(tick * KEEPALIVE_TICK, self._fire, tick)
        due[protocol] = None
        return tick

    def discard(self, protocol: WebSocketProtocol, tick: int) -> None:
        due = self._due.get(tick)
        if due is not None:
            due.pop(protocol, None)
        self._firing.pop(protocol, None)

    def _fire(self, tick: int) -> None:
        due = self._due.pop(tick, None)
        if due:
            self._firing.update(due)
            self._batch = math.ceil(len(self._firing) / KEEPALIVE_STEPS)
            if self._draining is None:
                self._drain()

    def _drain(self) -> None:
        """Serve a batch of the connections due; the rest `KEEPALIVE_GAP` later."""
        firing = self._firing
        for _ in range(self._batch):
            if not firing:
                break
            protocol = next(iter(firing))
            del firing[protocol]
            try:
                protocol.keepalive_due()
            except Exception:  # the other connections of this tick go on
                logger.exception("keep-alive of a connection failed")
        if firing:
            self._draining = asyncio.get_running_loop().call_later(KEEPALIVE_GAP, self._drain)
        else:
            self._draining = None


# One per event loop (a test suite runs many), dropped with its loop.
_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Keepalive] = (
    weakref.WeakKeyDictionary()
)


def _keepalive(loop: asyncio.AbstractEventLoop) -> _Keepalive:
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = _Keepalive()
    return wheel


class _Noted:
    """A flag of uvicorn's protocol whose every assignment is told to the watcher: uvicorn
    sets `close_sent` and `disconnected` in many places, and `direct()` reads both."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, protocol: object, owner: type | None = None) -> bool:
        value: bool = getattr(protocol, self.slot)
        return value

    def __set__(self, protocol: WebSocketProtocol, value: bool) -> None:
        setattr(protocol, self.slot, value)
        protocol.note()


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, freed as soon as it hands a connection to WebSocket.

    Its parser holds its bound callbacks, a cycle uvicorn breaks only in `connection_lost`,
    which an upgraded connection never calls on it: each WebSocket would leave ~30 objects
    for the cyclic collector, and a connection storm would leave tens of thousands.
    """

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        self.parser = None  # type: ignore[assignment]


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with the `taskcast.send_nowait` extension.

    It also holds less per idle connection: a light receive queue and writable flag, and
    no copy of the handshake's request and response once the connection is accepted. Its
    keep-alive is uvicorn's (`--ws-ping-interval`, `--ws-ping-timeout`), made cheap for
    many idle connections: each ping is written as ready bytes, one check per round serves
    both the pong deadline and the next ping, connections due in the same tick share one
    timer (`_Keepalive`), and the first ping comes at a random point of the first interval
    or so, so a reconnect storm does not ping in step ever after.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        self.keepalive = _keepalive(self.loop)
        self.keepalive_tick: int | None = None  # where this connection waits in `keepalive`
        if self.conn.available_extensions:  # uvicorn's permessage-deflate, shared
            self.conn.available_extensions = [SharedDeflateFactory()]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)  # the handshake: extensions are negotiated
        self.framer = self._framer()
        # The app's task is created but has not run: it sees the extension in its scope.
        if self.handshake_initiated and not self.close_sent:
            self.scope["extensions"][EXTENSION] = {
                "send": self.send_nowait,
                "direct": self.direct,
                "frame": self.framer,
                "watch": self.watch,
            }

    framer: Framing | None = None  # this connection's text frames, once for all of its kind

    def _framer(self) -> Framing | None:
        """Frames as `frame` without extensions, as its `Deflater` with `SharedDeflate`; None
        for any other extension, which then encodes each frame itself."""
        extensions = self.conn.extensions
        if not extensions:
            return frame
        if len(extensions) == 1 and isinstance(extensions[0], SharedDeflate):
            return extensions[0].deflater.frame
        return None

    # -- what `direct()` answers: every change of it is told to the watcher ------------------

    close_sent = _Noted()
    disconnected = _Noted()
    watcher: Callable[[], object] | None = None

    def watch(self, watcher: Callable[[], object]) -> None:
        """Call `watcher()` whenever `direct()` may answer otherwise (until the connection
        is lost)."""
        self.watcher = watcher

    def note(self) -> None:
        watcher = self.watcher
        if watcher is not None:
            watcher()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.note()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.note()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.state is not State.OPEN:  # a close came in (and was answered)
            self.note()

    def shutdown(self) -> None:
        super().shutdown()  # the server is stopping: a 1012 close, and the transport closed
        self.note()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # `disconnected`: the watcher is told
        # Our extension's bound method in our own scope makes protocol -> scope -> method ->
        # protocol a cycle, as does the watcher (the session, whose `direct` is ours);
        # without them a closed connection is freed at once by reference counting, not left
        # (~26 objects) for the next full collection.
        self.watcher = None
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.get("extensions", {}).pop(EXTENSION, None)

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Only the handshake reads these; headers and all, they are kilobytes a socket.
            self.request = self.response = None  # type: ignore[assignment]

    # -- keep-alive ------------------------------------------------------------------------

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            delay = self.ping_interval * _jitter.uniform(0.5, 1.5)
            self._keepalive_at(self.loop.time() + delay)

    def stop_keepalive(self) -> None:
        super().stop_keepalive()
        if self.keepalive_tick is not None:
            self.keepalive.discard(self, self.keepalive_tick)
            self.keepalive_tick = None

    def _keepalive_at(self, when: float) -> None:
        self.keepalive_tick = self.keepalive.add(self, when)

    def send_keepalive_ping(self) -> None:
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return
        assert self.ping_interval is not None
        payload = _jitter.getrandbits(32).to_bytes(4, "big")  # the pong must echo it
        self.pending_ping_payload = payload
        self.ping_sent_at = self.loop.time()
        self.transport.write(_PING + payload)  # a control frame: never compressed
        wait = self.ping_interval
        if self.ping_timeout is not None:
            wait = min(wait, self.ping_timeout)
        self._keepalive_at(self.ping_sent_at + wait)

    def keepalive_due(self) -> None:
        """The pong deadline or the next ping, whichever this round's one timer was set for."""
        self.keepalive_tick = None
        now = self.loop.time()
        if self.pending_ping_payload is not None and self.ping_timeout is not None:
            deadline = self.ping_sent_at + self.ping_timeout
            if deadline > now:  # a timeout longer than the interval: wait for the pong
                self._keepalive_at(deadline)
            else:
                self.keepalive_timeout()  # uvicorn's: close with 1011
            return
        assert self.ping_interval is not None
        next_ping = self.ping_sent_at + self.ping_interval
        if next_ping > now:
            self._keepalive_at(next_ping)
        else:
            self.send_keepalive_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            return  # unsolicited or stale
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None

    def _open_now(self) -> bool:
        """A data frame may be written now: accepted, not closing, not paused."""
        return not (
            not self.handshake_complete
            or self.initial_response is not None
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        )

    def send_nowait(self, text: str) -> bool:
        """Write one text frame now; False if it cannot go without waiting (use `send`)."""
        if not self._open_now():
            return False
        framer = self.framer
        if framer is None:  # an extension of its own: encoded for this connection
            self.conn.send_text(text.encode())
            self.transport.write(b"".join(self.conn.data_to_send()))
        else:
            self.transport.write(framer(text))
        return True

    def direct(self) -> Write | None:
        """The transport's `write` for frames made by this connection's `framer`, while one
        could go now; None otherwise. It stays right until the watcher is next called."""
        if self.framer is None or not self._open_now():
            return None
        return self.transport.write
