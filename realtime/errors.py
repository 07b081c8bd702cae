"""Errors a client can see: one class per stable `code`, never a traceback."""

from __future__ import annotations

from typing import Any, ClassVar


class TaskcastError(Exception):
    """Base of every user-visible error; `code` is part of the wire contract."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        self.ref: Any = None  # the client frame's `ref`, echoed on the error frame
        super().__init__(self.message)

    def with_ref(self, ref: Any) -> TaskcastError:
        self.ref = ref
        return self


class BadRequest(TaskcastError):
    code = "bad_request"
    http_status = 422
    default_message = "malformed request"


class BadChannel(TaskcastError):
    code = "bad_channel"
    http_status = 422
    default_message = "unknown or malformed channel"


class Unauthorized(TaskcastError):
    code = "unauthorized"
    http_status = 401
    default_message = "missing, invalid or expired token"


class TokenExpired(Unauthorized):
    code = "token_expired"
    default_message = "the connection's token expired; refresh it or reconnect with a new one"


class TokenRevoked(Unauthorized):
    code = "token_revoked"
    default_message = "the user's tokens were revoked; reconnect with a new one"


class Forbidden(TaskcastError):
    code = "forbidden"
    http_status = 403
    default_message = "not allowed"


class NotFound(TaskcastError):
    code = "not_found"
    http_status = 404
    default_message = "not found"


class TooManySubscriptions(TaskcastError):
    code = "too_many_subscriptions"
    http_status = 429
    default_message = "too many subscriptions on this connection"


class RateLimited(TaskcastError):
    code = "rate_limited"
    http_status = 429
    default_message = "too many frames; slow down"


class TooManyConnections(TaskcastError):
    code = "too_many_connections"
    http_status = 429
    default_message = "too many connections for this user"


class PayloadTooLarge(TaskcastError):
    code = "payload_too_large"
    http_status = 413
    default_message = "request body too large"


class Unavailable(TaskcastError):
    code = "unavailable"
    http_status = 503
    default_message = "a backing service is unreachable; retry shortly"


class NotReplicated(Unavailable):
    """Stored on the Redis master, but confirmed by fewer replicas than `TASKCAST_REDIS_WAIT`.

    Not counted as stored: the emitter keeps the event and stores it again (its id makes that
    one event), an HTTP caller gets 503 and may retry the same way.
    """

    def __init__(self, confirmed: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"the event reached the Redis master but {confirmed} of {wanted} replicas confirmed "
            f"it within {timeout_ms} ms (TASKCAST_REDIS_WAIT); retry"
        )
        self.confirmed = confirmed


class EventTooLarge(TaskcastError, ValueError):
    """An event over `TASKCAST_MAX_EVENT_BYTES`, refused where it was emitted.

    A `ValueError` too: `emit` raises ValueError for every event it refuses.
    """

    code = "event_too_large"
    http_status = 413
    default_message = "event too large"

    def __init__(
        self, type_: str, size: int, limit: int, limited_by: str = "TASKCAST_MAX_EVENT_BYTES"
    ) -> None:
        super().__init__(
            f"{type_} event of {size} bytes is over {limited_by} ({limit} bytes); "
            "nothing was emitted"
        )
        self.type = type_
        self.size = size
        self.limit = limit
