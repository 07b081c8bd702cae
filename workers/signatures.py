"""Task names and the enqueue helper: all the API may know of the workers."""

from __future__ import annotations

import ssl
from typing import Any, Final
from urllib.parse import quote, urlsplit

from celery import Celery
from kombu.transport.redis import Channel as RedisChannel
from redis.connection import UnixDomainSocketConnection, parse_url

from taskcast.realtime import sentinel
from taskcast.realtime.reaper import RedisBroker

ORDERS_PROCESS: Final = "orders.process"
INVENTORY_IMPORT: Final = "inventory.import"
TASK_NAMES: Final = frozenset({ORDERS_PROCESS, INVENTORY_IMPORT})
# Message headers of an owned task: its owner, and the first task of its workflow.
OWNER_HEADER: Final = "taskcast_owner"
ROOT_HEADER: Final = "taskcast_root"


_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


REDIS_SCHEMES: Final = ("redis", "rediss", "unix", sentinel.SCHEME)


def sentinel_for_celery(redis_url: str) -> tuple[str, str]:
    """(URL, master name) for kombu's and Celery's `sentinel://` transports: one
    `sentinel://[:password@]host:port/db` per Sentinel, joined by `;`."""
    where = sentinel.parse(redis_url)
    user = quote(where.username or "", safe="")
    login = f"{user}:{quote(where.password, safe='')}@" if where.password is not None else ""
    urls = [
        f"sentinel://{login}{f'[{h}]' if ':' in h else h}:{p}/{where.db}"
        for h, p in where.sentinels
    ]
    return ";".join(urls), where.service


def redis_for_celery(redis_url: str) -> tuple[str, dict[str, Any] | None]:
    """(URL, SSL options) meaning to kombu and Celery what `redis_url` means to redis-py.

    kombu and Celery's backend each read Redis URLs their own way (no `?db=`, `rediss://`
    refused without `ssl_cert_reqs`, unix sockets under another scheme), so the URL is read
    once by redis-py and written out in the form both of them take.
    """
    options: dict[str, Any] = dict(parse_url(redis_url))  # type: ignore[no-untyped-call]
    db = int(options.get("db") or 0)
    user = quote(options.get("username") or "", safe="")
    password = quote(options.get("password") or "", safe="")
    login = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    if options.get("connection_class") is UnixDomainSocketConnection:
        return f"redis+socket://{login}{options['path']}?virtual_host={db}", None
    scheme = "rediss" if redis_url.strip().lower().startswith("rediss:") else "redis"
    host = options.get("host", "localhost")
    netloc = f"{login}[{host}]" if ":" in host else f"{login}{host}"
    url = f"{scheme}://{netloc}:{options.get('port', 6379)}/{db}"
    if scheme == "redis":
        return url, None
    tls = {key: value for key, value in options.items() if key.startswith("ssl_")}
    reqs = tls.get("ssl_cert_reqs", "required")  # redis-py's default for rediss://
    tls["ssl_cert_reqs"] = _CERT_REQS.get(reqs, reqs) if isinstance(reqs, str) else reqs
    return url, tls


def is_redis(url: str) -> bool:
    return urlsplit(url).scheme.lower() in REDIS_SCHEMES


def celery_config(
    redis_url: str, visibility_timeout: int = 3600, broker_url: str = ""
) -> dict[str, Any]:
    """Celery settings shared by the worker app and the API's sender.

    Results always go to `redis_url`; the broker is `broker_url` when given (any broker
    Celery supports), else the same Redis.
    """
    backend_master = broker_master = ""
    if sentinel.is_sentinel(redis_url):
        (backend, backend_master), backend_tls = sentinel_for_celery(redis_url), None
    else:
        backend, backend_tls = redis_for_celery(redis_url) if redis_url else ("", None)
    broker, broker_tls = broker_url or backend, None
    if broker_url and sentinel.is_sentinel(broker_url):
        broker, broker_master = sentinel_for_celery(broker_url)
    elif broker_url and is_redis(broker_url):
        broker, broker_tls = redis_for_celery(broker_url)
    elif not broker_url:
        broker_tls, broker_master = backend_tls, backend_master
    # Sentinel: kombu and the result backend ask the Sentinels for `master_name` on connect.
    broker_sentinel = {"master_name": broker_master} if broker_master else {}
    backend_sentinel = {"master_name": backend_master} if backend_master else {}
    return {
        "broker_url": broker,
        "result_backend": backend,
        "result_backend_transport_options": backend_sentinel,
        "broker_use_ssl": broker_tls,
        "redis_backend_use_ssl": backend_tls,
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
            **broker_sentinel,
            "visibility_timeout": visibility_timeout,
            "unacked_restore_interval": max(1, min(10, visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
        },
    }


def redis_broker(app: Celery, broker_url: str) -> RedisBroker | str:
    """The Redis keys where `app`'s broker holds our tasks' messages, or why they are unknown.

    Names come from kombu's Redis transport: one list per queue and priority step
    (`<queue>\\x06\\x16<step>` above 0), the unacked hash, all under `global_keyprefix`.
    The queues are Celery's default queue, the declared `task_queues` and every queue a
    static `task_routes` entry names; a router function could send a task anywhere.
    """
    if not is_redis(broker_url):
        scheme = urlsplit(broker_url).scheme or "unknown"
        return f"the broker ({scheme}) is not Redis; its queues cannot be read without consuming"
    conf = app.conf
    queues = {str(conf.task_default_queue)}
    queues.update(str(queue.name) for queue in conf.task_queues or ())
    routes = conf.task_routes
    for route in routes if isinstance(routes, list | tuple) else [routes] if routes else []:
        if not isinstance(route, dict):
            return "task_routes has a router function: the queue of a task is not known ahead"
        for target in route.values():
            queue = target if isinstance(target, str) else None  # {"orders.*": "orders"}
            if isinstance(target, dict):
                queue = target.get("queue")
            if queue is None:
                return "a task route names no queue: where its messages wait is not known"
            queues.add(queue if isinstance(queue, str) else str(queue.name))
    options = conf.broker_transport_options or {}
    sep = options.get("sep", RedisChannel.sep)
    steps = options.get("priority_steps", RedisChannel.priority_steps)
    prefix = options.get("global_keyprefix", RedisChannel.global_keyprefix)
    unacked = options.get("unacked_key", RedisChannel.unacked_key)
    lists = [
        prefix + q + (f"{sep}{step}" if step else "") for q in sorted(queues) for step in steps
    ]
    if not any(step == 0 for step in steps):
        lists += [prefix + q for q in sorted(queues)]
    return RedisBroker(broker_url, tuple(dict.fromkeys(lists)), (prefix + unacked,))


def sender(redis_url: str, broker_url: str = "") -> Celery:
    """A producer-only Celery app: enqueues by name, never imports task bodies."""
    app = Celery("taskcast-sender", set_as_current=False)
    app.conf.update(celery_config(redis_url, broker_url=broker_url))
    return app


def enqueue(app: Celery, name: str, task_id: str, kwargs: dict[str, Any], owner: str) -> None:
    """Send task `name` with a preassigned id (ownership and `task.queued` are recorded first);
    the owner header is what the tasks it starts inherit (`taskcast.workers.integration`)."""
    app.send_task(name, kwargs=kwargs, task_id=task_id, headers={OWNER_HEADER: owner})
