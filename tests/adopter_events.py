"""An app's own event type and topic, registered through the public API (`TASKCAST_IMPORTS`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from taskcast import register_event


class InvoiceGenerated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invoice_id: str = Field(min_length=1)
    amount_cents: int = Field(ge=0)


register_event("invoice.generated", InvoiceGenerated, topic="invoices")
