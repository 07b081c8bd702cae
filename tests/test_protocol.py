"""Client frame parsing: every bad_request case of the contract, with the client's ref echoed."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from taskcast.realtime.errors import BadRequest
from taskcast.realtime.protocol import error_frame, parse_frame


def test_ping_subscribe_unsubscribe_parse() -> None:
    """Well-formed frames parse to their op, fields and ref."""
    ping = parse_frame('{"op": "ping", "ref": 1}')
    assert (ping.op, ping.ref) == ("ping", 1)
    sub = parse_frame(
        json.dumps({"op": "subscribe", "channel": "task:t1", "since": 4, "epoch": "e1", "ref": "a"})
    )
    assert (sub.op, sub.channel, sub.since, sub.epoch, sub.ref) == (
        "subscribe",
        "task:t1",
        4,
        "e1",
        "a",
    )
    plain = parse_frame(b'{"op": "subscribe", "channel": "user:alice"}')
    assert (plain.since, plain.epoch, plain.ref) == (None, None, None)
    unsub = parse_frame('{"op": "unsubscribe", "channel": "user:alice"}')
    assert (unsub.op, unsub.channel) == ("unsubscribe", "user:alice")


@pytest.mark.parametrize("raw", ["", "not json", "{", "{'op': 'ping'}", b"\xff\xfe"])
def test_not_json_is_bad_request(raw: str | bytes) -> None:
    """A frame that is not JSON is bad_request."""
    with pytest.raises(BadRequest, match="JSON") as info:
        parse_frame(raw)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize("raw", ["[]", '["ping"]', "1", '"ping"', "null", "true"])
def test_not_an_object_is_bad_request(raw: str) -> None:
    """A JSON frame that is not an object is bad_request."""
    with pytest.raises(BadRequest, match="object"):
        parse_frame(raw)


CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "op"),
    ({"op": 1}, "op"),
    ({"op": None}, "op"),
    ({"op": "publish"}, "unknown op"),
    ({"op": "SUBSCRIBE", "channel": "user:a"}, "unknown op"),
    ({"op": "subscribe"}, "channel"),
    ({"op": "subscribe", "channel": 5}, "channel"),
    ({"op": "subscribe", "channel": ["user:a"]}, "channel"),
    ({"op": "unsubscribe"}, "channel"),
    ({"op": "unsubscribe", "channel": None}, "channel"),
    ({"op": "subscribe", "channel": "user:a", "since": -1}, "since"),
    ({"op": "subscribe", "channel": "user:a", "since": "3"}, "since"),
    ({"op": "subscribe", "channel": "user:a", "since": 2.5}, "since"),
    ({"op": "subscribe", "channel": "user:a", "since": True}, "since"),
    ({"op": "subscribe", "channel": "user:a", "since": 2**63}, "since"),
    ({"op": "subscribe", "channel": "user:a", "epoch": 7}, "epoch"),
    ({"op": "subscribe", "channel": "user:a", "epoch": "e" * 65}, "epoch"),
]


@pytest.mark.parametrize(("frame", "field"), CASES)
@pytest.mark.parametrize("ref", ["r-1", 42])
def test_bad_fields_are_bad_request_with_ref(frame: dict[str, Any], field: str, ref: Any) -> None:
    """Unknown op and missing or ill-typed fields are bad_request naming the field, ref echoed."""
    with pytest.raises(BadRequest, match=field) as info:
        parse_frame(json.dumps({**frame, "ref": ref}))
    assert info.value.code == "bad_request"
    assert info.value.ref == ref


def test_ref_echo_keeps_only_small_scalars() -> None:
    """A ref that is a small JSON scalar is echoed as is; anything else is dropped, not echoed."""
    for ref in ["x", 7, 1.5, True]:
        assert parse_frame(json.dumps({"op": "ping", "ref": ref})).ref == ref
    for ref in ["x" * 201, {"a": 1}, [1], 2**60]:
        assert parse_frame(json.dumps({"op": "ping", "ref": ref})).ref is None


def test_error_frame_shape() -> None:
    """error_frame carries type, code, message, and ref only when the client sent one."""
    assert orjson.loads(error_frame("forbidden", "no", ref=3)) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
        "ref": 3,
    }
    assert "ref" not in orjson.loads(error_frame("bad_request", "x"))
