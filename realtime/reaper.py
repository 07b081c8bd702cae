"""The stale-task reaper: a task that can no longer end by itself ends `task.failed`.

Workers refresh their running tasks' heartbeat; a task whose worker died and whose message was
not redelivered (or was redelivered to no one) would otherwise read `running` forever. A task
`queued` for long whose message the broker no longer holds (a Redis broker can lose one popped
by a worker that died before recording it) would otherwise read `queued` forever. That second
check needs to see every place the broker may hold the message (`BrokerQueues`); where it
cannot (a broker other than Redis), it is off, and a waiting task is never failed for waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from . import metrics
from .publisher import Publisher

logger = logging.getLogger("taskcast.reaper")


# Which of the task ids in ARGV[2..] appear in the broker's queue lists (the first ARGV[1] keys)
# or its unacked hashes (the other keys): kombu messages carry `"id": "<task id>"` in headers.
_HELD = """
local nlists = tonumber(ARGV[1])
local wanted, found = {}, {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local function look(item)
  for id in string.gmatch(item, '"id": ?"([%w%-]+)"') do
    if wanted[id] then found[#found + 1] = id; wanted[id] = nil end
  end
end
for k = 1, #KEYS do
  local items
  if k <= nlists then items = redis.call('LRANGE', KEYS[k], 0, -1)
  else items = redis.call('HVALS', KEYS[k]) end
  for i = 1, #items do look(items[i]) end
end
return found
"""


@dataclass(frozen=True, slots=True)
class RedisBroker:
    """Where a Redis broker (kombu) keeps a task's message until it is acknowledged."""

    url: str
    lists: tuple[str, ...]  # every queue the tasks are routed to, one list per priority step
    hashes: tuple[str, ...]  # messages delivered to a worker and not yet acknowledged


class BrokerQueues:
    """Searches a Redis broker's queue lists and unacked hash for the messages of tasks."""

    def __init__(self, redis: Redis, broker: RedisBroker) -> None:
        self.broker = broker
        self._held = redis.register_script(_HELD)

    async def held(self, task_ids: list[str]) -> set[str]:
        """Which of `task_ids` the broker still holds. One pass over its keys, in Redis."""
        if not task_ids:
            return set()
        lists, hashes = self.broker.lists, self.broker.hashes
        found = await self._held(keys=[*lists, *hashes], args=[len(lists), *task_ids])
        return {i.decode() if isinstance(i, bytes) else str(i) for i in found}


class Reaper:
    """Runs on every API node; a Redis lease makes one node sweep at a time."""

    def __init__(
        self,
        publisher: Publisher,
        node_id: str,
        stale_after: float,
        queued_stale_after: float = 300.0,
        broker: BrokerQueues | None = None,
    ) -> None:
        self.publisher = publisher
        self.store = publisher.store
        self.node_id = node_id
        self.stale_after = stale_after
        self.queued_stale_after = queued_stale_after
        self.broker = broker  # None: queued tasks are not checked (never failed for waiting)
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
        if self.broker is not None:
            waiting = await self.store.stale_queued(now - self.queued_stale_after)
            held = await self.broker.held(waiting)
            await self.store.still_waiting(held)
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
        metrics.COUNTS.reaper_sweeps += 1
        return list(lost)
