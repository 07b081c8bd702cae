"""Event models: the lifecycle types and their typed `data`, the envelope, one JSON encoding."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import registry

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
# Text a task's lifecycle events carry (progress message, error, reason) is clipped to this
# many characters, with a marker, rather than refused: a progress line or an error message is
# for showing, and a task must not fail, or lose its terminal event, over a long one. Clipped,
# every lifecycle event but `task.succeeded` fits in the smallest `TASKCAST_MAX_EVENT_BYTES`.
MAX_TEXT_CHARS: Final = 1000
# The largest integer JSON carries here (orjson's unsigned 64-bit range).
MAX_JSON_INT: Final = 2**64 - 1


def clip(text: str) -> str:
    """`text` cut to `MAX_TEXT_CHARS` including a marker naming its full length (so clipping
    again changes nothing)."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    marker = f"… [truncated from {len(text)} characters]"
    return text[: MAX_TEXT_CHARS - len(marker)] + marker


Text = Annotated[str, AfterValidator(clip)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _OpenData(BaseModel):
    model_config = ConfigDict(extra="allow")


class TaskQueued(_Data):
    name: Text | None = None


class TaskStarted(_Data):
    name: Text | None = None
    attempt: int = Field(default=1, ge=1, le=MAX_JSON_INT)


class TaskProgress(_Data):
    current: int = Field(ge=0, le=MAX_JSON_INT)
    total: int = Field(ge=0, le=MAX_JSON_INT)
    percent: float = Field(ge=0, le=100)
    message: Text | None = None


class ResultOmitted(_Data):
    """Why `result` is null: the task's result was over the event limit (bytes, limit)."""

    reason: Literal["too_large"] = "too_large"
    bytes: int
    limit: int


class TaskSucceeded(_Data):
    result: Any = None
    # Only when the result could not be sent: then `result` is null. Absent otherwise.
    result_omitted: ResultOmitted | None = Field(default=None, exclude_if=lambda v: v is None)


class ErrorInfo(_Data):
    type: Text
    message: Text


class TaskFailed(_Data):
    error: ErrorInfo


class TaskRetrying(_Data):
    attempt: int = Field(ge=1, le=MAX_JSON_INT)
    error: ErrorInfo | None = None
    countdown: float | None = None


class TaskCancelled(_Data):
    reason: Text | None = None


class Notification(_OpenData):
    title: str
    message: str | None = None
    level: Literal["info", "success", "warning", "error"] = "info"


class SystemMessage(_OpenData):
    message: str
    level: Literal["info", "warning", "error"] = "info"


for _type, _model in (
    ("task.queued", TaskQueued),
    ("task.started", TaskStarted),
    ("task.progress", TaskProgress),
    ("task.succeeded", TaskSucceeded),
    ("task.failed", TaskFailed),
    ("task.retrying", TaskRetrying),
    ("task.cancelled", TaskCancelled),
):
    registry._register(_type, _model, None, builtin=True)
registry._register("notification", Notification, "notifications", builtin=True)
registry._register("system.message", SystemMessage, "system", builtin=True)


class Event(BaseModel):
    """The envelope every event travels in, as the contract shows it."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    ts: str
    task_id: str | None = None
    user_id: str | None = None
    # Only on events of a task started by another task: the id of the workflow's first task.
    root_id: str | None = None
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
    model = registry.model_of(type_)
    if model is None:
        raise ValueError(
            f"unknown event type {type_!r}; expected one of {', '.join(registry.event_types())} "
            "(an app's own types: taskcast.register_event)"
        )
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
    root_id: str | None = None,
) -> dict[str, Any]:
    """Build the envelope as a plain dict (the hot path skips pydantic for the envelope).

    `root_id` (the workflow's first task) only on events of a task another task started.
    """
    event: dict[str, Any] = {
        "id": new_id(),
        "type": type_,
        "ts": ts or now_iso(),
        "task_id": task_id,
        "user_id": user_id,
    }
    if root_id is not None:
        event["root_id"] = root_id
    event["source"] = source()
    event["data"] = data if validated else validate_data(type_, data)
    return event


def progress_data(current: int, total: int, message: str | None) -> dict[str, Any]:
    """`task.progress` data with `percent` derived, checked without pydantic (hot path).

    A message over `MAX_TEXT_CHARS` is clipped, so a progress event always fits the limit.
    """
    if (
        isinstance(current, bool)
        or not isinstance(current, int)
        or not 0 <= current <= MAX_JSON_INT
    ):
        raise ValueError("progress current must be a non-negative int (64 bits at most)")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total <= MAX_JSON_INT:
        raise ValueError("progress total must be a non-negative int (64 bits at most)")
    if message is not None:
        if not isinstance(message, str):
            raise ValueError("progress message must be a string")
        if len(message) > MAX_TEXT_CHARS:
            message = clip(message)
    percent = 100.0 if total == 0 else round(min(current, total) * 100.0 / total, 2)
    return {"current": current, "total": total, "percent": percent, "message": message}


def encode_event(event: dict[str, Any], data_json: bytes | None = None) -> bytes:
    """The one JSON encoding of an event (orjson; compact, UTF-8).

    `data_json`: `encode_data(event["data"])` when the caller has it already (the emitter
    measures it where the event is emitted), so `data` is not encoded twice.
    """
    if data_json is None:
        return orjson.dumps(event)
    return orjson.dumps({**event, "data": orjson.Fragment(data_json)})


def encode_data(type_: str, data: dict[str, Any]) -> bytes:
    """`data` as `encode_event` writes it; ValueError if JSON cannot carry it (a huge int)."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"data of {type_!r} cannot be sent as JSON: {exc}") from None


# The envelope around `data`, as `encode_event` writes it, less its variable parts: the id
# and the timestamp have fixed lengths; type, ids and source are added per event.
_ENVELOPE_BYTES: Final = (
    len(
        orjson.dumps(
            {"id": new_id(), "type": "", "ts": iso(0.0), "task_id": "", "user_id": "", "source": ""}
        )
    )
    - len(b'""""""')
    + len(b',"data":')
)


def event_bytes(
    type_: str,
    data_json: bytes,
    task_id: str | None,
    user_id: str | None,
    root_id: str | None = None,
) -> int:
    """The length of the event's encoding from its encoded `data`, without encoding it again.

    Exact: types and ids never need escaping (ids are checked before this), and the source's
    JSON form is measured.
    """
    return (
        _ENVELOPE_BYTES
        + len(data_json)
        + len(type_)
        + (4 if task_id is None else len(task_id) + 2)
        + (4 if user_id is None else len(user_id) + 2)
        + (0 if root_id is None else len(b',"root_id":""') + len(root_id))
        + len(orjson.dumps(source()))
    )


_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the envelope and of each registered type's `data`, for clients and docs."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "taskcast event",
        "envelope": _EVENT_ADAPTER.json_schema(),
        "data": {name: model.model_json_schema() for name, model in registry.models().items()},
    }
