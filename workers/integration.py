"""taskcast in an existing Celery app: `install(app)`, opted-in tasks, `enqueue(..., owner=)`.

```python
import taskcast

taskcast.install(app)  # once, next to `app = Celery(...)`

@app.task(bind=True, base=taskcast.TaskcastTask)
def export(self, rows):
    self.progress(0, len(rows), "Exporting")

taskcast.enqueue(export.s(rows), owner=user_id)  # from a view, a route or a script
```

Signals are connected by `install`, never at import, and each handler returns at once for a
task that did not opt in (no `taskcast` attribute on its class): such tasks emit nothing and
never wait for Redis. An opted-in task's lifecycle (`task.started`, `task.retrying`, one
terminal event) is stored before the task is acknowledged. A task started while an owned task
runs (`apply_async`, a chain's next step, a group, a chord) inherits its owner and its
workflow's first task (the root), whose channel carries the child's events too.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, NamedTuple

from celery import Celery, Signature, Task, signals
from celery._state import get_current_worker_task
from celery.canvas import _chain, chord, group

from taskcast.realtime import emitter
from taskcast.realtime.channels import task_channel, valid_id
from taskcast.realtime.errors import EventTooLarge, Unavailable
from taskcast.realtime.events import clip

from .signatures import OWNER_HEADER, ROOT_HEADER
from .task import TaskCancelled, TaskcastTask, workflow

__all__ = ["TaskcastTask", "enqueue", "install"]

logger = logging.getLogger("taskcast.workers")

TERMINAL_FLUSH_DEADLINE = 30.0  # a terminal event is stored before the task is acknowledged
RECORD_TIMEOUT = 5.0  # `enqueue` waits this long for Redis to record the owner, then raises
ANNOUNCE_TIMEOUT = 1.0  # a task starting a child waits this long to store the child's queued
ANNOUNCE_PAUSE = 30.0  # after one such wait failed, children are announced buffered this long
_announce_after = [0.0]  # monotonic time from which announcing waits for Redis again


def opted_in(task: Any) -> bool:
    """Whether a task emits lifecycle events: its class has a true `taskcast` attribute."""
    return getattr(task, "taskcast", False) is True


def error_info(exc: BaseException | None) -> dict[str, str]:
    """Type and message of an exception (clipped, with a marker), never a traceback."""
    if exc is None:
        return {"type": "Error", "message": "task failed"}
    return {"type": type(exc).__name__, "message": clip(str(exc)) or type(exc).__name__}


def _emit(type_: str, task_id: str, data: dict[str, Any], request: Any) -> None:
    owner, root = workflow(request)
    try:
        emitter.default().emit(type_, data=data, task_id=task_id, user_id=owner, root_id=root)
    except Exception:
        logger.exception("could not emit %s for %s", type_, task_id)


def _wait_stored() -> None:
    """Block (bounded) until the terminal event is in Redis, retrying while it is away."""
    deadline = time.monotonic() + TERMINAL_FLUSH_DEADLINE
    while time.monotonic() < deadline:
        if emitter.flush(timeout=min(5.0, max(0.1, deadline - time.monotonic()))):
            return
    logger.error("terminal event not stored within %.0fs", TERMINAL_FLUSH_DEADLINE)


# -- the handlers: each returns at once for a task that did not opt in ------------------------


def _started(sender: Any = None, task_id: str = "", task: Any = None, **_: Any) -> None:
    if not opted_in(sender):
        return
    retries = getattr(task.request, "retries", 0) or 0
    emitter.default().track(task_id)
    _emit("task.started", task_id, {"name": task.name, "attempt": retries + 1}, task.request)


def _finished(sender: Any = None, task_id: str = "", **_: Any) -> None:
    if opted_in(sender):
        emitter.default().untrack(task_id)


def _retrying(sender: Any = None, request: Any = None, reason: Any = None, **_: Any) -> None:
    if not opted_in(sender) or request is None:
        return
    exc = reason if isinstance(reason, BaseException) else None
    data: dict[str, Any] = {"attempt": (getattr(request, "retries", 0) or 0) + 1}
    data["error"] = error_info(exc) if exc else {"type": "Retry", "message": str(reason)}
    _emit("task.retrying", request.id, data, request)


def _succeeded(sender: Any = None, result: Any = None, **_: Any) -> None:
    """`task.succeeded` with the result; a result too large to send becomes null plus
    `result_omitted` saying so, so the task still ends with exactly one terminal event."""
    if not opted_in(sender):
        return
    request = sender.request
    owner, root = workflow(request)
    try:
        emitter.default().emit(
            "task.succeeded",
            data={"result": result},
            task_id=request.id,
            user_id=owner,
            root_id=root,
        )
    except EventTooLarge as exc:
        omitted = {"reason": "too_large", "bytes": exc.size, "limit": exc.limit}
        _emit("task.succeeded", request.id, {"result": None, "result_omitted": omitted}, request)
    except Exception:
        logger.exception("could not emit task.succeeded for %s", request.id)
    _wait_stored()


def _failed(
    sender: Any = None, task_id: str = "", exception: BaseException | None = None, **_: Any
) -> None:
    if not opted_in(sender):
        return
    if isinstance(exception, TaskCancelled):
        _emit("task.cancelled", task_id, {"reason": "cancelled while running"}, sender.request)
    else:
        _emit("task.failed", task_id, {"error": error_info(exception)}, sender.request)
    _wait_stored()


def _revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    if opted_in(sender) and request is not None and getattr(request, "id", None):
        _emit("task.cancelled", request.id, {"reason": "revoked"}, request)
        _wait_stored()


def _flush_on_shutdown(**_: Any) -> None:
    emitter.flush(timeout=5.0)


def freeze_startup_objects(**_: Any) -> None:
    """A pool process starts with everything imported: hide that from the cyclic collector.

    A full collection of a worker's ~60k start-up objects takes ~30 ms on a small machine,
    a stall in the middle of a task and of its progress stream; frozen (O(1), so no
    copy-on-write of the parent's pages), collections scan only what tasks create.
    """
    gc.freeze()


def _announce(task_id: str, name: str, owner: str, root: str) -> None:
    """Store a child's `task.queued` before its message is sent: its owner may watch it at
    once, and a worker that starts it at once cannot store `task.started` before it. With
    Redis away (one wait failed in the last `ANNOUNCE_PAUSE` s), the event waits in the
    buffer instead; the task is sent either way."""
    event: dict[str, Any] = {
        "data": {"name": name},
        "task_id": task_id,
        "user_id": owner,
        "root_id": root,
    }
    if time.monotonic() >= _announce_after[0]:
        try:
            emitter.default().call(
                lambda publisher: publisher.emit("task.queued", **event), ANNOUNCE_TIMEOUT
            )
            return
        except Exception as exc:  # noqa: BLE001 - Redis away or slow: buffered below
            _announce_after[0] = time.monotonic() + ANNOUNCE_PAUSE
            logger.warning("task.queued of %s not stored yet: %s", task_id, type(exc).__name__)
    try:
        emitter.default().emit("task.queued", **event)
    except Exception:
        logger.exception("could not emit task.queued for %s", task_id)


def _inherit(app: Celery) -> Any:
    """The `before_task_publish` handler of `app`: a task published while an owned, opted-in
    task runs carries the same owner and root; an opted-in child is announced queued."""

    def handler(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is None or headers.get(OWNER_HEADER):
            return  # `enqueue` (or the caller) set the owner; it recorded the root itself
        parent = get_current_worker_task()
        if parent is None or not opted_in(parent):
            return
        owner, root = workflow(parent.request)
        task_id = headers.get("id")
        if owner is None or not task_id or task_id == parent.request.id:
            return  # no owner to pass on, or the task republishing itself (a retry)
        root = root or parent.request.id
        headers[OWNER_HEADER] = owner
        headers[ROOT_HEADER] = root
        if opted_in(app.tasks.get(sender)):
            _announce(task_id, str(sender), owner, root)

    return handler


def install(app: Celery, *, freeze_gc: bool = False) -> None:
    """Hook taskcast into `app` (once, where the app is created; calling it again is harmless).

    Only tasks that opted in emit anything. `freeze_gc`: freeze each pool process's start-up
    objects (`freeze_startup_objects`), for workers whose tasks stream progress.
    """
    uid = f"taskcast:{id(app)}"
    signals.before_task_publish.connect(_inherit(app), weak=False, dispatch_uid=f"{uid}:publish")
    for signal, handler in (
        (signals.task_prerun, _started),
        (signals.task_postrun, _finished),
        (signals.task_retry, _retrying),
        (signals.task_success, _succeeded),
        (signals.task_failure, _failed),
        (signals.task_revoked, _revoked),
        (signals.worker_process_shutdown, _flush_on_shutdown),
        (signals.worker_shutdown, _flush_on_shutdown),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"taskcast:{handler.__name__}")
    if freeze_gc:
        signals.worker_process_init.connect(
            freeze_startup_objects, weak=False, dispatch_uid="taskcast:freeze"
        )


class Enqueued(NamedTuple):
    """What `enqueue` sent: the root task's id, its channel, and Celery's result handle."""

    task_id: str
    channel: str
    result: Any


def enqueue(target: Task | Signature, *args: Any, owner: str, **options: Any) -> Enqueued:
    """Send a task (or a chain) on behalf of user `owner`, who (with admins) may then watch it.

    `target` is a task, with its positional `args`, or a signature (`export.s(rows)`,
    `chain(a.s(), b.s())`); `options` are `apply_async`'s (queue, routing_key, priority,
    countdown, ...). The owner and `task.queued` are stored in taskcast's Redis before the
    message is sent, so the owner may subscribe to `task:<id>` at once; if Redis cannot
    record them within `RECORD_TIMEOUT` seconds this raises `realtime.errors.Unavailable`
    and nothing is sent. If the broker refuses the message, the task ends `task.failed`
    (`NotSent`) and Celery's error is raised. Tasks the task starts inherit the owner.
    Blocking, like `apply_async`: from async code, `await asyncio.to_thread(enqueue, ...)`.
    """
    if not isinstance(owner, str) or not valid_id(owner):
        raise ValueError(f"malformed owner {owner!r}: a user id usable in 'user:<id>'")
    if isinstance(target, Task):
        signature = target.s(*args)
    elif args:
        raise TypeError("pass a signature's arguments in it: enqueue(task.s(1, 2), owner=...)")
    else:
        signature = target
    first = signature.tasks[0] if isinstance(signature, _chain) else signature
    if isinstance(first, group | chord | _chain) or not isinstance(first, Signature):
        raise TypeError(
            "enqueue sends a task or a chain; start a group or a chord from an owned task, "
            "whose children inherit its owner"
        )
    first.freeze()
    root = first.id
    name = first.task
    try:
        emitter.default().call(
            lambda publisher: publisher.queued(root, owner, name, broker_checked=False),
            RECORD_TIMEOUT,
        )
    except Exception as exc:  # noqa: BLE001 - Redis down or slow: the caller gets one error
        logger.error("could not record the owner of %s: %s", root, type(exc).__name__)
        raise Unavailable("taskcast's Redis is unreachable; nothing was enqueued") from None
    headers = {**(options.pop("headers", None) or {}), OWNER_HEADER: owner, ROOT_HEADER: root}
    try:
        result = signature.apply_async(headers=headers, **options)
    except Exception as exc:
        # Its owner may already see it queued: end it, or it would read `queued` forever.
        error = {"type": "NotSent", "message": f"the broker refused it ({type(exc).__name__})"}
        _emit("task.failed", root, {"error": error}, None)
        raise
    return Enqueued(root, task_channel(root), result)
