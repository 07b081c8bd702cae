"""Request and response bodies of the REST routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskcast.realtime.channels import valid_id

MAX_ORDER_ITEMS = 100


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    qty: int = Field(ge=1, le=10_000)


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=64)
    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_ORDER_ITEMS)

    @field_validator("customer_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not valid_id(value):
            raise ValueError("customer_id may use letters, digits and _ . @ -")
        return value


class StockRowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    qty: int = Field(ge=0, le=10_000_000)
    location: str = Field(default="main", min_length=1, max_length=64)


class ImportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[StockRowIn] = Field(min_length=1)


class Enqueued(BaseModel):
    task_id: str
    channel: str
    order_id: str | None = None
