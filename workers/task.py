"""The opt-in base task: `self.progress(current, total, message)`, `self.emit`, cancellation."""

from __future__ import annotations

from typing import Any

from celery import Task

from taskcast.realtime import emitter

from .signatures import OWNER_HEADER, ROOT_HEADER


class TaskCancelled(Exception):
    """Raised inside a task whose channel already ended (it was cancelled)."""


def workflow(request: Any) -> tuple[str | None, str | None]:
    """(owner, root task id) a task's message carries, from `enqueue` or a parent task."""
    headers = getattr(request, "headers", None) or {}
    owner = getattr(request, OWNER_HEADER, None) or headers.get(OWNER_HEADER)
    root = getattr(request, ROOT_HEADER, None) or headers.get(ROOT_HEADER)
    return (
        owner if isinstance(owner, str) else None,
        root if isinstance(root, str) else None,
    )


class TaskcastTask(Task):  # type: ignore[misc]
    """A task that opted in (`@app.task(bind=True, base=TaskcastTask)`): lifecycle events come
    from the signals `install` (`workers/integration.py`) connects; progress and events here."""

    taskcast = True  # what the signal handlers look for; any task class may set it

    def progress(self, current: int, total: int, message: str | None = None) -> None:
        """Record progress (coalesced while waiting); raise TaskCancelled if the task ended.

        A message over 1000 characters is clipped with a marker, never refused.
        """
        task_id = self.request.id
        emit = emitter.default()
        if emit.is_closed(task_id):
            raise TaskCancelled(f"task {task_id} was cancelled")
        _, root = workflow(self.request)
        emit.progress(task_id, current, total, message, root_id=root)

    def cancelled(self) -> bool:
        """True once the store has refused an event because this task already ended."""
        return emitter.default().is_closed(self.request.id)

    def emit(self, type_: str, data: dict[str, Any], **targets: Any) -> None:
        """Emit an event of this task (routed to its task, owner and topic channels, and to its
        workflow's first task's channel).

        Raises ValueError for an unknown type or bad data, `EventTooLarge` (one) over
        `TASKCAST_MAX_EVENT_BYTES`.
        """
        _, root = workflow(self.request)
        emitter.default().emit(type_, data=data, task_id=self.request.id, root_id=root, **targets)
