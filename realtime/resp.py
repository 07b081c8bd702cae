"""Raw Redis connections: RESP over an asyncio protocol, parsed in batches by hiredis.

The two hot paths talk to Redis through these instead of redis-py, whose per-command
machinery (a coroutine chain, a pool checkout, a health check) costs about three times a
round trip's own CPU: a node's pub/sub listener (one read per burst of messages) and the
publisher's pipelined round trips (one store, one publish per batch of events).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import hiredis
from redis.asyncio.connection import ConnectionPool, SSLConnection, UnixDomainSocketConnection

from . import sentinel

TIMEOUT = 5.0  # a reply later than this means a dead link (redis-py's socket_timeout)


def command(*args: str | bytes | int | float) -> bytes:
    """One RESP command (array of bulk strings), packed by hiredis in C."""
    return bytes(hiredis.pack_command(cast(Any, args)))  # its stub types a 1-tuple


@dataclass(frozen=True, slots=True)
class Address:
    """Where a Redis URL points and how to log in, exactly as redis-py reads the URL."""

    host: str
    port: int
    path: str | None  # a unix socket
    ssl: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int


@lru_cache(maxsize=16)
def address(url: str) -> Address:
    """Read `url` with redis-py itself, so a raw connection goes where its clients go.

    The database (`/3` or `?db=3`, also on `unix://`), credentials, and `rediss://`'s
    certificate options (`ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
    `ssl_check_hostname`, ...) all mean what they mean to `redis.asyncio.Redis.from_url`.
    """
    conn = ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
    context = conn.ssl_context.get() if isinstance(conn, SSLConnection) else None
    path = conn.path if isinstance(conn, UnixDomainSocketConnection) else None
    return Address(
        host=getattr(conn, "host", "localhost"),
        port=int(getattr(conn, "port", 6379)),
        path=path,
        ssl=context,
        username=conn.username,
        password=conn.password,
        db=int(conn.db or 0),
    )


class _Stream(asyncio.Protocol):
    """Hands what Redis sends to its `Connection` as it arrives: no StreamReader, no task."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(exc)


class Connection:
    """One connection; reads raise `ConnectionError` when the link is gone.

    Replies are parsed in the event loop's read callback. A pub/sub listener takes them
    there too (`listen`), so a message costs no task switch before it reaches its consumer.
    """

    def __init__(self, url: str, connect_timeout: float = 2.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._parser = hiredis.Reader(encoding="utf-8", errors="replace")
        self._ready: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None
        self._gone: ConnectionError | None = None
        self._closed: asyncio.Future[None] | None = None
        self._listener: Callable[[list[Any]], None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        sentinels = sentinel.parse(self.url) if sentinel.is_sentinel(self.url) else None
        if sentinels is not None:  # asked on every connect: after a failover, the new master
            async with asyncio.timeout(self.connect_timeout):
                host, port = await sentinel.master_address(sentinels)
            where = address(sentinels.master_url(host, port))
        else:
            where = address(self.url)
        opening: Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]
        if where.path is not None:
            opening = loop.create_unix_connection(lambda: _Stream(self), where.path)
        else:
            opening = loop.create_connection(
                lambda: _Stream(self), where.host, where.port, ssl=where.ssl
            )
        transport, _ = await asyncio.wait_for(opening, self.connect_timeout)
        self._transport = transport
        setup: list[bytes] = []
        if where.password is not None:
            user, password = where.username, where.password
            setup.append(command("AUTH", user, password) if user else command("AUTH", password))
        if where.db:
            setup.append(command("SELECT", where.db))
        if sentinels is not None:
            setup.append(command("ROLE"))  # a Sentinel's answer may be a moment out of date
        if setup:
            self.write(b"".join(setup))
            async with asyncio.timeout(self.connect_timeout):
                replies = await self.replies(len(setup))
            if any(isinstance(r, hiredis.ReplyError) for r in replies):
                raise ConnectionError("Redis refused the connection's credentials or database")
            if sentinels is not None and replies[-1][0] != "master":
                self.abort()
                raise ConnectionError("the address Sentinel named is not the master (yet)")

    def send(self, *args: str) -> None:
        self.write(command(*args))

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("Redis connection is closed")
        self._transport.write(data)

    def listen(self, callback: Callable[[list[Any]], None]) -> None:
        """From now on every burst of replies goes to `callback`, in the loop's read callback."""
        self._listener = callback
        ready, self._ready = self._ready, []
        if ready:
            callback(ready)

    async def replies(self, count: int) -> list[Any]:
        """The next `count` replies; Redis errors come back as `hiredis.ReplyError` values."""
        await self._wait(count)
        out = self._ready[:count]
        del self._ready[:count]
        return out

    async def wait_closed(self) -> None:
        """Return once the link is gone (Redis closed it, it broke, or `aclose`)."""
        if self._closed is not None:
            await asyncio.shield(self._closed)

    async def _wait(self, count: int) -> None:
        while len(self._ready) < count:
            if self._gone is not None:
                raise self._gone
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def _received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        replies: list[Any] = []
        try:
            while (reply := parser.gets()) is not False:
                replies.append(reply)
        except hiredis.ProtocolError:
            assert self._transport is not None
            self._transport.abort()  # not Redis speaking: drop the link, callers reconnect
        if not replies:
            return
        if self._listener is not None:
            self._listener(replies)
            return
        self._ready.extend(replies)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        self._gone = ConnectionError(f"Redis connection lost: {exc or 'closed by Redis'}")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def abort(self) -> None:
        """Drop the link at once (what `wait_closed` waiters then see as lost)."""
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self.wait_closed(), 1.0)


class Pipeline:
    """Pipelined request/reply on one raw connection, opened on first use.

    A dropped link is reopened and the batch sent once more: the callers' commands are
    idempotent (an event is stored once by id; a repeated publish is dropped by seq).
    `on_reopen` gives commands that go first on every connection after the first one, in the
    same write as the batch, so Redis runs them before anything else this pipeline sends there.
    """

    def __init__(
        self,
        url: str,
        timeout: float = TIMEOUT,
        on_reopen: Callable[[], list[bytes]] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.on_reopen = on_reopen
        self._conn: Connection | None = None
        self._opened = False
        self._lock = asyncio.Lock()

    async def execute(self, commands: list[bytes]) -> list[Any]:
        """Every command's reply, in order; Redis errors come back as `hiredis.ReplyError`."""
        async with self._lock:
            for attempt in range(2):
                conn = self._conn
                first: list[bytes] = []
                try:
                    async with asyncio.timeout(self.timeout):
                        if conn is None:
                            conn = Connection(self.url)
                            await conn.open()
                            self._conn = conn
                            if self._opened and self.on_reopen is not None:
                                first = self.on_reopen()
                            self._opened = True
                        conn.write(b"".join(first + commands) if first else b"".join(commands))
                        replies = await conn.replies(len(first) + len(commands))
                        return replies[len(first) :] if first else replies
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
