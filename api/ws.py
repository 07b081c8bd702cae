"""`/ws`: authenticate, then relay subscribe/unsubscribe/refresh/ping to the hub.

An error in a client frame never closes the connection; the token running out or being
revoked does (the hub's `end`: an error frame, then 4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import Message, Receive, Scope, Send

from taskcast.realtime import channels, metrics
from taskcast.realtime.errors import (
    Forbidden,
    RateLimited,
    TaskcastError,
    TooManyConnections,
    TooManySubscriptions,
    Unauthorized,
    Unavailable,
)
from taskcast.realtime.protocol import (
    WS_1008_POLICY_VIOLATION,
    WS_1009_MESSAGE_TOO_BIG,
    WS_1011_INTERNAL_ERROR,
    WS_4401_UNAUTHORIZED,
    WS_4429_FLOODING,
    ClientFrame,
    encode,
    error_frame,
    parse_frame,
)
from taskcast.realtime.ratelimit import TokenBucket
from taskcast.realtime.session import Session
from taskcast.realtime.tokens import Principal, bearer

from .deps import Node, authenticate
from .wsprotocol import EXTENSION as SEND_NOWAIT

logger = logging.getLogger("taskcast.ws")
CLOSE_GRACE_SECONDS = 5.0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """No Origin (not a browser) is fine; otherwise same host, or listed in the allow-list."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    return not allowed and host is not None and urlsplit(origin).netloc.lower() == host.lower()


