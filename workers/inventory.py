"""`inventory.import`: apply stock rows in batches, flag low stock, notify the owner."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from taskcast.realtime.settings import get_worker_settings

from . import demo_events  # noqa: F401 - the event types these tasks emit
from .app import app
from .task import TaskcastTask

BATCH_SIZE = 50
LOW_STOCK_THRESHOLD = 5
PROGRESS_INTERVAL = 0.1  # at most ~10 progress events per second, and always the last


def run_import(
    rows: list[dict[str, Any]],
    *,
    progress: Callable[[int, int, str], None],
    emit: Callable[[str, dict[str, Any]], None],
    delay: float,
    batch_size: int = BATCH_SIZE,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Process `rows` batch by batch; returns counts for the task's result."""
    total = len(rows)
    low = 0
    last_progress = float("-inf")
    batches = 0
    for start in range(0, total, batch_size):
        chunk = rows[start : start + batch_size]
        batches += 1
        time.sleep(delay)
        items = [
            {"sku": r["sku"], "qty": int(r["qty"]), "location": r.get("location")} for r in chunk
        ]
        emit("inventory.updated", {"batch": batches, "items": items})
        for item in items:
            if item["qty"] < LOW_STOCK_THRESHOLD:
                low += 1
                emit("inventory.low_stock", {**item, "threshold": LOW_STOCK_THRESHOLD})
        done = start + len(chunk)
        now = clock()
        if done == total or now - last_progress >= PROGRESS_INTERVAL:
            progress(done, total, f"Imported {done} of {total} rows")
            last_progress = now
    if total == 0:
        progress(0, 0, "Nothing to import")
    return {"rows": total, "batches": batches, "low_stock": low}


@app.task(name="inventory.import", bind=True)
def import_inventory(self: TaskcastTask, rows: list[dict[str, Any]], owner: str) -> dict[str, Any]:
    result = run_import(
        rows, progress=self.progress, emit=self.emit, delay=get_worker_settings().step_delay
    )
    self.emit(
        "notification",
        {
            "title": "Inventory import finished",
            "message": f"{result['rows']} rows imported, {result['low_stock']} low on stock",
            "level": "success",
            "task_id": self.request.id,
        },
        user_id=owner,
    )
    return result
