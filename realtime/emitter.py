"""`emit()` for synchronous code: a bounded buffer drained by one publisher thread per process.

A Celery task must never wait on Redis: `emit` validates, enqueues and returns in microseconds.
One daemon thread per process (created lazily, again after fork) runs an event loop with a
`Publisher`, stores and publishes in pipelined batches, and retries with backoff while Redis is
away. Consecutive progress of a task is coalesced while it waits; on overflow, progress goes
first and every drop is counted; nothing else is dropped. An event over the size limit is
refused in the caller, before it is buffered (`EventTooLarge`, a ValueError).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import metrics
from .backend import event_limit, make_broadcast, shares_redis
from .connections import redis_client
from .errors import NotReplicated
from .events import (
    encode_data,
    encode_event,
    event_bytes,
    iso,
    make_event,
    new_id,
    progress_data,
    source,
)
from .eventsize import MAX_EVENT_SETTING, NOTIFY_LIMIT, refuse
from .publisher import Publisher, prepare, root_of
from .resp import Pipeline
from .store import Store, event_id, rewind_command

try:  # uvloop's round trips cost this thread about half of asyncio's
    from uvloop import new_event_loop
except ImportError:  # pragma: no cover - platforms without uvloop
    from asyncio import new_event_loop  # type: ignore[assignment]

logger = logging.getLogger("taskcast.emitter")
# Our own generator: retry jitter must not touch the global `random` state of the host.
_jitter = random.Random()

BATCH = 500
BACKOFF_FIRST, BACKOFF_CAP = 0.05, 2.0
WITNESSES = 1024  # channels whose last stored position an emitter remembers


@dataclass(slots=True)
class _Entry:
    type: str
    data: dict[str, Any]
    task_id: str | None
    user_id: str | None
    topic: str | None
    ts: float  # time.time() at the call: formatted in the publisher thread, not the caller's
    taken: bool = False
    data_json: bytes | None = None  # `data` encoded where it was measured (not for progress)
    root_id: str | None = None  # the workflow's first task, for a task another task started


class Emitter:
    """The synchronous publishing path of one process; thread-safe, fork-aware."""

    def __init__(
        self,
        redis_url: str,
        broadcast_url: str | None = None,
        *,
        history_size: int = 1000,
        history_ttl: int = 86400,
        history_max_bytes: int = 1024 * 1024,
        max_event_bytes: int = 64 * 1024,
        buffer: int = 10_000,
        max_deliveries: int = 3,
        heartbeat: float = 15.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self._redis_url = redis_url
        self._broadcast_url = broadcast_url or redis_url
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._history_max_bytes = history_max_bytes
        # A transport that carries less (PostgreSQL's NOTIFY) lowers the limit, and is named.
        carried = event_limit(self._broadcast_url)
        self.max_event_bytes = max_event_bytes if carried is None else min(carried, max_event_bytes)
        self.limited_by = MAX_EVENT_SETTING if carried is None else NOTIFY_LIMIT
        self._bound = buffer
        self._max_deliveries = max_deliveries
        self._heartbeat = heartbeat
        self._wait = (wait_replicas, wait_timeout_ms)  # `TASKCAST_REDIS_WAIT`: see `Store`
        self._running: set[str] = set()  # tasks this process runs: their heartbeat goes out
        self._pid = os.getpid()
        # Retries are deduped by (mark, count): the publisher thread counts every event it
        # stores, in order; a forked child is another emitter with a mark of its own.
        self._mark = new_id()
        self._counted = 0
        # The last message this emitter stored on each of its recent channels: checked on
        # every new connection before anything is stored there (`store.REWIND`).
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._queue: deque[_Entry] = deque()
        self._last_of_task: dict[str, _Entry] = {}
        self._progress_waiting = 0  # progress entries in the queue: the droppable ones
        self._enqueued = 0
        self._completed = 0
        self._refused = 0  # refusals the publisher thread has yet to count in Redis
        self._idle = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # set once the thread's publisher exists (for `call`)
        self._publisher: Publisher | None = None
        self._stopping = False
        self.closed_tasks: set[str] = set()  # tasks the store says have ended (e.g. cancelled)
        self.connected = False
        _instances.add(self)  # reset in a forked child (see `_reset_in_child`)

    # -- the caller's side ----------------------------------------------------------------

    def emit(
        self,
        type_: str,
        *,
        data: dict[str, Any],
        task_id: str | None = None,
        user_id: str | None = None,
        topic: str | None = None,
        root_id: str | None = None,
    ) -> None:
        """Validate now (ValueError), enqueue, return; transport errors never reach the caller.

        `root_id`: the event's task belongs to the workflow started by task `root_id`, whose
        channel carries it too.

        An event whose encoding is over `max_event_bytes` raises `EventTooLarge` (a
        ValueError) naming its type, size and the limit; nothing of it is buffered.
        """
        clean, chosen = prepare(type_, data, task_id, user_id, topic)
        root_id = root_of(root_id, task_id)
        data_json = encode_data(type_, clean)
        size = event_bytes(type_, data_json, task_id, user_id, root_id)
        if size > self.max_event_bytes:
            self._count_refusal()
            raise refuse(type_, size, self.max_event_bytes, task_id, self.limited_by)
        entry = _Entry(type_, clean, task_id, user_id, chosen, time.time(), data_json=data_json)
        entry.root_id = root_id
        self._put(entry)

    def progress(
        self,
        task_id: str,
        current: int,
        total: int,
        message: str | None = None,
        user_id: str | None = None,
        root_id: str | None = None,
    ) -> None:
        """Record a task's progress; replaces its previous progress if that is still waiting.

        Never too large: a long message is clipped (`events.MAX_TEXT_CHARS`), and the
        smallest event limit holds the largest progress event.
        """
        data = progress_data(current, total, message)
        root_id = root_of(root_id, task_id)
        ts = time.time()
        with self._lock:  # a forked child has its own (`_reset_in_child`)
            last = self._last_of_task.get(task_id)
            if last is not None and last.type == "task.progress" and not last.taken:
                last.data = data
                last.ts = ts
                return
        self._put(_Entry("task.progress", data, task_id, user_id, None, ts, root_id=root_id))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything emitted so far is stored and published (and every refusal
        before it counted); False on timeout."""
        with self._lock:
            if self._thread is None:
                return True
            target = self._enqueued
            return self._done.wait_for(lambda: self._completed >= target, timeout)

    def call(
        self, work: Callable[[Publisher], Coroutine[Any, Any, object]], timeout: float = 5.0
    ) -> None:
        """Run `work(publisher)` on the publisher thread and wait for it: for what must be
        stored before the caller goes on (a task's owner, before its message is sent).

        Raises what `work` raises, or TimeoutError when it has not finished in `timeout`.
        """
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()
            if self._thread is None:
                self._start()
            ready = self._ready
        if not ready.wait(timeout) or self._loop is None or self._publisher is None:
            raise TimeoutError("taskcast's Redis did not answer in time")
        future = asyncio.run_coroutine_threadsafe(work(self._publisher), self._loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError("taskcast's Redis did not answer in time") from None

    def is_closed(self, task_id: str) -> bool:
        return task_id in self.closed_tasks

    def track(self, task_id: str) -> None:
        """This process now runs `task_id`: keep its heartbeat going (see the reaper)."""
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()
            self._running.add(task_id)
            if self._thread is None:
                self._start()

    def untrack(self, task_id: str) -> None:
        with self._lock:
            self._running.discard(task_id)

    def _put(self, entry: _Entry) -> None:
        with self._lock:  # no getpid() here (a syscall per call): forks reset us (see below)
            if len(self._queue) >= self._bound:
                self._make_room()
            self._queue.append(entry)
            self._enqueued += 1
            if entry.type == "task.progress":
                self._progress_waiting += 1
            if entry.task_id is not None:
                self._last_of_task[entry.task_id] = entry
            if self._thread is None:  # `_wake`, inlined: this is the hot path
                self._start()
            elif self._idle and self._loop is not None and self._wakeup is not None:
                self._idle = False
                with contextlib.suppress(RuntimeError):  # loop closed at interpreter exit
                    self._loop.call_soon_threadsafe(self._wakeup.set)

    def _count_refusal(self) -> None:
        """Have the publisher thread count an event refused for its size (`/metrics`)."""
        with self._lock:
            self._refused += 1
            self._wake()

    def _wake(self) -> None:
        """Start the publisher thread, or wake it if idle; called holding the lock."""
        if self._thread is None:
            self._start()
        elif self._idle and self._loop is not None and self._wakeup is not None:
            self._idle = False
            with contextlib.suppress(RuntimeError):  # loop closed at interpreter exit
                self._loop.call_soon_threadsafe(self._wakeup.set)

    def _make_room(self) -> None:
        """Full buffer: drop the oldest waiting progress (never terminal or domain events)."""
        if not self._progress_waiting:
            return  # nothing droppable: the buffer grows past its bound rather than lose events
        for index, queued in enumerate(self._queue):
            if queued.type == "task.progress":
                del self._queue[index]
                self._progress_waiting -= 1
                if queued.task_id is not None and self._last_of_task.get(queued.task_id) is queued:
                    del self._last_of_task[queued.task_id]
                self._completed += 1
                metrics.COUNTS.emit_dropped += 1
                return

    def _after_fork(self) -> None:
        # The parent's thread and loop do not exist here; start clean, keep nothing queued.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._queue = deque()
        self._last_of_task = {}
        self._progress_waiting = 0
        self._enqueued = self._completed = self._refused = 0
        self._running = set()
        self._thread = self._loop = self._wakeup = None
        self._ready = threading.Event()
        self._publisher = None
        self._idle = True
        self._mark = new_id()
        self._counted = 0
        self._seen = {}
        source()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskcast-emitter", daemon=True)
        self._thread.start()

    # -- the publisher thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._wakeup = asyncio.Event()
        redis = redis_client(self._redis_url)
        # The batches' round trips, without redis-py's cost; a new connection may reach a Redis
        # that came back with older data, so it first checks where this emitter has written.
        pipeline = Pipeline(self._redis_url, on_reopen=self._rewind_check)
        store = Store(
            redis,
            history_size=self._history_size,
            history_ttl=self._history_ttl,
            history_max_bytes=self._history_max_bytes,
            max_deliveries=self._max_deliveries,
            pipeline=pipeline,
            publish=shares_redis(self._broadcast_url, self._redis_url),
            wait_replicas=self._wait[0],
            wait_timeout_ms=self._wait[1],
        )
        broadcast = make_broadcast(self._broadcast_url)
        await broadcast.connect()
        publisher = Publisher(
            store, broadcast, max_event_bytes=self.max_event_bytes, limited_by=self.limited_by
        )
        self._publisher = publisher
        self._ready.set()
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        try:
            while True:
                if self._running and loop.time() >= next_beat:
                    next_beat = loop.time() + self._heartbeat
                    with contextlib.suppress(Exception):  # Redis away: the next beat retries
                        await store.heartbeat(list(self._running))
                if self._refused:
                    await self._report_refused(store)
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                    for entry in batch:
                        entry.taken = True
                        if entry.type == "task.progress":
                            self._progress_waiting -= 1
                        if entry.task_id and self._last_of_task.get(entry.task_id) is entry:
                            del self._last_of_task[entry.task_id]
                    if not batch:
                        self._idle = True
                        self._wakeup.clear()
                if not batch:
                    if self._stopping:
                        return
                    if self._running:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wakeup.wait(), self._heartbeat)
                    else:
                        await self._wakeup.wait()
                    continue
                await self._publish(publisher, batch)
                if self._refused:  # refused before these were taken: counted before `flush` is
                    await self._report_refused(store)
                with self._lock:
                    self._completed += len(batch)
                    self._done.notify_all()
        finally:
            with contextlib.suppress(Exception):
                await broadcast.disconnect()
            with contextlib.suppress(Exception):
                await pipeline.aclose()
            with contextlib.suppress(Exception):
                await redis.aclose()

    async def _report_refused(self, store: Store) -> None:
        """Count refused events in Redis; while it is away they wait for the next round."""
        with self._lock:
            refused, self._refused = self._refused, 0
        try:
            await store.count("events_too_large", refused)
        except Exception:  # noqa: BLE001 - Redis away: counted again with the next wake-up
            with self._lock:
                self._refused += refused

    async def _publish(self, publisher: Publisher, batch: list[_Entry]) -> None:
        """Store and publish, retrying with capped backoff: ids make retries idempotent."""
        events = []
        for e in batch:
            event = make_event(
                e.type,
                e.data,
                task_id=e.task_id,
                user_id=e.user_id,
                validated=True,
                ts=iso(e.ts),
                root_id=e.root_id,
            )
            events.append((event, encode_event(event, e.data_json), e.topic))
        mark = (self._mark, self._counted + 1)  # a retry keeps these counts
        self._counted += len(events)
        delay = BACKOFF_FIRST
        while True:
            try:
                results = await publisher.publish_encoded(events, mark)
            except Exception as exc:  # noqa: BLE001 - Redis away: keep the batch, retry
                metrics.COUNTS.publish_errors += 1
                if self.connected and isinstance(exc, NotReplicated):
                    logger.warning("emit: %s; keeping the events", exc)
                elif self.connected:
                    logger.warning("emit: Redis unreachable (%s); retrying", type(exc).__name__)
                self.connected = False
                await asyncio.sleep(_jitter.uniform(delay / 2, delay))
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            self.connected = True
            seen = self._seen
            for entry, stored in zip(batch, results, strict=True):
                if stored.status in ("closed", "lost") and entry.task_id:
                    self.closed_tasks.add(entry.task_id)
                for channel, message in stored.messages:
                    seen.pop(channel, None)  # most recent last: the oldest go first
                    seen[channel] = message
            while len(seen) > WITNESSES:
                del seen[next(iter(seen))]
            return

    def _rewind_check(self) -> list[bytes]:
        """The `REWIND` command for what this emitter stored (none if it stored nothing)."""
        if not self._seen:
            return []
        witnesses = {}
        for channel, message in self._seen.items():
            seq, epoch = message[: message.index(" ", message.index(" ") + 1)].split(" ")
            witnesses[channel] = (epoch, int(seq), event_id(message))
        return [rewind_command(witnesses, self._history_ttl)]


