"""taskcast: stream Celery job progress to the people waiting on it.

The one import name of the package. Here is what any process that emits needs (its own
event types and topics included); the rest
lives in its parts: `taskcast.realtime` (the core: events, store, hub, client),
`taskcast.workers` (Celery) and `taskcast.api` (the web side: `realtime_app`, `create_app`).
"""

from .realtime.emitter import Emitter, emit, flush
from .realtime.registry import register_event, register_topic

__all__ = ["Emitter", "emit", "flush", "register_event", "register_topic"]
