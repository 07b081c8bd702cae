"""`POST /publish`: emit from anything that speaks HTTP, server to server, with an API key.

The same events `emit` takes, validated and bounded the same way, stored and numbered the
same way; the answer names the seq each channel assigned. A browser's token is never a
publish credential: the API takes only a key from `TASKCAST_API_KEYS`, in `X-API-Key`.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from taskcast.realtime.errors import BadRequest, NotFound, TaskcastError, Unauthorized, Unavailable
from taskcast.realtime.events import make_event
from taskcast.realtime.publisher import prepare
from taskcast.realtime.store import Message, Stored

from .deps import NodeDep

MAX_BATCH = 500
router = APIRouter(tags=["publish"])


class EventIn(BaseModel):
    """One event, as `emit(type, data=..., task_id=..., user_id=..., topic=...)` takes it."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1, max_length=64)
    data: dict[str, Any]
    task_id: str | None = None
    user_id: str | None = None
    topic: str | None = None
    # The caller's own id for the event (32 hex digits): a retry with the same id stores
    # nothing twice and answers `dup`.
    id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class Published(BaseModel):
    """What the store did with one event: `ok` with the seq on each channel, `dup` (stored
    before, by its id), or `closed` (its task had already ended: nothing stored)."""

    id: str
    status: str
    seqs: dict[str, int]


class BatchOut(BaseModel):
    results: list[Published]


def _authorize(node: NodeDep, key: str | None) -> None:
    keys = node.settings.publish_keys()
    if not keys:
        raise NotFound("the publish API is off: set TASKCAST_API_KEYS")
    given = (key or "").encode()
    if not any(hmac.compare_digest(given, k.encode()) for k in keys):
        raise Unauthorized("missing or unknown X-API-Key")


def _built(event: EventIn, where: str = "") -> tuple[dict[str, Any], str | None]:
    """The event `emit` would build, or `bad_request` naming what is wrong."""
    try:
        data, topic = prepare(event.type, event.data, event.task_id, event.user_id, event.topic)
    except ValueError as exc:
        raise BadRequest(f"{where}{exc}") from None
    built = make_event(
        event.type, data, task_id=event.task_id, user_id=event.user_id, validated=True
    )
    if event.id is not None:
        built["id"] = event.id
    return built, topic


async def _store(node: NodeDep, events: list[tuple[dict[str, Any], str | None]]) -> list[Stored]:
    try:
        return await node.publisher.publish_many(events)
    except TaskcastError:
        raise  # event_too_large: nothing was stored
    except Exception:  # noqa: BLE001 - Redis away: a retry with the same ids stores each once
        raise Unavailable(
            "Redis is unreachable; retry (with ids, nothing is stored twice)"
        ) from None


def _answer(event: dict[str, Any], stored: Stored) -> Published:
    seqs = {channel: Message.parse(raw).seq for channel, raw in stored.messages}
    return Published(id=event["id"], status=stored.status, seqs=seqs)


@router.post("/publish", response_model=Published)
async def publish(
    body: EventIn, node: NodeDep, x_api_key: str | None = Header(default=None)
) -> Published:
    _authorize(node, x_api_key)
    event, topic = _built(body)
    stored = await _store(node, [(event, topic)])
    return _answer(event, stored[0])


@router.post("/publish/batch", response_model=BatchOut)
async def publish_batch(
    body: BatchIn, node: NodeDep, x_api_key: str | None = Header(default=None)
) -> BatchOut:
    """Every event is checked before any is stored: one bad event refuses the whole batch."""
    _authorize(node, x_api_key)
    events = [_built(event, f"events.{i}: ") for i, event in enumerate(body.events)]
    stored = await _store(node, events)
    return BatchOut(results=[_answer(e, s) for (e, _), s in zip(events, stored, strict=True)])
