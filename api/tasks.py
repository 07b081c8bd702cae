"""Task routes: state, cancel, and `start_task`, which every enqueuing route uses."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from taskcast.realtime import Principal, channels
from taskcast.realtime.channels import task_channel, valid_id
from taskcast.realtime.errors import Forbidden, NotFound, Unavailable
from taskcast.realtime.schema import TaskState
from taskcast.realtime.store import TERMINAL_STATUSES
from taskcast.workers.signatures import enqueue

from .deps import Node, NodeDep, PrincipalDep
from .errors import error_body

logger = logging.getLogger("taskcast.api")
router = APIRouter(tags=["tasks"])


async def start_task(node: Node, principal: Principal, name: str, kwargs: dict[str, Any]) -> str:
    """Record the owner and `task.queued`, then enqueue: the client may subscribe at once."""
    task_id = uuid.uuid4().hex
    # Each step names its own cause: a broadcast transport down is not a task queue down.
    step = "the task could not be stored or published (REDIS_URL, BROADCAST_URL)"
    try:
        await node.publisher.queued(task_id, principal.user, name)
        step = "the task queue is unreachable"
        await run_in_threadpool(enqueue, node.sender, name, task_id, kwargs, principal.user)
    except Exception as exc:  # noqa: BLE001 - Redis, transport or broker down: 503
        logger.error("could not enqueue %s: %s (%s)", name, step, type(exc).__name__)
        raise Unavailable(f"{step}; nothing was enqueued") from None
    return task_id


async def _owned(node: Node, principal: Principal, task_id: str) -> dict[str, Any]:
    if not valid_id(task_id):
        raise NotFound("unknown task")
    _, state = await node.store.task(task_id)
    if state is None:
        raise NotFound("unknown task")
    # Whoever may follow `task:<id>` may read and cancel it: the same rules as /ws and /sse.
    if not await node.access.allowed(principal, channels.parse(task_channel(task_id))):
        raise Forbidden("this task belongs to another user")
    return state


@router.get("/tasks/{task_id}", response_model=TaskState)
async def get_task(task_id: str, node: NodeDep, principal: PrincipalDep) -> dict[str, Any]:
    """The task's current state, as the last stored event left it."""
    return await _owned(node, principal, task_id)


@router.post("/tasks/{task_id}/cancel", status_code=202)
async def cancel_task(task_id: str, node: NodeDep, principal: PrincipalDep) -> JSONResponse:
    """End the task with `task.cancelled`; a running task stops at its next progress step."""
    state = await _owned(node, principal, task_id)
    if state["status"] in TERMINAL_STATUSES:
        return JSONResponse(
            error_body("already_finished", f"task already {state['status']}"), status_code=409
        )
    await node.publisher.emit(
        "task.cancelled", data={"reason": f"cancelled by {principal.user}"}, task_id=task_id
    )
    try:
        await run_in_threadpool(node.sender.control.revoke, task_id)
    except Exception as exc:  # noqa: BLE001 - the event is stored; a queued copy is skipped anyway
        logger.warning("revoke of %s failed: %s", task_id, type(exc).__name__)
    return JSONResponse(
        {"task_id": task_id, "status": "cancelled", "channel": task_channel(task_id)}, 202
    )
