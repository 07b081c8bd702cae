"""A raw Redis pub/sub connection: RESP over an asyncio stream, parsed in batches by hiredis.

The listener is the hot path of every node (one read per event at 10k events/s); redis-py's
PubSub costs a coroutine chain and a health check per message. Here one `read()` returns
every message that arrived in one socket read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis

READ_SIZE = 1 << 16


def command(*args: str | bytes) -> bytes:
    """One RESP command (array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class PubSubConnection:
    """One subscriber connection; `read()` raises `ConnectionError` when the link is gone."""

    def __init__(self, url: str, connect_timeout: float = 2.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader(encoding="utf-8", errors="replace")
        self._ready: list[Any] = []

    async def open(self) -> None:
        parts = urlparse(self.url)
        if parts.scheme == "unix":
            opening = asyncio.open_unix_connection(parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            opening = asyncio.open_connection(
                parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
            )
        self._reader, self._writer = await asyncio.wait_for(opening, self.connect_timeout)
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            auth = (
                ("AUTH", user, unquote(parts.password))
                if user
                else ("AUTH", unquote(parts.password))
            )
            self.send(*auth)
            reply = await asyncio.wait_for(self._next(), self.connect_timeout)
            if reply != "OK":
                raise ConnectionError("Redis refused the pub/sub connection's credentials")

    def send(self, *args: str) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("pub/sub connection is closed")
        self._writer.write(command(*args))

    async def _next(self) -> Any:
        while not self._ready:
            self._ready = await self.read()
        return self._ready.pop(0)

    async def read(self) -> list[Any]:
        """Every reply that arrived in one socket read (at least one)."""
        assert self._reader is not None
        parser = self._parser
        replies: list[Any] = []
        while not replies:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ConnectionError("Redis closed the pub/sub connection")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis error on the pub/sub connection: {reply}")
                replies.append(reply)
        return replies

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
