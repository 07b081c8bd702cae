"""The demo's event types and topics (orders, clients, inventory), registered like any app's.

Both processes import this module: the worker through its task modules, the web process
through `api.main` (another app names its own module in `TASKCAST_IMPORTS`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcast.realtime.registry import register_event


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderItem(_Data):
    sku: str = Field(min_length=1, max_length=64)
    qty: int = Field(ge=1, le=1_000_000)


class OrderCreated(_Data):
    order_id: str
    customer_id: str
    items: list[OrderItem]


class OrderUpdated(_Data):
    order_id: str
    changes: dict[str, Any]


class OrderStatusChanged(_Data):
    order_id: str
    status: str
    previous: str | None = None


class OrderCancelled(_Data):
    order_id: str
    reason: str | None = None


class ClientCreated(_Data):
    client_id: str
    name: str | None = None
    email: str | None = None


class ClientUpdated(_Data):
    client_id: str
    changes: dict[str, Any]


class StockLine(_Data):
    sku: str
    qty: int
    location: str | None = None


class InventoryUpdated(_Data):
    batch: int = Field(ge=1)
    items: list[StockLine]


class InventoryLowStock(_Data):
    sku: str
    qty: int
    location: str | None = None
    threshold: int | None = None


register_event("order.created", OrderCreated, topic="orders")
register_event("order.updated", OrderUpdated, topic="orders")
register_event("order.status_changed", OrderStatusChanged, topic="orders")
register_event("order.cancelled", OrderCancelled, topic="orders")
register_event("client.created", ClientCreated, topic="clients")
register_event("client.updated", ClientUpdated, topic="clients")
register_event("inventory.updated", InventoryUpdated, topic="inventory")
register_event("inventory.low_stock", InventoryLowStock, topic="inventory")
