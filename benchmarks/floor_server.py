"""The floor: the least any Python relay of Redis pub/sub to WebSockets can do, per event and
per frame, under the same uvicorn on the same machine.

A bare ASGI app (no framework, no auth, no history, no ordering, no queue): one raw pub/sub
connection parsed by hiredis; each message gets a per-channel seq and goes, as the same text,
to every socket subscribed to its channel through uvicorn's own `send` (plain uvicorn, its
default websockets-sansio protocol). It speaks just enough of taskcast's /ws contract for the
load clients: a `subscribe` op is answered `subscribed`, events arrive as `event` frames. Its
figures say how close taskcast (and the anchor) are to what this machine allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import hiredis
import orjson

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Floor:
    """The relay: channel -> sockets; one reader task for the whole node."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.channels: dict[str, list[Send]] = {}
        self.seq: dict[str, int] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await self._socket(receive, send)

    async def _lifespan(self, receive: Any, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                url = urlparse(self.redis_url)
                stream, self.writer = await asyncio.open_connection(url.hostname, url.port)
                self.reader = asyncio.create_task(self._read(stream))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.reader is not None:
                    self.reader.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _socket(self, receive: Any, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        first = await receive()
        if first["type"] != "websocket.receive":
            return
        channel = orjson.loads(first["text"])["channel"]
        sockets = self.channels.get(channel)
        if sockets is None:
            sockets = self.channels[channel] = []
            assert self.writer is not None
            self.writer.write(hiredis.pack_command(("SUBSCRIBE", channel)))
        sockets.append(send)
        reply = {"type": "subscribed", "channel": channel, "seq": self.seq.get(channel, 0)}
        await send({"type": "websocket.send", "text": orjson.dumps(reply).decode()})
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sockets.remove(send)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(encoding="utf-8")
        while True:
            data = await stream.read(1 << 16)
            if not data:
                return
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if reply[0] != "message":
                    continue
                channel, event = reply[1], reply[2]
                seq = self.seq.get(channel, 0) + 1
                self.seq[channel] = seq
                text = f'{{"type":"event","channel":"{channel}","seq":{seq},"event":{event}}}'
                message = {"type": "websocket.send", "text": text}
                for send in self.channels.get(channel, ()):
                    with contextlib.suppress(Exception):  # a socket closing under us
                        await send(message)


def create_app() -> Floor:
    """The floor app, reading `REDIS_URL` (uvicorn `--factory`)."""
    return Floor(os.environ["REDIS_URL"])
