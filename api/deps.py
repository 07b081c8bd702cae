"""FastAPI dependencies as typed aliases: settings, the node's components, the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from redis.asyncio import Redis

from taskcast.realtime import Hub, Principal, Publisher, Settings, Store
from taskcast.realtime.access import Access
from taskcast.realtime.errors import Unauthorized
from taskcast.realtime.tokens import Verifier, bearer


@dataclass
class Node:
    """What the lifespan builds once per process and every request shares."""

    settings: Settings
    redis: Redis
    store: Store
    hub: Hub
    publisher: Publisher
    sender: Celery
    node_id: str
    verifier: Verifier
    access: Access
    process_hooks: bool = False  # a server of its own: hooks that reach past this app are on


def get_node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def authenticate(node: Node, token: str | None) -> Principal:
    """The principal of a valid token that no revocation refuses; `Unauthorized` otherwise."""
    principal = await node.verifier.authenticate(token)
    if node.hub.revocations.refuses(principal):
        raise Unauthorized("token revoked")
    return principal


async def get_principal(request: Request, node: Annotated[Node, Depends(get_node)]) -> Principal:
    """The caller named by `Authorization: Bearer …`; `Unauthorized` (401) otherwise."""
    return await authenticate(node, bearer(request.headers.get("authorization")))


NodeDep = Annotated[Node, Depends(get_node)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
