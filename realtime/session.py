"""One client connection: its subscriptions and its bounded, coalescing outbound queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import metrics
from .protocol import WS_4008_SLOW_CONSUMER
from .tokens import Principal

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]

_ids = itertools.count(1)


@dataclass(slots=True)
class Subscription:
    """A session's place in one channel: the last seq it was sent; live once caught up."""

    last: int = 0
    replaying: bool = True  # history is still being sent: live fan-out skips this one
    replay: asyncio.Task[None] | None = None


class Session:
    """Outbound side of one connection; the hub pushes pre-encoded frames, a writer task sends.

    The queue is bounded in frames and bytes. Once it holds more than an eighth of its bound, a
    queued `task.progress` frame of a task is replaced by a newer one (the client sees seq skip
    over progress only); any frame that does not fit closes the connection with 4008, so nothing
    is ever dropped silently.
    """

    __slots__ = (
        "_bytes",
        "_close",
        "_close_code",
        "_coalesce",
        "_pressure",
        "_queue",
        "_room",
        "_send",
        "_wake",
        "_writer",
        "closed",
        "id",
        "max_bytes",
        "max_frames",
        "principal",
        "subs",
    )

    def __init__(
        self,
        send: Send,
        close: Close,
        principal: Principal,
        *,
        max_frames: int = 4096,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.id = f"{uuid.uuid4().hex[:8]}-{next(_ids)}"
        self.principal = principal
        self.subs: dict[str, Subscription] = {}
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        # Coalescing starts only under pressure: an idle client sees every progress event.
        self._pressure = max(16, max_frames // 8)
        self.closed = False
        self._send = send
        self._close = close
        self._close_code: tuple[int, str] | None = None
        self._queue: deque[list[str | None]] = deque()
        self._coalesce: dict[str, list[str | None]] = {}
        self._bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._run(), name=f"taskcast-writer-{self.id}")

    async def stop(self) -> None:
        """Stop the writer (the connection is gone or closing)."""
        self.closed = True
        self._room.set()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer

    def push(self, frame: str, coalesce_key: str = "") -> None:
        """Queue a frame; never blocks. Called by the hub for every recipient of an event."""
        if self.closed:
            return
        if coalesce_key and self.crowded:
            old = self._coalesce.get(coalesce_key)
            if old is not None and old[0] is not None:
                self._bytes -= len(old[0])
                old[0] = None  # tombstone: the newer progress frame goes to the back
                metrics.COUNTS.coalesced += 1
        if (
            len(self._queue) >= self.max_frames or self._bytes + len(frame) > self.max_bytes
        ) and self._overflow(len(frame)):
            return
        entry: list[str | None] = [frame, coalesce_key]
        self._queue.append(entry)
        self._bytes += len(frame)
        if coalesce_key:
            self._coalesce[coalesce_key] = entry
        self._wake.set()

    def close_soon(self, code: int, reason: str = "") -> None:
        """Ask the writer to send what it may and close with `code`."""
        if self._close_code is None:
            self._close_code = (code, reason)
            self._wake.set()

    def _overflow(self, size: int) -> bool:
        """A frame of `size` does not fit: True (closing with 4008) unless compaction made room."""
        # Compact tombstones first: coalescing may have freed room.
        if len(self._queue) >= self.max_frames:
            self._queue = deque(e for e in self._queue if e[0] is not None)
        if len(self._queue) >= self.max_frames or self._bytes + size > self.max_bytes:
            metrics.COUNTS.slow_consumer_closes += 1
            self.closed = True
            self._queue.clear()
            self._coalesce.clear()
            self._bytes = 0
            self._close_code = (WS_4008_SLOW_CONSUMER, "slow consumer")
            self._wake.set()
            return True
        return False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def crowded(self) -> bool:
        """Past the pressure mark (frames, or half the bytes): replay waits, progress merges."""
        return len(self._queue) >= self._pressure or self._bytes * 2 >= self.max_bytes

    async def room(self) -> None:
        """Wait until the queue is no longer crowded (paced history replay uses this)."""
        while self.crowded and not self.closed:
            self._room.clear()
            await self._room.wait()

    async def _run(self) -> None:
        queue_pop = self._queue.popleft
        try:
            while True:
                while self._queue:
                    queue_pop = self._queue.popleft
                    entry = queue_pop()
                    frame = entry[0]
                    if frame is None:
                        continue
                    key = entry[1]
                    if key and self._coalesce.get(key) is entry:
                        del self._coalesce[key]
                    self._bytes -= len(frame)
                    await self._send(frame)
                    metrics.COUNTS.frames_out += 1
                    if not self._room.is_set() and not self.crowded:
                        self._room.set()
                if self._close_code is not None:
                    self.closed = True
                    code, reason = self._close_code
                    await self._close(code, reason)
                    return
                self._wake.clear()
                await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket went away mid-send
            self.closed = True
