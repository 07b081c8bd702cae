"""Demo sign-in for the embedded default: anyone may become any demo user, so nowhere else.

Outside embedded mode (`TASKCAST_EMBEDDED` unset) these routes answer 404 as if absent: a real
deployment's tokens come from its own identity provider.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskcast.realtime.channels import valid_id
from taskcast.realtime.errors import NotFound, Unavailable
from taskcast.realtime.tokens import issue

from .deps import Node, NodeDep

DEMO_SCOPES = ("topic:orders", "topic:inventory")
DEMO_TTL = 8 * 3600  # a working day: the page asks again after that


def embedded_only(node: NodeDep) -> Node:
    """The node, if it runs embedded; otherwise the route does not exist (404)."""
    if not node.settings.embedded:
        raise NotFound("not found")
    return node


EmbeddedNode = Annotated[Node, Depends(embedded_only)]
router = APIRouter(prefix="/auth", tags=["auth"], include_in_schema=False)


class DemoSignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(default="demo", min_length=1, max_length=64)

    @field_validator("user")
    @classmethod
    def _id(cls, value: str) -> str:
        if not valid_id(value):
            raise ValueError("user may use letters, digits and _ . @ -")
        return value


class DemoToken(BaseModel):
    token: str
    user: str
    scopes: list[str]
    expires_in: int


@router.get("/demo")
async def demo_info(node: EmbeddedNode) -> dict[str, object]:
    """Tells the page a demo sign-in is on offer, and with which scopes."""
    return {"scopes": list(DEMO_SCOPES), "expires_in": DEMO_TTL}


@router.post("/demo", response_model=DemoToken)
async def demo_sign_in(body: DemoSignIn, node: EmbeddedNode) -> DemoToken:
    """A token for the named demo user, allowed to read the orders and inventory topics."""
    secret = node.settings.jwt_secret.get_secret_value()
    if not secret:
        raise Unavailable("no signing secret is configured")
    token = issue(secret, body.user, DEMO_SCOPES, ttl=DEMO_TTL)
    return DemoToken(token=token, user=body.user, scopes=list(DEMO_SCOPES), expires_in=DEMO_TTL)
