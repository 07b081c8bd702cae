"""One settings object per role, read from the environment: workers and producers, web."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import sentinel
from .backend import check_broadcast_url, event_limit
from .eventsize import MAX_EVENT_SETTING, NOTIFY_LIMIT
from .tokens import ALGORITHMS, HMAC_ALGORITHMS, TokenRules, check_public_key

DEV_SECRET_MIN = 32
# A task's own events (their text clipped) always fit in the smallest event limit; the largest
# stays well under what `realtime.Client` accepts in one frame (16 MiB).
MIN_EVENT_BYTES = 16 * 1024
MAX_EVENT_BYTES_CEILING = 8 * 1024 * 1024
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class WorkerSettings(BaseSettings):
    """What a process that emits or enqueues needs (a worker, a script): no token secret."""

    # Inputs stay out of error messages: a rejected secret or a Redis URL with its password
    # must not be printed by a failed start-up.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    redis_url: str = Field(default="", alias="REDIS_URL")
    broadcast_url: str = Field(default="", alias="BROADCAST_URL")
    # Celery's broker when it is not the store's Redis (e.g. `amqp://` for RabbitMQ).
    broker_url: str = Field(default="", alias="TASKCAST_BROKER_URL")
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
    # Synchronous replication: an event counts as stored once this many replicas confirmed it
    # (Redis `WAIT`) within the timeout (ms); unconfirmed, the emitter keeps it and retries,
    # the HTTP routes answer 503. 0: asynchronous (docs/reliability.md says what each loses).
    redis_wait: int = Field(default=0, ge=0, alias="TASKCAST_REDIS_WAIT")
    redis_wait_timeout: int = Field(default=1000, ge=1, alias="TASKCAST_REDIS_WAIT_TIMEOUT")
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
    # Comma list of modules registering an app's event types and topics, imported at start-up.
    imports: str = Field(default="", alias="TASKCAST_IMPORTS")

    @field_validator("redis_url", "broadcast_url", "broker_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if sentinel.is_sentinel(value):
            sentinel.parse(value)  # a malformed Sentinel URL is said at start-up
        return value

    @model_validator(mode="after")
    def _event_fits(self) -> WorkerSettings:
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
    def broker(self) -> str:
        """Celery's broker URL: `TASKCAST_BROKER_URL`, else `REDIS_URL`."""
        return self.broker_url or self.redis_url

    @property
    def import_modules(self) -> list[str]:
        """`TASKCAST_IMPORTS` as module names."""
        return [m.strip() for m in self.imports.split(",") if m.strip()]


