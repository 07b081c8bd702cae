"""Raw Redis connections: RESP over an asyncio stream, parsed in batches by hiredis.

The two hot paths talk to Redis through these instead of redis-py, whose per-command
machinery (a coroutine chain, a pool checkout, a health check) costs about three times a
round trip's own CPU: a node's pub/sub listener (one read per burst of messages) and the
publisher's pipelined round trips (one store, one publish per batch of events).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis

READ_SIZE = 1 << 16
TIMEOUT = 5.0  # a reply later than this means a dead link (redis-py's socket_timeout)


def command(*args: str | bytes | int | float) -> bytes:
    """One RESP command (array of bulk strings), packed by hiredis in C."""
    return bytes(hiredis.pack_command(cast(Any, args)))  # its stub types a 1-tuple


class Connection:
    """One connection; reads raise `ConnectionError` when the link is gone."""

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
        setup: list[bytes] = []
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            password = unquote(parts.password)
            setup.append(command("AUTH", user, password) if user else command("AUTH", password))
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
        if database and database != "0":
            setup.append(command("SELECT", database))
        if setup:
            self.write(b"".join(setup))
            async with asyncio.timeout(self.connect_timeout):
                replies = await self.replies(len(setup))
            if any(isinstance(r, hiredis.ReplyError) for r in replies):
                raise ConnectionError("Redis refused the connection's credentials or database")

    def send(self, *args: str) -> None:
        self.write(command(*args))

    def write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("Redis connection is closed")
        self._writer.write(data)

    async def read(self) -> list[Any]:
        """Every reply that arrived in one socket read (at least one); a Redis error raises."""
        replies = await self._read()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ConnectionError(f"Redis error on the pub/sub connection: {reply}")
        return replies

    async def replies(self, count: int) -> list[Any]:
        """The next `count` replies; Redis errors come back as `hiredis.ReplyError` values."""
        out, self._ready = self._ready, []
        while len(out) < count:
            out.extend(await self._read())
        self._ready = out[count:]
        return out[:count]

    async def _read(self) -> list[Any]:
        assert self._reader is not None
        parser = self._parser
        replies: list[Any] = []
        while not replies:
            data = await self._reader.read(READ_SIZE)
            if not data:
                raise ConnectionError("Redis closed the connection")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                replies.append(reply)
        return replies

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)


class Pipeline:
    """Pipelined request/reply on one raw connection, opened on first use.

    A dropped link is reopened and the batch sent once more: the callers' commands are
    idempotent (an event is stored once by id; a repeated publish is dropped by seq).
    """

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def execute(self, commands: list[bytes]) -> list[Any]:
        """Every command's reply, in order; Redis errors come back as `hiredis.ReplyError`."""
        async with self._lock:
            for attempt in range(2):
                conn = self._conn
                try:
                    async with asyncio.timeout(self.timeout):
                        if conn is None:
                            conn = Connection(self.url)
                            await conn.open()
                            self._conn = conn
                        conn.write(b"".join(commands))
                        return await conn.replies(len(commands))
                except (ConnectionError, OSError, TimeoutError):
                    await self._drop(conn)
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    async def _drop(self, conn: Connection | None) -> None:
        self._conn = None
        if conn is not None:
            await conn.aclose()

    async def aclose(self) -> None:
        await self._drop(self._conn)
