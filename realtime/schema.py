"""JSON Schema of the wire as a client sees it: server frames, client ops, every event type.

Clients generate their types from this (`taskcast schema`); the browser package's committed
types are checked against it, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from . import registry

_TASK_STATUS = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskProgressState(BaseModel):
    """A task's last progress, as `state.progress` carries it."""

    current: int
    total: int
    percent: float
    message: str | None


class TaskState(BaseModel):
    """A task's state: what `GET /tasks/{id}` answers and task channels' `subscribed` carries."""

    task_id: str
    status: _TASK_STATUS
    progress: TaskProgressState
    result: Any
    error: dict[str, str] | None
    seq: int
    updated_at: str | None


def _model_name(event_type: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", event_type)) + "Event"


def _event_models() -> list[type[BaseModel]]:
    """One envelope model per event type, `type` fixed and `data` typed."""
    models: list[type[BaseModel]] = []
    for event_type, data_model in registry.models().items():
        fields: dict[str, Any] = {
            "id": (str, ...),
            "type": (Literal[event_type], ...),
            "ts": (str, ...),
            "task_id": (str | None, None),
            "user_id": (str | None, None),
            # only on events of a task another task started: its workflow's first task
            "root_id": (str | None, None),
            "source": (str, ...),
            "data": (data_model, ...),
        }
        models.append(create_model(_model_name(event_type), **fields))
    return models


class Welcome(_Frame):
    """The first frame on every connection."""

    type: Literal["welcome"]
    connection_id: str
    user: str
    node: str
    expires_at: int | None = Field(default=None, description="The token's expiry, unix seconds.")


class Subscribed(_Frame):
    """A subscription's start, or (unsolicited, `recovered: false`) its stream's restart."""

    type: Literal["subscribed"]
    channel: str
    seq: int
    epoch: str
    recovered: bool | None = None
    state: TaskState | None = None
    ref: Any = None


class Unsubscribed(_Frame):
    """A subscription ended: asked for, or `reason: forbidden` after a token refresh."""

    type: Literal["unsubscribed"]
    channel: str
    reason: str | None = None
    ref: Any = None


class EventFrame(_Frame):
    """One event of a channel, numbered by the channel's `seq`."""

    type: Literal["event"]
    channel: str
    seq: int
    event: dict[str, Any]


class Pong(_Frame):
    type: Literal["pong"]
    ref: Any = None


class Refreshed(_Frame):
    """The connection now runs on the refreshed token."""

    type: Literal["refreshed"]
    expires_at: int | None = None
    ref: Any = None


class ErrorFrame(_Frame):
    """A problem with one request (the connection stays open) or, before a close, with all."""

    type: Literal["error"]
    code: str
    message: str | None = None
    ref: Any = None


class SubscribeOp(BaseModel):
    op: Literal["subscribe"]
    channel: str
    since: int | None = None
    epoch: str | None = None
    ref: Any = None


class UnsubscribeOp(BaseModel):
    op: Literal["unsubscribe"]
    channel: str
    ref: Any = None


class PingOp(BaseModel):
    op: Literal["ping"]
    ref: Any = None


class RefreshOp(BaseModel):
    op: Literal["refresh"]
    token: str
    ref: Any = None


def json_schema() -> dict[str, Any]:
    """The schema: `$defs` names every frame, op, event and state; the root is any of them."""
    types = registry.event_types()
    events = _event_models()
    server_frames: list[type[BaseModel]] = [
        Welcome, Subscribed, Unsubscribed, EventFrame, Pong, Refreshed, ErrorFrame
    ]  # fmt: skip
    client_ops: list[type[BaseModel]] = [SubscribeOp, UnsubscribeOp, PingOp, RefreshOp]
    everything: list[type[BaseModel]] = [*server_frames, *client_ops, TaskState, *events]
    _, defs = TypeAdapter.json_schemas(
        [(model, "validation", TypeAdapter(model)) for model in everything],
        ref_template="#/$defs/{model}",
    )
    all_defs: dict[str, Any] = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/$defs/{model.__name__}"}

    # the per-type envelopes, told apart by `type`; an event frame carries one of them
    all_defs["TaskcastEvent"] = {
        "title": "TaskcastEvent",
        "oneOf": [ref(m) for m in events],
        "discriminator": {
            "propertyName": "type",
            "mapping": {t: ref(m)["$ref"] for t, m in zip(types, events, strict=True)},
        },
    }
    all_defs["EventFrame"]["properties"]["event"] = {"$ref": "#/$defs/TaskcastEvent"}
    all_defs["ServerFrame"] = {"oneOf": [ref(m) for m in server_frames], "title": "ServerFrame"}
    all_defs["ClientOp"] = {"oneOf": [ref(m) for m in client_ops], "title": "ClientOp"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "taskcast wire",
        "$defs": dict(sorted(all_defs.items())),
        "oneOf": [{"$ref": "#/$defs/ServerFrame"}, {"$ref": "#/$defs/ClientOp"}],
    }
