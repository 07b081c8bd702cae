"""The shop's own Celery app. Two lines bring taskcast in: `install(app)`, and the base class
of each task that should stream its progress to the user who started it."""

from __future__ import annotations

import os

from celery import Celery
from pydantic import BaseModel

import taskcast

app = Celery("shop", broker=os.environ["BROKER_URL"])
taskcast.install(app)


class ReportReady(BaseModel):
    """`data` of the shop's own event type, sent when a report can be downloaded."""

    rows: int
    url: str


taskcast.register_event("report.ready", ReportReady)


@app.task(bind=True, base=taskcast.TaskcastTask, name="shop.export_report")
def export_report(self: taskcast.TaskcastTask, rows: int) -> dict[str, int]:
    for done in range(1, rows + 1):
        self.progress(done, rows, f"Exported row {done} of {rows}")
    self.emit("report.ready", {"rows": rows, "url": f"/reports/{self.request.id}.csv"})
    return {"rows": rows}


@app.task(name="shop.cleanup")
def cleanup() -> str:
    """A task that did not opt in: it runs as it always did, and streams nothing."""
    return "clean"