_default: Emitter | None = None
_default_lock = threading.Lock()
_instances: weakref.WeakSet[Emitter] = weakref.WeakSet()


def default() -> Emitter:
    """The process's emitter, built from settings on first use (and again after fork)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                from .settings import get_worker_settings

                settings = get_worker_settings()
                if not settings.redis_url:
                    raise RuntimeError("REDIS_URL is not set: realtime.emit has nowhere to publish")
                _default = Emitter(
                    settings.redis_url,
                    settings.broadcast,
                    history_size=settings.history_size,
                    history_ttl=settings.history_ttl,
                    history_max_bytes=settings.history_max_bytes,
                    max_event_bytes=settings.max_event_bytes,
                    buffer=settings.emit_buffer,
                    max_deliveries=settings.max_deliveries,
                    heartbeat=settings.heartbeat,
                    wait_replicas=settings.redis_wait,
                    wait_timeout_ms=settings.redis_wait_timeout,
                )
    return _default


def _forget_default() -> None:
    global _default
    _default = None


def _reset_in_child() -> None:
    """Right after fork: a lock some parent thread held (the publisher's, at any moment) stays
    locked forever in the child, so every emitter starts clean before anyone can block on it."""
    global _default_lock
    _default_lock = threading.Lock()
    _forget_default()
    for instance in list(_instances):
        instance._after_fork()


os.register_at_fork(after_in_child=_reset_in_child)


def emit(
    type: str,
    *,
    data: dict[str, Any],
    task_id: str | None = None,
    user_id: str | None = None,
    topic: str | None = None,
) -> None:
    """Publish an event from any process that reaches Redis (see the contract)."""
    default().emit(type, data=data, task_id=task_id, user_id=user_id, topic=topic)


def flush(timeout: float = 5.0) -> bool:
    """True once everything emitted so far by this process is stored and published."""
    return True if _default is None else _default.flush(timeout)
