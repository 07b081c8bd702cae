"""`GET /sse`: one channel as Server-Sent Events, for clients that cannot speak WebSocket.

The stream is a hub `Session` whose writer formats each `/ws` frame as one SSE message, so it
shares the hub's fan-out, ordering, gap fill, bounded queue and coalescing. Every message's
`data:` is the frame `/ws` would send; `id:` is the channel seq, so a browser `EventSource`
resumes by itself with `Last-Event-ID`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from types import FrameType
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from taskcast.realtime.errors import BadRequest, TaskcastError, TooManyConnections
from taskcast.realtime.protocol import WS_1012_SERVICE_RESTART, encode
from taskcast.realtime.session import Session
from taskcast.realtime.tokens import Principal, bearer

from .deps import Node, NodeDep, authenticate

router = APIRouter(tags=["realtime"])

RETRY_MS = 2000  # the reconnect delay a browser's EventSource uses after the stream ends
KEEPALIVE = ":keepalive"  # queued like a frame; written as an SSE comment
UNAVAILABLE_1011 = 1011  # the close reason sent when history is unreachable


_streams: set[Session] = set()  # this process's open SSE sessions
_hooked = False


def _hook_shutdown() -> None:
    """End SSE streams as soon as the server is told to stop, the way uvicorn closes sockets.

    uvicorn closes WebSockets with 1012 at once but waits its whole graceful timeout for open
    HTTP responses, and an event stream never ends by itself. So we chain the server's own
    SIGTERM/SIGINT handler (only if it installed one) and close our streams first.
    """
    global _hooked
    if _hooked or threading.current_thread() is not threading.main_thread():
        return
    _hooked = True
    loop = asyncio.get_running_loop()

    def close_streams() -> None:
        for session in list(_streams):
            session.close_soon(WS_1012_SERVICE_RESTART, "server restarting")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(close_streams)
            previous(signum, frame)

        signal.signal(sig, handler)


def sse_message(frame: str) -> bytes:
    """Format one pre-encoded `/ws` frame (or the keepalive marker) as an SSE message."""
    if frame == KEEPALIVE:
        return b": keepalive\n\n"
    parsed: dict[str, Any] = orjson.loads(frame)
    seq = parsed.get("seq")
    head = f"id: {seq}\n" if isinstance(seq, int) else ""
    return f"{head}data: {frame}\n\n".encode()


def last_event_id(header: str | None, since: int | None) -> int | None:
    """`Last-Event-ID` (a browser resuming) wins over `since`; both mean "I have up to N"."""
    if header is None or not header.strip():
        return since
    try:
        value = int(header.strip())
    except ValueError:
        raise BadRequest("Last-Event-ID must be the integer seq of the last event") from None
    if not 0 <= value < 2**63:
        raise BadRequest("Last-Event-ID must be a non-negative integer")
    return value


class EventStream(Response):
    """The streaming response: headers, then the session's frames until either side ends."""

    def __init__(
        self, node: Node, principal: Principal, channel: str, since: int | None, epoch: str | None
    ) -> None:
        super().__init__(media_type="text/event-stream")
        self.node = node
        self.principal = principal
        self.channel = channel
        self.since = since
        self.epoch = epoch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        ended = asyncio.Event()

        async def write(frame: str) -> None:
            await send(
                {"type": "http.response.body", "body": sse_message(frame), "more_body": True}
            )

        async def close(code: int, reason: str) -> None:
            # Slow consumer (4008) or server restarting (1012): say why, then end the stream.
            await write(encode({"type": "close", "code": code, "reason": reason}))
            ended.set()

        async def watch_disconnect() -> None:
            message: Message = await receive()
            while message["type"] != "http.disconnect":
                message = await receive()
            ended.set()

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # proxies must not buffer the stream
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": f"retry: {RETRY_MS}\n\n".encode(),
                "more_body": True,
            }
        )
        session = Session(
            write,
            close,
            self.principal,
            max_frames=node.settings.outbound_max_frames,
            max_bytes=node.settings.outbound_max_bytes,
        )
        watcher = asyncio.create_task(watch_disconnect(), name=f"taskcast-sse-{session.id}")
        if node.process_hooks:
            _hook_shutdown()
        _streams.add(session)
        node.hub.add(session)
        try:
            try:
                reply, replay = await node.hub.subscribe(
                    session, self.channel, self.since, self.epoch
                )
            except TaskcastError as exc:  # Redis away: say so; the browser retries
                session.push(encode({"type": "error", "code": exc.code, "message": exc.message}))
                session.close_soon(UNAVAILABLE_1011, "unavailable")
            else:
                session.push(encode(reply))
                node.hub.finish_subscribe(session, self.channel, replay)
            keepalive = node.settings.sse_keepalive
            while not ended.is_set() and not session.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), keepalive)
                if not ended.is_set():
                    session.push(KEEPALIVE)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            _streams.discard(session)
            await node.hub.remove(session)
            with contextlib.suppress(Exception):  # the client may be gone already
                await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.get("/sse", include_in_schema=False)
async def sse(
    node: NodeDep,
    channel: Annotated[str, Query(max_length=140)],
    since: Annotated[int | None, Query(ge=0, lt=2**63)] = None,
    epoch: Annotated[str | None, Query(max_length=64)] = None,
    token: Annotated[str | None, Query()] = None,
    authorization: Annotated[str | None, Header()] = None,
    last_event: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> EventStream:
    """Subscribe to `channel` with the same token and permissions as `/ws`."""
    principal = await authenticate(node, token or bearer(authorization))
    parsed = await node.access.check(principal, channel)
    per_user = node.hub.connections_of(principal.user)
    if per_user >= node.settings.max_connections_per_user:
        raise TooManyConnections()
    return EventStream(node, principal, parsed.name, last_event_id(last_event, since), epoch)
