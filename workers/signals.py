"""Lifecycle events from Celery signals: queued, started, retrying and one terminal event."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from celery import signals

from taskcast.realtime import emitter
from taskcast.realtime.errors import EventTooLarge
from taskcast.realtime.events import clip

from .task import TaskCancelled

logger = logging.getLogger("taskcast.workers")

TERMINAL_FLUSH_DEADLINE = 30.0  # a terminal event is stored before the task is acknowledged


def error_info(exc: BaseException | None) -> dict[str, str]:
    """Type and message of an exception (clipped, with a marker), never a traceback."""
    if exc is None:
        return {"type": "Error", "message": "task failed"}
    return {"type": type(exc).__name__, "message": clip(str(exc)) or type(exc).__name__}


def _emit(type_: str, task_id: str, data: dict[str, Any]) -> None:
    try:
        emitter.default().emit(type_, data=data, task_id=task_id)
    except Exception:
        logger.exception("could not emit %s for %s", type_, task_id)


def _wait_stored() -> None:
    """Block (bounded) until the terminal event is in Redis, retrying while it is away."""
    deadline = time.monotonic() + TERMINAL_FLUSH_DEADLINE
    while time.monotonic() < deadline:
        if emitter.flush(timeout=min(5.0, max(0.1, deadline - time.monotonic()))):
            return
    logger.error("terminal event not stored within %.0fs", TERMINAL_FLUSH_DEADLINE)


@signals.before_task_publish.connect
def _queued(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    # Tasks enqueued from worker code (the API records its own `task.queued` first).
    if headers and headers.get("id") and headers.get("taskcast_emit_queued"):
        _emit("task.queued", headers["id"], {"name": sender})


@signals.task_prerun.connect
def _started(task_id: str, task: Any, **_: Any) -> None:
    retries = getattr(task.request, "retries", 0) or 0
    emitter.default().track(task_id)
    _emit("task.started", task_id, {"name": task.name, "attempt": retries + 1})


@signals.task_postrun.connect
def _finished(task_id: str, **_: Any) -> None:
    emitter.default().untrack(task_id)


@signals.task_retry.connect
def _retrying(request: Any = None, reason: Any = None, **_: Any) -> None:
    exc = reason if isinstance(reason, BaseException) else None
    data: dict[str, Any] = {"attempt": (getattr(request, "retries", 0) or 0) + 1}
    data["error"] = error_info(exc) if exc else {"type": "Retry", "message": str(reason)}
    _emit("task.retrying", request.id, data)


@signals.task_success.connect
def _succeeded(sender: Any = None, result: Any = None, **_: Any) -> None:
    """`task.succeeded` with the result; a result too large to send becomes null plus
    `result_omitted` saying so, so the task still ends with exactly one terminal event."""
    task_id = sender.request.id
    try:
        emitter.default().emit("task.succeeded", data={"result": result}, task_id=task_id)
    except EventTooLarge as exc:
        omitted = {"reason": "too_large", "bytes": exc.size, "limit": exc.limit}
        _emit("task.succeeded", task_id, {"result": None, "result_omitted": omitted})
    except Exception:
        logger.exception("could not emit task.succeeded for %s", task_id)
    _wait_stored()


@signals.task_failure.connect
def _failed(task_id: str, exception: BaseException | None = None, **_: Any) -> None:
    if isinstance(exception, TaskCancelled):
        _emit("task.cancelled", task_id, {"reason": "cancelled while running"})
    else:
        _emit("task.failed", task_id, {"error": error_info(exception)})
    _wait_stored()


@signals.task_revoked.connect
def _revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    if request is not None and getattr(request, "id", None):
        _emit("task.cancelled", request.id, {"reason": "revoked"})
        _wait_stored()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _flush_on_shutdown(**_: Any) -> None:
    emitter.flush(timeout=5.0)


@signals.worker_process_init.connect
def freeze_startup_objects(**_: Any) -> None:
    """A pool process starts with everything imported: hide that from the cyclic collector.

    A full collection of a worker's ~60k start-up objects takes ~30 ms on a small machine,
    a stall in the middle of a task and of its progress stream; frozen (O(1), so no
    copy-on-write of the parent's pages), collections scan only what tasks create.
    """
    gc.freeze()
