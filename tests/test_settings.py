"""Settings: the event and history byte limits, and the start-up errors that keep them sane."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskcast.realtime.settings import Settings, WorkerSettings

SECRET = "s" * 40


def make(**env: str) -> Settings:
    return Settings.model_validate({"TASKCAST_JWT_SECRET": SECRET, **env})


def test_event_and_history_limits_have_safe_defaults() -> None:
    """64 KiB per event, 1 MiB of history per channel, unless the environment says otherwise."""
    settings = make()
    assert (settings.max_event_bytes, settings.history_max_bytes) == (65536, 1048576)
    tuned = make(TASKCAST_MAX_EVENT_BYTES="32768", TASKCAST_HISTORY_MAX_BYTES="65536")
    assert (tuned.max_event_bytes, tuned.history_max_bytes) == (32768, 65536)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TASKCAST_MAX_EVENT_BYTES": "1024"}, "TASKCAST_MAX_EVENT_BYTES"),
        ({"TASKCAST_MAX_EVENT_BYTES": str(64 * 1024 * 1024)}, "TASKCAST_MAX_EVENT_BYTES"),
        ({"TASKCAST_HISTORY_MAX_BYTES": "100"}, "TASKCAST_HISTORY_MAX_BYTES"),
        ({"TASKCAST_OUTBOUND_MAX_BYTES": str(100 * 1024)}, "TASKCAST_OUTBOUND_MAX_BYTES"),
        (
            {"TASKCAST_MAX_EVENT_BYTES": str(2 * 1024 * 1024)},
            "TASKCAST_HISTORY_MAX_BYTES must be at least TASKCAST_MAX_EVENT_BYTES",
        ),
    ],
)
def test_an_event_limit_nothing_could_deliver_stops_start_up(
    env: dict[str, str], named: str
) -> None:
    """A limit out of range, or an event limit a connection's queue or a channel's history
    could not hold, is refused at start-up naming the variable."""
    with pytest.raises(ValidationError, match=named):
        make(**env)


def test_a_worker_needs_no_token_secret() -> None:
    """Workers and producers read `WorkerSettings`, which has no secret to require; the web
    process's `Settings` still refuses to start without one."""
    worker = WorkerSettings.model_validate({"REDIS_URL": "redis://r:6379/0"})
    assert worker.redis_url == "redis://r:6379/0"
    assert not hasattr(worker, "jwt_secret")
    with pytest.raises(ValidationError, match="TASKCAST_JWT_SECRET"):
        Settings.model_validate({"REDIS_URL": "redis://r:6379/0"})
