"""Task names and the enqueue helper: all the API may know of the workers."""

from __future__ import annotations

from typing import Any, Final

from celery import Celery

ORDERS_PROCESS: Final = "orders.process"
INVENTORY_IMPORT: Final = "inventory.import"
TASK_NAMES: Final = frozenset({ORDERS_PROCESS, INVENTORY_IMPORT})
QUEUES: Final = ("celery",)  # the Redis lists our tasks wait in (Celery's default queue)
UNACKED: Final = "unacked"  # kombu's hash of messages delivered to a worker, not yet acked


def celery_config(redis_url: str, visibility_timeout: int = 3600) -> dict[str, Any]:
    """Celery settings shared by the worker app and the API's sender."""
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "result_expires": 86400,
        # A result write that meets a Redis restart is retried, not turned into a task failure.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 1000,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # Redis broker: a lost worker's unacknowledged tasks go back to the queue after
        # `visibility_timeout` s; surviving workers sweep for them every few seconds.
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": max(1, min(10, visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
        },
    }


def sender(redis_url: str) -> Celery:
    """A producer-only Celery app: enqueues by name, never imports task bodies."""
    app = Celery("taskcast-sender", set_as_current=False)
    app.conf.update(celery_config(redis_url))
    return app


def enqueue(app: Celery, name: str, task_id: str, kwargs: dict[str, Any]) -> None:
    """Send task `name` with a preassigned id (ownership and `task.queued` are recorded first)."""
    app.send_task(name, kwargs=kwargs, task_id=task_id)
