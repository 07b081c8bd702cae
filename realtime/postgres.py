"""A broadcaster backend for PostgreSQL LISTEN/NOTIFY that is safe to share and reconnects.

broadcaster's stock backend runs every call on one asyncpg connection, which refuses a second
operation while one is in progress: the concurrent publishes of one batch of events fail with
`InterfaceError`. This one publishes on a connection of its own, a batch per statement, listens
on another, and after that link is lost listens again and emits `resync` on `CONTROL_CHANNEL` so
the hub catches every channel up from history. NOTIFY refuses payloads of 8000 bytes or more and
truncates channel names past 63 bytes: the first is said before anything is sent
(`MessageTooLarge`), the second is avoided by naming long channels by their hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

from broadcaster import BroadcastBackend, Event

from .backend import CONTROL_CHANNEL, RESYNC

logger = logging.getLogger("taskcast.backend")

NOTIFY_MAX_BYTES = 7999  # PostgreSQL refuses a NOTIFY payload of 8000 bytes or more
NAME_MAX_BYTES = 63  # NAMEDATALEN - 1: longer channel names are truncated by LISTEN
# What a stored message adds around its event's JSON: the header line (seq, epoch, emit time,
# coalescing key) and the frame wrapping it (`{"type":"event","channel":...,"seq":...}`).
MESSAGE_OVERHEAD = 512
EVENT_MAX_BYTES = NOTIFY_MAX_BYTES - MESSAGE_OVERHEAD
CONNECT_TIMEOUT = 5.0


class MessageTooLarge(ValueError):
    """A message over NOTIFY's payload limit: refused before anything of its batch is sent."""

    def __init__(self, channel: str, size: int) -> None:
        super().__init__(
            f"message of {size} bytes on {channel} is over PostgreSQL NOTIFY's payload limit "
            f"({NOTIFY_MAX_BYTES} bytes); nothing was published"
        )


def notify_name(channel: str) -> str:
    """The channel's name in PostgreSQL: itself, or a prefix and its hash when too long."""
    if len(channel.encode()) <= NAME_MAX_BYTES:
        return channel
    digest = hashlib.sha256(channel.encode()).hexdigest()[:40]
    return f"{channel[:16]}#{digest}"


class PostgresBackend(BroadcastBackend):
    """LISTEN/NOTIFY for `Broadcast`: one listening and one publishing connection, reconnecting."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._channels: dict[str, str] = {}  # PostgreSQL name -> our channel
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._listen: Any = None  # asyncpg.Connection, opened on the first subscribe
        self._listen_lock = asyncio.Lock()
        self._lost = False  # the listening link broke: reopen it, then resync
        self._pub: Any = None
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Nothing to do yet: a publish-only user (a worker) never opens a listening link."""

    async def disconnect(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        for conn in (self._listen, self._pub):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
        self._listen = self._pub = None

    async def _open(self) -> Any:
        import asyncpg  # the `postgres` extra: only a deployment that names PostgreSQL needs it

        return await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)

    def _take(self, _conn: Any, _pid: int, name: str, payload: str) -> None:
        channel = self._channels.get(name)
        if channel is not None:
            self._events.put_nowait(Event(channel, payload))

    def _on_lost(self, _conn: Any) -> None:
        self._lost = True
        self._events.put_nowait(Event(CONTROL_CHANNEL, ""))  # wakes the reader to reconnect

    async def _listening(self) -> Any:
        """The listening connection, (re)opened with every channel listened to again."""
        if self._listen is not None and not self._lost and not self._listen.is_closed():
            return self._listen
        if self._listen is not None:
            with contextlib.suppress(Exception):
                self._listen.terminate()
        self._listen = None
        conn = await self._open()
        conn.add_termination_listener(self._on_lost)
        for name in list(self._channels):
            await conn.add_listener(name, self._take)
        self._listen, self._lost = conn, False
        return conn

    async def subscribe(self, channel: str) -> None:
        """LISTEN; with the link down, the reconnect listens and resyncs (as Redis's does)."""
        if channel == CONTROL_CHANNEL:
            return
        name = notify_name(channel)
        async with self._listen_lock:
            self._channels[name] = channel
            try:
                conn = await self._listening()
                await conn.add_listener(name, self._take)
            except Exception as exc:  # noqa: BLE001 - the reader reconnects and resyncs
                self._lost = True
                logger.warning("LISTEN %s not confirmed (%s); will resync", channel, type(exc))

    async def unsubscribe(self, channel: str) -> None:
        name = notify_name(channel)
        async with self._listen_lock:
            self._channels.pop(name, None)
            if self._listen is not None and not self._lost:
                with contextlib.suppress(Exception):
                    await self._listen.remove_listener(name, self._take)

    async def next_published(self) -> Event:
        while True:
            event = await self._events.get()
            if event.channel != CONTROL_CHANNEL:
                return event
            if not self._lost:
                continue
            logger.warning("PostgreSQL listening connection lost; reconnecting")
            async with self._listen_lock:
                await self._listening()  # raises while PostgreSQL is away: the hub retries
            return Event(CONTROL_CHANNEL, RESYNC)

    async def publish(self, channel: str, message: Any) -> None:
        """NOTIFY; concurrent calls share one statement (one round trip, in order)."""
        text = str(message)
        size = len(text.encode())
        if size > NOTIFY_MAX_BYTES:
            raise MessageTooLarge(channel, size)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((notify_name(channel), text, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                if self._pub is None or self._pub.is_closed():
                    self._pub = await self._open()
                await self._pub.execute(
                    "SELECT pg_notify(c, m) FROM unnest($1::text[], $2::text[]) AS t(c, m)",
                    [name for name, _, _ in batch],
                    [text for _, text, _ in batch],
                )
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
                pub, self._pub = self._pub, None
                if pub is not None:
                    with contextlib.suppress(Exception):
                        pub.terminate()
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
