"""The base task: `self.progress(current, total, message)` and cooperative cancellation."""

from __future__ import annotations

from typing import Any

from celery import Task

from taskcast.realtime import emitter


class TaskCancelled(Exception):
    """Raised inside a task whose channel already ended (it was cancelled)."""


class TaskcastTask(Task):  # type: ignore[misc]
    """Every taskcast task: lifecycle events come from signals; progress from here."""

    def progress(self, current: int, total: int, message: str | None = None) -> None:
        """Record progress (coalesced while waiting); raise TaskCancelled if the task ended.

        A message over 1000 characters is clipped with a marker, never refused.
        """
        task_id = self.request.id
        emit = emitter.default()
        if emit.is_closed(task_id):
            raise TaskCancelled(f"task {task_id} was cancelled")
        emit.progress(task_id, current, total, message)

    def cancelled(self) -> bool:
        """True once the store has refused an event because this task already ended."""
        return emitter.default().is_closed(self.request.id)

    def emit(self, type_: str, data: dict[str, Any], **targets: Any) -> None:
        """Emit a domain event of this task (routed to its task, owner and topic channels).

        Raises ValueError for bad data, `EventTooLarge` (one) over `TASKCAST_MAX_EVENT_BYTES`.
        """
        emitter.default().emit(type_, data=data, task_id=self.request.id, **targets)
