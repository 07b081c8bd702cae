"""Event models: the 17 types, their typed `data`, the envelope and its one JSON encoding."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest

from taskcast.realtime import events, registry
from taskcast.realtime.events import (
    MAX_TEXT_CHARS,
    TERMINAL_TYPES,
    clip,
    encode_data,
    encode_event,
    event_bytes,
    json_schema,
    make_event,
    new_id,
    progress_data,
    source,
    validate_data,
)
from taskcast.realtime.settings import MIN_EVENT_BYTES

# One valid `data` per type, and one bad `data` naming the field the error must mention.
VALID: dict[str, dict[str, Any]] = {
    "task.queued": {"name": "orders.process"},
    "task.started": {"name": "orders.process", "attempt": 1},
    "task.progress": {"current": 3, "total": 10, "percent": 30.0, "message": "Reserving stock"},
    "task.succeeded": {"result": {"order_id": "o1", "total": 12.5}},
    "task.failed": {"error": {"type": "ValueError", "message": "out of stock"}},
    "task.retrying": {"attempt": 2, "error": {"type": "IOError", "message": "x"}, "countdown": 1},
    "task.cancelled": {"reason": "user asked"},
    "order.created": {"order_id": "o1", "customer_id": "c1", "items": [{"sku": "A1", "qty": 2}]},
    "order.updated": {"order_id": "o1", "changes": {"note": "gift"}},
    "order.status_changed": {"order_id": "o1", "status": "paid", "previous": "new"},
    "order.cancelled": {"order_id": "o1", "reason": "fraud"},
    "client.created": {"client_id": "c1", "name": "Ada", "email": "ada@example.com"},
    "client.updated": {"client_id": "c1", "changes": {"name": "Ada L."}},
    "inventory.updated": {"batch": 1, "items": [{"sku": "A1", "qty": 5, "location": "W1"}]},
    "inventory.low_stock": {"sku": "A1", "qty": 2, "threshold": 5},
    "notification": {"title": "Export ready", "message": "3 files", "level": "success"},
    "system.message": {"message": "maintenance at 22:00", "level": "warning"},
}

BAD: dict[str, tuple[dict[str, Any], str]] = {
    "task.queued": ({"name": 5}, "name"),
    "task.started": ({"attempt": "first"}, "attempt"),
    "task.progress": ({"current": -1, "total": 10, "percent": 0}, "current"),
    "task.succeeded": ({"result": 1, "traceback": "..."}, "traceback"),
    "task.failed": ({"error": {"type": "ValueError"}}, "error.message"),
    "task.retrying": ({"attempt": 0}, "attempt"),
    "task.cancelled": ({"reason": ["no"]}, "reason"),
    "order.created": ({"order_id": "o1", "customer_id": "c1", "items": [{"sku": "A1"}]}, "qty"),
    "order.updated": ({"order_id": "o1"}, "changes"),
    "order.status_changed": ({"order_id": "o1"}, "status"),
    "order.cancelled": ({"reason": "x"}, "order_id"),
    "client.created": ({"name": "Ada"}, "client_id"),
    "client.updated": ({"client_id": "c1", "changes": "all"}, "changes"),
    "inventory.updated": ({"batch": 0, "items": []}, "batch"),
    "inventory.low_stock": ({"sku": "A1", "qty": "two"}, "qty"),
    "notification": ({"message": "no title"}, "title"),
    "system.message": ({"message": "hi", "level": "shout"}, "level"),
}
EVENT_TYPES = tuple(VALID)  # the contract's 17


def test_the_contract_names_seventeen_types() -> None:
    """The contract's 17 types exist (the core nine, the demo eight), three terminal."""
    assert len(EVENT_TYPES) == 17
    assert set(EVENT_TYPES) <= set(registry.models())  # with the demo's, as conftest has them
    assert set(TERMINAL_TYPES) == {"task.succeeded", "task.failed", "task.cancelled"}


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_valid_data_is_accepted(type_: str) -> None:
    """Each type accepts its documented data and keeps every given field."""
    clean = validate_data(type_, VALID[type_])
    for key, value in VALID[type_].items():
        assert clean[key] == value


