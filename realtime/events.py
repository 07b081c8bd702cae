"""Event models: the 17 event types of the contract, their typed `data`, one JSON encoding."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

TASK_TYPES: Final = (
    "task.queued",
    "task.started",
    "task.progress",
    "task.succeeded",
    "task.failed",
    "task.retrying",
    "task.cancelled",
)
TERMINAL_TYPES: Final = frozenset({"task.succeeded", "task.failed", "task.cancelled"})
DOMAIN_TYPES: Final = (
    "order.created",
    "order.updated",
    "order.status_changed",
    "order.cancelled",
    "client.created",
    "client.updated",
    "inventory.updated",
    "inventory.low_stock",
    "notification",
    "system.message",
)
EVENT_TYPES: Final = TASK_TYPES + DOMAIN_TYPES

# The topic each domain type belongs to.
DEFAULT_TOPIC: Final = {
    "order.created": "orders",
    "order.updated": "orders",
    "order.status_changed": "orders",
    "order.cancelled": "orders",
    "client.created": "clients",
    "client.updated": "clients",
    "inventory.updated": "inventory",
    "inventory.low_stock": "inventory",
    "notification": "notifications",
    "system.message": "system",
}


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenData(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskQueued(_Data):
    name: str | None = None


class TaskStarted(_Data):
    name: str | None = None
    attempt: int = 1


class TaskProgress(_Data):
    current: int = Field(ge=0)
    total: int = Field(ge=0)
    percent: float = Field(ge=0, le=100)
    message: str | None = None


class TaskSucceeded(_Data):
    result: Any = None


class ErrorInfo(_Data):
    type: str
    message: str


class TaskFailed(_Data):
    error: ErrorInfo


class TaskRetrying(_Data):
    attempt: int = Field(ge=1)
    error: ErrorInfo | None = None
    countdown: float | None = None


class TaskCancelled(_Data):
    reason: str | None = None


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


class Notification(_OpenData):
    title: str
    message: str | None = None
    level: Literal["info", "success", "warning", "error"] = "info"


class SystemMessage(_OpenData):
    message: str
    level: Literal["info", "warning", "error"] = "info"


DATA_MODELS: Final[dict[str, type[BaseModel]]] = {
    "task.queued": TaskQueued,
    "task.started": TaskStarted,
    "task.progress": TaskProgress,
    "task.succeeded": TaskSucceeded,
    "task.failed": TaskFailed,
    "task.retrying": TaskRetrying,
    "task.cancelled": TaskCancelled,
    "order.created": OrderCreated,
    "order.updated": OrderUpdated,
    "order.status_changed": OrderStatusChanged,
    "order.cancelled": OrderCancelled,
    "client.created": ClientCreated,
    "client.updated": ClientUpdated,
    "inventory.updated": InventoryUpdated,
    "inventory.low_stock": InventoryLowStock,
    "notification": Notification,
    "system.message": SystemMessage,
}


class Event(BaseModel):
    """The envelope every event travels in, as the contract shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    ts: str
    task_id: str | None = None
    user_id: str | None = None
    source: str
    data: dict[str, Any]


_SOURCE: list[str] = []


def source() -> str:
    """`host/pid` of this process, recomputed after fork (no getpid() syscall per event)."""
    if not _SOURCE:
        _SOURCE.append(f"{socket.gethostname()}/{os.getpid()}")
    return _SOURCE[0]


os.register_at_fork(after_in_child=_SOURCE.clear)


def new_id() -> str:
    """A random UUID4 as 32 hex digits, from the OS's random source (fork-safe, unpredictable).

    Bytes from `os.urandom` with the version and variant bits set: ~0.9 µs, against ~2.5 µs
    for `uuid.uuid4().hex`, which builds a `UUID` object around the same bytes.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def now_iso() -> str:
    """The contract's timestamp: ISO 8601, microseconds, explicit UTC offset."""
    return iso(time.time())


def iso(timestamp: float) -> str:
    """`now_iso` of a `time.time()` taken earlier."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def validate_data(type_: str, data: Any) -> dict[str, Any]:
    """Check `data` against its type's model; `ValueError` names what is wrong."""
    model = DATA_MODELS.get(type_)
    if model is None:
        raise ValueError(f"unknown event type {type_!r}; expected one of {', '.join(EVENT_TYPES)}")
    if not isinstance(data, dict):
        raise ValueError(f"data of {type_!r} must be a dict, not {type(data).__name__}")
    try:
        return model.model_validate(data).model_dump(mode="json", exclude_none=False)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"invalid data for {type_!r}: {problems}") from None


def make_event(
    type_: str,
    data: dict[str, Any],
    *,
    task_id: str | None = None,
    user_id: str | None = None,
    validated: bool = False,
    ts: str | None = None,
) -> dict[str, Any]:
    """Build the envelope as a plain dict (the hot path skips pydantic for the envelope)."""
    return {
        "id": new_id(),
        "type": type_,
        "ts": ts or now_iso(),
        "task_id": task_id,
        "user_id": user_id,
        "source": source(),
        "data": data if validated else validate_data(type_, data),
    }


def progress_data(current: int, total: int, message: str | None) -> dict[str, Any]:
    """`task.progress` data with `percent` derived, checked without pydantic (hot path)."""
    if isinstance(current, bool) or not isinstance(current, int) or current < 0:
        raise ValueError("progress current must be a non-negative int")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError("progress total must be a non-negative int")
    if message is not None and not isinstance(message, str):
        raise ValueError("progress message must be a string")
    percent = 100.0 if total == 0 else round(min(current, total) * 100.0 / total, 2)
    return {"current": current, "total": total, "percent": percent, "message": message}


def encode_event(event: dict[str, Any]) -> bytes:
    """The one JSON encoding of an event (orjson; compact, UTF-8)."""
    return orjson.dumps(event)


_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the envelope and of each type's `data`, for clients and docs."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "taskcast event",
        "envelope": _EVENT_ADAPTER.json_schema(),
        "data": {name: model.model_json_schema() for name, model in DATA_MODELS.items()},
    }
