"""One client connection: its subscriptions and its bounded, coalescing outbound queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from . import metrics
from .protocol import WS_4008_SLOW_CONSUMER
from .tokens import Principal

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]
SendNowait = Callable[[str], bool]  # False: cannot send without waiting; use Send
Write = Callable[[bytes], object]  # a socket's own write: the frame's bytes, now
Direct = Callable[[], Write | None]  # the socket's write, or None if a frame cannot go now
Framing = Callable[[str], bytes]  # a text frame's bytes, for every `Write` of its kind

_ids = itertools.count(1)
# Shared by every session with nothing queued (most of them): a deque costs ~0.6 KiB.
# Never appended to; `push` gives a session its own deque first.
_NOTHING_QUEUED: deque[list[str | None]] = deque(maxlen=0)


class Watcher(Protocol):
    """The hub's side of one subscription, told when its session may have changed sides.

    The hub keeps, per channel, the sockets it writes each event to directly (a frame costs
    a loop step and a system call, no check), and looks at a session again before the
    channel's next event whenever its queue fills or drains or its socket pauses, resumes
    or closes: only that session, only on its own channels.
    """

    def changed(self, session: Session) -> None: ...


@dataclass(slots=True)
class Subscription:
    """A session's place in one channel: the last seq it was sent; live once caught up."""

    last: int = 0
    replaying: bool = True  # history is still being sent: live fan-out skips this one
    replay: asyncio.Task[None] | None = None
    watcher: Watcher | None = None  # the channel, told of the session's changes


class Session:
    """Outbound side of one connection; the hub pushes pre-encoded frames.

    A frame goes straight to the socket when the connection offers a synchronous send
    (`send_nowait`) and nothing is queued before it; otherwise it is queued and a writer task,
    alive only while the queue holds frames, sends it with the awaitable `send`. The queue is
    bounded in frames and bytes. Once it holds more than an eighth of its bound, a queued
    `task.progress` frame of a task is replaced by a newer one (the client sees seq skip over
    progress only); any frame that does not fit closes the connection with 4008, so nothing
    is ever dropped silently.
    """

    __slots__ = (
        "_busy",
        "_bytes",
        "_close",
        "_close_code",
        "_coalesce",
        "_direct",
        "_pressure",
        "_queue",
        "_room",
        "_send",
        "_send_nowait",
        "_writer",
        "closed",
        "framing",
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
        send_nowait: SendNowait | None = None,
        direct: Direct | None = None,
        framing: Framing | None = None,
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
        self._send_nowait = send_nowait
        self._direct = direct if framing is not None else None
        self.framing = framing
        self._close = close
        self._close_code: tuple[int, str] | None = None
        self._queue: deque[list[str | None]] = _NOTHING_QUEUED  # a deque of its own when needed
        self._coalesce: dict[str, list[str | None]] = {}
        self._bytes = 0
        self._busy = False  # the writer is inside `send`: a direct send would overtake it
        self._room: asyncio.Event | None = None  # made when a replay waits for room
        self._writer: asyncio.Task[None] | None = None

    def direct(self) -> Write | None:
        """The socket's write, if the hub may write this session's frames to it directly
        (framed by `framing`) until `changed()` is next called: nothing queued or closing."""
        if (
            self._direct is None
            or self.closed
            or self._queue
            or self._busy
            or self._close_code is not None
        ):
            return None
        return self._direct()

    def changed(self) -> None:
        """What `direct()` answers may have changed: each of this session's channels looks at
        it again before its next event (the socket calls this too: pause, resume, close)."""
        for sub in self.subs.values():
            watcher = sub.watcher
            if watcher is not None:
                watcher.changed(self)

    async def stop(self) -> None:
        """Stop the writer (the connection is gone or closing)."""
        self.closed = True
        self.changed()
        if self._room is not None:
            self._room.set()
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    def push(self, frame: str, coalesce_key: str = "") -> None:
        """Send or queue a frame; never blocks. Called by the hub for every recipient."""
        if self.closed:
            return
        if (
            self._send_nowait is not None
            and not self._queue
            and not self._busy
            and self._close_code is None
            and self._send_nowait(frame)
        ):
            metrics.COUNTS.frames_out += 1
            return
        if self._direct is not None and not self._queue:
            self.changed()  # about to queue: no longer to be written to directly
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
        if self._queue is _NOTHING_QUEUED:
            self._queue = deque()
        self._queue.append(entry)
        self._bytes += len(frame)
        if coalesce_key:
            self._coalesce[coalesce_key] = entry
        self._start_writer()

    def close_soon(self, code: int, reason: str = "") -> None:
        """Send what may still be sent, then close with `code`."""
        if self._close_code is None:
            self._close_code = (code, reason)
            self.changed()
            self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._run(), name=f"taskcast-writer-{self.id}")

    def _overflow(self, size: int) -> bool:
        """A frame of `size` does not fit: True (closing with 4008) unless compaction made room."""
        # Compact tombstones first: coalescing may have freed room.
        if len(self._queue) >= self.max_frames:
            self._queue = deque(e for e in self._queue if e[0] is not None)
        if len(self._queue) >= self.max_frames or self._bytes + size > self.max_bytes:
            metrics.COUNTS.slow_consumer_closes += 1
            self.closed = True
            self._queue = _NOTHING_QUEUED
            self._coalesce.clear()
            self._bytes = 0
            self._close_code = (WS_4008_SLOW_CONSUMER, "slow consumer")
            self._start_writer()
            return True
        return False

    @property
    def closing(self) -> bool:
        """Closed, or a close is on its way: nothing new should start on this connection."""
        return self.closed or self._close_code is not None

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
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    async def _run(self) -> None:
        """Send the queue in order, then the close if one is asked for; end when empty."""
        queue = self._queue
        try:
            while True:
                if queue is not self._queue:  # compacted by `_overflow`
                    queue = self._queue
                if not queue:
                    break
                entry = queue.popleft()
                frame = entry[0]
                if frame is None:
                    continue
                key = entry[1]
                if key and self._coalesce.get(key) is entry:
                    del self._coalesce[key]
                self._bytes -= len(frame)
                self._busy = True
                try:
                    await self._send(frame)
                finally:
                    self._busy = False
                metrics.COUNTS.frames_out += 1
                room = self._room
                if room is not None and not room.is_set() and not self.crowded:
                    room.set()
            if self._close_code is not None:
                self.closed = True
                code, reason = self._close_code
                await self._close(code, reason)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the socket went away mid-send
            self.closed = True
        finally:
            self._writer = None
            if not self._queue:
                self._queue = _NOTHING_QUEUED  # drained: give the deque back
                if self._direct is not None:
                    self.changed()  # may be written to directly again
            if self.closed and self._room is not None:
                self._room.set()