@pytest.mark.parametrize("type_", EVENT_TYPES)
def test_bad_data_raises_value_error_naming_the_field(type_: str) -> None:
    """Bad data of any type raises ValueError whose message names the offending field."""
    data, field = BAD[type_]
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as info:
        validate_data(type_, data)
    assert type_ in str(info.value)


def test_unknown_type_and_non_dict_data_are_refused() -> None:
    """An unknown type or data that is not an object is a ValueError that says so."""
    with pytest.raises(ValueError, match=r"unknown event type 'task\.exploded'"):
        validate_data("task.exploded", {})
    with pytest.raises(ValueError, match="must be a dict"):
        validate_data("notification", ["title"])


@pytest.mark.parametrize("type_", ["notification", "system.message"])
def test_open_types_keep_extra_fields(type_: str) -> None:
    """notification and system.message keep extra JSON fields they are given."""
    data = {**VALID[type_], "url": "/exports/1", "meta": {"files": [1, 2]}}
    clean = validate_data(type_, data)
    assert clean["url"] == "/exports/1"
    assert clean["meta"] == {"files": [1, 2]}


def test_closed_types_refuse_extra_fields() -> None:
    """Every other type refuses unknown fields, so typos do not pass silently."""
    with pytest.raises(ValueError, match="colour"):
        validate_data("order.cancelled", {"order_id": "o1", "colour": "red"})


def test_json_schema_exports_every_type() -> None:
    """json_schema() holds the envelope and a schema for each of the 17 types' data."""
    schema = json_schema()
    assert set(schema["data"]) >= set(EVENT_TYPES)
    assert set(schema["envelope"]["properties"]) >= {"id", "type", "ts", "source", "data"}
    assert "current" in schema["data"]["task.progress"]["properties"]
    assert schema["data"]["notification"].get("additionalProperties") is not False
    orjson.dumps(schema)  # serialisable as is


def test_envelope_has_the_contract_fields() -> None:
    """make_event builds the contract's envelope with a uuid id and a UTC ISO timestamp."""
    event = make_event("task.progress", VALID["task.progress"], task_id="t1", user_id="alice")
    assert set(event) == {"id", "type", "ts", "task_id", "user_id", "source", "data"}
    assert len(event["id"]) == 32
    assert int(event["id"], 16) >= 0
    offset = datetime.fromisoformat(event["ts"]).utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    assert "." in event["ts"]  # microseconds
    assert event["source"].endswith(f"/{os.getpid()}")


def test_encoding_is_one_compact_json_document() -> None:
    """An event encodes to one compact UTF-8 JSON object that decodes back to itself."""
    event = make_event("notification", {"title": "Grüße", "message": "a\nb"}, user_id="bob")
    raw = encode_event(event)
    assert isinstance(raw, bytes)
    assert b"\n" not in raw
    assert b": " not in raw
    assert b", " not in raw
    assert "Grüße".encode() in raw  # UTF-8, not \u escapes
    assert orjson.loads(raw) == event


def test_progress_data_derives_percent_and_checks_inputs() -> None:
    """progress_data computes percent (capped at 100) and refuses negative or non-int counts."""
    assert progress_data(3, 10, "x") == {
        "current": 3,
        "total": 10,
        "percent": 30.0,
        "message": "x",
    }
    assert progress_data(12, 10, None)["percent"] == 100.0
    assert progress_data(0, 0, None)["percent"] == 100.0
    for current, total in [(-1, 10), (1, -10), (True, 10), (1.5, 10)]:
        with pytest.raises(ValueError, match="progress"):
            progress_data(current, total, None)  # type: ignore[arg-type]