async def _until_disconnect(receive: Receive, seconds: float = CLOSE_GRACE_SECONDS) -> None:
    """After `close_soon`: discard frames while the writer flushes and sends the close.

    Returning at once would stop the writer before it sent the close code (the client would
    see 1006); a client that never completes the closing handshake is dropped after `seconds`.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "websocket.disconnect":
                pass


def _ref(text: str | None) -> Any:
    """The `ref` of a frame refused unhandled, so the client can match the error to it."""
    if text is None:
        return None
    try:
        return parse_frame(text).ref
    except TaskcastError as exc:
        return exc.ref


class WebSocketEndpoint:
    """A plain ASGI app: one coroutine reads frames, the session's writer sends them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node: Node = scope["app"].state.node
        settings = node.settings
        if not origin_allowed(_header(scope, b"origin"), _header(scope, b"host"), settings.origins):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": WS_1008_POLICY_VIOLATION})
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [None])[0] or bearer(_header(scope, b"authorization"))
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        try:
            principal = await authenticate(node, token)
        except (Unauthorized, Unavailable) as exc:
            # Unavailable: the identity provider's keys could not be fetched; try again.
            code = WS_4401_UNAUTHORIZED if isinstance(exc, Unauthorized) else WS_1011_INTERNAL_ERROR
            await send({"type": "websocket.send", "text": error_frame(exc.code, exc.message)})
            await send({"type": "websocket.close", "code": code})
            return
        per_user = node.hub.connections_of(principal.user)
        if per_user >= settings.max_connections_per_user:
            exc2 = TooManyConnections()
            await send({"type": "websocket.send", "text": error_frame(exc2.code, exc2.message)})
            await send({"type": "websocket.close", "code": WS_4429_FLOODING})
            return

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        async def close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        direct = scope.get("extensions", {}).get(SEND_NOWAIT)
        session = Session(
            send_text,
            close,
            principal,
            send_nowait=direct["send"] if direct else None,
            direct=direct["direct"] if direct else None,
            framing=direct["frame"] if direct else None,
            max_frames=settings.outbound_max_frames,
            max_bytes=settings.outbound_max_bytes,
        )
        if direct:
            direct["watch"](session.changed)
        node.hub.add(session)
        session.push(
            encode(
                {
                    "type": "welcome",
                    "connection_id": session.id,
                    "user": principal.user,
                    "node": node.node_id,
                    "expires_at": principal.expires_at,
                }
            )
        )
        bucket = TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst)
        try:
            await self._read(receive, session, node, bucket)
        finally:
            await node.hub.remove(session)

    async def _read(
        self, receive: Receive, session: Session, node: Node, bucket: TokenBucket
    ) -> None:
        max_bytes = node.settings.max_frame_bytes
        while not session.closed:
            message: Message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            # The limit is in bytes: a text frame's UTF-8 size, not its length in characters.
            size = len(text.encode()) if text is not None else len(message.get("bytes") or b"")
            if size > max_bytes:
                session.close_soon(WS_1009_MESSAGE_TOO_BIG, "frame too large")
                await _until_disconnect(receive)
                return
            if not bucket.take():
                metrics.COUNTS.rate_limited += 1
                if bucket.flooding:
                    session.close_soon(WS_4429_FLOODING, "flooding")
                    await _until_disconnect(receive)
                    return
                refused = RateLimited().with_ref(_ref(text))
                session.push(error_frame(refused.code, refused.message, refused.ref))
                continue
            if session.closing:  # its token ran out or was revoked: the close is on its way
                continue
            if text is None:
                session.push(error_frame("bad_request", "binary frames are not accepted"))
                continue
            ref: Any = None
            try:
                frame = parse_frame(text)
                ref = frame.ref
                await self._handle(frame, session, node)
            except TaskcastError as exc:
                session.push(
                    error_frame(exc.code, exc.message, exc.ref if exc.ref is not None else ref)
                )

    async def _handle(self, frame: ClientFrame, session: Session, node: Node) -> None:
        if frame.op == "ping":
            reply: dict[str, Any] = {"type": "pong"}
            if frame.ref is not None:
                reply["ref"] = frame.ref
            session.push(encode(reply))
            return
        if frame.op == "refresh":
            await self._refresh(frame, session, node)
            return
        assert frame.channel is not None
        try:
            channel = node.access.channel(frame.channel)
        except TaskcastError as exc:
            raise exc.with_ref(frame.ref) from None
        if frame.op == "unsubscribe":
            node.hub.unsubscribe(session, channel.name)
            reply = {"type": "unsubscribed", "channel": channel.name}
            if frame.ref is not None:
                reply["ref"] = frame.ref
            session.push(encode(reply))
            return
        await self._subscribe(frame, channel, session, node)

    async def _subscribe(
        self, frame: ClientFrame, channel: channels.Channel, session: Session, node: Node
    ) -> None:
        if not await node.access.allowed(session.principal, channel):
            raise Forbidden(f"not allowed to subscribe to {channel.name}").with_ref(frame.ref)
        if channel.name in session.subs:
            node.hub.unsubscribe(session, channel.name)  # a re-subscribe restarts the stream
        elif len(session.subs) >= node.settings.max_subscriptions:
            raise TooManySubscriptions().with_ref(frame.ref)
        try:
            reply, replay = await node.hub.subscribe(
                session, channel.name, frame.since, frame.epoch
            )
        except TaskcastError as exc:
            raise exc.with_ref(frame.ref) from None
        if session.closing:  # the token ran out while history was read
            node.hub.unsubscribe(session, channel.name)
            return
        if frame.ref is not None:
            reply["ref"] = frame.ref
        session.push(encode(reply))
        node.hub.finish_subscribe(session, channel.name, replay)

    async def _refresh(self, frame: ClientFrame, session: Session, node: Node) -> None:
        """Replace the connection's token: the same user, and the subscriptions the new token
        no longer allows end (`unsubscribed`, reason `forbidden`) before `refreshed`.

        A refused token changes nothing: the connection keeps its old one until it runs out.
        """
        try:
            principal = await authenticate(node, frame.token)
        except (Unauthorized, Unavailable) as exc:
            raise exc.with_ref(frame.ref) from None
        old: Principal = session.principal
        if principal.user != old.user:
            raise Unauthorized("the new token names another user").with_ref(frame.ref)
        dropped: list[str] = []
        for name in list(session.subs):
            channel = node.access.channel(name)
            if node.access.policy is None and channel.kind == "task" and not old.is_admin:
                continue  # the built-in rules allowed it by ownership: the user is the same
            try:
                allowed = await node.access.allowed(principal, channel)
            except Exception:  # noqa: BLE001 - Redis away: refuse, keep the old token
                raise Unavailable().with_ref(frame.ref) from None
            if not allowed:
                dropped.append(name)
        if session.closing:  # the old token ran out meanwhile: the close is on its way
            return
        node.hub.reauthorize(session, principal)
        metrics.COUNTS.token_refreshes += 1
        for name in dropped:
            if node.hub.unsubscribe(session, name):
                session.push(
                    encode({"type": "unsubscribed", "channel": name, "reason": "forbidden"})
                )
        reply: dict[str, Any] = {"type": "refreshed", "expires_at": principal.expires_at}
        if frame.ref is not None:
            reply["ref"] = frame.ref
        session.push(encode(reply))