class Settings(WorkerSettings):
    """The web process's settings: the worker's, plus how tokens are checked, who may
    subscribe, browser origins and publish keys."""

    jwt_secret: SecretStr = Field(default=SecretStr(""), alias="TASKCAST_JWT_SECRET")
    # Tokens from an identity provider: the algorithms accepted (comma list), its public key
    # (PEM, or a path to one) or JWKS URL, the issuer and audience required, the claims that
    # carry the user id and the scopes (a list, or one space-separated string).
    jwt_algorithms: str = Field(default="HS256", alias="TASKCAST_JWT_ALGORITHMS")
    jwt_public_key: str = Field(default="", alias="TASKCAST_JWT_PUBLIC_KEY")
    jwks_url: str = Field(default="", alias="TASKCAST_JWKS_URL")
    jwt_issuer: str = Field(default="", alias="TASKCAST_JWT_ISSUER")
    jwt_audience: str = Field(default="", alias="TASKCAST_JWT_AUDIENCE")
    jwt_user_claim: str = Field(default="sub", min_length=1, alias="TASKCAST_JWT_USER_CLAIM")
    jwt_scopes_claim: str = Field(default="scopes", min_length=1, alias="TASKCAST_JWT_SCOPES_CLAIM")
    # Seconds a fetched key set is trusted / least time between refetches for unknown key ids.
    jwks_cache_seconds: float = Field(default=300.0, gt=0, alias="TASKCAST_JWKS_CACHE_SECONDS")
    jwks_cooldown: float = Field(default=30.0, ge=0, alias="TASKCAST_JWKS_COOLDOWN")
    # `module:callable` deciding who may subscribe to what (realtime/access.py); unset: the
    # built-in rules.
    authorize: str = Field(default="", alias="TASKCAST_AUTHORIZE")
    allowed_origins: str = Field(default="", alias="TASKCAST_ALLOWED_ORIGINS")
    # Keys of the server-to-server publish API (`X-API-Key`), comma separated so a key can be
    # rotated: add the new one, move the publishers, drop the old. None: the API is off.
    api_keys: SecretStr = Field(default=SecretStr(""), alias="TASKCAST_API_KEYS")
    # Seconds a revocation stands: more than the longest token lifetime you issue (plus the
    # 10 s leeway), so every token it refuses has expired when it lapses. Default: 25 h, over
    # the 24 h of `taskcast token`.
    revocation_ttl: int = Field(default=90000, ge=60, alias="TASKCAST_REVOCATION_TTL")

    @field_validator("authorize")
    @classmethod
    def _callable_path(cls, value: str) -> str:
        value = value.strip()
        if value and not _CALLABLE.fullmatch(value):
            raise ValueError("TASKCAST_AUTHORIZE must look like 'package.module:callable'")
        return value

    @model_validator(mode="after")
    def _token_keys(self) -> Settings:
        algorithms = self.algorithms
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if not algorithms or unknown:
            raise ValueError(
                "TASKCAST_JWT_ALGORITHMS must list algorithms from "
                f"{', '.join(sorted(ALGORITHMS))} (refused: {', '.join(unknown) or 'empty'})"
            )
        secret = self.jwt_secret.get_secret_value()
        hmac = any(a in HMAC_ALGORITHMS for a in algorithms)
        if hmac and not self.embedded and len(secret) < DEV_SECRET_MIN:
            raise ValueError(
                f"TASKCAST_JWT_SECRET must be set to at least {DEV_SECRET_MIN} characters "
                "(only the embedded default `taskcast up` generates one)"
            )
        asymmetric = [a for a in algorithms if a not in HMAC_ALGORITHMS]
        if not asymmetric:
            return self
        if bool(self.jwt_public_key) == bool(self.jwks_url):
            raise ValueError(
                f"TASKCAST_JWT_ALGORITHMS allows {', '.join(asymmetric)}: set either "
                "TASKCAST_JWT_PUBLIC_KEY or TASKCAST_JWKS_URL (one of them)"
            )
        if self.jwks_url and urlparse(self.jwks_url).scheme not in ("http", "https"):
            raise ValueError("TASKCAST_JWKS_URL must be an http:// or https:// URL")
        if self.jwt_public_key:
            try:
                check_public_key(self.public_key_pem, asymmetric)
            except (OSError, ValueError) as exc:
                raise ValueError(f"TASKCAST_JWT_PUBLIC_KEY: {exc}") from None
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

    @property
    def algorithms(self) -> tuple[str, ...]:
        """`TASKCAST_JWT_ALGORITHMS` as a tuple."""
        return tuple(a.strip() for a in self.jwt_algorithms.split(",") if a.strip())

    @property
    def public_key_pem(self) -> str:
        """`TASKCAST_JWT_PUBLIC_KEY` itself when it is PEM, else the file it names."""
        value = self.jwt_public_key.strip()
        if not value or value.startswith("-----BEGIN"):
            return value
        return Path(value).expanduser().read_text()

    def token_rules(self) -> TokenRules:
        """How this process checks tokens."""
        return TokenRules(
            algorithms=self.algorithms,
            secret=self.jwt_secret.get_secret_value(),
            public_key=self.public_key_pem,
            jwks_url=self.jwks_url,
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
            user_claim=self.jwt_user_claim,
            scopes_claim=self.jwt_scopes_claim,
            jwks_cache_seconds=self.jwks_cache_seconds,
            jwks_cooldown=self.jwks_cooldown,
        )

    @field_validator("broadcast_url")
    @classmethod
    def _transport(cls, value: str) -> str:
        check_broadcast_url(value.strip())
        return value.strip()

    @property
    def event_limit(self) -> tuple[int, str]:
        """The largest event anyone may emit and what sets it: `TASKCAST_MAX_EVENT_BYTES`, or
        a broadcast transport that carries less (PostgreSQL's NOTIFY)."""
        carried = event_limit(self.broadcast)
        if carried is not None and carried < self.max_event_bytes:
            return carried, NOTIFY_LIMIT
        return self.max_event_bytes, MAX_EVENT_SETTING

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


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """A worker's or producer's settings, read once; `TASKCAST_JWT_SECRET` is not needed."""
    return WorkerSettings()
