"""An existing Celery app adopting taskcast: its own broker and queue, one `install` line.

`ADOPTER_BROKER_URL` is the app's broker (not taskcast's Redis: another Redis, or RabbitMQ
with `ADOPTER_BACKEND_URL` for results); its tasks wait in the queue `adopter`. `plain` did
not opt in; the others did.
"""

from __future__ import annotations

import os

from celery import Celery, chain, chord, group

from taskcast import TaskcastTask, install

from . import adopter_events  # noqa: F401 - `invoice.generated` on the topic `invoices`

app = Celery("adopter", set_as_current=False)
app.add_defaults(
    lambda: {
        "broker_url": os.environ.get("ADOPTER_BROKER_URL", "memory://"),
        "result_backend": os.environ.get("ADOPTER_BACKEND_URL")
        or os.environ.get("ADOPTER_BROKER_URL", "cache+memory://"),
        "task_default_queue": "adopter",
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
)
install(app)


@app.task(name="adopter.plain")
def plain(x: int) -> int:
    return x * 2


@app.task(bind=True, base=TaskcastTask, name="adopter.step")
def step(self: TaskcastTask, x: int) -> int:
    self.progress(1, 1, "stepped")
    return x + 1


@app.task(bind=True, base=TaskcastTask, name="adopter.invoice")
def invoice(self: TaskcastTask, invoice_id: str, amount_cents: int) -> str:
    self.emit("invoice.generated", {"invoice_id": invoice_id, "amount_cents": amount_cents})
    return invoice_id


@app.task(bind=True, base=TaskcastTask, name="adopter.flaky")
def flaky(self: TaskcastTask) -> int:
    """Fails its first attempt: Celery retries it at once."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return int(self.request.retries)


@app.task(bind=True, base=TaskcastTask, name="adopter.total")
def total(self: TaskcastTask, values: list[int]) -> int:
    self.progress(1, 1, "added")
    return sum(values)


@app.task(bind=True, base=TaskcastTask, name="adopter.fan_out")
def fan_out(self: TaskcastTask, n: int) -> int:
    """Start a chain of two `step`s, a group of `n`, a `flaky` and a chord of two `step`s into
    `total`: each inherits this task's owner."""
    chain(step.s(0), step.s()).apply_async()
    group(step.s(i) for i in range(n)).apply_async()
    flaky.apply_async()
    chord([step.s(10), step.s(20)], total.s()).apply_async()
    return n
