"""The billing team's Celery app, on RabbitMQ. taskcast needs only its Redis URL; the broker,
queues and routing stay the app's own."""

from __future__ import annotations

import os

from celery import Celery

import taskcast

app = Celery("billing", broker=os.environ["BROKER_URL"])
app.conf.task_default_queue = "billing"
taskcast.install(app)


@app.task(bind=True, base=taskcast.TaskcastTask, name="billing.build_invoice")
def build_invoice(self: taskcast.TaskcastTask, lines: int) -> dict[str, int]:
    for done in range(1, lines + 1):
        self.progress(done, lines, f"Priced line {done} of {lines}")
    return {"lines": lines}
