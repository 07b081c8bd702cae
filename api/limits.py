"""Request body limit: bodies over `TASKCAST_MAX_BODY_BYTES` get 413 `payload_too_large`."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskcast.realtime.errors import PayloadTooLarge

from .errors import error_body


def _too_large() -> HTTPException:
    # An HTTPException passes through FastAPI's body reading untouched (anything else
    # becomes a 400) and reaches the app's handler, which maps 413 to `payload_too_large`.
    return HTTPException(PayloadTooLarge.http_status, PayloadTooLarge.default_message)


class BodyLimit:
    """Pure ASGI middleware: refuse a declared `Content-Length` over the limit before reading
    anything, and count streamed (chunked) bodies so they cannot exceed it either."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        node = getattr(scope["app"].state, "node", None)
        if node is None:  # not started (no lifespan): nothing to enforce against yet
            await self.app(scope, receive, send)
            return
        limit: int = node.settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != PayloadTooLarge.http_status or started:
                raise
            await self._refuse(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        exc = PayloadTooLarge()
        # The unread body is not drained: the server closes the connection after this reply.
        response = JSONResponse(error_body(exc.code, exc.message), exc.http_status)
        response.headers["connection"] = "close"
        await response(scope, receive, send)
