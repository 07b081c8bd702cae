"""`POST /inventory/imports`: import stock rows in the background."""

from __future__ import annotations

from fastapi import APIRouter

from taskcast.realtime.channels import task_channel
from taskcast.realtime.errors import BadRequest
from taskcast.workers.signatures import INVENTORY_IMPORT

from .deps import NodeDep, PrincipalDep
from .schemas import Enqueued, ImportIn
from .tasks import start_task

router = APIRouter(tags=["inventory"])


@router.post(
    "/inventory/imports", status_code=202, response_model=Enqueued, response_model_exclude_none=True
)
async def create_import(body: ImportIn, node: NodeDep, principal: PrincipalDep) -> Enqueued:
    limit = node.settings.max_import_rows
    if len(body.rows) > limit:
        raise BadRequest(f"rows: at most {limit} rows per import")
    rows = [row.model_dump() for row in body.rows]
    task_id = await start_task(
        node, principal, INVENTORY_IMPORT, {"rows": rows, "owner": principal.user}
    )
    return Enqueued(task_id=task_id, channel=task_channel(task_id))
