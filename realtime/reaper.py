"""The stale-task reaper: a running task with no sign of life for too long ends `task.failed`.

Workers refresh their running tasks' heartbeat; a task whose worker died and whose message was
not redelivered (or was redelivered to no one) would otherwise read `running` forever.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .publisher import Publisher

logger = logging.getLogger("taskcast.reaper")


class Reaper:
    """Runs on every API node; a Redis lease makes one node sweep at a time."""

    def __init__(self, publisher: Publisher, node_id: str, stale_after: float) -> None:
        self.publisher = publisher
        self.store = publisher.store
        self.node_id = node_id
        self.stale_after = stale_after
        self.interval = max(0.5, min(30.0, stale_after / 4))
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
        stale = await self.store.stale(time.time() - self.stale_after)
        for task_id in stale:
            message = f"no sign of life for {self.stale_after:.0f}s: its worker was lost"
            stored = await self.publisher.emit(
                "task.failed",
                data={"error": {"type": "TaskLost", "message": message}},
                task_id=task_id,
            )
            if stored.status != "ok":
                await self.store.forget_running(task_id)
            logger.warning("task %s failed as stale", task_id)
        return stale
