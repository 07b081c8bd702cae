"""taskcast: stream Celery job progress to the people waiting on it.

The one import name of the package. Here is what any process that emits needs (its own
event types and topics included) and what a Celery app needs to adopt taskcast; the rest
lives in its parts: `taskcast.realtime` (the core: events, store, hub, client),
`taskcast.workers` (Celery) and `taskcast.api` (the web side: `realtime_app`, `create_app`).
"""

from .realtime.emitter import Emitter, emit, flush
from .realtime.registry import register_event, register_topic
from .workers.integration import TaskcastTask, enqueue, install

__all__ = [
    "Emitter",
    "TaskcastTask",
    "emit",
    "enqueue",
    "flush",
    "install",
    "register_event",
    "register_topic",
]