def test_ids_and_source_are_fresh_in_a_forked_child() -> None:
    """Ids are version-4 UUIDs, never repeat, and a forked worker child does not replay the
    parent's sequence (that would make the store drop its events as duplicates); its events
    name the child as their source."""
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).hex == i for i in ids[:100])
    assert source().endswith(f"/{os.getpid()}")  # cached in the parent before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as a Celery prefork worker is
        os.write(write, " ".join([source(), *(new_id() for _ in range(5))]).encode())
        os._exit(0)
    os.close(write)
    child_source, *child = os.read(read, 4096).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    parent = [new_id() for _ in range(5)]
    assert len(child) == 5
    assert not set(child) & set(parent)
    assert child_source.endswith(f"/{pid}")  # events name the child process as their source
    assert source().endswith(f"/{os.getpid()}")


@pytest.mark.parametrize("type_", sorted(VALID))
@pytest.mark.parametrize(
    ("task_id", "user_id"), [(None, None), ("t" * 128, None), (None, "u1"), ("t1", "u" * 128)]
)
def test_event_bytes_is_the_length_of_the_encoding(
    type_: str, task_id: str | None, user_id: str | None
) -> None:
    """The size measured where an event is emitted is exactly the length of its encoding."""
    data = validate_data(
        type_, {**VALID[type_], **({"note": "é\n\x00"} if type_ == "notification" else {})}
    )
    data_json = encode_data(type_, data)
    event = make_event(type_, data, task_id=task_id, user_id=user_id, validated=True)
    assert encode_event(event, data_json) == encode_event(event)
    assert event_bytes(type_, data_json, task_id, user_id) == len(encode_event(event))


def test_long_lifecycle_text_is_clipped_with_a_marker() -> None:
    """Progress messages, error texts and reasons over the limit are cut and marked, not refused."""
    long = "x" * (MAX_TEXT_CHARS + 5)
    marker = f"… [truncated from {MAX_TEXT_CHARS + 5} characters]"
    marked = "x" * (MAX_TEXT_CHARS - len(marker)) + marker
    assert clip(long) == marked
    assert clip(marked) == marked
    assert clip("short") == "short"
    assert progress_data(1, 2, long)["message"] == marked
    failed = validate_data("task.failed", {"error": {"type": long, "message": long}})
    assert failed["error"] == {"type": marked, "message": marked}
    assert validate_data("task.cancelled", {"reason": long})["reason"] == marked
    assert (
        validate_data("task.progress", {**VALID["task.progress"], "message": long})["message"]
        == marked
    )


def test_domain_text_is_not_clipped() -> None:
    """A notification's own text is what its emitter meant to send: kept whole (or refused)."""
    long = "y" * (MAX_TEXT_CHARS * 3)
    assert validate_data("notification", {"title": long, "message": long})["title"] == long


def test_the_largest_progress_event_fits_the_smallest_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the longest ids, host name and numbers, and a message that JSON escapes 6x, a
    progress event is under the smallest TASKCAST_MAX_EVENT_BYTES: progress is never refused."""
    monkeypatch.setattr(events, "_SOURCE", ["h" * 255 + "/4194304"])
    data = progress_data(2**64 - 1, 2**64 - 1, "\x00" * 10 * MAX_TEXT_CHARS)
    event = make_event("task.progress", data, task_id="t" * 128, user_id="u" * 128, validated=True)
    size = len(encode_event(event))
    assert 6 * MAX_TEXT_CHARS < size <= MIN_EVENT_BYTES


def test_data_json_cannot_carry_is_refused_at_once() -> None:
    """Numbers past 64 bits are refused where emitted, not left to fail in the publisher thread."""
    with pytest.raises(ValueError, match="64 bits"):
        progress_data(2**64, 2**64, None)
    with pytest.raises(ValueError, match="cannot be sent as JSON"):
        encode_data("notification", validate_data("notification", {"title": "t", "n": 2**70}))
    with pytest.raises(ValueError, match="attempt"):
        validate_data("task.started", {"attempt": 2**64})


def test_an_omitted_result_says_why_and_is_absent_otherwise() -> None:
    """`result_omitted` appears only on a task.succeeded whose result was too large to send."""
    assert validate_data("task.succeeded", {"result": 1}) == {"result": 1}
    omitted = {"reason": "too_large", "bytes": 70000, "limit": 65536}
    data = validate_data("task.succeeded", {"result": None, "result_omitted": omitted})
    assert data == {"result": None, "result_omitted": omitted}
