"""The /ws wire protocol: close codes, limits, and parsing of client frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from .errors import BadRequest

WS_1000_NORMAL_CLOSURE: Final = 1000
WS_1008_POLICY_VIOLATION: Final = 1008
WS_1009_MESSAGE_TOO_BIG: Final = 1009
WS_1011_INTERNAL_ERROR: Final = 1011
WS_1012_SERVICE_RESTART: Final = 1012
WS_4008_SLOW_CONSUMER: Final = 4008
WS_4401_UNAUTHORIZED: Final = 4401
WS_4429_FLOODING: Final = 4429

OPS: Final = frozenset({"subscribe", "unsubscribe", "ping", "refresh"})
MAX_REF_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """One parsed client frame; `ref` is echoed on the reply."""

    op: str
    ref: Any = None
    channel: str | None = None
    since: int | None = None
    epoch: str | None = None
    token: str | None = None  # `refresh`: the connection's new token


def _ref_of(obj: dict[str, Any]) -> Any:
    """The frame's `ref`, kept only if it is a small JSON scalar we can echo safely."""
    ref = obj.get("ref")
    if ref is None or isinstance(ref, bool):
        return ref
    if isinstance(ref, int) and -(2**53) <= ref <= 2**53:
        return ref
    # orjson reads integers past 64 bits as floats: a ref that large would come back changed.
    if isinstance(ref, float) and ref == ref and abs(ref) < 2**53:
        return ref
    if isinstance(ref, str) and len(ref) <= MAX_REF_CHARS:
        return ref
    return None


def parse_frame(raw: str | bytes) -> ClientFrame:
    """Parse a client text frame, raising `BadRequest` (carrying `ref` when known)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise BadRequest("frame must be a JSON object")
    ref = _ref_of(obj)
    try:
        op = obj.get("op")
        if not isinstance(op, str):
            raise BadRequest("missing or non-string field 'op'")
        if op not in OPS:
            raise BadRequest(f"unknown op {op[:40]!r}")
        if op == "ping":
            return ClientFrame(op=op, ref=ref)
        if op == "refresh":
            token = obj.get("token")
            if not isinstance(token, str) or not token:
                raise BadRequest("missing or non-string field 'token'")
            return ClientFrame(op=op, ref=ref, token=token)
        channel = obj.get("channel")
        if not isinstance(channel, str):
            raise BadRequest("missing or non-string field 'channel'")
        if op == "unsubscribe":
            return ClientFrame(op=op, ref=ref, channel=channel)
        since = obj.get("since")
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**63
        ):
            raise BadRequest("field 'since' must be a non-negative integer")
        epoch = obj.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or len(epoch) > 64):
            raise BadRequest("field 'epoch' must be a string")
        return ClientFrame(op=op, ref=ref, channel=channel, since=since, epoch=epoch)
    except BadRequest as exc:
        raise exc.with_ref(ref) from None


def encode(frame: dict[str, Any]) -> str:
    """Encode a server frame as JSON text."""
    return orjson.dumps(frame).decode()


def error_frame(code: str, message: str, ref: Any = None) -> str:
    """The contract's error frame; `ref` only when the client sent one."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return encode(frame)
