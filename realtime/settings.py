"""One settings object for every taskcast process, read from the environment."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_MIN = 32
# A task's own events (their text clipped) always fit in the smallest event limit; the largest
# stays well under what `realtime.Client` accepts in one frame (16 MiB).
MIN_EVENT_BYTES = 16 * 1024
MAX_EVENT_BYTES_CEILING = 8 * 1024 * 1024


class Settings(BaseSettings):
    """The contract's environment plus the limits a deployment may tune."""

    # Inputs stay out of error messages: a rejected secret or a Redis URL with its password
    # must not be printed by a failed start-up.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    redis_url: str = Field(default="", alias="REDIS_URL")
    broadcast_url: str = Field(default="", alias="BROADCAST_URL")
    jwt_secret: SecretStr = Field(default=SecretStr(""), alias="TASKCAST_JWT_SECRET")
    allowed_origins: str = Field(default="", alias="TASKCAST_ALLOWED_ORIGINS")
    # Keys of the server-to-server publish API (`X-API-Key`), comma separated so a key can be
    # rotated: add the new one, move the publishers, drop the old. None: the API is off.
    api_keys: SecretStr = Field(default=SecretStr(""), alias="TASKCAST_API_KEYS")
    history_size: int = Field(default=1000, ge=1, le=1_000_000, alias="TASKCAST_HISTORY_SIZE")
    history_ttl: int = Field(default=86400, ge=1, alias="TASKCAST_HISTORY_TTL")
    # History is bounded in bytes too, per channel: a few large events cannot fill Redis.
    history_max_bytes: int = Field(
        default=1024 * 1024, ge=MIN_EVENT_BYTES, alias="TASKCAST_HISTORY_MAX_BYTES"
    )
    # The largest event anyone may emit, measured on its JSON (`events.event_bytes`).
    max_event_bytes: int = Field(
        default=64 * 1024,
        ge=MIN_EVENT_BYTES,
        le=MAX_EVENT_BYTES_CEILING,
        alias="TASKCAST_MAX_EVENT_BYTES",
    )
    # Set by `taskcast up`: enables the demo sign-in and relaxes the secret check.
    embedded: bool = Field(default=False, alias="TASKCAST_EMBEDDED")
    node_id: str = Field(default="", alias="TASKCAST_NODE_ID")
    # Seconds each simulated step of the demo tasks takes: watchable demos, fast tests.
    step_delay: float = Field(default=0.5, ge=0, alias="TASKCAST_STEP_DELAY")
    # Per-connection limits (contract defaults).
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024, alias="TASKCAST_MAX_FRAME_BYTES")
    max_subscriptions: int = Field(default=100, ge=1, alias="TASKCAST_MAX_SUBSCRIPTIONS")
    outbound_max_frames: int = Field(default=4096, ge=1, alias="TASKCAST_OUTBOUND_MAX_FRAMES")
    outbound_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, alias="TASKCAST_OUTBOUND_MAX_BYTES"
    )
    rate_limit_per_second: float = Field(default=50.0, gt=0, alias="TASKCAST_RATE_LIMIT")
    rate_limit_burst: int = Field(default=100, ge=1, alias="TASKCAST_RATE_BURST")
    max_connections_per_user: int = Field(
        default=50, ge=1, alias="TASKCAST_MAX_CONNECTIONS_PER_USER"
    )
    max_import_rows: int = Field(default=100_000, ge=1, alias="TASKCAST_MAX_IMPORT_ROWS")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, alias="TASKCAST_MAX_BODY_BYTES")
    # Worker-side emit buffer (events waiting for Redis).
    emit_buffer: int = Field(default=10_000, ge=10, alias="TASKCAST_EMIT_BUFFER")
    # Lost workers: Redis-broker redelivery of unacknowledged tasks after this many seconds;
    # a task interrupted this many times in one attempt fails; a running task with no sign of
    # life (events or its worker's heartbeat) for `stale_after` seconds is failed by the reaper.
    visibility_timeout: int = Field(default=3600, ge=1, alias="TASKCAST_VISIBILITY_TIMEOUT")
    max_deliveries: int = Field(default=3, ge=1, alias="TASKCAST_MAX_DELIVERIES")
    stale_after: float = Field(default=3900.0, gt=0, alias="TASKCAST_STALE_AFTER")
    # A task queued this long is checked against the broker; if its message is gone, it fails.
    queued_stale_after: float = Field(default=300.0, gt=0, alias="TASKCAST_QUEUED_STALE_AFTER")
    heartbeat: float = Field(default=15.0, gt=0, alias="TASKCAST_HEARTBEAT")
    # Seconds between keepalive comments on an idle `/sse` stream (proxies drop silent ones).
    sse_keepalive: float = Field(default=15.0, gt=0, alias="TASKCAST_SSE_KEEPALIVE")

    @field_validator("redis_url", "broadcast_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _secret_required(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if not self.embedded and len(secret) < DEV_SECRET_MIN:
            raise ValueError(
                f"TASKCAST_JWT_SECRET must be set to at least {DEV_SECRET_MIN} characters "
                "(only the embedded default `taskcast up` generates one)"
            )
        return self

    @model_validator(mode="after")
    def _api_keys_strong(self) -> Settings:
        if any(len(key) < DEV_SECRET_MIN for key in self.publish_keys()):
            raise ValueError(
                f"TASKCAST_API_KEYS: each key must be at least {DEV_SECRET_MIN} characters"
            )
        return self

    def publish_keys(self) -> list[str]:
        """The keys the publish API accepts (none: it is off)."""
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    @model_validator(mode="after")
    def _event_fits(self) -> Settings:
        # An event that can never be delivered must be refused when emitted, not accepted.
        if self.outbound_max_bytes < 2 * self.max_event_bytes:
            raise ValueError(
                "TASKCAST_OUTBOUND_MAX_BYTES must be at least twice TASKCAST_MAX_EVENT_BYTES "
                f"({2 * self.max_event_bytes}): a connection's queue must hold the largest event"
            )
        if self.history_max_bytes < self.max_event_bytes:
            raise ValueError(
                "TASKCAST_HISTORY_MAX_BYTES must be at least TASKCAST_MAX_EVENT_BYTES "
                f"({self.max_event_bytes}): a channel's history must hold the largest event"
            )
        return self

    @property
    def broadcast(self) -> str:
        """The broadcaster URL: `BROADCAST_URL`, else `REDIS_URL`."""
        return self.broadcast_url or self.redis_url

    @property
    def origins(self) -> frozenset[str]:
        """Allowed browser origins for /ws; empty means same-origin only."""
        return frozenset(
            o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; tests clear the cache after changing the env."""
    return Settings()
