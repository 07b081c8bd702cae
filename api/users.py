"""User routes: revoking every token a user holds, on every node, at once."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel

from taskcast.realtime.errors import Forbidden, Unavailable

from .deps import NodeDep, PrincipalDep

logger = logging.getLogger("taskcast.api")
router = APIRouter(tags=["users"])


class Revoked(BaseModel):
    user_id: str
    revoked_at: int  # unix seconds: the user's tokens issued up to this second are refused


@router.post("/users/{user_id}/revoke", status_code=202, response_model=Revoked)
async def revoke(
    user_id: Annotated[str, Path(min_length=1, max_length=128)],
    node: NodeDep,
    principal: PrincipalDep,
) -> Revoked:
    """End the user's connections on every node and refuse their tokens issued until now."""
    if not principal.is_admin:
        raise Forbidden("admin scope required")
    try:
        revoked_at = await node.hub.revoke(user_id)
    except Exception as exc:  # noqa: BLE001 - Redis away: nothing was revoked; retry
        logger.warning("revoking a user failed: %s", type(exc).__name__)
        raise Unavailable("revocation could not be stored; retry") from None
    return Revoked(user_id=user_id, revoked_at=revoked_at)
