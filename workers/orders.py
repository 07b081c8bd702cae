"""`orders.process`: validate, reserve stock, charge (simulated) and ship one order."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from taskcast.realtime.settings import get_worker_settings

from . import demo_events  # noqa: F401 - the event types these tasks emit
from .app import app
from .task import TaskcastTask

STEPS = (
    ("validate", "validated", "Validating order"),
    ("reserve", "reserved", "Reserving stock"),
    ("charge", "charged", "Charging payment"),
    ("ship", "shipped", "Shipping"),
)
UNIT_PRICE_CENTS = 1250


class OrderError(Exception):
    """A business failure of an order; its message is safe to show the customer."""


class PaymentDeclined(OrderError):
    pass


class InvalidOrder(OrderError):
    pass


def check_step(step: str, customer_id: str, items: list[dict[str, Any]]) -> None:
    """The simulated business rules: deterministic, so tests can pick the failing path.

    Customers whose id starts with `fail-` have their card declined at the charge step;
    an item with sku `INVALID` fails validation.
    """
    if step == "validate" and any(item["sku"] == "INVALID" for item in items):
        raise InvalidOrder("order contains an unknown sku: INVALID")
    if step == "charge" and customer_id.startswith("fail-"):
        raise PaymentDeclined(f"card declined for customer {customer_id}")


def process(
    order_id: str,
    customer_id: str,
    items: list[dict[str, Any]],
    *,
    progress: Callable[[int, int, str], None],
    emit: Callable[[str, dict[str, Any]], None],
    delay: float,
) -> dict[str, Any]:
    """Run the order's steps, emitting progress and status changes; returns the result."""
    emit("order.created", {"order_id": order_id, "customer_id": customer_id, "items": items})
    previous = "created"
    for index, (step, status, message) in enumerate(STEPS):
        progress(index, len(STEPS), message)
        time.sleep(delay)
        try:
            check_step(step, customer_id, items)
        except OrderError:
            emit(
                "order.status_changed",
                {"order_id": order_id, "status": "failed", "previous": previous},
            )
            raise
        emit("order.status_changed", {"order_id": order_id, "status": status, "previous": previous})
        previous = status
    progress(len(STEPS), len(STEPS), "Shipped")
    total = sum(int(item["qty"]) for item in items) * UNIT_PRICE_CENTS
    return {"order_id": order_id, "status": "shipped", "total_cents": total}


@app.task(name="orders.process", bind=True)
def process_order(
    self: TaskcastTask, order_id: str, customer_id: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    return process(
        order_id,
        customer_id,
        items,
        progress=self.progress,
        emit=self.emit,
        delay=get_worker_settings().step_delay,
    )
