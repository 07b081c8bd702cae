"""Task names and the enqueue helper: all the API may know of the workers."""

from __future__ import annotations

import ssl
from typing import Any, Final
from urllib.parse import quote

from celery import Celery
from redis.connection import UnixDomainSocketConnection, parse_url

ORDERS_PROCESS: Final = "orders.process"
INVENTORY_IMPORT: Final = "inventory.import"
TASK_NAMES: Final = frozenset({ORDERS_PROCESS, INVENTORY_IMPORT})
QUEUES: Final = ("celery",)  # the Redis lists our tasks wait in (Celery's default queue)
UNACKED: Final = "unacked"  # kombu's hash of messages delivered to a worker, not yet acked


_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def redis_for_celery(redis_url: str) -> tuple[str, str, dict[str, Any] | None]:
    """(broker URL, result backend URL, SSL options) meaning what `redis_url` means to redis-py.

    kombu and Celery's backend each read Redis URLs their own way (no `?db=`, `rediss://`
    refused without `ssl_cert_reqs`, unix sockets under other schemes), so the URL is read
    once by redis-py and written out in the form each of them takes.
    """
    options: dict[str, Any] = dict(parse_url(redis_url))  # type: ignore[no-untyped-call]
    db = int(options.get("db") or 0)
    user = quote(options.get("username") or "", safe="")
    password = quote(options.get("password") or "", safe="")
    login = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    if options.get("connection_class") is UnixDomainSocketConnection:
        socket = f"redis+socket://{login}{options['path']}?virtual_host={db}"
        return socket, socket, None
    scheme = "rediss" if redis_url.strip().lower().startswith("rediss:") else "redis"
    host = options.get("host", "localhost")
    netloc = f"{login}[{host}]" if ":" in host else f"{login}{host}"
    url = f"{scheme}://{netloc}:{options.get('port', 6379)}/{db}"
    if scheme == "redis":
        return url, url, None
    tls = {key: value for key, value in options.items() if key.startswith("ssl_")}
    reqs = tls.get("ssl_cert_reqs", "required")  # redis-py's default for rediss://
    tls["ssl_cert_reqs"] = _CERT_REQS.get(reqs, reqs) if isinstance(reqs, str) else reqs
    return url, url, tls


def celery_config(redis_url: str, visibility_timeout: int = 3600) -> dict[str, Any]:
    """Celery settings shared by the worker app and the API's sender."""
    broker, backend, tls = redis_for_celery(redis_url) if redis_url else ("", "", None)
    return {
        "broker_url": broker,
        "result_backend": backend,
        "broker_use_ssl": tls,
        "redis_backend_use_ssl": tls,
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
