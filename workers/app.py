"""The Celery app of taskcast's own (demo) workers: Redis (or `TASKCAST_BROKER_URL`) broker,
JSON only, late acks, prefetch 1."""

from __future__ import annotations

from celery import Celery

from taskcast.realtime.settings import get_worker_settings

from .integration import install
from .signatures import celery_config

app = Celery(
    "taskcast",
    include=["taskcast.workers.orders", "taskcast.workers.inventory"],
    task_cls="taskcast.workers.task:TaskcastTask",  # every task of this app opts in
    set_as_current=True,
)
# Read the environment when Celery configures itself, not at import.
app.add_defaults(
    lambda: celery_config(
        get_worker_settings().redis_url,
        get_worker_settings().visibility_timeout,
        get_worker_settings().broker_url,
    )
)
install(app, freeze_gc=True)
