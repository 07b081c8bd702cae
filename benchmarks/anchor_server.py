"""The anchor: python-socketio's AsyncServer with AsyncRedisManager, as an ASGI app for uvicorn.

This is the Flask-SocketIO/Celery pattern: workers emit through `RedisManager(write_only=True)`
(see emitter.py), every server node listens on one Redis pub/sub channel and relays to the
sockets in the named room. A client joins the room named by the `room` query parameter.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs

import socketio


def create_app() -> Any:
    """The anchor app, reading `REDIS_URL` (uvicorn `--factory`)."""
    manager = socketio.AsyncRedisManager(
        os.environ["REDIS_URL"],
        # redis-py 8 defaults to a 5 s socket timeout, which would drop the idle pub/sub read.
        redis_options={"socket_timeout": None},
    )
    sio = socketio.AsyncServer(
        async_mode="asgi", client_manager=manager, logger=False, engineio_logger=False
    )

    @sio.event  # type: ignore[misc]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        rooms = parse_qs(environ.get("QUERY_STRING", "")).get("room", [])
        for room in rooms:
            await sio.enter_room(sid, room)

    return socketio.ASGIApp(sio)
