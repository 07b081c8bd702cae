"""The stale-task reaper: a task that can no longer end by itself ends `task.failed`.

Workers refresh their running tasks' heartbeat; a task whose worker died and whose message was
not redelivered (or was redelivered to no one) would otherwise read `running` forever. A task
`queued` for long whose message the broker no longer holds (a Redis broker can lose one popped
by a worker that died before recording it) would otherwise read `queued` forever.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .publisher import Publisher

logger = logging.getLogger("taskcast.reaper")


class Reaper:
    """Runs on every API node; a Redis lease makes one node sweep at a time."""

    def __init__(
        self,
        publisher: Publisher,
        node_id: str,
        stale_after: float,
        queued_stale_after: float = 300.0,
        broker_lists: tuple[str, ...] = ("celery",),
        broker_hashes: tuple[str, ...] = ("unacked",),
    ) -> None:
        self.publisher = publisher
        self.store = publisher.store
        self.node_id = node_id
        self.stale_after = stale_after
        self.queued_stale_after = queued_stale_after
        self.broker_lists = list(broker_lists)
        self.broker_hashes = list(broker_hashes)
        self.interval = max(0.5, min(30.0, min(stale_after, queued_stale_after) / 4))
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reaper:
        self._task = asyncio.create_task(self._run(), name="taskcast-reaper")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - Redis away: try again next round
                logger.warning("stale-task sweep failed: %s", type(exc).__name__)

    async def sweep(self) -> list[str]:
        """Fail every stale running task; returns their ids."""
        if not await self.store.lock("reaper", self.node_id, self.interval):
            return []
        now = time.time()
        lost = {
            task_id: f"no sign of life for {self.stale_after:.0f}s: its worker was lost"
            for task_id in await self.store.stale(now - self.stale_after)
        }
        waiting = await self.store.stale_queued(now - self.queued_stale_after)
        held = await self.store.still_queued(waiting, self.broker_lists, self.broker_hashes)
        for task_id in waiting:
            if task_id not in held:
                lost[task_id] = "its queue message was lost before a worker started it"
        for task_id, message in lost.items():
            stored = await self.publisher.emit(
                "task.failed",
                data={"error": {"type": "TaskLost", "message": message}},
                task_id=task_id,
            )
            if stored.status != "ok":
                await self.store.forget_running(task_id)
            logger.warning("task %s failed: %s", task_id, message)
        return list(lost)
