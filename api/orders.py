"""`POST /orders`: submit an order for processing."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from taskcast.realtime.channels import task_channel
from taskcast.workers.signatures import ORDERS_PROCESS

from .deps import NodeDep, PrincipalDep
from .schemas import Enqueued, OrderIn
from .tasks import start_task

router = APIRouter(tags=["orders"])


@router.post("/orders", status_code=202, response_model=Enqueued, response_model_exclude_none=True)
async def create_order(body: OrderIn, node: NodeDep, principal: PrincipalDep) -> Enqueued:
    order_id = f"ord_{uuid.uuid4().hex[:12]}"
    items = [item.model_dump() for item in body.items]
    kwargs = {"order_id": order_id, "customer_id": body.customer_id, "items": items}
    task_id = await start_task(node, principal, ORDERS_PROCESS, kwargs)
    return Enqueued(task_id=task_id, order_id=order_id, channel=task_channel(task_id))
