"""taskcast: stream Celery job progress to the people waiting on it.

The one import name of the package, and its public surface: what any process that emits
needs (its own event types and topics included), what a Celery app needs to adopt taskcast
(`install`, `TaskcastTask`, `enqueue`) and the web side to mount or run (`realtime_app`,
`create_server`). The Celery and web parts load on first use, so a process that only emits
imports neither. The parts: `taskcast.realtime` (the core), `taskcast.workers` (Celery) and
`taskcast.api` (the web side).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .realtime.emitter import Emitter, emit, flush
from .realtime.registry import register_event, register_topic

if TYPE_CHECKING:
    from .api.main import create_server, realtime_app
    from .realtime.client import Client
    from .workers.integration import TaskcastTask, enqueue, install

_LAZY = {
    "TaskcastTask": "taskcast.workers.integration",
    "enqueue": "taskcast.workers.integration",
    "install": "taskcast.workers.integration",
    "realtime_app": "taskcast.api.main",
    "create_server": "taskcast.api.main",
    "Client": "taskcast.realtime.client",
}

__all__ = [
    "Client",
    "Emitter",
    "TaskcastTask",
    "create_server",
    "emit",
    "enqueue",
    "flush",
    "install",
    "realtime_app",
    "register_event",
    "register_topic",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
