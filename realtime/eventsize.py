"""Events over `TASKCAST_MAX_EVENT_BYTES` (or a transport's lower limit): refused where
emitted, logged once per task.

A task stuck on one oversized event would otherwise log it thousands of times; the callers
count every refusal in Redis (`Store.count`), shown as `taskcast_events_too_large` in `/metrics`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from .errors import EventTooLarge

MAX_EVENT_SETTING = "TASKCAST_MAX_EVENT_BYTES"
NOTIFY_LIMIT = "PostgreSQL NOTIFY's payload limit (BROADCAST_URL=postgres://)"

logger = logging.getLogger("taskcast.emit")

REMEMBERED = 1024  # tasks (or, outside a task, event types) whose refusal was logged

_logged: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def refuse(
    type_: str,
    size: int,
    limit: int,
    task_id: str | None,
    limited_by: str = MAX_EVENT_SETTING,
) -> EventTooLarge:
    """Log the refusal unless this task's was logged already; the error to raise."""
    key = f"task:{task_id}" if task_id is not None else f"type:{type_}"
    with _lock:
        first = key not in _logged
        if first:
            _logged[key] = None
            if len(_logged) > REMEMBERED:
                _logged.popitem(last=False)
    error = EventTooLarge(type_, size, limit, limited_by)
    if first:
        where = f"task {task_id}" if task_id is not None else "outside a task"
        logger.warning("%s (%s; further refusals counted, not logged)", error.message, where)
    return error
